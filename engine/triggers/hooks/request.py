"""What a hook stage sees (``HookRequest``) and may return (``HookResponse``).

A hook's ``run(request, ctx)`` gets the request already read, authenticated and parsed, so a sync
stage needs no ``await``: ``request.data`` is the parsed body (a JSON value, or a dict of form
fields), ``request.body`` the raw bytes the signature was checked on. It returns a dict or list
(JSON with 200), a str (text/plain with 200), None (200 ``{"ok": true, "run_ids": [...]}``) or a
``HookResponse`` for any other status, headers or body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy, MultiMapping

__all__ = ["HookFile", "HookRequest", "HookResponse"]


@dataclass(frozen=True)
class HookFile:
    """A file part of a ``multipart/form-data`` body."""

    name: str
    filename: str | None
    content_type: str
    content: bytes

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return len(self.content)


@dataclass(frozen=True)
class HookRequest:
    """One authenticated HTTP request to a hook, read whole and parsed.

    - ``method``, ``path`` (the hook's path, no ``/hooks/`` prefix), ``query``, ``headers``
      (case-insensitive), ``body`` (raw bytes), ``content_type`` (without parameters).
    - ``data``: JSON bodies parsed; form-urlencoded and multipart bodies as a dict of their text
      fields (first value of each name; all of them in ``form``); text bodies as str; None for
      an empty body or a type flowbot does not parse (read ``body``).
    - ``form``: every field of a form-urlencoded or multipart body; ``files``: multipart files.
    - ``delivery_id``: the sender's id for this delivery (``Idempotency-Key`` or the auth
      preset's own, e.g. ``X-GitHub-Delivery``), None if it sent none.
    """

    method: str
    path: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    body: bytes
    content_type: str
    data: Any = None
    form: MultiMapping[str] = field(default_factory=lambda: MultiDictProxy(MultiDict()))
    files: dict[str, HookFile] = field(default_factory=dict)
    delivery_id: str | None = None
    remote: str | None = None

    @property
    def text_body(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The parsed JSON body (aiohttp's spelling, for async stages); same as ``data``."""
        return self.data if self.data is not None or not self.body else json.loads(self.body)

    async def text(self) -> str:
        """The body as text (aiohttp's spelling)."""
        return self.text_body

    async def read(self) -> bytes:
        """The raw body (aiohttp's spelling)."""
        return self.body

    def __repr__(self) -> str:
        return f"<HookRequest {self.method} /hooks/{self.path} {len(self.body)} bytes>"


@dataclass
class HookResponse:
    """A hook's response when a dict is not enough: any status, headers and body.

    Give ``json=`` (serialised, ``application/json``) or ``body=`` (str or bytes, with
    ``content_type``, default ``text/plain``). A status of 400 or more means the request was
    refused: what the stage sent is discarded and the delivery is not recorded (a redelivery
    runs the stage again).
    """

    status: int = 200
    json: Any = None
    body: str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError(f"HookResponse status must be an HTTP status (100-599), got {self.status!r}")
        if self.json is not None and self.body is not None:
            raise ValueError("HookResponse takes json= or body=, not both")

    def render(self) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body bytes) as sent (and stored for redeliveries)."""
        headers = {str(k): str(v) for k, v in self.headers.items()}
        if self.json is not None:
            body = json.dumps(self.json, separators=(",", ":")).encode()
            ctype = self.content_type or "application/json"
        elif isinstance(self.body, str):
            body = self.body.encode()
            ctype = self.content_type or "text/plain; charset=utf-8"
        else:
            body = self.body or b""
            ctype = self.content_type or ("application/octet-stream" if body else "")
        if ctype and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = ctype
        return self.status, headers, body
