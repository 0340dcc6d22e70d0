"""waits: timers, events and the waits for them, child runs

Runs record the run that started them (``parent_run_id``). ``events`` keeps events for the
lookback; ``event_waits`` holds the open waits of wait stages with their deadlines. Timed tasks
need no schema: a task is claimable from its ``available_at``, which the claim index already
orders by.

Revision ID: 0008
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("parent_run_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.create_foreign_key(op.f("fk_runs_parent_run_id_runs"), "runs", "runs", ["parent_run_id"], ["id"],
                          ondelete="SET NULL")
    op.create_index("ix_runs_parent", "runs", ["parent_run_id", "created_at"],
                    postgresql_where=sa.text("parent_run_id IS NOT NULL"))
    op.create_index("ix_runs_parent_open", "runs", ["parent_run_id"],
                    postgresql_where=sa.text("parent_run_id IS NOT NULL AND status IN ('running', 'waiting')"))
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_name_key_created_at"), "events", ["name", "key", "created_at"])
    op.create_table(
        "event_waits",
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_event_waits_run_id_runs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_event_waits_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_event_waits")),
    )
    op.create_index(op.f("ix_event_waits_event_key"), "event_waits", ["event", "key"])
    op.create_index("ix_event_waits_deadline", "event_waits", ["deadline"],
                    postgresql_where=sa.text("deadline IS NOT NULL"))
    op.create_index(op.f("ix_event_waits_run_id"), "event_waits", ["run_id"])


def downgrade() -> None:
    op.drop_table("event_waits")
    op.drop_table("events")
    op.drop_index("ix_runs_parent_open", table_name="runs")
    op.drop_index("ix_runs_parent", table_name="runs")
    op.drop_constraint(op.f("fk_runs_parent_run_id_runs"), "runs", type_="foreignkey")
    op.drop_column("runs", "parent_run_id")
