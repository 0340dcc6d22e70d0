"""Deadlines of form tasks as the authoring layer sees them: ``timeout=`` and ``on_timeout=``.

``workflow.form("review", assignee=..., timeout="48h", on_timeout=...)``: when nobody answers in
time, the outcome is one of

- a task type (``on_timeout="declined"``): the form task completes as if it had sent a task of
  that type, with its payload plus ``"timed_out": true`` and ``"timeout"`` (the duration), routed
  by the stage's transitions;
- ``Escalate(to=..., timeout=..., on_timeout=...)``: the task is handed to another assignee (an
  assignee rule, as ``assignee=``) and waits again, with a deadline and an outcome of its own
  when ``timeout`` is given;
- ``None`` (the default): the task fails, and its run with it.

A declaration becomes a list of steps (a duration and an outcome); a task's open deadline knows
which step it is at. No database here (``engine.store.deadlines`` keeps and fires deadlines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.durations import Duration, parse_duration

#: The actor a timeout acts as (its audit records, the task's ``completed_by``).
TIMEOUT_ACTOR = "flowbot (timeout)"
#: The event name a form deadline is kept under (``event_waits``); no event ever carries it.
FORM_TIMEOUT_EVENT = "flowbot.form.timeout"


@dataclass(frozen=True)
class Escalate:
    """A timeout outcome: hand the task to ``to`` (an email, Slack id, list, ``{payload_key}``,
    ``Team`` or callable, as ``assignee=``); then, if ``timeout`` is given, ``on_timeout`` after it
    (a task type, another ``Escalate``, or None to fail the run)."""

    to: Any
    timeout: Any = None
    on_timeout: Any = None


@dataclass(frozen=True)
class Step:
    """One deadline of a form task: after ``after``, ``outcome`` (a task type, an Escalate, None)."""

    after: Duration
    outcome: str | Escalate | None

    def describe(self) -> str:
        """The outcome in a few words (audit records, reports)."""
        if isinstance(self.outcome, Escalate):
            return "escalated"
        if self.outcome is None:
            return "failed"
        return f"sent {self.outcome}"


def check_form_timeout(name: str, timeout: Any, on_timeout: Any) -> tuple[list[Step], list[str]]:
    """The deadline steps of a form's ``timeout=`` / ``on_timeout=``, and the problems of the
    declaration (messages name the form)."""
    steps: list[Step] = []
    problems: list[str] = []
    where = f'form "{name}"'
    level = 0
    while True:
        if timeout is None:
            if on_timeout is not None:
                problems.append(f"{where}: on_timeout= needs timeout=")
            return steps, problems
        try:
            after = parse_duration(timeout)
        except ValueError as exc:
            problems.append(f"{where}: timeout= {exc}")
            return steps, problems
        if isinstance(on_timeout, Escalate):
            pass  # its ``to`` is checked by ``Workflow.form`` (an assignee rule)
        elif on_timeout is not None and (not isinstance(on_timeout, str) or not on_timeout.strip()):
            problems.append(f"{where}: on_timeout= must be a task type (a string), an Escalate(to=...) or "
                            f"None (the run fails), got {on_timeout!r}")
            return steps, problems
        steps.append(Step(after, on_timeout))
        if not isinstance(on_timeout, Escalate):
            return steps, problems
        level += 1
        if level > 20:
            problems.append(f"{where}: more than 20 escalations in a row")
            return steps, problems
        timeout, on_timeout = on_timeout.timeout, on_timeout.on_timeout


def deadline_key(task_id: int, level: int) -> str:
    """The key a form task's open deadline is kept under: its id and the step it is at."""
    return f"{task_id}#{level}"


def level_of(key: str) -> int:
    """The step of a deadline key (``deadline_key``)."""
    return int(key.rsplit("#", 1)[1]) if "#" in key else 0
