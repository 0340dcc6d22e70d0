"""The hook_deliveries table: every accepted hook request, its response, and the runs it started.

A delivery id (``Idempotency-Key`` or the auth preset's own, like ``X-GitHub-Delivery``) is unique
per hook: a redelivery finds the first row and replays its response instead of starting runs again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base


class HookDelivery(Base):
    """One hook request that ran its stage: the response it got and the runs it started."""

    __tablename__ = "hook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    #: ``workflow/stage`` of the hook.
    hook: Mapped[str] = mapped_column(Text, nullable=False)
    #: The sender's id for this delivery; NULL when the request carried none.
    delivery_id: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    response_headers: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    response_body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    run_ids: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    unrouted: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    log: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )

    __table_args__ = (
        # Redelivery detection: one row per (hook, delivery id); requests without an id are
        # never deduplicated.
        Index(
            "uq_hook_deliveries_hook_delivery_id",
            "hook",
            "delivery_id",
            unique=True,
            postgresql_where=text("delivery_id IS NOT NULL"),
        ),
        Index(None, "hook", "created_at"),
    )
