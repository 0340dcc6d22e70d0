"""What every Slack listener needs: the engine app, the Web API client, settings, user lookup.

``BotContext`` is built once by ``bot.app.build`` and handed to every listener module
(``bot.interactions``, ``bot.commands``, ``bot.home``, ``bot.delivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import store
from bot.acks import FollowUps, Priority
from bot.identity import BotIdentity
from engine import metrics
from engine.ops import tasks as task_ops
from engine.ops.access import Action
from engine.ops.actor import Actor, Edge, Role, role_of
from engine.ops.base import ops_of
from engine.people import actions as people
from engine.settings import Settings
from engine.store.audit import Entry as AuditEntry
from engine.store.db import Database, Row

if TYPE_CHECKING:
    from engine.runtime.app import App
    from engine.store.tasks import Store

#: A Slack user id (``U…`` or ``W…``) as opposed to an email.
USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")


#: A user group id (``S…``), what ``usergroups.users.list`` needs.
USERGROUP_ID_RE = re.compile(r"^S[A-Z0-9]{2,}$")
#: How long a missing ``@handle`` waits before ``usergroups.list`` is asked again (seconds).
HANDLES_REFRESH_SECONDS = 60.0


class UserNotFound(LookupError):
    """Raised when an email matches no Slack user of the workspace."""


class UserGroupNotFound(LookupError):
    """Raised when an ``@handle`` names no user group of the workspace."""


@dataclass
class UserResolver:
    """Email → Slack user id through ``users.lookupByEmail``, cached for the process.

    A value that already is a user id is returned as is; an unknown email raises UserNotFound.
    """

    client: AsyncWebClient
    db: Database | None = None
    cache: dict[str, str] = field(default_factory=dict)
    #: User group handle (lower case, no ``@``) → ``S…`` id, from ``usergroups.list``.
    handles: dict[str, str] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _handles_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _handles_at: float | None = None

    async def user_id(self, who: str) -> str:
        """The Slack user id for ``who`` (an email, ``<@U…>`` or a user id)."""
        who = who.strip()
        mention = re.fullmatch(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>", who)
        if mention:
            return mention.group(1)
        if USER_ID_RE.match(who):
            return who
        key = who.lower()
        if key in self.cache:
            return self.cache[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.cache:
                return self.cache[key]
            if self.db is not None:
                cached = await store.cached_user(self.db, key)
                if cached:
                    self.cache[key] = cached
                    return cached
            try:
                resp = await self.client.users_lookupByEmail(email=who)
            except SlackApiError as exc:
                if exc.response.get("error") == "users_not_found":
                    raise UserNotFound(who) from None
                raise
            user_id = str(resp["user"]["id"])
            self.cache[key] = user_id
            if self.db is not None:
                await store.cache_user(self.db, key, user_id)
            return user_id

    async def user_ids(self, who: list[str]) -> list[str]:
        """User ids for several emails or ids, in order, without duplicates."""
        ids = [await self.user_id(w) for w in who]
        return list(dict.fromkeys(ids))

    async def usergroup_id(self, ref: str) -> str:
        """The ``S…`` id of a user group given as its id, ``@handle`` or ``<!subteam^S…>``.

        Handles are resolved through ``usergroups.list`` (one call lists every group) and
        cached for the process; an unknown handle asks again at most once a minute, then
        raises UserGroupNotFound.
        """
        ref = ref.strip()
        subteam = re.fullmatch(r"<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>", ref)
        if subteam:
            return subteam.group(1)
        if USERGROUP_ID_RE.match(ref):
            return ref
        handle = ref.lstrip("@").lower()
        if handle in self.handles:
            return self.handles[handle]
        async with self._handles_lock:
            if handle not in self.handles:
                now = time.monotonic()
                if self._handles_at is None or now - self._handles_at >= HANDLES_REFRESH_SECONDS:
                    resp = await self.client.usergroups_list(include_disabled=False)
                    self._handles_at = now
                    self.handles = {str(g["handle"]).lower(): str(g["id"])
                                    for g in resp.get("usergroups") or [] if g.get("handle") and g.get("id")}
        if handle not in self.handles:
            raise UserGroupNotFound(ref)
        return self.handles[handle]


#: A modal submission's answer: ``answer(user_id, view)`` → the fields of its ack.
ViewAnswer = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class BotContext:
    """The Slack app's handle on flowbot: engine ``app``, Web API ``client``, ``resolver``."""

    app: App
    client: AsyncWebClient
    resolver: UserResolver
    settings: Settings
    #: Acks before after-ack work (shared by the listeners, the HTTP endpoint and the outbox).
    priority: Priority = field(default_factory=Priority)
    #: Work listeners hand over after their ack (closed with the app).
    follow_ups: FollowUps = field(init=False)
    #: Who flowbot is in Slack (one ``auth.test`` for the process; Bolt's ``authorize``).
    identity: BotIdentity = field(init=False)
    #: flowbot's own modals answered in their ack, by ``callback_id``: ``answer(user_id, view)``
    #: returns the ack's fields (errors, the next view, or nothing: close). The HTTP endpoint
    #: calls them directly; Bolt's listeners (Socket Mode) call the same functions.
    view_answers: dict[str, ViewAnswer] = field(default_factory=dict)
    #: User id -> the id of flowbot's DM channel with them (it never changes): one
    #: ``conversations.open`` per person and process, not one per message.
    dm_channels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.follow_ups = FollowUps(self.priority)
        self.identity = BotIdentity(self.client)

    @property
    def directory(self) -> SlackDirectory:
        """Assignee identities and team membership, for ``engine.people.actions``."""
        return SlackDirectory(self.client, self.resolver)

    @property
    def store(self) -> Store:
        """The engine's task store (shortcut)."""
        return self.app.store


