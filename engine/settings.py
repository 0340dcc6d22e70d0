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
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (command-line flags override the environment)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def slack_enabled(self) -> bool:
        """Whether Slack is configured (a bot token plus a signing secret or an app token)."""
        return bool(self.slack_bot_token and (self.slack_signing_secret or self.slack_app_token))

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
