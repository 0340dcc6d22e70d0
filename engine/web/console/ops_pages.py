"""The console's pages for operators: board (live), run, workflows, tasks, outbox.

Admins see everything; a member sees the runs they started or act in (their board is filtered to
them, and a run page opens only for them). Tracebacks are shown to admins only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from aiohttp_sse import sse_response

from engine.errors import UnknownWorkflow
from engine.ops.access import Action, Resource, decide
from engine.ops.base import ops_of
from engine.runtime.app import App
from engine.store import console_queries as q
from engine.store import trigger_queries
from engine.web.console import acting, board, graphsvg
from engine.web.console.live import CLOSED, Hub
from engine.web.console.people_pages import app_of, signed_in
from engine.web.console.render import message, page, wants_json
from engine.web.console.session import viewer_of
from engine.workflow import StageKind, Workflow

routes = web.RouteTableDef()
HUB_KEY: web.AppKey[Hub] = web.AppKey("console.hub", Hub)


def setup(console: web.Application, app: App) -> None:
    """The live board's hub, closed (ending every stream) when the server stops."""
    hub = Hub(app.db)
    console[HUB_KEY] = hub
    console.on_shutdown.append(hub.close)


# --- board -------------------------------------------------------------------------------------


async def _board_data(request: web.Request) -> tuple[dict[str, Any], list[board.Column]]:
    app = app_of(request)
    person, role = signed_in(request)
    query = request.query
    filters = board.read_filters(query)
    if role != "admin":
        filters["started_by"] = person  # members see the runs they started
    by = "stage" if query.get("by") == "stage" and filters.get("workflow") in app.registry.workflows else "status"
    stages = None
    if by == "stage":
        wf = app.registry.get(filters["workflow"])
        stages = [s.name for s in wf.stages.values() if s.kind in (StageKind.SCRIPT, StageKind.FORM)]
    columns = await board.board(app.db, filters, by=by, stages=stages)
    form = {name: query.get(name, "") for name in board.FILTERS}
    form["by"] = by
    return form, columns


def _qs(form: dict[str, str], **extra: str) -> str:
    return urlencode({k: v for k, v in {**form, **extra}.items() if v})


def _columns_json(columns: list[board.Column]) -> list[dict[str, Any]]:
    return [{"key": c.key, "count": c.count, "count_text": c.count_text, "more": c.more,
             "runs": [{"id": str(r["id"]), "workflow": r["workflow"], "status": r["status"],
                       "started_by": (r.get("trigger") or {}).get("user"), "created_at": r["created_at"],
                       "at": r.get("at", [])} for r in c.cards]} for c in columns]


@routes.get("/board")
async def board_page(request: web.Request) -> web.Response:
    app = app_of(request)
    mark = await request.app[HUB_KEY].mark()  # read before the columns: a change after it is told
    try:
        form, columns = await _board_data(request)
    except board.BadFilter as exc:
        return message(request, "Bad filter", str(exc), status=400, kind="error", back="/console/board")
    workflows = sorted(app.registry.workflows)
    return page(request, "board.html", {
        "nav": "board", "form": form, "columns": columns, "workflows": workflows, "statuses": board.STATUSES,
        "qs": _qs(form), "fragment": "/console/board/columns?" + _qs(form),
        "live": "/console/board/live?" + urlencode({"since": mark}),
    }, data={"filters": form, "columns": _columns_json(columns)})


@routes.get("/board/columns")
async def board_columns(request: web.Request) -> web.Response:
    try:
        form, columns = await _board_data(request)
    except board.BadFilter as exc:
        return web.Response(status=400, text=str(exc))
    response = aiohttp_jinja2.render_template("_columns.html", request, {"columns": columns, "qs": _qs(form)})
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/board/more")
async def board_more(request: web.Request) -> web.Response:
    """The next page of one status column (keyset: older than the last card shown)."""
    app = app_of(request)
    person, role = signed_in(request)
    try:
        filters = board.read_filters(request.query)
        if role != "admin":
            filters["started_by"] = person
        status = request.query.get("column", "")
        if status not in board.STATUSES:
            raise board.BadFilter(f"no column {status!r}")
        rest = {k: v for k, v in filters.items() if k != "status"}
        column = await board.status_column(app.db, status, rest, before=request.query.get("before"))
    except board.BadFilter as exc:
        return message(request, "Bad filter", str(exc), status=400, kind="error", back="/console/board")
    form = {name: request.query.get(name, "") for name in board.FILTERS}
    return page(request, "board_more.html", {"nav": "board", "column": column, "qs": _qs(form)},
                data=_columns_json([column])[0])


