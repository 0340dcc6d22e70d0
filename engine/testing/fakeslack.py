"""A fake Slack Web API on 127.0.0.1 for tests: records every call and answers like Slack (part of
the test kit, ``engine.testing``).

    async with FakeSlack(users={"ann@example.com": "U0ANN"}) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.url)
        await client.chat_postMessage(channel="U0ANN", text="hi")
        assert slack.calls("chat.postMessage")[0].params["text"] == "hi"

It can answer 429 (``rate_limit``) or a Slack error (``fail``) for the next calls of a method.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

#: Parameters slack_sdk may send as JSON text inside a form body.
_JSON_PARAMS = {"blocks", "view", "attachments", "metadata", "unfurls"}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    token: str | None
    json_body: bool
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    #: The client's address and port: calls on one kept-alive connection share it.
    peer: tuple[str, int] | None = None


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class FakeSlack:
    """The fake server. Use as ``async with FakeSlack() as slack`` (or ``start``/``stop``).

    ``users`` maps email → user id (or a full user dict with at least ``id``); channel
    members and user group members are set with ``set_members`` / ``set_usergroup``.
    """

    def __init__(
        self,
        *,
        users: dict[str, str | dict[str, Any]] | None = None,
        team_id: str = "T0FAKE",
        bot_user_id: str = "U0BOT",
        valid_tokens: set[str] | None = None,
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.valid_tokens = valid_tokens
        self.requests: list[Call] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}
        #: User group members by ``S…`` id, and the ids by handle.
        self.usergroups: dict[str, list[str]] = {}
        self.usergroup_handles: dict[str, str] = {}
        #: Messages posted or updated, by (channel, ts).
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        #: Views opened, pushed, updated or published, by view id.
        self.views: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, deque[_Failure]] = defaultdict(deque)
        self._sticky: dict[str, _Failure] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        for email, user in (users or {}).items():
            self.add_user(email, user)

    # --- configuration ---------------------------------------------------------------------

    def add_user(self, email: str | None, user: str | dict[str, Any]) -> dict[str, Any]:
        """Register a user (id or user dict) findable by ``email`` and by id."""
        record: dict[str, Any] = {"id": user} if isinstance(user, str) else dict(user)
        uid = record["id"]
        record.setdefault("team_id", self.team_id)
        record.setdefault("name", uid.lower())
        record.setdefault("real_name", record["name"])
        record.setdefault("tz", "UTC")
        profile = record.setdefault("profile", {})
        if email:
            profile.setdefault("email", email)
        self.users[uid] = record
        return record

    def set_members(self, channel: str, user_ids: list[str]) -> None:
        """Members ``conversations.members`` returns for ``channel``."""
        self.members[channel] = list(user_ids)

    def set_usergroup(self, usergroup: str, user_ids: list[str], *, handle: str | None = None) -> str:
        """A user group and its members; returns its ``S…`` id.

        ``usergroup`` is the group's id (``S0FIN``; its handle is then ``handle`` or the id in
        lower case) or its handle (``staff``/``@staff``: an id is made up). As on Slack,
        ``usergroups.list`` maps handles to ids and ``usergroups.users.list`` takes only ids.
        """
        if re.fullmatch(r"S[A-Z0-9]{2,}", usergroup):
            group_id, handle = usergroup, handle or usergroup.lower()
        else:
            handle = handle or usergroup.lstrip("@")
            group_id = self.usergroup_handles.get(handle) or f"S{next(self._ids):08d}"
        self.usergroups[group_id] = list(user_ids)
        self.usergroup_handles[handle] = group_id
        return group_id

    def rate_limit(self, method: str, times: int = 1, *, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After``."""
        failure = _Failure(
            429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        )
        self._failures[method].extend([failure] * times)

    def fail(self, method: str, error: str = "channel_not_found", times: int | None = 1) -> None:
        """Answer ``{"ok": false, "error": error}`` to the next ``times`` calls of ``method``
        (every call while ``times`` is None, until ``clear_failures``)."""
        failure = _Failure(200, {"ok": False, "error": error}, {})
        if times is None:
            self._sticky[method] = failure
        else:
            self._failures[method].extend([failure] * times)

    def clear_failures(self) -> None:
        """Forget every pending failure."""
        self._failures.clear()
        self._sticky.clear()

    # --- inspection ------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Calls received (of ``method`` only, when given), oldest first."""
        return [c for c in self.requests if method is None or c.method == method]

    @property
    def url(self) -> str:
        """The Web API base URL, for ``AsyncWebClient(base_url=...)`` or ``SLACK_API_URL``."""
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}/api/"

    # --- lifecycle -------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """The routes it serves: the Web API (a subclass may add its own)."""
        app.router.add_route("*", "/api/{method}", self._handle)

    async def start(self) -> Self:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the server ------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], bool]:
        params: dict[str, Any] = dict(request.query)
        is_json = request.content_type == "application/json"
        if is_json:
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                text = value if isinstance(value, str) else str(value)
                if key in _JSON_PARAMS and text[:1] in "[{":
                    try:
                        params[key] = json.loads(text)
                        continue
                    except ValueError:
                        pass
                params[key] = text
        return params, is_json

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, is_json = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else params.get("token")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call = Call(method, params, dict(request.headers), token, is_json,
                    peer=(str(peer[0]), int(peer[1])) if peer else None)
        self.requests.append(call)
        failure = self._next_failure(method)
        if failure is not None:
            call.status, call.response = failure.status, failure.body
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        if not token:
            call.response = {"ok": False, "error": "not_authed"}
        elif self.valid_tokens is not None and token not in self.valid_tokens:
            call.response = {"ok": False, "error": "invalid_auth"}
        else:
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            call.response = handler(params) if handler else {"ok": False, "error": "unknown_method"}
        return web.json_response(call.response)

    def _next_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if queue:
            return queue.popleft()
        return self._sticky.get(method)

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _channel(self, channel: str) -> str:
        # Posting to a user id lands in the DM with that user, as on Slack.
        return "D" + channel if channel[:1] in ("U", "W") else channel

    # --- methods (each returns the JSON body) ----------------------------------------------

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "flowbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": "B0FAKE",
            "is_enterprise_install": False,
        }

    def _api_users_lookupByEmail(self, params: dict[str, Any]) -> dict[str, Any]:
        email = str(params.get("email", "")).lower()
        for user in self.users.values():
            if str(user["profile"].get("email", "")).lower() == email:
                return {"ok": True, "user": user}
        return {"ok": False, "error": "users_not_found"}

    def _api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = params.get("users") or ""
        ids = users if isinstance(users, list) else [u for u in str(users).split(",") if u]
        if not ids:
            return {"ok": False, "error": "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": "D" + "".join(ids)}}

    def _api_conversations_members(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        if channel not in self.members:
            return {"ok": False, "error": "channel_not_found"}
        return {
            "ok": True,
            "members": self.members[channel],
            "response_metadata": {"next_cursor": ""},
        }

    def _api_usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        groups = []
        for handle, group_id in self.usergroup_handles.items():
            group: dict[str, Any] = {
                "id": group_id, "team_id": self.team_id, "is_usergroup": True, "name": handle.title(),
                "description": "", "handle": handle, "is_external": False, "date_delete": 0,
                "user_count": len(self.usergroups[group_id]),
            }
            if str(params.get("include_users")).lower() in ("true", "1"):
                group["users"] = list(self.usergroups[group_id])
            groups.append(group)
        return {"ok": True, "usergroups": groups}

    def _api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        # Only an ``S…`` id names a group here: a handle is refused, as by Slack.
        group = str(params.get("usergroup"))
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.usergroups[group]}

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        channel, ts = self._channel(str(params["channel"])), self._next_ts()
        message = {
            "type": "message",
            "user": self.bot_user_id,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": params.get("blocks", []),
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (self._channel(str(params.get("channel"))), str(params.get("ts")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        message = self.messages[key]
        message.update({k: params[k] for k in ("text", "blocks") if k in params})
        return {
            "ok": True,
            "channel": key[0],
            "ts": key[1],
            "text": message["text"],
            "message": message,
        }

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel") or not params.get("user"):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _store_view(self, view: Any, view_id: str | None = None) -> dict[str, Any]:
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        view_id = view_id or f"V{next(self._ids):08d}"
        stored = {
            **view,
            "id": view_id,
            "team_id": self.team_id,
            "state": {"values": {}},
            "hash": f"h{next(self._ids)}",
        }
        self.views[view_id] = stored
        return {"ok": True, "view": stored}

    def _api_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id") and not params.get("interactivity_pointer"):
            return {"ok": False, "error": "invalid_trigger_id"}
        return self._store_view(params.get("view"))

    _api_views_push = _api_views_open

    def _api_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = params.get("view_id")
        if not view_id and params.get("external_id"):
            view_id = next(
                (
                    vid
                    for vid, v in self.views.items()
                    if v.get("external_id") == params["external_id"]
                ),
                None,
            )
        if not view_id or view_id not in self.views:
            return {"ok": False, "error": "not_found"}
        return self._store_view(params.get("view"), str(view_id))

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("user_id"):
            return {"ok": False, "error": "invalid_arguments"}
        home_id = next(
            (
                vid
                for vid, v in self.views.items()
                if v.get("type") == "home" and v.get("user") == params["user_id"]
            ),
            None,
        )
        result = self._store_view(params.get("view"), home_id)
        if result["ok"]:
            result["view"]["user"] = params["user_id"]
        return result