async def slack_actor(ctx: BotContext, user_id: str) -> Actor:
    """A Slack user as the engine's operations see them: an admin when ``FLOWBOT_ADMINS`` names
    them (by user id, or by the email Slack knows them by), else a member, whose rights come
    from the workflows (starters, operators, viewers) and their tasks."""
    role = role_of(user_id, ctx.settings.admins)
    for entry in ctx.settings.admins:
        if role is Role.ADMIN:
            break
        if "@" in entry:  # an email: the workspace's user of that email (cached after the first look-up)
            with contextlib.suppress(UserNotFound):
                if await ctx.resolver.user_id(entry) == user_id:
                    role = Role.ADMIN
    return Actor(user_id, role, Edge.SLACK)


async def authorize(ctx: BotContext, task_id: int, user_id: str, action: Action, *,
                    task: Row | None = None) -> tuple[people.Result, AuditEntry | None]:
    """The engine's access rule for a Slack user's action on a form task (``engine.ops.tasks``):
    COMPLETED (with the audit record to write) or why not."""
    return await task_ops.authorize(ops_of(ctx.app), task_id, await slack_actor(ctx, user_id), action, task=task)


def make_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The Web API client: the bot token, and ``SLACK_API_URL`` when set (tests, proxies). With
    ``session``, every call goes through its pool of kept-alive connections (without one,
    slack_sdk opens a new connection, a TLS handshake with Slack, for each call)."""
    base = settings.slack_api_url or AsyncWebClient.BASE_URL
    if not base.endswith("/"):
        base += "/"
    return AsyncWebClient(token=settings.slack_bot_token, base_url=base, session=session)


def slack_call_metrics() -> aiohttp.TraceConfig:
    """Counts every Web API call of a client session in the engine's metrics, by method (the
    URL's last segment, e.g. ``chat.postMessage``) and HTTP status; 429s count as rate limited."""
    trace = aiohttp.TraceConfig()

    async def ended(_session: aiohttp.ClientSession, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        metrics.slack_call(params.url.path.rsplit("/", 1)[-1], params.response.status)

    async def failed(_session: aiohttp.ClientSession, _ctx: Any,
                     params: aiohttp.TraceRequestExceptionParams) -> None:
        metrics.slack_call(params.url.path.rsplit("/", 1)[-1], "error")

    trace.on_request_end.append(ended)
    trace.on_request_exception.append(failed)
    return trace


def make_context(app: App, client: AsyncWebClient | None = None) -> BotContext:
    """A BotContext for an opened engine app. Without ``client``, one is made on a connection
    pool of its own, closed when the app closes."""
    if client is None:
        session = aiohttp.ClientSession(trace_configs=[slack_call_metrics()])
        app.add_closer(session.close)
        client = make_client(app.settings, session)
    return BotContext(app=app, client=client, resolver=UserResolver(client, app.db), settings=app.settings)


@dataclass
class SlackDirectory:
    """``engine.people.actions.Directory`` over Slack: emails through the resolver, teams through
    ``usergroups.users.list`` (``S…``, or ``@handle`` resolved by ``usergroups.list``) or
    ``conversations.members`` (``C…``)."""

    client: AsyncWebClient
    resolver: UserResolver

    async def identity(self, entry: str) -> str:
        """The Slack user id of an assignee entry (unknown emails stay as they are)."""
        try:
            return await self.resolver.user_id(entry)
        except UserNotFound:
            return entry

    async def aliases(self, person: str) -> set[str]:
        """The other names of ``person`` this workspace knows: an email's user id, a user id's email."""
        return await store.aliases(self.resolver.db, person) if self.resolver.db is not None else set()

    async def members(self, team: str) -> list[str]:
        """The user ids of a user group or channel (UserGroupNotFound for an unknown handle)."""
        team = team.strip()
        ref = team.lstrip("@#")
        if not team.startswith("@") and ref[:1] in ("C", "G") and ref.upper() == ref:
            members: list[str] = []
            cursor = None
            while True:
                resp = await self.client.conversations_members(channel=ref, cursor=cursor, limit=200)
                members.extend(resp.get("members") or [])
                cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    return members
        group = await self.resolver.usergroup_id(team)
        resp = await self.client.usergroups_users_list(usergroup=group)
        return list(resp.get("users") or [])

    async def is_member(self, team: str, actor: str) -> bool:
        """Whether ``actor`` belongs to ``team``."""
        try:
            return actor in await self.members(team)
        except (SlackApiError, UserGroupNotFound):
            return False


def is_channel(team: str) -> bool:
    """Whether a team reference names a channel (its card goes to the channel, not to DMs)."""
    ref = team.strip()
    return ref.startswith("#") or (ref[:1] in ("C", "G") and ref.upper() == ref)