@routes.get("/board/live")
async def board_live(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    hub = request.app[HUB_KEY]
    async with hub.subscribe(since=request.query.get("since")) as queue, sse_response(request) as stream:
        await stream.send("live", event="hello")
        closed = asyncio.ensure_future(stream.wait())
        try:
            while stream.is_connected():
                got = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({got, closed}, return_when=asyncio.FIRST_COMPLETED)
                if got not in done:
                    got.cancel()
                    break
                if got.result() == CLOSED:
                    break
                await stream.send("changed", event="changed")
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await closed
    return stream


# --- run ---------------------------------------------------------------------------------------


async def _allowed(app: App, report: dict[str, Any], person: str, role: str) -> tuple[bool, list[str]]:
    """Whether the viewer may read the run, and the actions they may take on it (the engine's
    access rule, as every edge applies it)."""
    ops = ops_of(app)
    who = acting.actor(person, role)
    run = await app.store.get_run(report["id"])
    resource = ops.resource(workflow=report["workflow"], run=run,
                            assignees=[s["assignee"] for s in report["steps"] if s.get("assignee")])
    if await decide(who, Action.READ_RUN, resource, ops.people) is None:
        return False, []
    actions = []
    if report["status"] in ("running", "waiting") and await decide(who, Action.CANCEL_RUN, resource, ops.people):
        actions.append("cancel")
    if report["status"] == "failed" and await decide(who, Action.RETRY_RUN, resource, ops.people):
        actions.append("retry")
    if await decide(who, Action.RERUN, resource, ops.people):
        actions.append("rerun")
    return True, actions


@routes.get("/runs/{id}")
async def run_page(request: web.Request) -> web.Response:
    app = app_of(request)
    person, role = signed_in(request)
    try:
        run_id = str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        return message(request, "No such run", "Run ids are UUIDs.", status=404, kind="error")
    report = await app.store.report(run_id)
    if report is None:
        return message(request, "No such run", f"There is no run {run_id}.", status=404, kind="error")
    may_read, actions = await _allowed(app, report, person, role)
    if not may_read:
        return message(request, "Not allowed", "You may not see this run.", status=403, kind="error")
    admin = role == "admin"
    steps = []
    for s in report["steps"]:
        error = s.get("error")
        step = {**s, "error_line": (error or "").split("\n", 1)[0], "traceback": error if admin else None,
                "duration": _duration(s.get("started_at"), s.get("finished_at"))}
        steps.append(step)
    if not admin:
        report = {**report, "steps": [{**s, "error": (s.get("error") or "").split("\n", 1)[0] or None}
                                      for s in report["steps"]]}
    events = await app.db.fetch_all(q.RUN_EVENTS, {"id": uuid.UUID(run_id)})
    wf = app.registry.workflows.get(report["workflow"])
    graph = None
    if wf is not None and not wants_json(request):
        visited = {s["stage"] for s in steps if s["status"] == "completed"}
        current = {s["stage"] for s in steps if s["status"] in ("pending", "locked")}
        failed = {s["stage"] for s in steps if s["status"] == "failed"}
        graph = await graphsvg.run_graph(wf, visited, current, failed)
    return page(request, "run.html", {"nav": "board", "run": report, "steps": steps, "events": events,
                                      "graph": graph, "workflow": wf, "admin": admin, "actions": actions,
                                      "rerun_payload": ""},
                data={**report, "events": events})


def _duration(start: str | None, end: str | None) -> str:
    from engine.web.console.render import duration

    if not start or not end:
        return ""
    return duration(dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))


# --- workflows ---------------------------------------------------------------------------------


def admin_only(request: web.Request) -> web.Response | None:
    if not viewer_of(request).is_admin:
        return message(request, "Not allowed", "Only admins may see this page.", status=403, kind="error")
    return None


async def _figures(app: App, wf: Workflow) -> dict[str, dict[str, Any]]:
    now = app.store.clock()
    out = {}
    for days in (7, 30):
        row = await app.db.fetch_one(q.WORKFLOW_FIGURES, {"workflow": wf.name, "since": now - dt.timedelta(days=days)})
        r = dict(row or {})
        finished = (r.get("completed") or 0) + (r.get("failed") or 0)
        out[f"{days}d"] = {**r, "success_rate": round(100 * (r.get("completed") or 0) / finished, 1) if finished
                           else None}
    return out


@routes.get("/workflows")
async def workflows_page(request: web.Request) -> web.Response:
    app = app_of(request)
    signed_in(request)
    items = [{"name": wf.name, "title": wf.title, "description": wf.description, "stages": len(wf.stages)}
             for wf in sorted(app.registry.workflows.values(), key=lambda w: w.name)]
    return page(request, "workflows.html", {"nav": "workflows", "workflows": items}, data=items)


