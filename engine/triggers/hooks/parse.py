"""Hook request bodies: which content types a hook accepts, and parsing them.

JSON (``application/json`` and ``*/*+json``), ``application/x-www-form-urlencoded`` and
``multipart/form-data`` are parsed; ``text/*`` is decoded. A malformed body raises ``BodyError``
with the parser's own message (the 400 says it).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from multidict import MultiDict

from engine.errors import FlowbotError
from engine.triggers.hooks.request import HookFile

#: What a hook accepts when it does not say (``accept=`` on ``workflow.hook``).
DEFAULT_ACCEPT: tuple[str, ...] = (
    "application/json",
    "application/*+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
)

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class BodyError(FlowbotError):
    """Raised when a hook request body cannot be parsed as its content type says."""


@dataclass
class Parsed:
    """A parsed body: ``data`` for the stage, form fields and files when it was a form."""

    data: Any = None
    form: MultiDict[str] = field(default_factory=MultiDict)
    files: dict[str, HookFile] = field(default_factory=dict)


def split_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``"Application/JSON; charset=utf-8"`` -> ``("application/json", {"charset": "utf-8"})``."""
    if not value:
        return "", {}
    mime, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, item = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = item.strip().strip('"')
    return mime.strip().lower(), params


def accepts(accept: Sequence[str], mime: str) -> bool:
    """Whether ``mime`` matches one of ``accept`` (``*/*``, ``text/*``, ``application/*+json``)."""
    major, _, minor = mime.partition("/")
    for pattern in accept:
        p = pattern.strip().lower()
        p_major, _, p_minor = p.partition("/")
        if p in ("*/*", mime) or (p_minor == "*" and p_major == major):
            return True
        if p_minor.startswith("*+") and p_major in (major, "*") and minor.endswith(p_minor[1:]):
            return True
    return False


def is_json(mime: str) -> bool:
    """JSON media types: ``application/json`` and any ``+json`` suffix."""
    return mime == "application/json" or mime.endswith("+json")


async def parse(body: bytes, mime: str, params: Mapping[str, str], raw_content_type: str) -> Parsed:
    """Parse ``body`` by its media type; raises BodyError for a malformed one."""
    if not body:
        return Parsed()
    if is_json(mime):
        try:
            return Parsed(data=json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BodyError(f"malformed JSON body: {exc}") from None
    if mime == FORM:
        return _parse_form(body, params.get("charset") or "utf-8")
    if mime == MULTIPART:
        return await _parse_multipart(body, raw_content_type)
    if mime.startswith("text/"):
        return Parsed(data=_decode(body, params.get("charset") or "utf-8", "text"))
    return Parsed()


def _decode(body: bytes, charset: str, what: str) -> str:
    try:
        return body.decode(charset)
    except LookupError:
        raise BodyError(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise BodyError(f"malformed {what} body: not {charset}: {exc}") from None


def _parse_form(body: bytes, charset: str) -> Parsed:
    text = _decode(body, charset, "form")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                                       encoding=charset, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(f"malformed form body: {exc}") from None
    form: MultiDict[str] = MultiDict(pairs)
    return Parsed(data=_first_values(form), form=form)


def _first_values(form: MultiDict[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for key, value in form.items():
        data.setdefault(key, value)
    return data


async def _parse_multipart(body: bytes, raw_content_type: str) -> Parsed:
    from aiohttp import BodyPartReader, MultipartReader
    from aiohttp.base_protocol import BaseProtocol
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.streams import StreamReader

    _, params = split_content_type(raw_content_type)
    if not params.get("boundary"):
        raise BodyError("malformed multipart body: the Content-Type has no boundary")
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    stream.feed_data(body)
    stream.feed_eof()
    reader = MultipartReader({"Content-Type": raw_content_type}, stream)
    parsed = Parsed()
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise BodyError("malformed multipart body: nested multipart parts are not supported")
            name = part.name
            if name is None:
                raise BodyError("malformed multipart body: a part has no name (Content-Disposition)")
            content = bytes(await part.read(decode=True))
            if part.filename is not None:
                ctype = part.headers.get("Content-Type", "application/octet-stream")
                parsed.files[name] = HookFile(name, part.filename, ctype, content)
            else:
                charset = part.get_charset(default="utf-8")
                parsed.form.add(name, _decode(content, charset, "multipart field"))
    except BodyError:
        raise
    except HttpProcessingError as exc:
        raise BodyError(f"malformed multipart body: {exc.message.strip()}") from None
    except (ValueError, RuntimeError, AssertionError, LookupError, asyncio.IncompleteReadError) as exc:
        raise BodyError(f"malformed multipart body: {exc or type(exc).__name__}") from None
    parsed.data = _first_values(parsed.form)
    return parsed
