"""What people and operators do from the console's pages: cancel, retry and rerun a run; claim,
reassign and retry a task; retry or discard an outbox effect (each through the engine operation,
``engine.ops``, which checks who may do it and writes the audit record with the change); start
a run with a payload (its starters, operators, admins) and fire a job now (operators, admins).

Each is a POST carrying the session's CSRF token; a refusal changes nothing and says why (404,
403, 409, 422).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import FlowbotError, Invalid, NotStartable, PayloadTooLarge, Refused
from engine.ops import outbox as ops_outbox
from engine.ops import runs as ops_runs
from engine.ops import tasks as ops_tasks
from engine.triggers.jobs.manual import described, fire_now
from engine.web.console.acting import actor_of, ops_for
from engine.web.console.people_pages import signed_in
from engine.web.console.render import message, wants_json

routes = web.RouteTableDef()

@routes.post("/workflows/{name}/runs")
async def start_with_payload(request: web.Request) -> web.StreamResponse:
    """Start a run with a JSON payload (``engine.ops.runs.trigger``, as the API and the CLI do: its
    starters, operators and admins may)."""
    signed_in(request)
    name = request.match_info["name"]
    back = f"/console/workflows/{name}"
    posted = await request.post()
    try:
        payload = json.loads(str(posted.get("payload") or "{}"))
    except json.JSONDecodeError as exc:
        return message(request, "Not started", f"The payload must be a JSON object: {exc}", status=422,
                       kind="error", back=back)
    try:
        result = await ops_runs.trigger(ops_for(request), name, payload, actor_of(request),
                                        stage=str(posted.get("stage") or "") or None)
    except Refused as exc:
        return _refused(request, exc, back)
    except FlowbotError as exc:  # a stage no manual run starts at; a payload too large
        return message(request, "Not started", str(exc), status=exc_status(exc), kind="error", back=back)
    return _done(request, f"/console/runs/{result['run_id']}", result)


@routes.post("/workflows/{name}/jobs/{stage}/fire")
async def fire_job(request: web.Request) -> web.StreamResponse:
    """Fire a job now, as its schedule would (``engine.triggers.jobs.manual``: its workflow's
    operators and admins may)."""
    signed_in(request)
    name = request.match_info["name"]
    try:
        result = await fire_now(ops_for(request), f"{name}/{request.match_info['stage']}", actor_of(request))
    except Refused as exc:
        return _refused(request, exc, f"/console/workflows/{name}")
    if wants_json(request):
        return web.json_response(described(result), status=200 if result.status == "fired" else 409)
    text = (f"{result.job}: {result.status}, {result.runs_created} run(s) started"
            + (f"; {result.error.splitlines()[0]}" if result.error else ""))
    return message(request, "Job fired" if result.status == "fired" else "Job did not fire", text,
                   status=200 if result.status == "fired" else 409, back=f"/console/workflows/{name}")


def exc_status(exc: FlowbotError) -> int:
    """The HTTP status of a refused start that is not an operation's refusal."""
    if isinstance(exc, NotStartable):
        return 409
    return 413 if isinstance(exc, PayloadTooLarge) else 422


def _done(request: web.Request, to: str, result: dict[str, Any]) -> web.StreamResponse:
    if wants_json(request):
        return web.json_response(result)
    raise web.HTTPSeeOther(to)


def _refused(request: web.Request, exc: Refused, back: str) -> web.Response:
    text = str(exc)
    if isinstance(exc, Invalid) and exc.errors:
        text += " " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
    return message(request, "Not done", text, status=exc.status, kind="error", back=back)


@routes.post("/runs/{id}/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    run = request.match_info["id"]
    posted = await request.post()
    try:
        result = await ops_runs.cancel(ops_for(request), run, actor_of(request),
                                       str(posted.get("reason") or "").strip() or None)
    except Refused as exc:
        return _refused(request, exc, f"/console/runs/{run}")
    return _done(request, f"/console/runs/{run}", result)


@routes.post("/runs/{id}/retry")
async def retry(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    run = request.match_info["id"]
    try:
        result = await ops_runs.retry(ops_for(request), run, actor_of(request))
    except Refused as exc:
        return _refused(request, exc, f"/console/runs/{run}")
    return _done(request, f"/console/runs/{run}", result)


@routes.post("/runs/{id}/rerun")
async def rerun(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    run = request.match_info["id"]
    posted = await request.post()
    raw = str(posted.get("payload") or "").strip()
    payload = None
    if raw:
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as exc:
            return message(request, "Not done", f"The payload is not JSON: {exc}", status=422, kind="error",
                           back=f"/console/runs/{run}")
    try:
        result = await ops_runs.rerun(ops_for(request), run, actor_of(request), payload)
    except Refused as exc:
        return _refused(request, exc, f"/console/runs/{run}")
    return _done(request, f"/console/runs/{result['run_id']}", result)


@routes.post("/tasks/{id:\\d+}/claim")
async def claim(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    task = request.match_info["id"]
    try:
        result = await ops_tasks.claim(ops_for(request), task, actor_of(request))
    except Refused as exc:
        return _refused(request, exc, "/console/inbox")
    return _done(request, f"/console/tasks/{task}", result)


@routes.post("/tasks/{id:\\d+}/reassign")
async def reassign(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    task = request.match_info["id"]
    posted = await request.post()
    try:
        result = await ops_tasks.reassign(ops_for(request), task, str(posted.get("to") or ""), actor_of(request))
    except Refused as exc:
        return _refused(request, exc, f"/console/tasks/{task}")
    return _done(request, f"/console/runs/{result['run_id']}", result)


@routes.post("/tasks/{id:\\d+}/retry")
async def retry_task(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    task = request.match_info["id"]
    try:
        result = await ops_tasks.retry(ops_for(request), task, actor_of(request))
    except Refused as exc:
        return _refused(request, exc, "/console/tasks")
    return _done(request, f"/console/runs/{result['run_id']}", result)


@routes.post("/outbox/{id:\\d+}/{action:retry|discard}")
async def outbox_change(request: web.Request) -> web.StreamResponse:
    signed_in(request)
    change = ops_outbox.retry if request.match_info["action"] == "retry" else ops_outbox.discard
    try:
        result = await change(ops_for(request), request.match_info["id"], actor_of(request))
    except Refused as exc:
        return _refused(request, exc, "/console/outbox")
    return _done(request, "/console/outbox", result)
