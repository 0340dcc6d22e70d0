"""The ``flowbot`` command: run the parts, migrate, inspect workflows, runs and tasks."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from engine.cli.options import settings_from
from engine.cli.serve import (  # noqa: F401  (re-exported: benchmarks and tests import them from here)
    EXTRA_PARTS,
    cmd_run,
    cmd_web,
    cmd_worker,
    exit_leaving_stage_threads,
    outbox_part,
    run_parts,
    run_with_reload,
    say,
    scheduler_part,
    tune_for_serving,
    web_part,
    worker_part,
)
from engine.errors import FlowbotError, UnknownWorkflow, WorkflowLoadError
from engine.loader import Registry, load_workflows
from engine.runtime import report
from engine.runtime.lifecycle import database_url, open_app
from engine.runtime.plugins import load_plugins
from engine.settings import Settings, check_port
from engine.store import migrate, problems

log = logging.getLogger("flowbot")

T = TypeVar("T")

#: Modules adding subcommands (``add_commands(subparsers)``): triggers, events, retention and
#: operations (``runs``, ``tasks``, ``start``, ``outbox``, ``tokens``, ``audit``) beside the core.
COMMAND_MODULES: list[str] = ["engine.cli.jobs", "engine.cli.hooks", "engine.cli.events", "engine.cli.purge",
                              "engine.cli.ops", "engine.cli.login"]


async def cmd_migrate(args: argparse.Namespace) -> int:
    import contextlib

    settings = settings_from(args)
    async with contextlib.AsyncExitStack() as stack:
        url, embedded = await database_url(settings, stack)
        with problems.explained(url, embedded=embedded):
            await migrate.upgrade(url)
    print(f"flowbot: database migrated to {', '.join(migrate.heads())}")
    return 0


def load_or_report(settings: Settings) -> Registry | None:
    """The workflows, or None after printing every load error (file:line: ...) to stderr."""
    try:
        return load_workflows(settings.stages_dir)
    except WorkflowLoadError as exc:
        print(f"flowbot: {len(exc.errors)} error(s) in workflows under {settings.stages_dir.resolve()}:",
              file=sys.stderr)
        for e in exc.errors:
            print(f"  {e}", file=sys.stderr)
        return None


def plural(n: int, word: str) -> str:
    """``1 stage``, ``2 stages``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
        print(f"no workflows under {settings.stages_dir.resolve()}")
    for wf in registry.workflows.values():
        print(f"{wf.name}  {wf.title}  ({plural(len(wf.stages), 'stage')})")
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
        from engine.ops import runs
        from engine.ops.actor import local_admin
        from engine.ops.base import ops_of

        app.registry.get(args.workflow)  # an unknown one names the directory searched
        # A run started by hand is an action of the local admin, in the audit trail.
        started = await runs.trigger(ops_of(app), args.workflow, payload, local_admin(), stage=args.stage,
                                     test=args.test)
        run_id = started["run_id"]
        if not args.wait:
            print(json.dumps({"run_id": run_id}) if args.json else run_id)
            return 0
        say(f"started run {run_id}; waiting up to {args.timeout:g} s for it to finish or wait on a person")
        data = await report.wait_for(app.store, run_id, within=args.timeout)
        print(json.dumps(data, indent=2, default=report.json_default) if args.json else report.render(data))
        if data["status"] in ("running",):
            print(f"flowbot: run still running after {args.timeout:g} s: is a worker running (`flowbot run`)?",
                  file=sys.stderr)
            return 2
        return 0 if data["status"] in ("completed", "waiting") else 1


def port_number(raw: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        return check_port(int(raw), "--port")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    except FlowbotError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _serving(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=port_number, help="the HTTP port (default: $PORT or 8080)")
    p.add_argument("--host", help="the address to bind (default: $FLOWBOT_HOST or 127.0.0.1; 0.0.0.0 for every "
                                  "interface)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowbot", description="A Slack-native workflow engine.")
    parser.add_argument("--stages", help="the workflows directory (default: $FLOWBOT_STAGES or stages/)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="everything in one process: HTTP, workers, scheduler, Slack")
    _serving(p)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--reload", action="store_true",
                   help="restart when a file under the stages directory changes (development)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("worker", help="run workers only")
    p.add_argument("--concurrency", type=int)
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("web", help="run the HTTP server only (hooks, API, Slack)")
    _serving(p)
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
    p.add_argument("--test", action="store_true",
                   help="a test run: marked as such, left out of success rates, removed by `flowbot runs purge --test`")
    p.set_defaults(func=cmd_trigger)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    for plugin in load_plugins():
        plugin.add_commands(sub, settings_from)
    _accept_stages_anywhere(sub)
    return parser


def _accept_stages_anywhere(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``--stages DIR`` after the subcommand too (``flowbot run --stages DIR``), at every level.

    Given after the subcommand it is kept only when given (``SUPPRESS``), so it never hides the one
    given before it."""
    for parser in set(sub.choices.values()):
        if not any("--stages" in a.option_strings for a in parser._actions):
            parser.add_argument("--stages", default=argparse.SUPPRESS,
                                help="the workflows directory (default: $FLOWBOT_STAGES or stages/)")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_stages_anywhere(action)


def configure_logging() -> None:
    """Logging (``FLOWBOT_LOG_LEVEL``, ``FLOWBOT_LOG_FORMAT``) and metrics recording
    (``FLOWBOT_METRICS=off`` turns it off), from the environment: done by the entry point only."""
    from engine import logs, metrics

    logs.configure(log_level(), (os.environ.get("FLOWBOT_LOG_FORMAT") or "text").strip().lower())
    metrics.enabled = (os.environ.get("FLOWBOT_METRICS") or "on").strip().lower() not in ("off", "0", "false")


def log_level() -> str:
    """``FLOWBOT_LOG_LEVEL`` (INFO by default)."""
    return os.environ.get("FLOWBOT_LOG_LEVEL", "INFO").upper()


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
    try:
        configure_logging()
    except FlowbotError as exc:
        print(f"flowbot: {exc}", file=sys.stderr)
        return 1
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    code = _main(args, argv)
    exit_leaving_stage_threads(code)
    return code


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    try:
        if getattr(args, "reload", False):
            return run_with_reload(settings_from(args), argv)
        result: Any = args.func(args)
        if asyncio.iscoroutine(result):
            result = run_async(_guard(result))
        return int(result or 0)
    except WorkflowLoadError as exc:
        print(f"flowbot: invalid workflows:\n{exc}", file=sys.stderr)
        return 1
    except UnknownWorkflow as exc:
        where = settings_from(args).stages_dir.resolve()
        print(f"flowbot: {exc} in {where} (set FLOWBOT_STAGES or --stages to where your workflows are)",
              file=sys.stderr)
        return 1
    except FlowbotError as exc:
        if log_level() == "DEBUG":
            traceback.print_exc()
        print(f"flowbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _guard(coro: Awaitable[Any]) -> Any:
    return await coro


if __name__ == "__main__":
    sys.exit(main())
