"""``flowbot runs|tasks ...`` operations, ``flowbot start``, ``outbox``, ``tokens`` and ``audit``.

Each command calls its ``engine.ops`` function on the local database as ``--as PERSON`` (or
``FLOWBOT_AS``; without either, the local admin ``local:<os user>``), or, when ``FLOWBOT_URL``
is set, the same operation through that server's API with ``FLOWBOT_TOKEN``. A refusal prints
the API's reason and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from engine.cli.remote import Remote
from engine.errors import FlowbotError, Invalid, NotFound
from engine.ops import audit as audit_ops
from engine.ops import outbox as outbox_ops
from engine.ops import runs as run_ops
from engine.ops import tasks as task_ops
from engine.ops import tokens as token_ops
from engine.ops.actor import Actor, Edge, Role, is_person, local_admin
from engine.ops.base import Ops, ops_of
from engine.runtime import report
from engine.store.models import LISTED_TASK_STATUSES, RUN_STATUSES

Local = Callable[[Ops, Actor], Awaitable[Any]]


def actor_of(args: argparse.Namespace) -> Actor:
    """``--as`` / ``FLOWBOT_AS`` as a member, else the local admin."""
    person = (getattr(args, "as_", None) or os.environ.get("FLOWBOT_AS") or "").strip()
    if not person:
        return local_admin()
    if not is_person(person):
        raise Invalid(f"--as {person!r} is not a person (an email or a Slack user id)")
    return Actor(person, Role.MEMBER, Edge.CLI)


@contextlib.asynccontextmanager
async def local_ops(args: argparse.Namespace) -> AsyncIterator[Ops]:
    """The operations on the local database (no plugins: nothing is delivered from here)."""
    from engine.cli.options import settings_from
    from engine.runtime.lifecycle import open_app

    async with open_app(settings_from(args), load_plugins_=False, pool_size=2) as app:
        yield ops_of(app)


async def perform(args: argparse.Namespace, local: Local, method: str, path: str,
                  body: dict[str, Any] | None = None, query: dict[str, Any] | None = None) -> Any:
    """Run an operation locally, or through the remote API when ``FLOWBOT_URL`` is set."""
    remote = Remote.from_env(getattr(args, "as_", None) or os.environ.get("FLOWBOT_AS"))
    if remote is not None:
        return remote.call(method, path, body, query)
    actor = actor_of(args)
    async with local_ops(args) as ops:
        return await local(ops, actor)


def json_arg(raw: str | None, flag: str) -> Any:
    """A JSON command-line value (Invalid naming the flag when it is not JSON)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Invalid(f"{flag} is not valid JSON: {exc}") from None


def show(args: argparse.Namespace, value: Any, text: str) -> None:
    """``--json``: the value; else the line of text."""
    print(dumps(value) if getattr(args, "json", False) else text)


def dumps(value: Any) -> str:
    """JSON as the commands print it."""
    return json.dumps(value, indent=2, default=report.json_default)


def check_status(status: str | None, valid: tuple[str, ...], what: str) -> None:
    """Refuse a status filter that no row can have, naming the valid ones."""
    if status is not None and status not in valid:
        raise FlowbotError(f"unknown {what} status {status!r}: use one of {', '.join(valid)}")


def usage(text: str) -> int:
    """A usage error: said on stderr, exit code 2."""
    print(f"flowbot: usage: {text}", file=sys.stderr)
    return 2


# --- runs ------------------------------------------------------------------------------------


