"""Tasks record who created them: the "created" line leaves the event log; one unread index goes

A task's creation was written twice: the task row (with its created_at) and a "created" row in
task_events naming the actor. A job fanning out 100,000 runs paid for 100,000 extra rows, index
entries and foreign-key checks. The actor now sits on the task (``created_by``); task_events
keeps the status changes that follow. Existing "created" events move onto their tasks (and back
on downgrade).

The (workflow, stage, status) index goes too: no statement reads through it (task listings walk
the primary key newest first, the Home tab and reminders have partial indexes of their own), and
every task insert and status change paid for it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("created_by", sa.Text(), nullable=True))
    op.execute(
        """
        UPDATE tasks t SET created_by = e.actor
        FROM task_events e
        WHERE e.task_id = t.id AND e.reason = 'created' AND e.from_status IS NULL
        """
    )
    op.execute("DELETE FROM task_events WHERE reason = 'created' AND from_status IS NULL")
    op.drop_index("ix_tasks_workflow_stage_status", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_workflow_stage_status", "tasks", ["workflow", "stage", "status"], unique=False)
    op.execute(
        """
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, NULL, 'pending', created_by, 'created', created_at FROM tasks
        WHERE created_by IS NOT NULL
        ORDER BY id
        """
    )
    op.drop_column("tasks", "created_by")
