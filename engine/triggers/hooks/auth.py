"""Per-hook authentication: a bearer token or an HMAC signature of the raw body.

Declared in workflow.py (``workflow.hook("deploy", auth=GitHubAuth("GITHUB_SECRET"))``);
each scheme names the environment variable holding its secret and reads it at verify
time, so secrets never sit in code and a rotated secret needs no reload. Comparisons
are constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import FlowbotError

__all__ = [
    "BearerAuth",
    "GitHubAuth",
    "HmacAuth",
    "HookAuth",
    "HookAuthError",
    "HookConfigError",
    "SlackAuth",
    "StripeAuth",
    "sign_github",
    "sign_hmac",
    "sign_slack",
    "sign_stripe",
]

_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")


class HookAuthError(FlowbotError):
    """Raised when a hook request fails authentication; `reason` says why (for the 401)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class HookConfigError(FlowbotError):
    """Raised when a hook's auth is declared wrongly (e.g. an unknown HMAC algorithm)."""


@dataclass(frozen=True)
class HookAuth(ABC):
    """Base of the hook auth schemes; the secret is read from the variable `secret_env`."""

    secret_env: str

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Return if the request is authentic, else raise HookAuthError with the reason.

        `headers` may be any mapping (names are matched case-insensitively), `body` is
        the raw request body, `now` the current Unix time (for timestamp tolerance).
        """

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """The sender's id for this delivery (same on redelivery), from `Idempotency-Key`."""
        return _lower(headers).get("idempotency-key") or None

    @abstractmethod
    def describe(self) -> str:
        """Human text for `flowbot hooks`, naming the header and the secret's variable."""

    def missing_secret(self) -> str | None:
        """The name of the secret's variable when it is unset or empty, else None."""
        return None if os.environ.get(self.secret_env) else self.secret_env

    def _secret(self) -> bytes:
        value = os.environ.get(self.secret_env)
        if not value:
            raise HookAuthError(f"secret env {self.secret_env} is not set")
        return value.encode()


@dataclass(frozen=True)
class BearerAuth(HookAuth):
    """`Authorization: Bearer <token>`, the token equal to the secret."""

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check the bearer token; see HookAuth.verify."""
        secret = self._secret()
        value = _header(headers, "Authorization")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HookAuthError("Authorization header is not a bearer token")
        if not hmac.compare_digest(token.strip().encode(), secret):
            raise HookAuthError("bearer token mismatch")

    def describe(self) -> str:
        """E.g. "bearer token (Authorization: Bearer, secret from $DEPLOY_TOKEN)"."""
        return f"bearer token (Authorization: Bearer, secret from ${self.secret_env})"


@dataclass(frozen=True)
class HmacAuth(HookAuth):
    """An HMAC of the raw body, hex, in `header` after `prefix` ("X-Signature: sha256=<hex>").

    `delivery_header` names the sender's delivery id header, if it has one; otherwise
    `Idempotency-Key` is used.
    """

    header: str = "X-Signature"
    prefix: str = "sha256="
    algorithm: str = "sha256"
    delivery_header: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHMS:
            raise HookConfigError(
                f'unknown HMAC algorithm "{self.algorithm}" (use one of {", ".join(_ALGORITHMS)})'
            )

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check the body signature; see HookAuth.verify."""
        expected = _hex_hmac(self._secret(), body, self.algorithm)
        _check_prefixed(headers, self.header, self.prefix, expected)

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """`delivery_header` if declared and present, else `Idempotency-Key`."""
        if self.delivery_header:
            found = _lower(headers).get(self.delivery_header.lower())
            if found:
                return found
        return super().delivery_id(headers, body)

    def describe(self) -> str:
        """E.g. "HMAC-SHA256 signature (X-Signature, secret from $HOOK_SECRET)"."""
        return (
            f"HMAC-{self.algorithm.upper()} signature ({self.header}, "
            f"secret from ${self.secret_env})"
        )


