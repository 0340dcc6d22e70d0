"""Tables of operations: the audit trail and people's API tokens.

The audit trail is append-only: a trigger refuses every UPDATE (retention may DELETE old rows).
A token is stored only as its SHA-256 hash; the token itself is printed once, when created.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base

ROLES = ("admin", "member")
EDGES = ("slack", "api", "cli", "web", "engine")


class AuditEntry(Base):
    """One action of a person or operator: who, as what, through which edge, on what."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    #: Why the actor was allowed: "admin", "operator", "assignee", "starter"... ("admin" acting
    #: on someone's task is recorded with ``on_behalf_of``, the assignee).
    acting_as: Mapped[str | None] = mapped_column(Text)
    on_behalf_of: Mapped[str | None] = mapped_column(Text)
    edge: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    workflow: Mapped[str | None] = mapped_column(Text)
    # No foreign keys: the trail outlives what it names until retention removes both.
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    task_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))

    __table_args__ = (
        CheckConstraint(f"edge IN {EDGES!r}", name="edge"),
        Index(None, "run_id"),
        Index(None, "actor", "at"),
        Index(None, "at"),
    )


class ApiToken(Base):
    """A person's API token (its hash), with a role and an optional expiry."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    person: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False, server_default="member")
    token_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    #: The first characters of the token, to tell tokens apart in listings.
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                    server_default=text("now()"))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role"),)
