"""Operations: the audit trail, people's API tokens, rerun links, discarded effects

Every action of a person or operator (submit, approve, decline, claim, reassign, cancel, retry,
rerun, outbox retry or discard, tokens created or revoked) appends one row to ``audit``; a
trigger refuses updates, so the trail is append-only (retention deletes old rows). API tokens of
people are kept as hashes with a role and an expiry. A rerun names the run it reran
(``runs.rerun_of``), and an effect an operator discarded is ``discarded``.

Revision ID: 0007
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("acting_as", sa.Text(), nullable=True),
        sa.Column("on_behalf_of", sa.Text(), nullable=True),
        sa.Column("edge", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("workflow", sa.Text(), nullable=True),
        sa.Column("run_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.CheckConstraint("edge IN ('slack', 'api', 'cli', 'web', 'engine')", name=op.f("ck_audit_edge")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index(op.f("ix_audit_run_id"), "audit", ["run_id"], unique=False)
    op.create_index(op.f("ix_audit_actor_at"), "audit", ["actor", "at"], unique=False)
    op.create_index(op.f("ix_audit_at"), "audit", ["at"], unique=False)
    op.execute(
        """
        CREATE FUNCTION flowbot_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit trail is append-only';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit "
        "FOR EACH ROW EXECUTE FUNCTION flowbot_audit_append_only()"
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("person", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), server_default="member", nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'member')", name=op.f("ck_api_tokens_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.add_column("runs", sa.Column("rerun_of", postgresql.UUID(as_uuid=True), nullable=True))
    op.create_index("ix_runs_rerun_of", "runs", ["rerun_of"], unique=False,
                    postgresql_where=sa.text("rerun_of IS NOT NULL"))
    op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
    op.create_check_constraint(op.f("ck_outbox_status"), "outbox",
                               "status IN ('pending', 'delivered', 'failed', 'discarded')")
    op.create_index("ix_outbox_undelivered", "outbox", ["created_at"], unique=False,
                    postgresql_where=sa.text("status IN ('pending', 'failed')"))


def downgrade() -> None:
    op.drop_index("ix_outbox_undelivered", table_name="outbox")
    op.execute("UPDATE outbox SET status = 'failed' WHERE status = 'discarded'")
    op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
    op.create_check_constraint(op.f("ck_outbox_status"), "outbox", "status IN ('pending', 'delivered', 'failed')")
    op.drop_index("ix_runs_rerun_of", table_name="runs")
    op.drop_column("runs", "rerun_of")
    op.drop_table("api_tokens")
    op.execute("DROP TRIGGER audit_append_only ON audit")
    op.execute("DROP FUNCTION flowbot_audit_append_only()")
    op.drop_index(op.f("ix_audit_at"), table_name="audit")
    op.drop_index(op.f("ix_audit_actor_at"), table_name="audit")
    op.drop_index(op.f("ix_audit_run_id"), table_name="audit")
    op.drop_table("audit")