async def cmd_runs(args: argparse.Namespace) -> int:
    """``flowbot runs [list|show|cancel|retry|rerun] ...``."""
    action, ref = args.action, args.run_id
    check_status(args.status, RUN_STATUSES, "run")
    if action == "purge":
        from engine.cli.purge import purge_test_runs

        return await purge_test_runs(args)
    if action == "list":
        rows = await perform(args, lambda ops, a: run_ops.list_runs(
            ops, a, workflow=args.workflow, status=args.status, limit=args.limit), "GET", "/runs",
            query={"workflow": args.workflow, "status": args.status, "limit": args.limit})
        if args.json:
            print(dumps(rows))
        else:
            # A test run says so in the status column: "completed (test)".
            shown = [{**r, "status": f"{r['status']} (test)" if r.get("test") else r["status"]} for r in rows]
            print(report.table(shown, ["id", "workflow", "status", "created_at", "finished_at"]))
        return 0
    if not ref:
        return usage(f"flowbot runs {action} RUN_ID")
    if action == "show":
        data = await perform(args, lambda ops, a: run_ops.report(ops, ref, a), "GET", f"/runs/{ref}")
        print(dumps(data) if args.json else report.render(data))
        return 0
    if action == "cancel":
        done = await perform(args, lambda ops, a: run_ops.cancel(ops, ref, a, args.reason), "POST",
                             f"/runs/{ref}/cancel", {"reason": args.reason})
        show(args, done, f"run {done['run_id']} cancelled ({done['tasks_cancelled']} open task(s) cancelled)")
        return 0
    if action == "retry":
        done = await perform(args, lambda ops, a: run_ops.retry(ops, ref, a), "POST", f"/runs/{ref}/retry", {})
        show(args, done, f"run {done['run_id']} is running again (task(s) retried: "
                         f"{', '.join(str(t) for t in done['retried'])})")
        return 0
    payload = json_arg(args.payload, "--payload")
    done = await perform(args, lambda ops, a: run_ops.rerun(ops, ref, a, payload), "POST", f"/runs/{ref}/rerun",
                         {} if payload is None else {"payload": payload})
    return await _print_new_run(args, done["run_id"])


async def _print_new_run(args: argparse.Namespace, run_id: str) -> int:
    """A new run's id, or with ``--json`` its report."""
    if not args.json:
        print(run_id)
        return 0
    data = await perform(args, lambda ops, a: run_ops.report(ops, run_id, a), "GET", f"/runs/{run_id}")
    print(dumps(data))
    return 0


# --- tasks -----------------------------------------------------------------------------------


TASK_ACTIONS = ("list", "submit", "approve", "decline", "claim", "reassign", "retry")


async def cmd_tasks(args: argparse.Namespace) -> int:
    """``flowbot tasks [list|submit|approve|decline|claim|reassign|retry] ...``."""
    action, rest = args.action, list(args.ids)
    check_status(args.status, LISTED_TASK_STATUSES, "task")
    if action == "list":
        if rest:
            return usage("flowbot tasks [--stage S] [--status S] [--run RUN] [--json]")
        query = {"stage": args.stage, "status": args.status, "run": args.run, "workflow": args.workflow,
                 "limit": args.limit}

        try:
            rows = await perform(args, lambda ops, a: task_ops.list_tasks(ops, a, **query), "GET", "/tasks",
                                 query=query)
        except NotFound as exc:
            if args.run and str(exc) == f"no run {args.run}":
                raise NotFound(f"--run: no run {args.run} (give a run id or the start of one)") from None
            raise
        if args.json:
            print(dumps(rows))
        else:
            columns = ["id", "workflow", "stage", "type", "status", "attempts", "assignee", "run_id"]
            if any(r.get("deadline") for r in rows):  # form tasks that time out: when
                columns.insert(7, "deadline")
            print(report.table(rows, columns))
        return 0
    wanted = 2 if action == "reassign" else 1
    if len(rest) != wanted:
        return usage(f"flowbot tasks {action} TASK" + (" PERSON" if action == "reassign" else ""))
    ref = rest[0]
    if action == "submit":
        if args.answers is None:
            return usage("flowbot tasks submit TASK --answers JSON")
        answers = json_arg(args.answers, "--answers")
        done = await perform(args, lambda ops, a: task_ops.submit(ops, ref, answers, a), "POST",
                             f"/tasks/{ref}/submit", {"answers": answers})
    elif action in ("approve", "decline"):
        decision = "approved" if action == "approve" else "declined"
        done = await perform(args, lambda ops, a: task_ops.submit(ops, ref, {}, a, decision=decision,
                                                                  comment=args.comment),
                             "POST", f"/tasks/{ref}/submit",
                             {"answers": {"decision": decision, **({"comment": args.comment} if args.comment else {})}})
    elif action == "claim":
        done = await perform(args, lambda ops, a: task_ops.claim(ops, ref, a), "POST", f"/tasks/{ref}/claim", {})
    elif action == "reassign":
        done = await perform(args, lambda ops, a: task_ops.reassign(ops, ref, rest[1], a), "POST",
                             f"/tasks/{ref}/reassign", {"to": rest[1]})
    else:
        done = await perform(args, lambda ops, a: task_ops.retry(ops, ref, a), "POST", f"/tasks/{ref}/retry", {})
    show(args, done, _task_line(action, done))
    return 0


