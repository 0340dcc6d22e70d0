"""`flowbot purge --older-than D [--dry-run]`: retention on demand (added through COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from typing import Any

from engine.errors import FlowbotError
from engine.store.retention import DEFAULT_DUTY, Policy, Purger

_AGE = re.compile(r"^\s*(\d+)\s*([dhwm]?)\s*$")
_UNITS = {"": "days", "d": "days", "h": "hours", "w": "weeks", "m": "minutes"}


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w``, ``90m`` or a bare number of days."""
    m = _AGE.match(text.lower())
    if not m:
        raise FlowbotError(f"--older-than must be a number of days (30d), hours (12h), weeks (2w) or minutes (90m), "
                           f"got {text!r}")
    return dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def add_commands(sub: Any) -> None:
    """Add `flowbot purge` to the ``flowbot`` parser."""
    p = sub.add_parser("purge", help="delete finished runs older than D (and old hook deliveries and job fires)")
    p.add_argument("--older-than", help="finished runs older than this go: 30d, 12h, 2w (default: "
                                        "FLOWBOT_RETENTION_DAYS, 30 days)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    p.add_argument("--batch", type=int, help="runs per transaction (default: FLOWBOT_PURGE_BATCH, 500)")
    p.add_argument("--full-speed", action="store_true",
                   help="no rest between batches: done sooner, harder on a busy database")
    p.set_defaults(func=cmd_purge)


#: What a test run takes with it when it is purged.
TEST_RUN_KINDS = ("runs", "tasks", "task_events", "outbox", "audit")


async def purge_test_runs(args: argparse.Namespace) -> int:
    """`flowbot runs purge --test [--dry-run]`: delete every test run (``flowbot trigger --test``,
    the API's ``"test": true``, their children), open or finished, in retention's batches."""
    from engine.cli.main import settings_from
    from engine.runtime.lifecycle import open_app

    if not args.test:
        raise FlowbotError("`flowbot runs purge` removes test runs only: add --test "
                           "(finished runs by age: `flowbot purge --older-than D`)")
    settings = settings_from(args)
    batch = args.batch or settings.purge_batch
    if batch < 1:
        raise FlowbotError(f"--batch must be at least 1, got {batch}")
    async with open_app(settings, load_plugins_=False, pool_size=2) as app:
        purger = Purger(app.db, Policy.from_settings(settings), batch=batch,
                        duty=1.0 if args.full_speed else DEFAULT_DUTY, clock=app.store.clock)
        if args.dry_run:
            print(f"flowbot: would purge {(await purger.count_tests()).describe(TEST_RUN_KINDS)} "
                  "(test runs; dry run, nothing deleted)")
            return 0
        t0 = time.monotonic()
        done = await purger.purge_tests()
        if done is None:
            raise FlowbotError("another flowbot process is purging right now; nothing done (try again later)")
        print(f"flowbot: purged {done.describe(TEST_RUN_KINDS)} (test runs) in {time.monotonic() - t0:.1f} s")
    return 0


async def cmd_purge(args: argparse.Namespace) -> int:
    from engine.cli.main import settings_from
    from engine.runtime.lifecycle import open_app

    settings = settings_from(args)
    runs = parse_age(args.older_than) if args.older_than else None
    if runs is None and settings.retention_days is None:
        raise FlowbotError("FLOWBOT_RETENTION_DAYS keeps runs forever: give --older-than to purge runs")
    batch = args.batch or settings.purge_batch
    if batch < 1:
        raise FlowbotError(f"--batch must be at least 1, got {batch}")
    policy = Policy.from_settings(settings, runs=runs)
    async with open_app(settings, load_plugins_=False, pool_size=2) as app:
        purger = Purger(app.db, policy, batch=batch, duty=1.0 if args.full_speed else DEFAULT_DUTY,
                        clock=app.store.clock)
        before = purger.cutoffs()[0]
        when = f"runs finished before {before:%Y-%m-%d %H:%M} UTC" if before else "runs kept"
        if args.dry_run:
            print(f"flowbot: would purge {(await purger.count()).describe()} ({when}; dry run, nothing deleted)")
            return 0
        t0 = time.monotonic()
        done = await purger.purge()
        if done is None:
            raise FlowbotError("another flowbot process is purging right now; nothing done (try again later)")
        print(f"flowbot: purged {done.describe()} ({when}) in {time.monotonic() - t0:.1f} s")
    return 0
