"""Who is looking at the console: a signed session cookie, the viewer it names, CSRF tokens.

The cookie holds ``{person, role, csrf, exp}`` signed with HMAC-SHA256 (the secret key of
``Settings.resolve_secret_key``); nothing secret is in it, and nothing server-side is needed to
read it, so any number of web processes sharing the key agree on who is signed in. It is
HttpOnly, SameSite=Lax, and Secure when the console is reached over https. Every visitor gets
one (signed out: no person), so the sign-in form has a CSRF token too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

COOKIE = "flowbot_session"
#: A session lasts this long after sign-in.
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "_csrf"
CSRF_HEADER = "X-CSRF-Token"



@dataclass
class Viewer:
    """The person a request comes from (``person`` None: signed out) and their session's CSRF token."""

    person: str | None
    role: str = "member"
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: int = 0
    #: Set when the cookie must be (re)written in the response.
    dirty: bool = False

    @property
    def signed_in(self) -> bool:
        """Whether someone is signed in."""
        return self.person is not None

    @property
    def is_admin(self) -> bool:
        """Whether the viewer may do everything."""
        return self.signed_in and self.role == "admin"


VIEWER_KEY: web.RequestKey[Viewer] = web.RequestKey("console.viewer", Viewer)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks cookie values with one key."""

    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(("flowbot.console.session:" + key).encode()).digest()

    def sign(self, data: dict[str, object]) -> str:
        """``data`` as a signed cookie value."""
        body = _b64(json.dumps(data, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        return f"{body}.{mac}"

    def unsign(self, value: str) -> dict[str, object] | None:
        """The data of a cookie value, or None when it is not one this key signed."""
        body, _, mac = value.partition(".")
        if not body or not mac:
            return None
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            data = json.loads(_unb64(body))
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None


def read(request: web.Request, signer: Signer) -> Viewer:
    """The viewer of a request (a fresh signed-out one when the cookie is missing, bad or old)."""
    data = signer.unsign(request.cookies.get(COOKIE, ""))
    now = int(time.time())
    if data is None or not isinstance(data.get("csrf"), str):
        return Viewer(None, dirty=True)
    expires = int(data.get("exp") or 0)  # type: ignore[call-overload]
    person = data.get("person")
    if not isinstance(person, str) or expires <= now:
        return Viewer(None, csrf=str(data["csrf"]), dirty=person is not None)
    return Viewer(person, str(data.get("role") or "member"), str(data["csrf"]), expires)


def sign_in(viewer: Viewer, person: str, role: str) -> None:
    """Make ``viewer`` signed in as ``person`` (a new CSRF token: the old one was seen signed out)."""
    # An email names one person however it is capitalised.
    viewer.person, viewer.role = (person.lower() if "@" in person else person), role
    viewer.csrf = secrets.token_urlsafe(24)
    viewer.expires = int(time.time()) + SESSION_SECONDS
    viewer.dirty = True


def sign_out(viewer: Viewer) -> None:
    """Forget who ``viewer`` was."""
    viewer.person, viewer.role, viewer.expires = None, "member", 0
    viewer.csrf = secrets.token_urlsafe(24)
    viewer.dirty = True


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over https (directly or through a proxy saying so)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def write(response: web.StreamResponse, request: web.Request, viewer: Viewer, signer: Signer) -> None:
    """Set the session cookie on ``response`` when it changed."""
    if not viewer.dirty or response.prepared:
        return
    data: dict[str, object] = {"csrf": viewer.csrf}
    if viewer.person:
        data.update(person=viewer.person, role=viewer.role, exp=viewer.expires)
    response.set_cookie(COOKIE, signer.sign(data), path="/console", httponly=True, samesite="Lax",
                        secure=is_https(request), max_age=SESSION_SECONDS)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Requests that change nothing (no CSRF token needed).
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def middleware(signer: Signer) -> Any:
    """Read the viewer, refuse a state-changing request without the session's CSRF token, and write
    the cookie back when it changed."""

    @web.middleware
    async def session(request: web.Request, handler: Handler) -> web.StreamResponse:
        viewer = read(request, signer)
        request[VIEWER_KEY] = viewer
        if request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER)
            if given is None and request.content_type in ("application/x-www-form-urlencoded",
                                                          "multipart/form-data"):
                given = str((await request.post()).get(CSRF_FIELD) or "")
            if viewer.dirty and viewer.person is None and not request.cookies.get(COOKIE):
                given = None  # no session at all: nothing to compare with
            if not given or not hmac.compare_digest(given, viewer.csrf):
                response: web.StreamResponse = web.Response(
                    status=403, text="Refused: this form has no valid CSRF token (reload the page and try again).")
                write(response, request, viewer, signer)
                return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            write(exc, request, viewer, signer)
            raise
        write(response, request, viewer, signer)
        return response

    return session


def viewer_of(request: web.Request) -> Viewer:
    """The viewer the session middleware read."""
    return request[VIEWER_KEY]


SIGNER_KEY: web.AppKey[Signer] = web.AppKey("console.signer", Signer)
