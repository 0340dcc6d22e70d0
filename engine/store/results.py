"""What the store's operations take and give back: finished and failed stage results, what a
start or a commit did. Plain values (``engine.store.tasks`` and ``engine.store.waits`` share them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.context import Effect, Outcome, Send
from engine.routing import Routes
from engine.store.audit import Entry as AuditEntry
from engine.store.db import Row


@dataclass
class Finished:
    """A task whose stage ran to the end, with what it produced (already routed); ``session``,
    the form session its answers came from, is closed by its completion."""

    task: Row
    outcome: Outcome
    routes: Routes
    session: str | None = None
    #: The audit record of a person's completion (written only if the completion wins).
    audit: AuditEntry | None = None


@dataclass
class Failed:
    """A task whose stage raised: retried after ``delay`` seconds unless out of attempts."""

    task: Row
    error: str
    log: list[dict[str, Any]]
    delay: float


@dataclass
class Started:
    """What ``Store.start_runs`` did: runs started or joined (in send order), tasks created,
    sends no transition took."""

    run_ids: list[str] = field(default_factory=list)
    tasks: int = 0
    unrouted: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: Started) -> None:
        """Add what ``other`` started (a later batch) to this."""
        self.run_ids.extend(other.run_ids)
        self.tasks += other.tasks
        self.unrouted.extend(other.unrouted)


@dataclass
class CommitResult:
    """What a commit did: tasks it completed (and those that lost their race) and created."""

    completed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    created: list[Row] = field(default_factory=list)
    #: Failed tasks going back to pending after their backoff, and those out of attempts.
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@dataclass
class Completion:
    """A pending task ended by the engine (a wait's event or deadline, a form's timeout): with a
    task to send (``send``), or failed (``send`` None); ``effects`` and ``audit`` commit with it
    when it wins its race."""

    task: Row
    send: Send | None
    actor: str
    message: str
    effects: list[Effect] = field(default_factory=list)
    audit: AuditEntry | None = None
