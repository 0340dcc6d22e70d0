"""What every ``/api`` handler reads from a request: the acting person, the JSON body, a limit."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.errors import PayloadError
from engine.ops.actor import Actor

#: Where the acting person of a request is kept (set once by the API's auth middleware).
ACTOR: web.RequestKey[Actor] = web.RequestKey("actor", Actor)


def limit(raw: str | None) -> int:
    """A ``limit`` query value: 100 when absent, clamped to 1..1000; 400 when not a number."""
    if raw is None:
        return 100
    try:
        return max(1, min(int(raw), 1000))
    except ValueError:
        raise PayloadError(f"limit must be a number, got {raw!r}") from None


async def json_body(request: web.Request) -> Any:
    """The request body as JSON ({} when empty); 400 when it is not JSON."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
