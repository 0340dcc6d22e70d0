"""Declaring form timeouts and multi-approver approvals: bad declarations are errors at their line
when workflows load; the deadline steps and the quorum rule read as documented."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from support import write_stages

from engine import Escalate
from engine.deadlines import check_form_timeout, deadline_key, level_of
from engine.errors import WorkflowError, WorkflowLoadError
from engine.forms import Approval
from engine.loader import load_workflows
from engine.people.quorum import verdict


def errors_of(tmp_path: Path, line: str, form: str = 'form = Approval("Review")') -> list[WorkflowError]:
    root = write_stages(tmp_path / f"stages_{uuid.uuid4().hex[:6]}", {
        "w/workflow.py": f"""
            from engine import Escalate, Workflow
            workflow = Workflow("w")
            a = workflow.script("a")
            {line}  # <-
            workflow.transition(a, "review")
        """,
        "w/a.py": "def run(task, ctx):\n    pass\n",
        "w/review.py": f"from engine.forms import Approval\n{form}\ndef run(task, answers, ctx):\n    pass\n",
    })
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(root)
    return info.value.errors


@pytest.mark.parametrize(("line", "message"), [
    ('workflow.form("review", assignee="a@x.io", timeout="soon")', "timeout= duration 'soon'"),
    ('workflow.form("review", assignee="a@x.io", on_timeout="declined")', "on_timeout= needs timeout="),
    ('workflow.form("review", assignee="a@x.io", timeout="1h", on_timeout=3)', "on_timeout= must be a task type"),
    ('workflow.form("review", assignee="a@x.io", timeout="1h", on_timeout=Escalate(to="nobody"))',
     "on_timeout=Escalate(to=...)"),
    ('workflow.form("review", assignee="a@x.io", timeout="1h", on_timeout=Escalate(to="b@x.io", timeout="-1h"))',
     "timeout= duration '-1h'"),
])
def test_a_form_timeout_declared_wrong_is_an_error_at_its_line(tmp_path, line, message) -> None:
    [error] = errors_of(tmp_path, line)
    assert message in error.message and 'form "review"' in error.message
    assert error.file and error.file.endswith("workflow.py") and error.line == 4


@pytest.mark.parametrize(("assignee", "form", "message"), [
    ('"a@x.io"', 'Approval("R", approvers=2)', "needs a list or team assignee"),
    ('["a@x.io", "b@x.io"]', 'Approval("R", approvers=3)', "lists only 2 people"),
    ('["a@x.io", "b@x.io"]', 'Approval("R", approvers=0)', "approvers must be a whole number"),
    ('["a@x.io", "b@x.io"]', 'Approval("R", approvers=2, decline="most")', 'decline must be "any"'),
])
def test_an_approval_that_cannot_reach_its_approvers_is_an_error(tmp_path, assignee, form, message) -> None:
    [error] = errors_of(tmp_path, f'workflow.form("review", assignee={assignee})', f"form = {form}")
    assert message in error.message


def test_an_escalation_chain_becomes_deadline_steps() -> None:
    steps, problems = check_form_timeout("review", "48h", Escalate(to="boss@x.io", timeout="1 business day",
                                                                     on_timeout="declined"))
    assert problems == []
    assert [(str(s.after), s.describe()) for s in steps] == [("48h", "escalated"), ("1 business day", "sent declined")]
    assert level_of(deadline_key(42, 1)) == 1


def d(decision: str) -> dict[str, str]:
    return {"by": uuid.uuid4().hex, "decision": decision}


@pytest.mark.parametrize(("decline", "decisions", "eligible", "expected"), [
    ("any", ["approved"], 3, None),
    ("any", ["approved", "approved"], 3, "approved"),
    ("any", ["approved", "declined"], 3, "declined"),
    ("all", ["declined"], 3, None),            # two may still approve
    ("all", ["declined", "declined"], 3, "declined"),  # one left: two approvals impossible
    ("all", ["declined", "approved"], 3, None),
    ("all", ["declined", "declined", "declined"], None, None),  # a team: declines alone never end it
    ("all", ["approved"], 1, None),            # too few people listed: only a decline declines it
])
def test_the_quorum_rule(decline, decisions, eligible, expected) -> None:
    form = Approval("R", approvers=2, decline=decline)
    assert verdict(form, [d(x) for x in decisions], eligible) == expected


def test_a_timeout_task_type_no_transition_takes_is_an_error(tmp_path) -> None:
    import engine.people.actions  # noqa: F401  (plugs the form checks into the loader)

    root = write_stages(tmp_path / "late", {
        "w/workflow.py": """
            from engine import Workflow
            workflow = Workflow("w")
            a = workflow.script("a")
            review = workflow.form("review", assignee="a@x.io", timeout="1h", on_timeout="expired")  # <-
            done = workflow.script("done")
            workflow.transition(a, review)
            workflow.transition(review, done, on="approved")
        """,
        "w/a.py": "def run(task, ctx):\n    pass\n",
        "w/done.py": "def run(task, ctx):\n    pass\n",
        "w/review.py": "from engine.forms import Approval\nform = Approval('R')\n"
                       "def run(task, answers, ctx):\n    pass\n",
    })
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(root)
    [error] = info.value.errors
    assert 'on_timeout="expired" is taken by no transition' in error.message and error.line == 4
