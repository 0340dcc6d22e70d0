"""flowbot's engine: workflows of Python stages, typed tasks in Postgres, workers and triggers.

Stage authors import only from here and from ``engine.forms``.
"""

from __future__ import annotations

from engine.assignees import Team
from engine.context import Context, Task
from engine.deadlines import Escalate
from engine.errors import FlowbotError, PayloadError, WorkflowError
from engine.triggers.hooks import BearerAuth, GitHubAuth, HmacAuth, HookRequest, HookResponse, SlackAuth, StripeAuth
from engine.workflow import Stage, StageKind, Workflow

__all__ = [
    "BearerAuth",
    "Context",
    "Escalate",
    "FlowbotError",
    "GitHubAuth",
    "HmacAuth",
    "HookRequest",
    "HookResponse",
    "PayloadError",
    "SlackAuth",
    "Stage",
    "StageKind",
    "StripeAuth",
    "Task",
    "Team",
    "Workflow",
    "WorkflowError",
]
