"""Which code ran, and retention: workflow versions on runs and tasks, indexes for purging

``runs.workflow_version`` is the version (a hash of the workflow package's files) of the code that
started a run; ``tasks.workflow_version`` the version that ran a task. Both stay NULL for rows
written before this revision.

Retention deletes finished runs oldest first (``ix_runs_finished``, partial: finished runs only)
and their outbox rows by run (``ix_outbox_run_id``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("workflow_version", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("workflow_version", sa.Text(), nullable=True))
    op.create_index("ix_runs_finished", "runs", ["finished_at"], unique=False,
                    postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"))
    op.create_index("ix_outbox_run_id", "outbox", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_run_id", table_name="outbox")
    op.drop_index("ix_runs_finished", table_name="runs")
    op.drop_column("tasks", "workflow_version")
    op.drop_column("runs", "workflow_version")
