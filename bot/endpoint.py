"""``POST /slack/events``: Slack's signed requests, checked, parsed and answered.

Slack wants an answer within 3 seconds and ignores what the answer to a button click
(``block_actions``) or an Events API event says. So once such a request's signature checks
out, it is answered 200 at once and handed to Bolt after the answer (``FollowUps``: after the
acks of a burst). The submission of one of flowbot's own modals (a form page, Reassign) is
answered by its ``ctx.view_answers`` function directly: its errors or next page ride on the
answer, which waits for its commit, and Bolt's dispatch (it builds some thirty arguments for
every listener it tries) cost 0.15-0.2 ms of it per request on the 2-core VM of bench/slack.py.
In Socket Mode Bolt's listeners call the same functions. Everything else (slash commands,
external-select options, ``url_verification``, other apps' modals) goes through Bolt before the
answer, as Bolt's own adapter does it.

The endpoint checks the signature itself (``v0=HMAC-SHA256(secret, "v0:<ts>:<body>")``, at
most five minutes old; slack_sdk's ``SignatureVerifier``, the one Bolt uses) and answers 401
to a forged or stale request, which reaches no listener. It parses the body once (Slack's
``payload=<JSON>`` form encoding, unquoted by yarl's C parser: ``urllib``'s unquote was the
largest single cost of a request) and hands Bolt the parsed body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from yarl import URL

from bot.acks import FollowUps
from bot.context import ViewAnswer

log = logging.getLogger(__name__)

#: Where Slack sends events, slash commands and interactivity in HTTP mode.
EVENTS_PATH = "/slack/events"

#: Payload types whose answer Slack ignores: answered at once, handled after the answer.
ANSWERED_FIRST = frozenset({"block_actions", "event_callback"})


def parse_body(raw: str, content_type: str | None) -> dict[str, Any]:
    """A request body as Bolt parses it: JSON (events), the JSON of a form's ``payload`` field
    (interactivity), or the form's fields (slash commands, ``ssl_check``). Raises ValueError
    when it is none of them."""
    if not raw:
        return {}
    if content_type == "application/json" or raw.startswith("{"):
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the JSON body is not an object")
        return body
    # dict(...items()): of a repeated field the last one counts, as with urllib's parse_qsl.
    fields = dict(URL("?" + raw, encoded=True).query.items())
    if "payload" in fields:
        payload = json.loads(fields["payload"])
        if not isinstance(payload, dict):
            raise ValueError("the payload is not a JSON object")
        return payload
    return fields


def bolt_request(raw: str, body: dict[str, Any], headers: Mapping[str, str], query: str) -> AsyncBoltRequest:
    """Bolt's request for a body parsed already (``AsyncBoltRequest`` would parse it again)."""
    request = AsyncBoltRequest(body="", query=query, headers=dict(headers))
    request.raw_body = raw
    request.body = body
    request.context = build_async_context(AsyncBoltContext({}), body)
    return request


class SlackEndpoint:
    """The handler of ``POST /slack/events`` (see the module)."""

    def __init__(self, bolt: AsyncApp, signing_secret: str, follow_ups: FollowUps,
                 view_answers: Mapping[str, ViewAnswer] | None = None,
                 at_once: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.bolt = bolt
        self.verifier = SignatureVerifier(signing_secret)
        self.follow_ups = follow_ups
        self.view_answers = view_answers or {}
        #: Which answered-first requests go to Bolt at once rather than after the acks of a
        #: burst: clicks that open a modal, whose trigger id expires 3 s after the click.
        self.at_once = at_once or (lambda _body: False)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(EVENTS_PATH, self.handle)]

    def verified(self, raw: str, headers: Mapping[str, str]) -> bool:
        """Whether Slack signed ``raw`` (with this app's secret, within the last five minutes)."""
        try:
            return self.verifier.is_valid(raw, headers.get("X-Slack-Request-Timestamp"),
                                          headers.get("X-Slack-Signature"))
        except ValueError:  # a timestamp that is not a number
            return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request (each is ``priority.urgent`` until answered: after-ack work waits
        for the answers of a burst)."""
        with self.follow_ups.priority.urgent():
            raw = (await request.read()).decode("utf-8", errors="replace")
            headers, query = request.headers, request.query_string
            if not self.verified(raw, headers):
                if _parsed(raw, request.content_type).get("ssl_check") == "1":
                    return web.Response()  # Slack checking the certificate: unsigned, answered 200
                log.info("slack: refused a request with a bad signature or an old timestamp",
                         extra={"action": "slack_bad_signature"})
                return web.json_response({"error": "invalid request"}, status=401)
            try:
                body = parse_body(raw, request.content_type)
            except ValueError as exc:
                return web.json_response({"error": f"malformed body: {exc}"}, status=400)
            if body.get("type") in ANSWERED_FIRST:
                self.follow_ups.start(lambda: self._after_answer(raw, body, headers, query), f"slack {body['type']}",
                                      defer=not self.at_once(body))
                return web.Response()
            if body.get("type") == "view_submission":
                answer = self.view_answers.get(str((body.get("view") or {}).get("callback_id")))
                user = (body.get("user") or {}).get("id")
                if answer is not None and user:
                    fields = await answer(str(user), body["view"])
                    return web.json_response(fields) if fields else web.Response()
            response = await self.bolt.async_dispatch(bolt_request(raw, body, headers, query))
            return await to_aiohttp_response(response)

    async def _after_answer(self, raw: str, body: dict[str, Any], headers: Mapping[str, str], query: str) -> None:
        response = await self.bolt.async_dispatch(bolt_request(raw, body, headers, query))
        if response.status >= 300:  # Bolt logged why (no listener, or the listener's error)
            log.debug("slack: %s answered %s after its ack", body.get("type"), response.status)


def _parsed(raw: str, content_type: str | None) -> dict[str, Any]:
    try:
        return parse_body(raw, content_type)
    except ValueError:
        return {}
