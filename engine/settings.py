"""One typed settings object, read from the environment at the entry point and passed down."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.errors import ConfigError

#: Largest JSON payload a task may carry (bytes of its JSON text).
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
#: Largest HTTP request body flowbot reads (API and hooks).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def check_port(port: int, name: str = "PORT") -> int:
    """``port`` when it is a TCP port number (1-65535); else a ConfigError naming ``name``."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be a port number between 1 and 65535, got {port}")
    return port


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    """A number of seconds from ``env``: positive (or zero too, with ``zero=True``)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name} must be {'zero or more' if zero else 'positive'}, got {raw}")
    return value


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Seconds from a duration ("24h", "30m", "2d") or a number of seconds."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    from engine.durations import parse_duration

    try:
        duration = parse_duration(float(raw) if raw.replace(".", "", 1).isdigit() else raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if duration.business_days:
        raise ConfigError(f"{name} must be a plain duration like \"24h\", got {raw!r}")
    return duration.seconds


def _days(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A number of days; ``0``, ``off`` or ``never`` keep forever (None)."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "off", "never"):
        return None
    return _int(env, name, default or 0)


def _people(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A list of people (emails or Slack user ids) separated by commas or spaces; emails lower-cased."""
    found = []
    for word in (env.get(name) or "").replace(",", " ").split():
        if "@" not in word and not (word[:1] in ("U", "W") and word.isalnum() and word.upper() == word):
            raise ConfigError(f"{name} lists emails or Slack user ids, got {word!r}")
        found.append(word.lower() if "@" in word else word)
    return tuple(found)


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("FLOWBOT_LOG_FORMAT") or "text").strip().lower()
    if value not in ("text", "json"):
        raise ConfigError(f"FLOWBOT_LOG_FORMAT must be text or json, got {value!r}")
    return value


