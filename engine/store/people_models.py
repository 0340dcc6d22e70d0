"""Tables of the people side of the engine: form sessions (multi-page answers in progress).

A modal carries only the session id in ``private_metadata``; answers collected page by page
live here, so a long form never meets Slack's 3,000-character limit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base


class FormSession(Base):
    """One person filling one form: a task's form, or a start form (no task yet)."""

    __tablename__ = "form_sessions"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    task_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"))
    workflow: Mapped[str] = mapped_column(Text, nullable=False)
    stage: Mapped[str] = mapped_column(Text, nullable=False)
    #: "form" (the stage's form), "decline" (an approval's decline comment).
    purpose: Mapped[str] = mapped_column(Text, nullable=False, server_default="form")
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    #: A start form's payload (a task's payload lives on the task).
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    page: Mapped[str | None] = mapped_column(Text)
    answers: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    view_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index(None, "task_id"), Index(None, "expires_at"))


class TaskDecision(Base):
    """One person's decision on an approval that needs several (``Approval(approvers=N)``): kept
    whether or not it completed the task; one per person and task."""

    __tablename__ = "task_decisions"

    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    #: Who decided, as they acted (a Slack user id, an email).
    person: Mapped[str] = mapped_column(Text, primary_key=True)
    #: "approved" or "declined".
    decision: Mapped[str] = mapped_column(Text, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
