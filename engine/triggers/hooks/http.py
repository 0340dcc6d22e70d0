"""Serving hook stages at ``/hooks/<path>`` on flowbot's HTTP server.

One request, in order: find the hook (404), check the method (405), read the body within the limit
(413), authenticate it (401), check and parse its content type (415, 400), replay an earlier
delivery with the same id, else run the stage and commit what it sent (one run per send) together
with the delivery record (concurrent deliveries share one statement: ``deliver.Committer``), then
answer. Every refusal happens before anything is written; the 2xx goes out only after the commit
(durable before acknowledged). A stage that raises gets a 500 with a correlation id; its
traceback goes to the log, never to the client. A database that cannot be reached is a 503 with
``Retry-After`` (nothing was recorded: the sender retries, and a keyed redelivery is replayed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from aiohttp import web

from engine import metrics
from engine.context import Context
from engine.errors import DatabaseUnavailable, FlowbotError, PayloadError, PayloadTooLarge
from engine.runtime.app import App
from engine.runtime.runner import call
from engine.store import trigger_queries
from engine.store.db import Row
from engine.triggers.hooks.auth import HookAuthError
from engine.triggers.hooks.deliver import Committer, Rendered, Waker, deliver
from engine.triggers.hooks.parse import DEFAULT_ACCEPT, BodyError, accepts, parse, split_content_type
from engine.triggers.hooks.request import HookRequest, HookResponse
from engine.workflow import Stage, StageKind

log = logging.getLogger(__name__)

#: Longest delivery id accepted (ids are uuids or short tokens in practice).
MAX_DELIVERY_ID = 200
#: Set on a response replayed for a redelivery.
REPLAY_HEADER = "Flowbot-Replayed"
_DROP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


def mount_hooks(http: web.Application, app: App) -> HookServer:
    """Serve every loaded hook at ``/hooks/<path>`` on ``http`` (logs auth warnings once)."""
    server = HookServer(app)
    server.warn_at_startup()
    http.router.add_route("*", "/hooks/{path:.+}", server.handle)
    http.on_cleanup.append(server.close)
    return server


def error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error response ``{"error": message, ...}``."""
    headers = extra.pop("headers", None)
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


