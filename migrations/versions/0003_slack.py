"""people and Slack: form sessions, Slack user cache, task messages

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "form_sessions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("workflow", sa.Text(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), server_default="form", nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("page", sa.Text(), nullable=True),
        sa.Column("answers", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("view_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_form_sessions_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_form_sessions")),
    )
    op.create_index(op.f("ix_form_sessions_task_id"), "form_sessions", ["task_id"], unique=False)
    op.create_index(op.f("ix_form_sessions_expires_at"), "form_sessions", ["expires_at"], unique=False)
    op.create_table(
        "slack_users",
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_slack_users")),
    )
    op.create_table(
        "slack_task_messages",
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("ts", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_slack_task_messages_task_id_tasks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "recipient", name=op.f("pk_slack_task_messages")),
    )
    op.create_index(op.f("ix_slack_task_messages_channel_ts"), "slack_task_messages", ["channel", "ts"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_slack_task_messages_channel_ts"), table_name="slack_task_messages")
    op.drop_table("slack_task_messages")
    op.drop_table("slack_users")
    op.drop_index(op.f("ix_form_sessions_expires_at"), table_name="form_sessions")
    op.drop_index(op.f("ix_form_sessions_task_id"), table_name="form_sessions")
    op.drop_table("form_sessions")