#: Finished runs are kept this many days by default (``FLOWBOT_RETENTION_DAYS``).
DEFAULT_RETENTION_DAYS = 30
#: Hook delivery ids are remembered this many days: redeliveries inside it are replayed.
DEFAULT_HOOK_DELIVERY_DAYS = 7
#: Job fire records are kept this many days (each job's latest always).
DEFAULT_JOB_FIRE_DAYS = 90


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one flowbot process."""

    database_url: str | None = None
    #: A direct connection for LISTEN when ``database_url`` is a transaction pooler's
    #: (``FLOWBOT_LISTEN_URL``); None: LISTEN on ``database_url`` itself, or poll only behind one.
    listen_url: str | None = None
    home: Path = Path(".flowbot")
    stages_dir: Path = Path("stages")
    port: int = 8080
    #: The address the HTTP server binds (``FLOWBOT_HOST``): loopback unless told otherwise.
    host: str = "127.0.0.1"
    api_token: str | None = None
    lease_seconds: int = 30
    concurrency: int = 200
    threads: int = 32
    #: Reminder delay (seconds) of form stages without ``remind_after=``; None: no default reminders.
    remind_after: int | None = None
    #: Seconds between passes looking for due reminders and escalations.
    reminder_interval: int = 60
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Largest hook request body (``FLOWBOT_HOOK_MAX_BYTES``); a hook may lower it with ``max_bytes=``.
    hook_max_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Seconds between the polls of idle workers and the outbox (``FLOWBOT_POLL_INTERVAL``): the
    #: fallback for a lost wake-up, and the only way to find work in poll-only mode.
    poll_interval: float = 5.0
    #: How long stopping waits for running stages before releasing their tasks (seconds).
    shutdown_grace: float = 20.0
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str | None = None
    #: How late (seconds) a missed job fire may still run when a scheduler starts; else skipped.
    job_misfire_grace: int = 3600
    #: How long (seconds) an event is kept for waits that begin after it (``FLOWBOT_EVENT_LOOKBACK``).
    event_lookback: float = 86400.0
    #: Days finished runs are kept (None: forever); see ``engine.store.retention``.
    retention_days: int | None = DEFAULT_RETENTION_DAYS
    #: Days hook delivery ids are kept (the idempotency window; None: forever).
    hook_delivery_days: int | None = DEFAULT_HOOK_DELIVERY_DAYS
    #: Days job fire records are kept (None: forever).
    job_fire_days: int | None = DEFAULT_JOB_FIRE_DAYS
    #: Seconds between retention passes in `flowbot run` and `flowbot worker`.
    purge_interval: int = 3600
    #: Runs deleted per retention batch (one short transaction each).
    purge_batch: int = 500
    #: Log lines as ``text`` (default) or ``json`` (one object a line).
    log_format: str = "text"
    #: A port serving only ``/metrics`` from any flowbot process (workers too); None: only the HTTP
    #: server's ``/metrics``.
    metrics_port: int | None = None
    #: SMTP server for email to people outside Slack (``smtp://user:pass@host:port``; ``smtps://``
    #: for TLS from the start, ``?starttls=1`` to upgrade) and the sender address.
    smtp_url: str | None = None
    mail_from: str | None = None
    #: OpenID Connect sign-in to the console (issuer URL, client id and secret).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    #: The ID-token claim that makes an OIDC sign-in an admin (``FLOWBOT_OIDC_ADMIN_CLAIM``):
    #: ``name`` (the claim is true) or ``name=value`` (the claim is, or is a list holding, value).
    oidc_admin_claim: str | None = None
    #: People who are console admins however they sign in (``FLOWBOT_ADMINS``: emails or Slack
    #: user ids, separated by commas or spaces).
    admins: tuple[str, ...] = ()
    #: The console's address as people reach it (links in emails and Slack DMs); defaults to
    #: ``http://<host>:<port>``.
    public_url: str | None = None
    #: Key signing console cookies and links; generated once into the home dir when unset.
    secret_key: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment (``os.environ`` by default)."""
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            listen_url=env.get("FLOWBOT_LISTEN_URL") or None,
            home=Path(env.get("FLOWBOT_HOME") or ".flowbot"),
            stages_dir=Path(env.get("FLOWBOT_STAGES") or "stages"),
            port=check_port(_int(env, "PORT", 8080)),
            host=env.get("FLOWBOT_HOST") or "127.0.0.1",
            shutdown_grace=_seconds(env, "FLOWBOT_SHUTDOWN_GRACE", 20.0, zero=True),
            api_token=env.get("FLOWBOT_API_TOKEN") or None,
            lease_seconds=_int(env, "FLOWBOT_LEASE_SECONDS", 30),
            concurrency=_int(env, "FLOWBOT_CONCURRENCY", 200),
            threads=_int(env, "FLOWBOT_THREADS", 32),
            remind_after=_int(env, "FLOWBOT_REMIND_AFTER", 0) or None,
            reminder_interval=_int(env, "FLOWBOT_REMINDER_INTERVAL", 60),
            max_payload_bytes=_int(env, "FLOWBOT_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES),
            max_body_bytes=_int(env, "FLOWBOT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            hook_max_bytes=_int(env, "FLOWBOT_HOOK_MAX_BYTES", DEFAULT_MAX_BODY_BYTES),
            poll_interval=_seconds(env, "FLOWBOT_POLL_INTERVAL", 5.0),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL") or None,
            job_misfire_grace=_int(env, "FLOWBOT_JOB_MISFIRE_GRACE", 3600),
            event_lookback=_duration(env, "FLOWBOT_EVENT_LOOKBACK", 86400.0),
            retention_days=_days(env, "FLOWBOT_RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
            hook_delivery_days=_days(env, "FLOWBOT_HOOK_DELIVERY_DAYS", DEFAULT_HOOK_DELIVERY_DAYS),
            job_fire_days=_days(env, "FLOWBOT_JOB_FIRE_DAYS", DEFAULT_JOB_FIRE_DAYS),
            purge_interval=_int(env, "FLOWBOT_PURGE_INTERVAL", 3600),
            purge_batch=_int(env, "FLOWBOT_PURGE_BATCH", 500),
            log_format=_log_format(env),
            metrics_port=_int(env, "FLOWBOT_METRICS_PORT", 1) if env.get("FLOWBOT_METRICS_PORT") else None,
            smtp_url=env.get("SMTP_URL") or None,
            mail_from=env.get("FLOWBOT_MAIL_FROM") or None,
            oidc_issuer=env.get("FLOWBOT_OIDC_ISSUER") or None,
            oidc_client_id=env.get("FLOWBOT_OIDC_CLIENT_ID") or None,
            oidc_client_secret=env.get("FLOWBOT_OIDC_CLIENT_SECRET") or None,
            oidc_admin_claim=(env.get("FLOWBOT_OIDC_ADMIN_CLAIM") or "").strip() or None,
            admins=_people(env, "FLOWBOT_ADMINS"),
            public_url=(env.get("FLOWBOT_PUBLIC_URL") or "").rstrip("/") or None,
            secret_key=env.get("FLOWBOT_SECRET_KEY") or None,
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (command-line flags override the environment)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def slack_enabled(self) -> bool:
        """Whether Slack is configured (a bot token plus a signing secret or an app token)."""
        return bool(self.slack_bot_token and (self.slack_signing_secret or self.slack_app_token))

    @property
    def mail_enabled(self) -> bool:
        """Whether email can be sent (an SMTP server and a sender address)."""
        return bool(self.smtp_url and self.mail_from)

    @property
    def oidc_enabled(self) -> bool:
        """Whether console sign-in through an OpenID Connect provider is configured."""
        return bool(self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret)

    def base_url(self) -> str:
        """Where people reach this flowbot (links in emails and DMs)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def resolve_secret_key(self) -> str:
        """The key signing console sessions and links: from the environment, else generated once
        into the home dir (every process sharing the home dir signs alike)."""
        if self.secret_key:
            return self.secret_key
        path = self.home / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
        return path.read_text().strip()

    def resolve_api_token(self, *, create: bool = True) -> str | None:
        """The API bearer token: from the environment, else generated once into the home dir."""
        if self.api_token:
            return self.api_token
        path = self.home / "api_token"
        if path.exists():
            return path.read_text().strip()
        if not create:
            return None
        self.home.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token
