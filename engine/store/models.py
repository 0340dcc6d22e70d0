"""The schema as SQLAlchemy models: the target of Alembic and of the schema test.

Runtime SQL lives in ``engine.store.queries``; these classes describe tables, they are not an ORM layer
the engine queries through.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TASK_STATUSES = ("pending", "locked", "completed", "failed", "cancelled")
#: What task listings filter on: the stored statuses, and "scheduled" (a timed task not yet due).
LISTED_TASK_STATUSES = (*TASK_STATUSES, "scheduled")
RUN_STATUSES = ("running", "waiting", "completed", "failed", "cancelled")


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention, so migrations name constraints stably."""

    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


class Run(Base):
    """One execution of a workflow: its status, shared context and what started it."""

    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    workflow: Mapped[str] = mapped_column(Text, nullable=False)
    #: The version of the workflow's code (``engine.loader.package_version``) that started the run.
    workflow_version: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="running")
    context: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    trigger: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    unrouted: Mapped[list[Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    error: Mapped[str | None] = mapped_column(Text)
    #: The run whose stage started this one (``ctx.start``); None for runs started otherwise.
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The run this one reran (``flowbot runs rerun``): both reports show the link.
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    #: A test run (``flowbot trigger --test``, the API's ``"test": true``, the test kit; children of
    #: a test run too): shown as such, left out of success rates, removed by ``runs purge --test``.
    test: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())

    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
        Index("ix_runs_rerun_of", "rerun_of", postgresql_where=text("rerun_of IS NOT NULL")),
        # `flowbot runs purge --test` finds test runs without reading the others.
        Index("ix_runs_test", "created_at", postgresql_where=text("test")),
        # A run's children, for reports; the open ones for wait_for_children (small: finished
        # children leave it).
        Index("ix_runs_parent", "parent_run_id", "created_at",
              postgresql_where=text("parent_run_id IS NOT NULL")),
        Index("ix_runs_parent_open", "parent_run_id",
              postgresql_where=text("parent_run_id IS NOT NULL AND status IN ('running', 'waiting')")),
        Index(None, "workflow", "created_at"),
        Index(None, "status", "created_at"),
        # "My recent runs" (App Home, /flowbot status): runs started by a person.
        Index("ix_runs_started_by_person", "created_at",
              postgresql_where=text("(trigger ->> 'user') IS NOT NULL")),
        # Retention finds finished runs past their time oldest first, without reading open ones.
        Index("ix_runs_finished", "finished_at",
              postgresql_where=text("status IN ('completed', 'failed', 'cancelled')")),
    )


class Task(Base):
    """A typed JSON payload at one stage of a run, moving pending -> locked -> completed."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    workflow: Mapped[str] = mapped_column(Text, nullable=False)
    stage: Mapped[str] = mapped_column(Text, nullable=False)
    # The stage's kind when the task was created: workers claim only "script" tasks; "form"
    # tasks wait for a person.
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default="script")
    type: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="3")
    lease_seconds: Mapped[int] = mapped_column(Integer, nullable=False, server_default="30")
    locked_by: Mapped[str | None] = mapped_column(Text)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    available_at: Mapped[dt.datetime] = _now()
    source_task_id: Mapped[int | None] = mapped_column(BigInteger)
    assignee: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list[Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    completed_by: Mapped[str | None] = mapped_column(Text)
    #: The version of the workflow's code that last ran the task (set when it completes or fails).
    workflow_version: Mapped[str | None] = mapped_column(Text)
    #: Who created the task: "engine" (a stage's send), "job:wf/stage", "hook:wf/stage", a person.
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN {TASK_STATUSES!r}", name="status"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        # The claim query reads this partial index only: it stays small however many
        # completed tasks pile up.
        Index(
            "ix_tasks_claimable",
            "available_at",
            "id",
            postgresql_where=text("status = 'pending' AND kind = 'script'"),
        ),
        Index(
            "ix_tasks_locked_until",
            "locked_until",
            postgresql_where=text("status = 'locked'"),
        ),
        Index(None, "run_id"),
        # The App Home's "waiting for you" and "your runs" read these, never every task.
        Index("ix_tasks_pending_forms", "created_at", "id",
              postgresql_where=text("status = 'pending' AND kind = 'form'")),
        Index("ix_tasks_form_completer", "completed_by", postgresql_where=text("kind = 'form'")),
    )


class TaskEvent(Base):
    """Append-only log of every status change of a task: from, to, who, why, when.

    A task's creation is on the task itself (``created_at``, ``created_by``); this log holds what
    happened to it afterwards.
    """

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = _now()

    __table_args__ = (Index(None, "task_id"),)


class JoinArrival(Base):
    """A task delivered to a ``join="all"`` stage, waiting for its sibling transitions."""

    __tablename__ = "join_arrivals"

    run_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(Text, primary_key=True)
    source_stage: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    source_task_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _now()


class Outbox(Base):
    """A side effect (Slack message, DM, assignment) written with the transaction that caused it
    and delivered after commit, exactly once."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    task_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    available_at: Mapped[dt.datetime] = _now()
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed', 'discarded')", name="status"),
        Index(
            "ix_outbox_deliverable",
            "available_at",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(None, "task_id"),
        # Retention deletes a run's effects with it (and effects of no run by age: IS NULL).
        Index(None, "run_id"),
        # `flowbot outbox`: what waits or failed, never a walk over everything delivered.
        Index("ix_outbox_undelivered", "created_at", postgresql_where=text("status IN ('pending', 'failed')")),
    )