def _task_line(action: str, done: dict[str, Any]) -> str:
    task = f"task {done['task_id']}"
    if action == "claim":
        return f"{task} claimed by {done['claimed_by']}"
    if action == "reassign":
        to = done["assignee"].get("team") or ", ".join(done["assignee"].get("users") or [])
        return f"{task} reassigned to {to}"
    if action == "retry":
        return f"{task} retried: run {done['run_id']} is running again"
    line = f"{task} {done.get('action', 'submit').rstrip('e')}ed by {done['by']} (run {done['run_id']})"
    if done.get("status") == "recorded":  # an approval needing several people waits for more
        line += f": {done['approvals']} of {done['needed']} approvals so far, the task stays open"
    return line


# --- start, outbox, tokens, audit ------------------------------------------------------------


async def cmd_start(args: argparse.Namespace) -> int:
    """``flowbot start WORKFLOW --answers JSON``: submit its start form."""
    answers = json_arg(args.answers, "--answers") or {}
    payload = json_arg(args.payload, "--payload")
    body: dict[str, Any] = {"answers": answers, **({"payload": payload} if payload is not None else {})}
    done = await perform(args, lambda ops, a: task_ops.start(ops, args.workflow, answers, a, payload=payload),
                         "POST", f"/workflows/{args.workflow}/start", body)
    return await _print_new_run(args, done["run_id"])


async def cmd_outbox(args: argparse.Namespace) -> int:
    """``flowbot outbox [--status S]``, ``outbox retry ID``, ``outbox discard ID``."""
    if args.action == "list":
        rows = await perform(args, lambda ops, a: outbox_ops.list_effects(ops, a, status=args.status,
                                                                          limit=args.limit),
                             "GET", "/outbox", query={"status": args.status, "limit": args.limit})
        if args.json:
            print(dumps(rows))
        else:
            for r in rows:
                r["age"] = _age(r["age_seconds"])
            print(report.table(rows, ["id", "kind", "status", "target", "age", "attempts", "error"]))
        return 0
    if args.id is None:
        return usage(f"flowbot outbox {args.action} ID")
    fn = outbox_ops.retry if args.action == "retry" else outbox_ops.discard
    done = await perform(args, lambda ops, a: fn(ops, args.id, a), "POST", f"/outbox/{args.id}/{args.action}", {})
    show(args, done, f"outbox effect {done['id']} is {done['status']}")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


async def cmd_tokens(args: argparse.Namespace) -> int:
    """``flowbot tokens create|list|revoke``: on the local database, or on the server
    ``FLOWBOT_URL`` names (``/api/tokens``, with an admin's token)."""
    if args.action == "create":
        if not args.user:
            return usage("flowbot tokens create --user EMAIL [--role admin|member] [--expires 90d]")
        body = {"user": args.user, "role": args.role, **({"expires": args.expires} if args.expires else {})}
        made = await perform(args, lambda ops, a: token_ops.create(ops, a, args.user, role=args.role,
                                                                   expires=args.expires),
                             "POST", "/tokens", body)
        if args.json:
            print(json.dumps(made, indent=2))
        else:
            print(made["token"])
            until = f", expires {made['expires_at']}" if made.get("expires_at") else ""
            print(f"flowbot: token {made['id']} for {made['user']} ({made['role']}{until}); "
                  "it is shown only this once", file=sys.stderr)
        return 0
    if args.action == "list":
        rows = await perform(args, token_ops.list_tokens, "GET", "/tokens")
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(report.table(rows, ["id", "user", "role", "prefix", "created_at", "expires_at", "revoked_at"]))
        return 0
    if args.id is None:
        return usage("flowbot tokens revoke ID")
    done = await perform(args, lambda ops, a: token_ops.revoke(ops, a, args.id), "DELETE", f"/tokens/{args.id}")
    show(args, done, f"token {done['id']} of {done['user']} revoked")
    return 0


async def cmd_audit(args: argparse.Namespace) -> int:
    """``flowbot audit [--run R] [--actor P] [--since T]``."""
    rows = await perform(args, lambda ops, a: audit_ops.trail(ops, a, run=args.run, person=args.actor,
                                                              since=args.since, limit=args.limit),
                         "GET", "/audit", query={"run": args.run, "actor": args.actor, "since": args.since,
                                                 "limit": args.limit})
    if args.json:
        print(dumps(rows))
        return 0
    if not rows:
        print("(none)")
    for r in rows:
        print(report.audit_line(r, with_run=True))
    return 0