@routes.get("/workflows/{name}")
async def workflow_page(request: web.Request) -> web.Response:
    app = app_of(request)
    signed_in(request)
    try:
        wf = app.registry.get(request.match_info["name"])
    except UnknownWorkflow as exc:
        return message(request, "No such workflow", str(exc), status=404, kind="error")
    hooks = [{"name": s.name, "url": f"{app.settings.base_url()}/hooks/{s.path}",
              "auth": s.auth.describe() if hasattr(s.auth, "describe") else None}
             for s in wf.stages.values() if s.kind is StageKind.HOOK]
    jobs = []
    job_stages = [s for s in wf.stages.values() if s.kind is StageKind.JOB]
    last = {r["job"]: r for r in await app.db.fetch_all(trigger_queries.LAST_JOB_FIRES)} if job_stages else {}
    for s in job_stages:
        jobs.append({"name": s.name, "schedule": s.schedule, "timezone": s.timezone,
                     "next": _next_fire(s), "last": last.get(s.key)})
    figures = await _figures(app, wf)
    graph = await graphsvg.render(wf) if not wants_json(request) else None
    from engine import graph as graph_export

    data = {**graph_export.export(wf), "hooks": hooks, "jobs": jobs, "figures": figures}
    # What the viewer may do here is the engine's access rule, as every edge applies it.
    ops, who = ops_of(app), acting.actor(*signed_in(request))
    may_start = await decide(who, Action.START, Resource(workflow=wf), ops.people) is not None
    may_fire = await decide(who, Action.FIRE_JOB, Resource(workflow=wf), ops.people) is not None
    # A payload starts a script or an assigned form; a start form is filled in by its starter.
    starts = [s.name for s in wf.start_stages()
              if s.kind is StageKind.SCRIPT or (s.kind is StageKind.FORM and s.assignee is not None)]
    start_forms = [s.name for s in wf.start_stages() if s.kind is StageKind.FORM and s.assignee is None]
    return page(request, "workflow.html", {"nav": "workflows", "wf": wf, "hooks": hooks, "jobs": jobs,
                                           "figures": figures, "graph": graph_markup(graph), "starts": starts,
                                           "start_forms": start_forms, "may_start": may_start,
                                           "may_fire": may_fire},
                data={**data, "may_start": may_start, "may_fire": may_fire})


def graph_markup(svg: str | None) -> Any:
    from markupsafe import Markup

    return Markup(svg) if svg else None


def _next_fire(stage: Any) -> dt.datetime | None:
    from engine.triggers.schedules import ScheduleError, parse_schedule

    try:
        return parse_schedule(stage.schedule, stage.timezone).next_fire_time(dt.datetime.now(dt.UTC))
    except ScheduleError:
        return None


# --- tasks, outbox -----------------------------------------------------------------------------


@routes.get("/tasks")
async def tasks_page(request: web.Request) -> web.Response:
    app = app_of(request)
    person, role = signed_in(request)
    query = request.query
    form = {k: (query.get(k) or "").strip() for k in ("workflow", "stage", "status", "assignee")}
    if role != "admin":
        form["assignee"] = person
    try:
        before = int(query["before"]) if query.get("before") else None
    except ValueError:
        return message(request, "Bad filter", "before must be a task id", status=400, kind="error")
    rows = await app.db.fetch_all(q.CONSOLE_TASKS, {**{k: v or None for k, v in form.items()}, "before": before,
                                                    "limit": 51})
    more = rows[49]["id"] if len(rows) > 50 else None
    rows = rows[:50]
    return page(request, "tasks.html", {"nav": "tasks", "form": form, "tasks": rows, "more": more,
                                        "qs": urlencode({k: v for k, v in form.items() if v}),
                                        "workflows": sorted(app.registry.workflows)},
                data={"tasks": rows, "more": more})


@routes.get("/outbox")
async def outbox_page(request: web.Request) -> web.Response:
    app = app_of(request)
    signed_in(request)
    refused = admin_only(request)
    if refused:
        return refused
    status = request.query.get("status") or ""
    statuses = [status] if status in ("pending", "failed") else ["pending", "failed"]
    rows = await app.db.fetch_all(q.CONSOLE_OUTBOX, {"statuses": statuses, "limit": 200})
    return page(request, "outbox.html", {"nav": "outbox", "effects": rows, "status": status,
                                         "now": app.store.clock()}, data=rows)
