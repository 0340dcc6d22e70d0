"""Test runs: ``runs.test`` marks a run started as a test (``flowbot trigger --test``, the API's
``"test": true``, the test kit), left out of success rates and removed by ``flowbot runs purge --test``

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: Postgres 11+ adds the column without rewriting the table.
    op.add_column("runs", sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index("ix_runs_test", "runs", ["created_at"], postgresql_where=sa.text("test"))


def downgrade() -> None:
    op.drop_index("ix_runs_test", table_name="runs")
    op.drop_column("runs", "test")
