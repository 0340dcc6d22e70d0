"""The web console: one-time sign-in links (stored hashed) and the board's indexes

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_links",
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("person", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), server_default="member", nullable=False),
        sa.Column("purpose", sa.Text(), server_default="signin", nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_console_links_task_id_tasks", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_links"),
    )
    op.create_index("ix_console_links_expires_at", "console_links", ["expires_at"])
    op.create_index("ix_console_links_task_id", "console_links", ["task_id"])
    op.create_index("ix_tasks_open_by_stage", "tasks", ["workflow", "stage", "created_at"],
                    postgresql_where=sa.text("status IN ('pending', 'locked', 'failed')"))
    op.create_index("ix_runs_workflow_status_created_at", "runs", ["workflow", "status", "created_at"])
    op.create_index("ix_tasks_pending_form_assignee", "tasks", ["assignee"], postgresql_using="gin",
                    postgresql_ops={"assignee": "jsonb_path_ops"},
                    postgresql_where=sa.text("status = 'pending' AND kind = 'form'"))


def downgrade() -> None:
    op.drop_index("ix_tasks_pending_form_assignee", table_name="tasks")
    op.drop_index("ix_runs_workflow_status_created_at", table_name="runs")
    op.drop_index("ix_tasks_open_by_stage", table_name="tasks")
    op.drop_table("console_links")
