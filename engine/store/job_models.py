"""The job_fires table: one row per (job, fire time), the lock that makes a fire happen once.

Every scheduler process tries ``INSERT ... ON CONFLICT DO NOTHING`` on (job, fire_time); the one
whose row goes in runs the job and commits its outcome in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base

FIRE_STATUSES = ("fired", "skipped", "failed")


class JobFire(Base):
    """A job's fire time and what became of it: fired (runs started), skipped (missed), failed."""

    __tablename__ = "job_fires"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    #: ``workflow/stage`` of the job.
    job: Mapped[str] = mapped_column(Text, nullable=False)
    fire_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Fired by `flowbot jobs run` rather than by the schedule.
    manual: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="fired")
    reason: Mapped[str | None] = mapped_column(Text)
    #: The scheduler process that won the fire.
    owner: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    runs_created: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    unrouted: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))

    __table_args__ = (
        UniqueConstraint("job", "fire_time"),
        CheckConstraint(f"status IN {FIRE_STATUSES!r}", name="status"),
        Index(None, "fire_time"),
    )
