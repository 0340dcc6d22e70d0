"""The CLI against a remote flowbot (``FLOWBOT_URL``): the same operations through its API,
as the person of ``FLOWBOT_TOKEN`` (or as ``--as`` with the admin token)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError, DatabaseError, Refused


@dataclass
class Remote:
    """A flowbot server's ``/api`` and the token to call it with."""

    url: str
    token: str
    as_: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, as_: str | None = None) -> Remote | None:
        """The remote server ``FLOWBOT_URL`` names (None: act on the local database)."""
        url = os.environ.get("FLOWBOT_URL", "").strip()
        if not url:
            return None
        token = os.environ.get("FLOWBOT_TOKEN") or os.environ.get("FLOWBOT_API_TOKEN") or ""
        if not token:
            raise ConfigError("FLOWBOT_URL is set but FLOWBOT_TOKEN is not: the server needs a token "
                              "(`flowbot tokens create --user EMAIL` on the server)")
        return cls(url.rstrip("/"), token, as_)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> Any:
        """One API call; a refusal raises Refused with the server's reason (and status)."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = f"{self.url}/api{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if self.as_:
            headers["X-Flowbot-As"] = self.as_
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(target, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {"error": raw.decode(errors="replace")[:200] or exc.reason}
            if exc.code == 503:
                raise DatabaseError(f"{self.url}: {answer.get('error')} (try again later)") from None
            refused = Refused(str(answer.get("error")), **{k: v for k, v in answer.items() if k != "error"})
            refused.status = exc.code
            raise refused from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None
