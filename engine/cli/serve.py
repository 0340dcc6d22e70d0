"""The long-running commands: `flowbot run`, `worker`, `web`, and how they start and stop.

Parts (HTTP server, worker, outbox, scheduler, what plugins add) run together until a signal. The
first Ctrl-C or SIGTERM says what is being waited for and stops them gracefully; a second Ctrl-C
stops at once. ``--reload`` runs the server in a child process and starts a new one whenever a
file under the stages directory changes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from engine.cli.options import settings_from
from engine.runtime.app import App, Part
from engine.runtime.lifecycle import open_app
from engine.settings import Settings

#: Allocations between two young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000
#: How long a thread may hold the GIL while another one waits for it (CPython's default: 5 ms).
SWITCH_INTERVAL_SECONDS = 0.0005
#: Exit status after a second Ctrl-C (the shell's convention for SIGINT).
INTERRUPTED = 130


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


def say(message: str) -> None:
    """One line for the person at the terminal (stderr, so stdout stays the command's output; a
    JSON object with JSON logs)."""
    from engine import logs

    logs.say(message)


def _stop_on_signals(stop: asyncio.Event, grace: float) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            if sig is signal.SIGINT:
                # The second Ctrl-C: whoever pressed it does not want to wait. Tasks still
                # locked come back when their leases expire; an embedded Postgres left running
                # is adopted by the next start.
                say("stopping now")
                os._exit(INTERRUPTED)
            return
        say(f"stopping: finishing running stages (up to {grace:g} s), requests in progress and "
            "deliveries under way" + ("; Ctrl-C again to stop at once" if sig is signal.SIGINT else ""))
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


async def run_parts(app: App | None, parts: list[Part], stop: asyncio.Event | None = None) -> None:
    """Run parts until a signal (or ``stop``); a part that crashes stops the others.

    Every long-running command comes here once startup is done, so this is where the interpreter
    is set up for it (``tune_for_serving``).
    """
    stop = stop or asyncio.Event()
    _stop_on_signals(stop, app.settings.shutdown_grace if app is not None else 0)
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
                            shutdown_grace=app.settings.shutdown_grace, before_claim=app.background_gate)
    return Worker(app.store, options).run


def retention_part(app: App) -> Part:
    """Retention passes (``engine.runtime.retention``), as a part."""
    from engine.runtime.retention import retention_part as part

    return part(app)


def metrics_parts(app: App) -> list[Part]:
    """``/metrics`` on ``FLOWBOT_METRICS_PORT`` when it is set (any process, workers too)."""
    if app.settings.metrics_port is None:
        return []
    from engine.web.metrics import metrics_part

    return [metrics_part(app)]


def web_part(app: App, ready: Callable[[int], None] | None = None) -> Part:
    """The HTTP server, as a part (``ready(port)`` once it listens)."""
    from engine.web.server import serve

    async def part(stop: asyncio.Event) -> None:
        await serve(app, stop, ready=ready)

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


def announce(app: App) -> None:
    """Say where the workflows and the database are, and the API token when it was generated."""
    token = app.settings.resolve_api_token()
    where = "embedded Postgres" if not app.settings.database_url else "DATABASE_URL"
    print(f"flowbot: {len(app.registry.workflows)} workflow(s) from {app.settings.stages_dir.resolve()}, "
          f"database: {where}")
    if not app.settings.api_token:
        print(f"flowbot: API token (saved in {app.settings.home / 'api_token'}): {token}")
    sys.stdout.flush()


def _listening(settings: Settings, console_token: str | None = None) -> Callable[[int], None]:
    def ready(port: int) -> None:
        print(f"flowbot: listening on http://{settings.host}:{port}", flush=True)
        if console_token:
            from engine.people import links

            link = links.url(settings.with_(port=port).base_url(), console_token)
            print("flowbot: console sign-in link for the local admin (works once; `flowbot login --as EMAIL` "
                  f"for others):\n    {link}", flush=True)

    return ready


async def console_token(app: App) -> str | None:
    """With no other way to sign in to the console (no Slack, email or identity provider), a
    one-time link for the local admin, printed as Jupyter prints its token."""
    s = app.settings
    if s.slack_enabled or s.mail_enabled or s.oidc_enabled:
        return None
    from engine.people import links
    from engine.web.console.acting import local_admin

    return await links.create(app.db, local_admin(), app.store.clock(), role="admin")


async def cmd_run(args: argparse.Namespace) -> int:
    """`flowbot run`: everything in one process."""
    settings = settings_from(args)
    async with open_app(settings) as app:
        announce(app)
        ready = _listening(settings, await console_token(app))
        parts = [web_part(app, ready), worker_part(app), outbox_part(app), retention_part(app), *metrics_parts(app)]
        parts += [factory(app) for factory in EXTRA_PARTS.values()] + app.background
        await run_parts(app, parts)
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    """`flowbot worker`: workers (and the outbox) only."""
    async with open_app(settings_from(args)) as app:
        await run_parts(app, [worker_part(app), outbox_part(app), retention_part(app), *metrics_parts(app)])
    return 0


async def cmd_web(args: argparse.Namespace) -> int:
    """`flowbot web`: the HTTP server only."""
    settings = settings_from(args)
    async with open_app(settings) as app:
        announce(app)
        await run_parts(app, [web_part(app, _listening(settings)), *app.background, *metrics_parts(app)])
    return 0


def exit_leaving_stage_threads(code: int) -> None:
    """Exit now if stages that overran the shutdown grace period still run in threads.

    Their tasks were released to run again once this process is gone; the interpreter would
    otherwise wait for those threads at exit, and the stage would keep running beside its next
    attempt."""
    if any(t.name.startswith("stage") and t.is_alive() for t in threading.enumerate()):
        say("stages still running after the grace period were abandoned; their tasks run again")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_with_reload(settings: Settings, argv: list[str]) -> int:
    """`flowbot run --reload`: run `flowbot run` in a child process and start a new one when a file
    under the stages directory changes (for development: a deployment restarts instead)."""
    import watchfiles

    from engine.store.embedded import EmbeddedPostgres

    stages = settings.stages_dir.resolve()
    if not stages.is_dir():
        from engine.errors import ConfigError

        raise ConfigError(f"the stages directory {stages} does not exist "
                          "(set FLOWBOT_STAGES or --stages to where your workflows are)")
    child_argv = [sys.executable, "-m", "engine.cli", *[a for a in argv if a != "--reload"]]
    held = None
    if not settings.database_url:
        # Hold the embedded server across restarts: each child attaches instead of starting it.
        held = EmbeddedPostgres(settings.home / "pg")
        held.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    child = subprocess.Popen(child_argv)
    said_exit = False
    say(f"reloading on changes under {stages}")
    try:
        for changes in watchfiles.watch(stages, stop_event=stop, yield_on_timeout=True, rust_timeout=500,
                                        raise_interrupt=False):
            if not changes:
                if child.poll() is not None and not said_exit:
                    said_exit = True
                    say(f"the server exited (status {child.returncode}); it starts again when a file "
                        f"under {stages} changes")
                continue
            names = sorted({os.path.relpath(path, stages) for _change, path in changes})
            say(f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''} changed: restarting")
            _stop_child(child, settings.shutdown_grace)
            child = subprocess.Popen(child_argv)
            said_exit = False
    finally:
        _stop_child(child, settings.shutdown_grace)
        if held is not None:
            held.stop()
    return 0


def _stop_child(child: subprocess.Popen[bytes], grace: float) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(grace + 10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
