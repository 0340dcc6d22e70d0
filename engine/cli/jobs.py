"""`flowbot jobs`, `flowbot jobs run NAME` and `flowbot scheduler` (added through COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from engine.runtime import report
from engine.store import trigger_queries
from engine.triggers.jobs.firing import FireResult, Job, jobs_of


def add_commands(sub: Any) -> None:
    """Add the job commands to the ``flowbot`` parser."""
    p = sub.add_parser("jobs", help="list jobs with their next fire times, or `jobs run NAME` to fire one now")
    p.add_argument("action", nargs="?", choices=["list", "run"], default="list")
    p.add_argument("name", nargs="?", help="the job to fire: workflow/stage (or a unique stage name)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)
    p = sub.add_parser("scheduler", help="run the job scheduler only")
    p.set_defaults(func=cmd_scheduler)


def _fmt(t: dt.datetime, tz: dt.tzinfo | None = None) -> str:
    local = t.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M %Z")


def job_rows(jobs: list[Job], last: dict[str, Any], now: dt.datetime,
             local_tz: dt.tzinfo | None = None) -> list[dict[str, Any]]:
    """One row per job: schedule, next fire time in the job's zone, this machine's zone and UTC."""
    rows = []
    for job in jobs:
        nxt = job.schedule.next_fire_time(now)
        prev = last.get(job.key)
        rows.append({
            "job": job.key,
            "schedule": job.schedule.spec,
            "timezone": job.schedule.timezone,
            "describe": job.schedule.describe(),
            "next_fire_time": nxt.isoformat(),
            "next_in_job_timezone": _fmt(nxt, job.schedule.trigger.timezone),
            "next_local": _fmt(nxt, local_tz),
            "next_utc": _fmt(nxt, dt.UTC),
            "last_fire_time": prev["fire_time"].isoformat() if prev else None,
            "last_status": prev["status"] if prev else None,
            "last_runs_created": prev["runs_created"] if prev else None,
        })
    return rows


def result_dict(result: FireResult) -> dict[str, Any]:
    """A fire result as JSON."""
    return {"job": result.job, "fire_time": result.fire_time.isoformat(), "status": result.status,
            "fire_id": result.fire_id, "runs_created": result.runs_created, "tasks": result.tasks,
            "error": result.error, "unrouted": len(result.unrouted)}


async def cmd_jobs(args: argparse.Namespace) -> int:
    """`flowbot jobs [list]` / `flowbot jobs run NAME`."""
    from engine.cli.main import settings_from
    from engine.errors import FlowbotError
    from engine.runtime.lifecycle import open_app

    if args.action == "run" and not args.name:
        raise FlowbotError("usage: flowbot jobs run NAME (see `flowbot jobs` for the names)")
    if args.action == "list" and args.name:
        raise FlowbotError(f'unexpected "{args.name}": did you mean `flowbot jobs run {args.name}`?')
    settings = settings_from(args)
    async with open_app(settings, load_plugins_=False, pool_size=2) as app:
        if args.action == "run":
            from engine.ops.actor import local_admin
            from engine.ops.base import ops_of
            from engine.triggers.jobs.manual import fire_now

            # A job fired by hand is an action of the local admin, in the audit trail.
            result = await fire_now(ops_of(app), args.name, local_admin())
            return _print_result(result, as_json=args.json)
        jobs = jobs_of(app.registry)
        last = {r["job"]: r for r in await app.db.fetch_all(trigger_queries.LAST_JOB_FIRES)}
        rows = job_rows(jobs, last, app.store.clock())
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no jobs in the workflows under {settings.stages_dir}")
    else:
        for r in rows:
            r["last"] = f"{r['last_status']} {r['last_fire_time']}" if r["last_status"] else "never"
        print(report.table(rows, ["job", "describe", "next_local", "next_utc", "last"]))
    return 0


def _print_result(result: FireResult, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result_dict(result), indent=2))
    elif result.status == "fired":
        print(f"{result.job}: fired at {result.fire_time.isoformat()}, {result.runs_created} run(s) started, "
              f"{result.tasks} task(s)" + (f", {len(result.unrouted)} unrouted send(s)" if result.unrouted else ""))
    elif result.status == "failed":
        print(f"{result.job}: failed, nothing was sent:\n{result.error}", file=sys.stderr)
    else:
        print(f"{result.job}: {result.status}")
    return 0 if result.status == "fired" else 1


async def cmd_scheduler(args: argparse.Namespace) -> int:
    """`flowbot scheduler`: the scheduler part alone (any number of them may run)."""
    from engine.cli.options import settings_from
    from engine.cli.serve import metrics_parts, run_parts
    from engine.runtime.lifecycle import open_app
    from engine.triggers.jobs.scheduler import scheduler_part

    async with open_app(settings_from(args), load_plugins_=False, pool_size=4) as app:
        print(f"flowbot: scheduler for {len(jobs_of(app.registry))} job(s) from {app.settings.stages_dir}")
        sys.stdout.flush()
        await run_parts(app, [scheduler_part(app), *metrics_parts(app)])
    return 0
