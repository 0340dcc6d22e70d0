"""What a stage sees: the read-only ``task`` and the ``ctx`` it sends tasks and effects through.

Nothing here touches the database: a stage's sends, context changes, log lines and Slack effects
are buffered in an ``Outcome`` and committed atomically with the task's completion
(``engine.commit``). A stage that raises therefore sends nothing.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import PayloadError, PayloadTooLarge
from engine.waiting import Due, check_event_name, check_key, due

log = logging.getLogger(__name__)


def encode_payload(payload: Any, *, limit: int, where: str) -> str:
    """A JSON-object payload within the size limit, as compact JSON text; else a PayloadError
    naming ``where``."""
    if not isinstance(payload, dict):
        raise PayloadError(f"{where}: payload must be a JSON object (a dict), got {type(payload).__name__}")
    try:
        raw = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{where}: payload is not JSON-serialisable: {exc}") from None
    if len(raw.encode()) > limit:
        raise PayloadTooLarge(f"{where}: payload is {len(raw.encode())} bytes, over the {limit}-byte limit")
    return raw


def check_payload(payload: Any, *, limit: int, where: str) -> dict[str, Any]:
    """A JSON-object payload within the size limit, copied; else a PayloadError naming ``where``."""
    loaded: dict[str, Any] = json.loads(encode_payload(payload, limit=limit, where=where))
    return loaded


def check_event(body: Any, *, limit: int) -> tuple[str, str, dict[str, Any]]:
    """(name, key, payload) of an event given as ``{"name", "key", "payload"}`` (the API's body), or a
    PayloadError saying what is wrong. A numeric key is taken as its text."""
    if not isinstance(body, dict):
        raise PayloadError('an event is a JSON object: {"name": ..., "key": ..., "payload": {...}}')
    unknown = sorted(set(body) - {"name", "key", "payload"})
    if unknown:
        raise PayloadError(f"unknown field(s) {', '.join(unknown)}: an event has name, key and payload")
    name, key = body.get("name"), body.get("key")
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    for problem in (check_event_name(name), check_key(key)):
        if problem is not None:
            raise PayloadError(problem)
    assert isinstance(name, str) and isinstance(key, str)
    return name, key, check_payload(body.get("payload", {}), limit=limit, where="payload")


class Task(Mapping[str, Any]):
    """A task as a stage sees it: a read-only mapping of its payload (``task["amount"]``,
    ``task.get("note")``, ``{**task, "total": 1}``), with ``task.id``, ``task.type``,
    ``task.run_id`` and ``task.payload`` (a copy of the payload as a dict).

    Values read through it are copies: changing one changes nothing (send a new task instead).
    Two tasks are equal when their payloads are (as for any mapping)."""

    __slots__ = ("_payload", "id", "run_id", "stage", "type")

    def __init__(self, id: int | None, type: str, payload: dict[str, Any], run_id: Any, stage: str = "") -> None:
        self.id = id
        self.type = type
        self._payload = payload
        self.run_id = str(run_id) if run_id is not None else None
        self.stage = stage

    @property
    def payload(self) -> dict[str, Any]:
        """A copy of the payload: changing it changes nothing (send a new task instead)."""
        return copy.deepcopy(self._payload)

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._payload[key])

    def get(self, key: str, default: Any = None) -> Any:
        """The payload value for ``key``, or ``default``."""
        return copy.deepcopy(self._payload.get(key, default))

    def __contains__(self, key: object) -> bool:
        return key in self._payload

    def __iter__(self) -> Iterator[str]:
        return iter(self._payload)

    def __len__(self) -> int:
        return len(self._payload)

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.type!r} at {self.stage}>"


class RunContext(MutableMapping[str, Any]):
    """The run's shared context: a JSON dict every stage of the run reads; changes are merged
    key by key when the stage completes (so parallel branches do not overwrite each other)."""

    def __init__(self, data: Mapping[str, Any] | None) -> None:
        self._data = dict(data or {})
        self._set: dict[str, Any] = {}
        self._deleted: set[str] = set()
        #: Counts the changes (a job's sends check it to follow the context as it changes).
        self.version = 0

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._set[key] = value
        self._deleted.discard(key)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        self.version += 1
        del self._data[key]
        self._set.pop(key, None)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """(keys set, keys deleted) since the stage started."""
        return dict(self._set), sorted(self._deleted)


class Send:
    """A task a stage sent: routed by type when the stage completes.

    It keeps the payload as the JSON text it was checked as (``raw``): that text is what goes to
    the database, so a job sending 100,000 tasks encodes each payload once. ``payload`` decodes
    it (once) for the few paths that look inside.
    """

    __slots__ = ("_payload", "due", "raw", "run_id", "type")

    def __init__(self, type: str, payload: dict[str, Any] | None = None, run_id: str | None = None, *,
                 raw: str | None = None, due: Due | None = None) -> None:
        self.type = type
        self.run_id = run_id
        #: When the task becomes claimable (None: at once).
        self.due = due
        self._payload = payload
        self.raw = raw if raw is not None else json.dumps(payload or {}, separators=(",", ":"))

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as a dict (decoded from ``raw`` on first use)."""
        if self._payload is None:
            self._payload = json.loads(self.raw)
        return self._payload

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Send)
                and (self.type, self.raw, self.run_id, self.due) == (other.type, other.raw, other.run_id, other.due))

    def __repr__(self) -> str:
        return f"Send({self.type!r}, {self.raw}, run_id={self.run_id!r}, due={self.due!r})"


