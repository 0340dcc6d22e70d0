"""Rendering: the Jinja2 environment (autoescaping on), filters, and HTML-or-JSON responses.

Every page has a JSON twin: the same handler answers ``?format=json`` (or ``Accept:
application/json``) with the data it would have rendered.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from engine.web.console.session import viewer_of

STATIC = Path(__file__).parent / "static"
#: Bumped with the static files, so browsers fetch the new ones.
STATIC_VERSION = "2"


def ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago ``moment`` was, for people ("3 min ago")."""
    if moment is None:
        return ""
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((now - moment).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """The time between two moments ("120 ms", "3.4 s", "2 h 5 min")."""
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 10:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 600:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def pretty(value: Any) -> str:
    """A JSON value indented for reading (the template escapes it)."""
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def setup(console: web.Application) -> None:
    """Templates and static files of the console sub-application."""
    env = aiohttp_jinja2.setup(
        console, loader=jinja2.PackageLoader("engine.web.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    )
    env.filters.update(ago=ago, duration=duration, pretty=pretty)
    env.globals["static"] = lambda name: f"/console/static/{name}?v={STATIC_VERSION}"
    console.router.add_static("/static", STATIC, name="static", append_version=False)


def wants_json(request: web.Request) -> bool:
    """Whether the client asked for the page's JSON twin."""
    if request.query.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def page(request: web.Request, template: str, context: dict[str, Any], *, data: Any = None,
         status: int = 200) -> web.Response:
    """The page (or its JSON twin: ``data``, else the context minus what is only for HTML)."""
    if wants_json(request):
        body = data if data is not None else {k: v for k, v in context.items() if not k.startswith("_")}
        return web.json_response(body, status=status, dumps=_dumps)
    context = {"viewer": viewer_of(request), **context}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def message(request: web.Request, heading: str, text: str, *, status: int = 200, kind: str = "info",
            back: str | None = None) -> web.Response:
    """A page that says one thing (refusals, confirmations)."""
    return page(request, "message.html", {"heading": heading, "text": text, "kind": kind, "back": back},
                data={"error" if status >= 400 else "message": text}, status=status)