# --- the parsers -----------------------------------------------------------------------------


def add_as(p: argparse.ArgumentParser) -> None:
    """``--as PERSON``: act as this person (an email or Slack user id)."""
    p.add_argument("--as", dest="as_", metavar="PERSON",
                   help="act as this person (email or Slack user id; default $FLOWBOT_AS, else the local admin)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``flowbot runs``."""
    p.add_argument("action", nargs="?", choices=["list", "show", "cancel", "retry", "rerun", "purge"], default="list")
    p.add_argument("run_id", nargs="?", help="a run id, or a unique prefix of one")
    p.add_argument("--status", help=f"one of {', '.join(RUN_STATUSES)}")
    p.add_argument("--workflow")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--reason", help="why a run is cancelled")
    p.add_argument("--payload", help="a rerun's payload (JSON; default: the original's)")
    p.add_argument("--test", action="store_true", help="`runs purge --test`: delete every test run")
    p.add_argument("--dry-run", action="store_true", help="`runs purge --test`: print what would go")
    p.add_argument("--batch", type=int, help="`runs purge --test`: runs per transaction (default 500)")
    p.add_argument("--full-speed", action="store_true", help="`runs purge --test`: no rest between batches")
    p.add_argument("--json", action="store_true")
    add_as(p)


def add_task_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``flowbot tasks``."""
    p.add_argument("action", nargs="?", choices=TASK_ACTIONS, default="list")
    p.add_argument("ids", nargs="*", metavar="TASK [PERSON]")
    p.add_argument("--stage")
    p.add_argument("--status", help=f"one of {', '.join(LISTED_TASK_STATUSES)}")
    p.add_argument("--run", help="a run id, or a unique prefix of one")
    p.add_argument("--workflow")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--answers", help="a form's answers (JSON object)")
    p.add_argument("--comment", help="a decline's comment")
    p.add_argument("--json", action="store_true")
    add_as(p)


def add_commands(subparsers: Any) -> None:
    """Add `flowbot runs`, `tasks`, `start`, `outbox`, `tokens` and `audit`."""
    p = subparsers.add_parser("runs", help="list runs; `runs show|cancel|retry|rerun RUN`; `runs purge --test`")
    add_run_arguments(p)
    p.set_defaults(func=cmd_runs)
    p = subparsers.add_parser("tasks", help="list tasks; `tasks submit|approve|decline|claim|reassign|retry TASK`")
    add_task_arguments(p)
    p.set_defaults(func=cmd_tasks)

    p = subparsers.add_parser("start", help="submit a workflow's start form without Slack")
    p.add_argument("workflow")
    p.add_argument("--answers", required=True, help="the start form's answers (JSON object)")
    p.add_argument("--payload", help="values the form is pre-filled from (JSON object)")
    p.add_argument("--json", action="store_true", help="print the new run's report")
    add_as(p)
    p.set_defaults(func=cmd_start)

    p = subparsers.add_parser("outbox", help="Slack and email effects waiting or failed; retry or discard one")
    p.add_argument("action", nargs="?", choices=["list", "retry", "discard"], default="list")
    p.add_argument("id", nargs="?")
    p.add_argument("--status", choices=list(outbox_ops.STATUSES))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    add_as(p)
    p.set_defaults(func=cmd_outbox)

    p = subparsers.add_parser("tokens", help="API tokens of people: create, list, revoke")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("id", nargs="?")
    p.add_argument("--user", help="the person (email or Slack user id) the token acts as")
    p.add_argument("--role", choices=["admin", "member"], default="member")
    p.add_argument("--expires", help="lifetime, e.g. 90d, 12h (default: never)")
    p.add_argument("--json", action="store_true")
    add_as(p)
    p.set_defaults(func=cmd_tokens)

    p = subparsers.add_parser("audit", help="the audit trail: who did what, when, through which edge")
    p.add_argument("--run", help="of one run (id or unique prefix)")
    p.add_argument("--actor", help="of one person")
    p.add_argument("--since", help="an ISO date or time, or a duration back from now (7d, 2h)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    add_as(p)
    p.set_defaults(func=cmd_audit)
