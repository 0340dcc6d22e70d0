"""The rows of new runs started by a hook's or job's sends (or by ``ctx.start``), built in Python
before any I/O.

A job that fans out 100,000 sends starts 100,000 runs. ``FreshRuns`` routes each send (by type,
once per type), picks the run's id (UUIDv7, counted: ``engine.store.ids``) and encodes the run row and
its first script task rows as binary COPY data (``engine.store.pgcopy``); ``Store.write_fresh`` then
writes a batch in a handful of statements. Building needs no database, so it happens in the
job's own thread while the previous batch is being written (``engine.triggers.jobs.stream``).

Script tasks, the fan-out case, go in by COPY, their ids from the column default. Form tasks
(which need their ids back for the assignment effect) and join arrivals are kept aside for the
ordinary statements.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.context import Send
from engine.routing import Arrival, NewTask, new_task, unrouted
from engine.store import pgcopy, trigger_queries
from engine.store.db import json_text
from engine.store.ids import Uuid7Counter
from engine.workflow import Stage, StageKind


@dataclass
class ContextSegment:
    """The runs from ``run_ids[first]`` on (to the next segment) start with this context."""

    context: str
    first: int


@dataclass
class FreshRuns:
    """New runs for the sends of one stage, as binary COPY data for runs and script tasks."""

    stage: Stage
    trigger: dict[str, Any]
    now: dt.datetime
    actor: str
    lease_seconds: int
    run_ids: list[str] = field(default_factory=list)
    runs: bytearray = field(default_factory=bytearray)  # COPY rows (trigger_queries.COPY_RUNS)
    tasks: bytearray = field(default_factory=bytearray)  # COPY rows (trigger_queries.COPY_TASKS)
    script_tasks: int = 0
    forms: list[NewTask] = field(default_factory=list)
    arrivals: list[tuple[str, Arrival]] = field(default_factory=list)
    unrouted: list[dict[str, Any]] = field(default_factory=list)
    segments: list[ContextSegment] = field(default_factory=list)
    sends: int = 0
    #: Child runs (``ctx.start``): every send starts a run of ``start``'s workflow at ``start``
    #: (whatever its type), linked to the run ``parent`` (None for a job's).
    start: Stage | None = None
    parent: str | None = None

    def __post_init__(self) -> None:
        self._ids = Uuid7Counter()
        self._now = now = pgcopy.timestamptz(self.now)
        workflow = (self.start or self.stage).workflow
        version = workflow.version
        self._run_head = (pgcopy.text(workflow.name) + (pgcopy.text(version) if version else pgcopy.NULL)
                          + pgcopy.jsonb(json_text(self.trigger)))
        parent = pgcopy.uuid(uuid.UUID(self.parent).bytes) if self.parent else pgcopy.NULL
        self._run_tail = {status: pgcopy.text(status) + now + now + parent for status in ("running", "waiting")}
        self._run_context = b""
        self._targets_of: dict[str, list[tuple[Stage, tuple[bytes, bytes] | None]]] = {}
        self.set_context({})

    def emptied(self) -> FreshRuns:
        """A new, empty batch like this one (same stage, start, parent, trigger and time)."""
        return FreshRuns(self.stage, self.trigger, self.now, self.actor, self.lease_seconds,
                         start=self.start, parent=self.parent)

    def set_context(self, context: dict[str, Any]) -> None:
        """The starting context of the runs added from now on."""
        text = json_text(context)
        self._run_context = pgcopy.jsonb(text)
        if self.segments and self.segments[-1].context == text:
            return
        if self.segments and self.segments[-1].first == len(self.run_ids):
            self.segments[-1].context = text
        else:
            self.segments.append(ContextSegment(text, len(self.run_ids)))

    def started_with_other_context(self, context: dict[str, Any]) -> list[str]:
        """The runs whose starting context is not ``context`` (it changed after they were added)."""
        text = json_text(context)
        ends = [s.first for s in self.segments[1:]] + [len(self.run_ids)]
        return [run_id for seg, end in zip(self.segments, ends, strict=True) if seg.context != text
                for run_id in self.run_ids[seg.first:end]]

    def add(self, send: Send) -> None:
        """Route ``send`` (it names no run) and add the rows of the run it starts."""
        self.sends += 1
        targets = self._targets_of.get(send.type)
        if targets is None:
            targets = self._targets_of[send.type] = self._targets(send.type)
        if not targets:
            self.unrouted.append(unrouted(self.stage, send, at=self.now.isoformat()))
            return
        run_id, run_bytes = self._ids.next_with_bytes()
        self.run_ids.append(run_id)
        uuid_field = pgcopy.uuid(run_bytes)
        waiting = True  # a run whose only tasks are forms, waits or timed tasks waits
        for target, fixed in targets:
            if fixed is not None:
                head, tail = fixed
                if send.due is not None:  # a timed task: its own available_at
                    due = send.due.resolve(self.now, target.workflow.timezone)
                    tail = tail[:_DUE_AT] + pgcopy.timestamptz(due) + tail[_DUE_AT + len(self._now):]
                self.tasks += _TASK_ROW + uuid_field + head + pgcopy.jsonb(send.raw) + tail
                self.script_tasks += 1
                waiting = waiting and send.due is not None  # a timed task waits on the clock
            elif target.join == "all":
                self.arrivals.append((run_id, Arrival(target, self.stage, send.type, send.payload)))
                waiting = False  # the run is still running: it waits for the join's siblings
            else:
                self.forms.append(new_task(target, send.type, send.payload, run_id=run_id, due=send.due))
        self.runs += (_RUN_ROW + uuid_field + self._run_head + self._run_context
                      + self._run_tail["waiting" if waiting else "running"])

    def _targets(self, type: str) -> list[tuple[Stage, tuple[bytes, bytes] | None]]:
        """The stages a send of ``type`` goes to; for script stages, the encoded columns before and
        after the payload, the same for every task of that stage and type."""
        now = self._now
        out: list[tuple[Stage, tuple[bytes, bytes] | None]] = []
        candidates = [self.start] if self.start is not None else [
            t.target for t in self.stage.outgoing if isinstance(t.target, Stage) and t.matches(type)]
        for target in candidates:
            fixed = None
            if target.kind is StageKind.SCRIPT and target.join != "all":
                # trigger_queries.COPY_TASKS: run_id, workflow, stage, kind, type, payload, status,
                # max_attempts, lease_seconds, assignee, available_at, created_at, created_by
                head = b"".join((pgcopy.text(target.workflow.name), pgcopy.text(target.name),
                                 pgcopy.text(target.kind.value), pgcopy.text(type)))
                tail = b"".join((pgcopy.text("pending"), pgcopy.int4(target.max_attempts),
                                 pgcopy.int4(target.lease or self.lease_seconds), pgcopy.NULL, now, now,
                                 pgcopy.text(self.actor)))
                fixed = (head, tail)
            out.append((target, fixed))
        return out


_RUN_ROW = pgcopy.row_start(len(trigger_queries.COPY_RUNS.columns))
_TASK_ROW = pgcopy.row_start(len(trigger_queries.COPY_TASKS.columns))
#: Where available_at starts in a task row's tail (after status, max_attempts, lease, assignee).
_DUE_AT = len(pgcopy.text("pending")) + 2 * len(pgcopy.int4(0)) + len(pgcopy.NULL)
