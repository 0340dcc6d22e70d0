"""The HTTP API under ``/api/*`` (bearer-token auth): workflows, runs, tasks."""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from engine import graph
from engine.context import check_event, check_payload
from engine.errors import PayloadError, UnknownStage, UnknownWorkflow
from engine.loader import check_triggerable, find_stage
from engine.runtime.app import App
from engine.runtime.report import json_default
from engine.store import queries, waits
from engine.store.models import LISTED_TASK_STATUSES, RUN_STATUSES


def _auth(app: App) -> Any:
    token = app.settings.resolve_api_token()
    assert token

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response(
                {"error": "missing or wrong bearer token (Authorization: Bearer <FLOWBOT_API_TOKEN>)"},
                status=401, headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return middleware


def _not_found(message: str) -> web.Response:
    return web.json_response({"error": message}, status=404)


def _dump(value: Any) -> str:
    return json.dumps(value, default=json_default)


#: The keys a body of ``POST /api/workflows/<name>/runs`` may have.
START_KEYS = ("payload", "stage")


def _status(raw: str | None, valid: tuple[str, ...], what: str) -> str | None:
    """A status filter, or a 400 naming the valid ones (a typo must not answer an empty list)."""
    if raw is not None and raw not in valid:
        raise PayloadError(f"unknown {what} status {raw!r}: use one of {', '.join(valid)}")
    return raw


def build(app: App) -> web.Application:
    """The ``/api`` sub-application (mounted so its auth middleware guards ``/api/*`` only)."""
    api = web.Application(middlewares=[_auth(app)], client_max_size=app.settings.max_body_bytes)
    r = web.RouteTableDef()

    @r.get("/workflows")
    async def list_workflows(request: web.Request) -> web.Response:
        return web.json_response(
            [{"name": w.name, "title": w.title, "stages": len(w.stages)} for w in app.registry.workflows.values()]
        )

    @r.get("/workflows/{name}")
    async def get_workflow(request: web.Request) -> web.Response:
        try:
            wf = app.registry.get(request.match_info["name"])
        except UnknownWorkflow as exc:
            return _not_found(str(exc))
        return web.json_response(graph.export(wf))

    @r.post("/workflows/{name}/runs")
    async def start_run(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            app.registry.get(name)
        except UnknownWorkflow as exc:
            return _not_found(str(exc))
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise PayloadError("body must be a JSON object: {\"payload\": {...}, \"stage\": optional}")
        unknown = sorted(set(body) - set(START_KEYS))
        if unknown:
            raise PayloadError(f"unknown key(s) {', '.join(map(repr, unknown))} in the body: "
                               f"it may have {' and '.join(map(repr, START_KEYS))}")
        payload = body.get("payload", {})
        limit = app.settings.max_payload_bytes
        payload = check_payload(payload, limit=limit, where="payload")
        try:
            stage = find_stage(app.registry, name, body.get("stage"))
        except UnknownStage as exc:
            return _not_found(str(exc))
        check_triggerable(stage)
        run_id, task_id = await app.store.start_run(
            stage, payload, trigger={"kind": "api", "stage": stage.name}
        )
        return web.json_response({"run_id": run_id, "task_id": task_id}, status=201)

    @r.get("/runs")
    async def list_runs(request: web.Request) -> web.Response:
        q = request.query
        rows = await app.db.fetch_all(
            queries.LIST_RUNS,
            {"workflow": q.get("workflow"), "status": _status(q.get("status"), RUN_STATUSES, "run"),
             "limit": _limit(q.get("limit"))},
        )
        return web.json_response(rows, dumps=_dump)

    @r.get("/runs/{id}")
    async def get_run(request: web.Request) -> web.Response:
        report = await app.store.report(request.match_info["id"])
        if report is None:
            return _not_found(f"no run {request.match_info['id']}")
        return web.json_response(report, dumps=_dump)

    @r.get("/tasks")
    async def list_tasks(request: web.Request) -> web.Response:
        q = request.query
        status = _status(q.get("status"), LISTED_TASK_STATUSES, "task")
        run = q.get("run")
        if run:
            found = await app.store.find_run_id(run)
            if found is None:
                return _not_found(f"no run {run}")
            run = found
        rows = await app.db.fetch_all(
            queries.LIST_TASKS,
            {"stage": q.get("stage"), "status": status, "run": run,
             "workflow": q.get("workflow"), "limit": _limit(q.get("limit")), "now": app.store.clock()},
        )
        return web.json_response(rows, dumps=_dump)

    @r.post("/events")
    async def send_event(request: web.Request) -> web.Response:
        name, key, payload = check_event(await _json_body(request), limit=app.settings.max_payload_bytes)
        published = await waits.send_event(app.store, name, key, payload, source="api")
        return web.json_response({"event_id": published.id, "name": name, "key": key,
                                  "matched": published.matched}, status=201)

    api.add_routes(r)
    return api


def _limit(raw: str | None) -> int:
    if raw is None:
        return 100
    try:
        return max(1, min(int(raw), 1000))
    except ValueError:
        raise PayloadError(f"limit must be a number, got {raw!r}") from None


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