class HookServer:
    """Dispatches ``/hooks/<path>`` requests to the loaded hook stages."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.waker = Waker(app.db)
        self.committer = Committer(app.db, self.waker)
        # At most as many statements in the database as the pool holds (the committer's included):
        # beyond it, SQLAlchemy opens overflow connections per request (connect, type
        # introspection, prepare, close), which cost more than queueing here.
        size = getattr(app.db.engine.pool, "size", None)
        pool = size() if callable(size) else 10
        self.db_slots = asyncio.Semaphore(max(1, pool - self.committer.max_in_flight))
        self.hooks: dict[str, Stage] = {s.path or "": s for s in app.registry.stages(StageKind.HOOK)}

    async def close(self, _http: web.Application | None = None) -> None:
        """Finish the commits in flight and stop the pending wake-up (the server is shutting down)."""
        await self.committer.close()
        await self.waker.close()

    def warn_at_startup(self) -> None:
        """Warn about hooks anyone may call, and about secrets missing from the environment."""
        for stage in self.hooks.values():
            if stage.auth is None:
                log.warning("hook %s (/hooks/%s) accepts unauthenticated requests (auth=None)",
                            stage.key, stage.path, extra={"action": "hook_unauthenticated", "hook": stage.key})
            elif (missing := stage.auth.missing_secret()) is not None:
                log.warning("hook %s (/hooks/%s): secret env %s is not set; requests get 503 until it is",
                            stage.key, stage.path, missing, extra={"action": "hook_secret_missing", "hook": stage.key})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request to ``/hooks/<path>`` (counted by hook and status in the metrics)."""
        stage = self.hooks.get(request.match_info["path"].strip("/"))
        # Requests to no hook share one label: the paths people probe must not grow the metrics.
        hook = stage.key if stage is not None else "(none)"
        try:
            response = await self._handle(request)
        except BaseException:
            metrics.hook_request(hook, 500)
            raise
        metrics.hook_request(hook, response.status)
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"].strip("/")
        stage = self.hooks.get(path)
        if stage is None:
            return error(404, f"no hook at /hooks/{path}")
        if request.method not in stage.methods:
            allowed = ", ".join(stage.methods)
            return error(405, f"method {request.method} is not allowed on /hooks/{path} (allowed: {allowed})",
                         headers={"Allow": allowed})
        limit = int(stage.options.get("max_bytes") or self.app.settings.hook_max_bytes)
        body = await _read_body(request, limit)
        if body is None:
            return error(413, f"request body over the {limit}-byte limit of /hooks/{path}")
        delivery_id = request.headers.get("Idempotency-Key") or None
        if stage.auth is not None:
            missing = stage.auth.missing_secret()
            if missing is not None:
                log.error("hook %s: secret env %s is not set", stage.key, missing,
                          extra={"action": "hook_secret_missing", "hook": stage.key})
                return error(503, "this hook is not configured on the server (its secret is not set)")
            try:
                stage.auth.verify(request.headers, body, now=self.app.store.clock().timestamp())
            except HookAuthError as exc:
                return error(401, f"authentication failed: {exc.reason}")
            delivery_id = stage.auth.delivery_id(request.headers, body)
        if delivery_id is not None and len(delivery_id) > MAX_DELIVERY_ID:
            return error(400, f"delivery id over {MAX_DELIVERY_ID} characters")
        raw_type = request.headers.get("Content-Type", "")
        mime, params = split_content_type(raw_type)
        if body:
            accept = stage.options.get("accept") or DEFAULT_ACCEPT
            accept = (accept,) if isinstance(accept, str) else tuple(accept)
            if not mime or not accepts(accept, mime):
                return error(415, f"content type {mime or '(none)'} is not accepted by /hooks/{path} "
                                  f"(accepts {', '.join(accept)})")
        try:
            parsed = await parse(body, mime, params, raw_type)
        except BodyError as exc:
            return error(400, str(exc))
        if delivery_id is not None:
            async with self.db_slots:
                earlier = await self.app.db.fetch_one(trigger_queries.FIND_HOOK_DELIVERY,
                                                      {"hook": stage.key, "delivery_id": delivery_id})
            if earlier is not None:
                return _replay(earlier)
        hook_request = HookRequest(
            method=request.method, path=path, query=request.query, headers=request.headers, body=body,
            content_type=mime, data=parsed.data, form=parsed.form, files=parsed.files,
            delivery_id=delivery_id, remote=request.remote,
        )
        return await self._run(stage, hook_request)

    async def _run(self, stage: Stage, request: HookRequest) -> web.StreamResponse:
        ctx = Context(stage_key=stage.key, run_context=None,
                      max_payload_bytes=self.app.settings.max_payload_bytes, can_name_run=True)
        try:
            result = await call(stage.entry("run"), request, ctx)
            rendered = None if result is None else render(result)
        except PayloadError as exc:
            # What the sender sent does not make a task (too large, or not a JSON object once the
            # stage passed it on): their request to fix, not a server error.
            status = 413 if isinstance(exc, PayloadTooLarge) else 422
            log.warning("hook %s refused a request (%d): %s", stage.key, status, exc,
                        extra={"action": "hook_payload_refused", "hook": stage.key})
            return error(status, f"the request does not make a valid task: {exc}")
        except Exception as exc:
            return _crashed(stage, exc)
        if rendered is not None and rendered[0] >= 400:
            # The stage refused the request: like a raise, what it sent is dropped.
            return _respond(rendered)
        try:
            delivered = await deliver(self.app.store, stage, request, ctx.finish(), rendered, self.committer,
                                      self.db_slots)
        except DatabaseUnavailable:
            raise  # the server's 503
        except FlowbotError as exc:
            # Routing what the stage sent failed (a form's assignee rule without its payload key,
            # a send naming a run that does not exist): nothing was committed.
            log.warning("hook %s: %s", stage.key, exc, extra={"action": "hook_unroutable", "hook": stage.key})
            return error(422, str(exc))
        if delivered.rendered is None:
            assert request.delivery_id is not None
            twin = await self.app.db.fetch_one(trigger_queries.FIND_HOOK_DELIVERY,
                                               {"hook": stage.key, "delivery_id": request.delivery_id})
            assert twin is not None, "a conflicting delivery is visible once its insert returned"
            return _replay(twin)
        if delivered.unrouted:
            log.warning("hook %s sent %d task(s) no transition takes: %s", stage.key, len(delivered.unrouted),
                        ", ".join(sorted({u["type"] for u in delivered.unrouted})),
                        extra={"action": "hook_unrouted", "hook": stage.key})
        return _respond(delivered.rendered)


def render(result: Any) -> Rendered:
    """A stage's return value as (status, headers, body); raises TypeError for anything else."""
    if isinstance(result, HookResponse):
        status, headers, body = result.render()
        return status, {k: v for k, v in headers.items() if k.lower() not in _DROP_HEADERS}, body
    if isinstance(result, dict | list):
        return 200, {"Content-Type": "application/json"}, json.dumps(result, separators=(",", ":")).encode()
    if isinstance(result, str):
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, result.encode()
    raise TypeError(f"a hook must return a dict, a list, a str, None or a HookResponse, "
                    f"not {type(result).__name__}")


def _respond(rendered: Rendered) -> web.Response:
    status, headers, body = rendered
    return web.Response(status=status, headers=headers, body=body)


def _replay(row: Row) -> web.Response:
    headers = {**(row["response_headers"] or {}), REPLAY_HEADER: "true"}
    return web.Response(status=row["status"], headers=headers, body=bytes(row["response_body"]))


def _crashed(stage: Stage, exc: BaseException) -> web.Response:
    correlation = uuid.uuid4().hex[:16]
    log.error("hook %s raised (correlation id %s)", stage.key, correlation, exc_info=exc,
              extra={"action": "hook_error", "hook": stage.key, "correlation_id": correlation})
    return error(500, "the hook's stage raised an error (details in the server log under this id)",
                 correlation_id=correlation, headers={"X-Correlation-Id": correlation})


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            return None
