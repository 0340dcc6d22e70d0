"""Operations under ``/api``: on runs (cancel, retry, rerun), on tasks (submit, claim, reassign,
retry), start forms, the outbox, API tokens and the audit trail; each calls its ``engine.ops`` function as
the request's actor. A refusal is its status with ``{"error": ...}`` (422 adds ``"errors"``:
per-field messages), raised as ``engine.errors.Refused`` and answered by the server's errors
middleware."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import Invalid
from engine.ops import audit as audit_ops
from engine.ops import outbox as outbox_ops
from engine.ops import runs as run_ops
from engine.ops import tasks as task_ops
from engine.ops import tokens as token_ops
from engine.ops.base import ops_of
from engine.runtime.app import App
from engine.web.openapi import document
from engine.web.requests import ACTOR, json_body, limit


def _dump(value: Any) -> str:
    return json.dumps(value, default=str)


def ok(value: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(value, status=status, dumps=_dump)


async def body_of(request: web.Request, *keys: str) -> dict[str, Any]:
    """The request's JSON object (empty when there is no body); 422 for anything else and for
    keys the route does not know."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise Invalid("body must be a JSON object", {"body": "not an object"})
    unknown = sorted(set(body) - set(keys))
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)}: this route takes {', '.join(keys) or 'no body'}",
                      {k: "unknown field" for k in unknown})
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{key} must be text", {key: "not text"})
    return value


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit")
    return default if raw is None else limit(raw)


def add_routes(r: web.RouteTableDef, app: App) -> None:
    """Add the operation routes to the ``/api`` route table."""
    ops = ops_of(app)

    @r.post("/runs/{id}/cancel")
    async def cancel_run(request: web.Request) -> web.Response:
        body = await body_of(request, "reason")
        return ok(await run_ops.cancel(ops, request.match_info["id"], request[ACTOR], _text(body, "reason")))

    @r.post("/runs/{id}/retry")
    async def retry_run(request: web.Request) -> web.Response:
        await body_of(request)
        return ok(await run_ops.retry(ops, request.match_info["id"], request[ACTOR]))

    @r.post("/runs/{id}/rerun")
    async def rerun(request: web.Request) -> web.Response:
        body = await body_of(request, "payload")
        return ok(await run_ops.rerun(ops, request.match_info["id"], request[ACTOR], body.get("payload")), 201)

    @r.post("/tasks/{id}/submit")
    async def submit(request: web.Request) -> web.Response:
        body = await body_of(request, "answers")
        return ok(await task_ops.submit(ops, request.match_info["id"], body.get("answers", {}), request[ACTOR]))

    @r.post("/tasks/{id}/claim")
    async def claim(request: web.Request) -> web.Response:
        await body_of(request)
        return ok(await task_ops.claim(ops, request.match_info["id"], request[ACTOR]))

    @r.post("/tasks/{id}/reassign")
    async def reassign(request: web.Request) -> web.Response:
        body = await body_of(request, "to")
        return ok(await task_ops.reassign(ops, request.match_info["id"], body.get("to"), request[ACTOR]))

    @r.post("/tasks/{id}/retry")
    async def retry_task(request: web.Request) -> web.Response:
        await body_of(request)
        return ok(await task_ops.retry(ops, request.match_info["id"], request[ACTOR]))

    @r.post("/workflows/{name}/start")
    async def start(request: web.Request) -> web.Response:
        body = await body_of(request, "answers", "payload")
        result = await task_ops.start(ops, request.match_info["name"], body.get("answers", {}), request[ACTOR],
                                      payload=body.get("payload"))
        return ok(result, 201)

    @r.get("/outbox")
    async def outbox(request: web.Request) -> web.Response:
        return ok(await outbox_ops.list_effects(ops, request[ACTOR], status=request.query.get("status"),
                                                limit=_limit(request)))

    @r.post("/outbox/{id}/retry")
    async def outbox_retry(request: web.Request) -> web.Response:
        await body_of(request)
        return ok(await outbox_ops.retry(ops, request.match_info["id"], request[ACTOR]))

    @r.post("/outbox/{id}/discard")
    async def outbox_discard(request: web.Request) -> web.Response:
        await body_of(request)
        return ok(await outbox_ops.discard(ops, request.match_info["id"], request[ACTOR]))

    @r.get("/tokens")
    async def tokens(request: web.Request) -> web.Response:
        return ok(await token_ops.list_tokens(ops, request[ACTOR]))

    @r.post("/tokens")
    async def token_create(request: web.Request) -> web.Response:
        body = await body_of(request, "user", "role", "expires")
        made = await token_ops.create(ops, request[ACTOR], _text(body, "user") or "",
                                      role=_text(body, "role") or "member", expires=_text(body, "expires"))
        return ok(made, 201)

    @r.delete("/tokens/{id}")
    async def token_revoke(request: web.Request) -> web.Response:
        return ok(await token_ops.revoke(ops, request[ACTOR], request.match_info["id"]))

    @r.get("/audit")
    async def audit(request: web.Request) -> web.Response:
        q = request.query
        return ok(await audit_ops.trail(ops, request[ACTOR], run=q.get("run"), person=q.get("actor"),
                                        since=q.get("since"), limit=_limit(request, 200)))

    @r.get("/me")
    async def me(request: web.Request) -> web.Response:
        actor = request[ACTOR]
        return ok({"person": actor.person, "role": actor.role.value})

    @r.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return ok(document())
