"""The tables of events and of the wait stages waiting for them.

An ``events`` row is an event as it arrived (``POST /api/events``, ``flowbot events send``,
``ctx.emit``): kept for the lookback so that a wait beginning after it still matches it. An
``event_waits`` row is an open wait (its task is pending at a wait stage): what it waits for and
until when. Both sides of a match run under the same advisory lock of (event, key), so an early
event and a late wait never miss each other.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base


class Event(Base):
    """An event for waiting runs: a name, a key, a payload."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    #: Who sent it: "api", "cli", "task:<id>".
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                    server_default=text("now()"))

    __table_args__ = (Index(None, "name", "key", "created_at"),)


class EventWait(Base):
    """An open wait: its pending task, the (event, key) it waits for, and its deadline if any."""

    __tablename__ = "event_waits"

    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"),
                                              nullable=False)
    event: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    deadline: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                    server_default=text("now()"))

    __table_args__ = (
        Index(None, "event", "key"),
        # Workers look for the next deadline (their wake-up) and the waits past it: this index only.
        Index("ix_event_waits_deadline", "deadline", postgresql_where=text("deadline IS NOT NULL")),
        Index(None, "run_id"),
    )
