"""Assignee rules: who must act on a form task.

The engine evaluates a rule against the task payload into plain JSON stored on the task; the Slack
app resolves emails to users (and teams to members) when it delivers the assignment.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.context import Task
from engine.errors import FlowbotError

TEMPLATE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class AssigneeError(FlowbotError):
    """Raised when an assignee rule cannot be evaluated for a task (missing payload key...)."""


@dataclass(frozen=True)
class Team:
    """A team task: any member may claim it. ``ref`` is a Slack user group (``@finance`` handle or
    ``S…`` id) or a channel (``#approvals`` or ``C…`` id)."""

    ref: str


def _fill(template: str, payload: dict[str, Any]) -> str:
    def repl(m: re.Match[str]) -> str:
        value: Any = payload
        for part in m.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise AssigneeError(f"assignee template {template!r}: payload has no {m.group(1)!r}")
            value = value[part]
        return str(value)

    return TEMPLATE_RE.sub(repl, template)


def evaluate(rule: Any, task: Task) -> dict[str, Any]:
    """``{"users": [...]}`` (emails or Slack ids) or ``{"team": ref}`` for this task."""
    if callable(rule) and not isinstance(rule, Team):
        return evaluate(_call(rule, task), task)
    if isinstance(rule, Team):
        return {"team": _fill(rule.ref, task.payload)}
    if isinstance(rule, str):
        value = _fill(rule, task.payload).strip()
        if not value:
            raise AssigneeError(f"assignee rule {rule!r} gave an empty assignee")
        return {"users": [value]}
    if isinstance(rule, list | tuple):
        users: list[str] = []
        for item in rule:
            part = evaluate(item, task)
            if "team" in part:
                return part
            users.extend(part["users"])
        if not users:
            raise AssigneeError("assignee rule gave no assignee")
        return {"users": list(dict.fromkeys(users))}
    raise AssigneeError(f"assignee rule must be an email, a Slack user id, a list, a Team or a callable, got {rule!r}")


def _call(rule: Callable[[Task], Any], task: Task) -> Any:
    try:
        return rule(task)
    except FlowbotError:
        raise
    except Exception as exc:
        raise AssigneeError(f"assignee rule raised {type(exc).__name__}: {exc}") from exc
