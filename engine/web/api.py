"""The HTTP API under ``/api/*`` (bearer-token auth): workflows, runs, tasks.

Who is acting is set once per request (``actor``): the admin token (``FLOWBOT_API_TOKEN``) is an
admin, or the person named by ``X-Flowbot-As`` with that person's rights; a person's token
(``flowbot tokens create``) is that person with the token's role. Operations on runs, tasks,
the outbox and the audit trail are in ``engine.web.api_ops``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from engine import graph
from engine.context import check_event
from engine.errors import PayloadError, UnknownWorkflow
from engine.ops import runs as run_ops
from engine.ops import tasks as task_ops
from engine.ops.actor import Actor, Edge, Role, is_person
from engine.ops.base import ops_of
from engine.ops.tokens import authenticate
from engine.runtime.app import App
from engine.runtime.report import json_default
from engine.store import waits
from engine.store.models import LISTED_TASK_STATUSES, RUN_STATUSES
from engine.web import api_ops
from engine.web.requests import ACTOR
from engine.web.requests import json_body as _json_body
from engine.web.requests import limit as _limit

#: The person the admin token acts as (with that person's rights).
AS_HEADER = "X-Flowbot-As"
#: The admin token's person in the audit trail.
ADMIN_TOKEN_PERSON = "api-token"
#: Routes anyone may read without a token.
PUBLIC = ("/openapi.json",)


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong bearer token (Authorization: Bearer <FLOWBOT_API_TOKEN or a person's token>)"},
        status=401, headers={"WWW-Authenticate": "Bearer"},
    )


def _auth(app: App) -> Any:
    token = app.settings.resolve_api_token()
    assert token

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.removeprefix("/api") in PUBLIC:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        if not given:
            return _unauthorized()
        if hmac.compare_digest(given.encode(), token.encode()):
            actor = Actor(ADMIN_TOKEN_PERSON, Role.ADMIN, Edge.API)
            as_ = request.headers.get(AS_HEADER, "").strip()
            if as_:
                if not is_person(as_):
                    return web.json_response({"error": f"{AS_HEADER}: {as_!r} is not an email or a Slack user id"},
                                             status=422)
                actor = Actor(as_, Role.MEMBER, Edge.API)
        else:
            found = await authenticate(app.db, given, app.store.clock())
            if found is None:
                return _unauthorized()
            actor = found
        request[ACTOR] = actor
        return await handler(request)

    return middleware


def _not_found(message: str) -> web.Response:
    return web.json_response({"error": message}, status=404)


def _dump(value: Any) -> str:
    return json.dumps(value, default=json_default)


#: The keys a body of ``POST /api/workflows/<name>/runs`` may have.
START_KEYS = ("payload", "stage", "test")


def _status(raw: str | None, valid: tuple[str, ...], what: str) -> str | None:
    """A status filter, or a 400 naming the valid ones (a typo must not answer an empty list)."""
    if raw is not None and raw not in valid:
        raise PayloadError(f"unknown {what} status {raw!r}: use one of {', '.join(valid)}")
    return raw


def build(app: App) -> web.Application:
    """The ``/api`` sub-application (mounted so its auth middleware guards ``/api/*`` only)."""
    api = web.Application(middlewares=[_auth(app)], client_max_size=app.settings.max_body_bytes)
    r = web.RouteTableDef()
    ops = ops_of(app)

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
            raise PayloadError("body must be a JSON object: {\"payload\": {...}, \"stage\": optional, "
                               "\"test\": optional}")
        unknown = sorted(set(body) - set(START_KEYS))
        if unknown:
            raise PayloadError(f"unknown key(s) {', '.join(map(repr, unknown))} in the body: "
                               f"it may have {', '.join(map(repr, START_KEYS[:-1]))} and {START_KEYS[-1]!r}")
        test = body.get("test", False)
        if not isinstance(test, bool):
            raise PayloadError(f'"test" must be true or false, got {test!r}')
        started = await run_ops.trigger(ops, name, body.get("payload", {}), request[ACTOR], stage=body.get("stage"),
                                        test=test)
        run_id, task_id = started["run_id"], started["task_id"]
        return web.json_response({"run_id": run_id, "task_id": task_id}, status=201)

    @r.get("/runs")
    async def list_runs(request: web.Request) -> web.Response:
        q = request.query
        rows = await run_ops.list_runs(ops, request[ACTOR], workflow=q.get("workflow"),
                                       status=_status(q.get("status"), RUN_STATUSES, "run"),
                                       limit=_limit(q.get("limit")))
        return web.json_response(rows, dumps=_dump)

    @r.get("/runs/{id}")
    async def get_run(request: web.Request) -> web.Response:
        report = await run_ops.report(ops, request.match_info["id"], request[ACTOR])
        return web.json_response(report, dumps=_dump)

    @r.get("/tasks")
    async def list_tasks(request: web.Request) -> web.Response:
        q = request.query
        status = _status(q.get("status"), LISTED_TASK_STATUSES, "task")
        rows = await task_ops.list_tasks(ops, request[ACTOR], stage=q.get("stage"), status=status,
                                         run=q.get("run"), workflow=q.get("workflow"), limit=_limit(q.get("limit")))
        return web.json_response(rows, dumps=_dump)

    @r.post("/events")
    async def send_event(request: web.Request) -> web.Response:
        name, key, payload = check_event(await _json_body(request), limit=app.settings.max_payload_bytes)
        published = await waits.send_event(app.store, name, key, payload, source="api")
        return web.json_response({"event_id": published.id, "name": name, "key": key,
                                  "matched": published.matched}, status=201)

    api_ops.add_routes(r, app)
    api.add_routes(r)
    return api
