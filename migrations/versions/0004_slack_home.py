"""App Home and reminders: indexes for "what waits for me" and "my recent runs"

The Home tab is published after every task change that concerns someone, so its two queries must
not scan every task: pending form tasks, form tasks by who completed them, Slack cards by
recipient and runs started by a person are each read through a small (mostly partial) index.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_pending_forms", "tasks", ["created_at", "id"], unique=False,
                    postgresql_where=sa.text("status = 'pending' AND kind = 'form'"))
    op.create_index("ix_tasks_form_completer", "tasks", ["completed_by"], unique=False,
                    postgresql_where=sa.text("kind = 'form'"))
    op.create_index("ix_runs_started_by_person", "runs", ["created_at"], unique=False,
                    postgresql_where=sa.text("(trigger ->> 'user') IS NOT NULL"))
    op.create_index(op.f("ix_slack_task_messages_recipient"), "slack_task_messages", ["recipient"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_slack_task_messages_recipient"), table_name="slack_task_messages")
    op.drop_index("ix_runs_started_by_person", table_name="runs")
    op.drop_index("ix_tasks_form_completer", table_name="tasks")
    op.drop_index("ix_tasks_pending_forms", table_name="tasks")