@dataclass(frozen=True)
class EventSend:
    """An event a stage emitted (``ctx.emit``): published when the stage completes."""

    name: str
    key: str
    raw: str


@dataclass(frozen=True)
class ChildStart:
    """A run of another workflow a stage started (``ctx.start``): created when the stage completes."""

    workflow: str
    raw: str


@dataclass
class Effect:
    """A side effect for the outbox (kind, e.g. ``slack.post``, and its JSON payload)."""

    kind: str
    payload: dict[str, Any]


@dataclass
class Outcome:
    """Everything a stage produced, committed in one transaction with its completion."""

    sends: list[Send] = field(default_factory=list)
    context_set: dict[str, Any] = field(default_factory=dict)
    context_deleted: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    events: list[EventSend] = field(default_factory=list)
    children: list[ChildStart] = field(default_factory=list)


class SlackEffects:
    """``ctx.slack``: post to a channel or DM a user, durably and exactly once.

    The message is written to the outbox with the stage's completion and delivered after commit
    by the Slack app; a stage that raises (and is retried) posts nothing.
    """

    def __init__(self, outcome: Outcome, where: str) -> None:
        self._outcome = outcome
        self._where = where

    def post(self, channel: str, text: str = "", *, blocks: list[dict[str, Any]] | None = None,
             thread_ts: str | None = None) -> None:
        """Post a message to a channel (id or name)."""
        self._add("slack.post", {"channel": channel, "text": text, "blocks": blocks, "thread_ts": thread_ts})

    def dm(self, user: str, text: str = "", *, blocks: list[dict[str, Any]] | None = None) -> None:
        """Send a direct message to a user (Slack user id or email)."""
        self._add("slack.dm", {"user": user, "text": text, "blocks": blocks})

    def _add(self, kind: str, payload: dict[str, Any]) -> None:
        if not (payload.get("text") or payload.get("blocks")):
            raise PayloadError(f"{self._where}: a Slack message needs text= or blocks=")
        clean = {k: v for k, v in payload.items() if v is not None}
        try:
            json.dumps(clean)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"{self._where}: Slack message is not JSON-serialisable: {exc}") from None
        self._outcome.effects.append(Effect(kind, clean))


class Context:
    """``ctx``: how a stage sends tasks, shares run context, logs and reaches Slack."""

    def __init__(
        self,
        *,
        stage_key: str,
        run_context: Mapping[str, Any] | None,
        attempt: int = 1,
        max_payload_bytes: int,
        task_id: int | None = None,
        run_id: str | None = None,
        can_name_run: bool = False,
    ) -> None:
        self.outcome = Outcome()
        self.stage = stage_key
        self.attempt = attempt
        self.task_id = task_id
        self.run_id = run_id
        self.run = RunContext(run_context)
        self.slack = SlackEffects(self.outcome, stage_key)
        self._limit = max_payload_bytes
        self._can_name_run = can_name_run
        self._logger = logging.getLogger(f"flowbot.stage.{stage_key}")

    def send(self, type: str, payload: dict[str, Any] | None = None, *, run_id: str | None = None,
             delay: Any = None, at: dt.datetime | None = None) -> None:
        """Emit a task of ``type``; it is routed when this stage completes. With ``delay=`` ("2h",
        "30m", "2 business days") or ``at=`` (an aware datetime) it is not run before then."""
        if not isinstance(type, str) or not type:
            raise PayloadError(f"{self.stage}: task type must be a non-empty string, got {type!r}")
        if run_id is not None and not self._can_name_run:
            raise PayloadError(f"{self.stage}: only hooks and jobs may send into another run")
        when = due(delay, at, where=self.stage)
        raw = encode_payload({} if payload is None else payload, limit=self._limit, where=self.stage)
        self.outcome.sends.append(Send(type, run_id=run_id, raw=raw, due=when))

    def emit(self, event: str, *, key: str, payload: dict[str, Any] | None = None) -> None:
        """Publish an event when this stage completes: it completes every wait on ``event`` with
        ``key``, in any run (and is kept for waits that begin later, within the lookback)."""
        for problem in (check_event_name(event), check_key(key)):
            if problem is not None:
                raise PayloadError(f"{self.stage}: {problem}")
        raw = encode_payload({} if payload is None else payload, limit=self._limit, where=self.stage)
        self.outcome.events.append(EventSend(event, key, raw))

    def start(self, workflow: str, payload: dict[str, Any] | None = None) -> None:
        """Start a run of ``workflow`` (at its start stage) when this stage completes, as a child
        of this run (a ``wait_for_children`` stage waits for it)."""
        if not isinstance(workflow, str) or not workflow:
            raise PayloadError(f"{self.stage}: ctx.start needs a workflow name, got {workflow!r}")
        raw = encode_payload({} if payload is None else payload, limit=self._limit, where=self.stage)
        self.outcome.children.append(ChildStart(workflow, raw))

    def log(self, message: str, *args: Any) -> None:
        """A log line kept with the task (and written to the process log)."""
        text = message % args if args else str(message)
        self.outcome.log.append({"at": dt.datetime.now(dt.UTC).isoformat(), "message": text})
        self._logger.info(text, extra={"action": "stage_log", "task_id": self.task_id})

    def finish(self) -> Outcome:
        """The outcome, with the run-context changes folded in."""
        self.outcome.context_set, self.outcome.context_deleted = self.run.changes()
        return self.outcome
