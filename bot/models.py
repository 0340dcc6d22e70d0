"""Slack-specific state: the email → user id cache and the DM messages sent per task.

Messages are recorded so that a resolved task updates its cards in place (``chat.update``)
and a retried delivery never DMs the same person twice.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base


class SlackUser(Base):
    """A resolved ``users.lookupByEmail``: email (lower case) → Slack user id."""

    __tablename__ = "slack_users"

    email: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )


class SlackTaskMessage(Base):
    """A card about a task posted to a DM or channel (``kind``: assignment, approval, claim)."""

    __tablename__ = "slack_task_messages"

    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    #: The user the card was sent to, or the channel id for a team channel card.
    recipient: Mapped[str] = mapped_column(Text, primary_key=True)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    ts: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )

    __table_args__ = (Index(None, "channel", "ts"), Index(None, "recipient"))
