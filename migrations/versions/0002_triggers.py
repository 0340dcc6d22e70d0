"""triggers: hook deliveries (idempotent redelivery) and job fires (one fire per job and time)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("hook", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=True),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response_headers", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("response_body", sa.LargeBinary(), nullable=False),
        sa.Column("run_ids", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("unrouted", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("log", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_deliveries")),
    )
    op.create_index(op.f("ix_hook_deliveries_hook_created_at"), "hook_deliveries", ["hook", "created_at"],
                    unique=False)
    op.create_index("uq_hook_deliveries_hook_delivery_id", "hook_deliveries", ["hook", "delivery_id"],
                    unique=True, postgresql_where=sa.text("delivery_id IS NOT NULL"))
    op.create_table(
        "job_fires",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("manual", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.Text(), server_default="fired", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runs_created", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("unrouted", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.CheckConstraint("status IN ('fired', 'skipped', 'failed')", name=op.f("ck_job_fires_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_fires")),
        sa.UniqueConstraint("job", "fire_time", name=op.f("uq_job_fires_job_fire_time")),
    )
    op.create_index(op.f("ix_job_fires_fire_time"), "job_fires", ["fire_time"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_fires_fire_time"), table_name="job_fires")
    op.drop_table("job_fires")
    op.drop_index("uq_hook_deliveries_hook_delivery_id", table_name="hook_deliveries",
                  postgresql_where=sa.text("delivery_id IS NOT NULL"))
    op.drop_index(op.f("ix_hook_deliveries_hook_created_at"), table_name="hook_deliveries")
    op.drop_table("hook_deliveries")
