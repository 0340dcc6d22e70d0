"""Wait stages and timers as the authoring layer sees them: declarations checked, keys filled, due
times resolved. No database here (``engine.store.waits`` does the matching).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from engine.durations import Duration, parse_duration
from engine.errors import PayloadError

#: The event a ``wait_for_children`` stage waits for; its key is the run's own id.
CHILDREN_EVENT = "flowbot.children"
#: The task type a ``wait_for_children`` stage sends when every child run has finished.
CHILDREN_FINISHED = "children.finished"
EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$")
KEY_TEMPLATE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
MAX_KEY_LENGTH = 500


def check_event_name(name: Any) -> str | None:
    """A problem with an event name, or None."""
    if not isinstance(name, str) or not EVENT_NAME_RE.match(name):
        return (f"event name must be letters, digits and . _ : / - (at most 200), starting with a letter or "
                f"digit, got {name!r}")
    return None


def check_key(key: Any) -> str | None:
    """A problem with an event key, or None."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        return f"event key must be a non-empty string of at most {MAX_KEY_LENGTH} characters, got {key!r}"
    return None


def check_wait(name: str, *, event: Any, key: Any, timeout: Any, on_timeout: Any,
               children: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The options of a wait stage, and the problems of its declaration."""
    problems = []
    if (problem := check_event_name(event)) is not None:
        problems.append(f'wait "{name}": {problem}')
    if (problem := check_key(key)) is not None:
        problems.append(f'wait "{name}": key= {problem.removeprefix("event key ")}')
    parsed: Duration | None = None
    if timeout is not None:
        try:
            parsed = parse_duration(timeout)
        except ValueError as exc:
            problems.append(f'wait "{name}": timeout= {exc}')
    if on_timeout is not None:
        if not isinstance(on_timeout, str) or not on_timeout:
            problems.append(f'wait "{name}": on_timeout= must be a task type (a string), got {on_timeout!r}')
        elif timeout is None:
            problems.append(f'wait "{name}": on_timeout= needs timeout=')
    options = {"event": event, "key": key, "timeout": parsed, "on_timeout": on_timeout, "children": children}
    return options, problems


def fill_key(template: str, payload: dict[str, Any], *, where: str) -> str:
    """The key of a wait for one task: ``{payload_key}`` (dotted paths too) filled from its payload."""

    def repl(m: re.Match[str]) -> str:
        value: Any = payload
        for part in m.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise PayloadError(f"{where}: key {template!r}: the payload has no {m.group(1)!r}")
            value = value[part]
        return str(value)

    key = KEY_TEMPLATE_RE.sub(repl, template)
    if (problem := check_key(key)) is not None:
        raise PayloadError(f"{where}: {problem}")
    return key


@dataclass(frozen=True)
class Due:
    """When a sent task becomes claimable: an instant, or a duration after the commit that sends it."""

    at: dt.datetime | None = None
    delay: Duration | None = None

    def resolve(self, now: dt.datetime, timezone: str = "UTC") -> dt.datetime:
        """The instant, given the commit's ``now`` and the workflow's timezone."""
        if self.at is not None:
            return self.at
        assert self.delay is not None
        return self.delay.after(now, timezone)


def due(delay: Any, at: Any, *, where: str) -> Due | None:
    """A send's ``delay=`` / ``at=`` as a Due (None when neither), or a PayloadError naming ``where``."""
    if delay is None and at is None:
        return None
    if delay is not None and at is not None:
        raise PayloadError(f"{where}: give delay= or at=, not both")
    if at is not None:
        if not isinstance(at, dt.datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise PayloadError(f"{where}: at= must be a timezone-aware datetime, got {at!r}")
        return Due(at=at.astimezone(dt.UTC))
    try:
        return Due(delay=parse_duration(delay))
    except ValueError as exc:
        raise PayloadError(f"{where}: delay= {exc}") from None