@dataclass(frozen=True)
class GitHubAuth(HookAuth):
    """GitHub webhooks: `X-Hub-Signature-256: sha256=<hex>`; delivery id `X-GitHub-Delivery`.

    GitHub redelivers with the same `X-GitHub-Delivery` uuid, so it is the delivery id.
    """

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check the body signature; see HookAuth.verify."""
        expected = _hex_hmac(self._secret(), body, "sha256")
        _check_prefixed(headers, "X-Hub-Signature-256", "sha256=", expected)

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """`X-GitHub-Delivery`, else `Idempotency-Key`."""
        return _lower(headers).get("x-github-delivery") or super().delivery_id(headers, body)

    def describe(self) -> str:
        """E.g. "GitHub signature (X-Hub-Signature-256, secret from $GITHUB_SECRET)"."""
        return f"GitHub signature (X-Hub-Signature-256, secret from ${self.secret_env})"


@dataclass(frozen=True)
class StripeAuth(HookAuth):
    """Stripe webhooks: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`.

    The signed payload is ``f"{t}.{body}"``; any one `v1` matching passes (Stripe sends
    several while a secret is being rolled). The timestamp must be within `tolerance`
    seconds of now, either way, which refuses replays of a captured request.

    Delivery id: the event id (`"id"` of the JSON body, e.g. "evt_..."). Stripe retries
    an event with the same id but a fresh timestamp and signature, so the header cannot
    identify a redelivery; a body that is not a JSON object with an "id" falls back to
    `Idempotency-Key`.
    """

    tolerance: int = 300

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check the signature and the timestamp; see HookAuth.verify."""
        secret = self._secret()
        timestamp, signatures = _parse_stripe_header(_header(headers, "Stripe-Signature"))
        expected = _hex_hmac(secret, timestamp.encode() + b"." + body, "sha256")
        if not any(hmac.compare_digest(expected.encode(), s.lower().encode()) for s in signatures):
            raise HookAuthError("signature mismatch")
        _check_age(int(timestamp), now, self.tolerance)

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """The event id from the JSON body, else `Idempotency-Key`."""
        return _json_field(body, "id") or super().delivery_id(headers, body)

    def describe(self) -> str:
        """E.g. "Stripe signature (Stripe-Signature, 300 s tolerance, secret from $STRIPE_KEY)"."""
        return (
            f"Stripe signature (Stripe-Signature, {self.tolerance} s tolerance, "
            f"secret from ${self.secret_env})"
        )


@dataclass(frozen=True)
class SlackAuth(HookAuth):
    """Slack requests: `X-Slack-Signature: v0=<hex>` of ``v0:{ts}:{body}``.

    `X-Slack-Request-Timestamp` must be within `tolerance` seconds of now (Slack
    recommends five minutes). Delivery id: the Events API `event_id` of a JSON body
    (Slack retries an event with the same id), else `Idempotency-Key`; slash commands
    and interactions carry no id.
    """

    tolerance: int = 300

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check the signature and the timestamp; see HookAuth.verify."""
        secret = self._secret()
        raw_timestamp = _header(headers, "X-Slack-Request-Timestamp").strip()
        signature = _header(headers, "X-Slack-Signature")
        if not raw_timestamp.isdigit():
            raise HookAuthError("X-Slack-Request-Timestamp header is not a Unix timestamp")
        expected = _hex_hmac(secret, b"v0:" + raw_timestamp.encode() + b":" + body, "sha256")
        _compare_prefixed("X-Slack-Signature", signature, "v0=", expected)
        _check_age(int(raw_timestamp), now, self.tolerance)

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """The Events API `event_id`, else `Idempotency-Key`."""
        return _json_field(body, "event_id") or super().delivery_id(headers, body)

    def describe(self) -> str:
        """E.g. "Slack signature (X-Slack-Signature, 300 s tolerance, secret from $SLACK_KEY)"."""
        return (
            f"Slack signature (X-Slack-Signature, {self.tolerance} s tolerance, "
            f"secret from ${self.secret_env})"
        )


# --- signing (for tests, the benchmark and clients of flowbot hooks) ----------------------------


def sign_hmac(
    secret: str | bytes,
    body: bytes,
    *,
    header: str = "X-Signature",
    prefix: str = "sha256=",
    algorithm: str = "sha256",
) -> dict[str, str]:
    """Headers carrying the HMAC signature HmacAuth with the same settings accepts."""
    return {header: prefix + _hex_hmac(_bytes(secret), body, algorithm)}


def sign_github(secret: str | bytes, body: bytes) -> dict[str, str]:
    """Headers GitHub would send for `body`: `X-Hub-Signature-256`."""
    return {"X-Hub-Signature-256": "sha256=" + _hex_hmac(_bytes(secret), body, "sha256")}


def sign_stripe(secret: str | bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers Stripe would send for `body` at Unix time `timestamp`: `Stripe-Signature`."""
    ts = str(int(timestamp))
    signature = _hex_hmac(_bytes(secret), ts.encode() + b"." + body, "sha256")
    return {"Stripe-Signature": f"t={ts},v1={signature}"}


def sign_slack(secret: str | bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers Slack would send for `body` at Unix time `timestamp`."""
    ts = str(int(timestamp))
    signature = _hex_hmac(_bytes(secret), b"v0:" + ts.encode() + b":" + body, "sha256")
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + signature}


# --- helpers ------------------------------------------------------------------------------------


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    # A plain dict is case-sensitive (aiohttp's CIMultiDictProxy is not): normalise once.
    return {name.lower(): value for name, value in headers.items()}


def _header(headers: Mapping[str, str], name: str) -> str:
    value = _lower(headers).get(name.lower())
    if not value:
        raise HookAuthError(f"missing {name} header")
    return value


def _hex_hmac(secret: bytes, message: bytes, algorithm: str) -> str:
    return hmac.new(secret, message, algorithm).hexdigest()


def _bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _check_prefixed(headers: Mapping[str, str], name: str, prefix: str, expected: str) -> None:
    _compare_prefixed(name, _header(headers, name), prefix, expected)


def _compare_prefixed(name: str, value: str, prefix: str, expected: str) -> None:
    value = value.strip()
    if not value.lower().startswith(prefix.lower()):
        raise HookAuthError(f'{name} header does not start with "{prefix}"')
    # Hex is case-insensitive; bytes because compare_digest refuses non-ASCII str.
    given = value[len(prefix) :].strip().lower().encode()
    if not hmac.compare_digest(expected.encode(), given):
        raise HookAuthError("signature mismatch")


def _parse_stripe_header(value: str) -> tuple[str, list[str]]:
    timestamp = ""
    signatures: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t":
            timestamp = item.strip()
        elif key == "v1":
            signatures.append(item.strip())
    if not timestamp.isdigit():
        raise HookAuthError("Stripe-Signature header has no valid timestamp (t=)")
    if not signatures:
        raise HookAuthError("Stripe-Signature header has no v1 signature")
    return timestamp, signatures


def _check_age(timestamp: int, now: float, tolerance: int) -> None:
    age = now - timestamp
    if age > tolerance:
        raise HookAuthError(f"timestamp outside tolerance ({math.ceil(age)} s old)")
    if -age > tolerance:
        raise HookAuthError(f"timestamp outside tolerance ({math.ceil(-age)} s in the future)")


def _json_field(body: bytes, key: str) -> str | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, str) and value else None
