"""Tables of the web console: one-time sign-in links, and the index its board reads.

A link's token is never stored, only its SHA-256 (a leaked database does not sign anyone in);
``used_at`` makes it single-use and ``expires_at`` bounds its life.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.models import Base, Run, Task


class ConsoleLink(Base):
    """A one-time link that signs a person in (and may open one task's form)."""

    __tablename__ = "console_links"

    token_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    person: Mapped[str] = mapped_column(Text, nullable=False)
    #: "admin" or "member": what the session it opens may do at most.
    role: Mapped[str] = mapped_column(Text, nullable=False, server_default="member")
    #: "signin" (the inbox), "task" (one task's form, from an assignment email).
    purpose: Mapped[str] = mapped_column(Text, nullable=False, server_default="signin")
    task_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tasks.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                    server_default=text("now()"))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index(None, "expires_at"), Index(None, "task_id"))


#: The board's "by stage" columns: the runs of a workflow with an open (or failed) task at a stage,
#: newest first, without walking the millions of completed tasks.
OPEN_TASKS_BY_STAGE = Index(
    "ix_tasks_open_by_stage", Task.workflow, Task.stage, Task.created_at,
    postgresql_where=text("status IN ('pending', 'locked', 'failed')"),
)

#: The board filtered by workflow and status (a column and its count walk one index range).
RUNS_BY_WORKFLOW_STATUS = Index("ix_runs_workflow_status_created_at", Run.workflow, Run.status, Run.created_at)

#: The inbox: pending form tasks whose assignee holds a person (``assignee @> {"users": [...]}``)
#: or a team, found through the index rather than by reading every pending form.
PENDING_FORMS_BY_ASSIGNEE = Index(
    "ix_tasks_pending_form_assignee", Task.assignee, postgresql_using="gin",
    postgresql_ops={"assignee": "jsonb_path_ops"},
    postgresql_where=text("status = 'pending' AND kind = 'form'"),
)
