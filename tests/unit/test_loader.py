"""Workflow loading and validation: every error of the contract, with the file and the line.

Each case writes a small stages directory, loads it, and checks the error names the file and the
line where the mistake was written (found by a ``# <-`` marker in the source), and that nothing
from the broken workflow was registered.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from support import write_stages

from engine.errors import WorkflowError, WorkflowLoadError
from engine.loader import find_stage, load_workflows
from engine.workflow import StageKind

GOOD = {
    "good/workflow.py": """
        from engine import Workflow
        workflow = Workflow("good", title="A good one")
        a = workflow.script("a")
        b = workflow.script("b-stage")
        workflow.transition(a, b, on=["x", "y"])
    """,
    "good/a.py": "def run(task, ctx):\n    pass\n",
    "good/b_stage.py": "async def run(task, ctx):\n    pass\n",
}


def errors_of(tmp_path: Path, files: dict[str, str]) -> list[WorkflowError]:
    root = write_stages(tmp_path / f"stages_{uuid.uuid4().hex[:6]}", files)
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(root)
    return info.value.errors


def marked_line(tmp_path: Path, rel: str, marker: str = "# <-") -> tuple[str, int]:
    """(path, line) of the line carrying ``marker`` in the most recent stages dir's ``rel``."""
    [root] = sorted(tmp_path.glob("stages_*"), key=lambda p: p.stat().st_mtime)[-1:]
    path = root / rel
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if marker in line:
            return str(path.resolve()), n
    raise AssertionError(f"no {marker!r} in {path}")


def only_error(tmp_path: Path, files: dict[str, str], rel: str = "bad/workflow.py") -> WorkflowError:
    """The single error of a stages dir, checked to point at the marked line of ``rel``."""
    [error] = errors_of(tmp_path, files)
    file, line = marked_line(tmp_path, rel)
    assert (error.file, error.line) == (file, line), str(error)
    assert str(error).startswith(f"{file}:{line}: ")
    return error


def bad(workflow: str, **modules: str) -> dict[str, str]:
    head = 'from engine import Workflow\nworkflow = Workflow("bad")\n'
    files = {"bad/workflow.py": head + textwrap.dedent(workflow).lstrip("\n")}
    files.update({f"bad/{name}.py": textwrap.dedent(src) for name, src in modules.items()})
    return files


SCRIPT = "def run(task, ctx):\n    pass\n"
FORM = "def form(task):\n    return None\n\ndef run(task, answers, ctx):\n    pass\n"
JOB = "def run(ctx):\n    pass\n"
HOOK = "def run(request, ctx):\n    return {}\n"


# -- a valid workflow ---------------------------------------------------------------------------------


def test_a_valid_workflow_loads_with_its_stages_and_transitions(tmp_path) -> None:
    registry = load_workflows(write_stages(tmp_path / "stages", GOOD))
    wf = registry.get("good")
    assert wf.title == "A good one"
    assert list(wf.stages) == ["a", "b-stage"]
    [t] = wf.stage("a").outgoing
    assert (t.target_name, t.on) == ("b-stage", ("x", "y"))
    assert wf.stage("b-stage").module is not None, "b-stage lives in b_stage.py"
    assert find_stage(registry, "good", None).name == "a"


def test_only_packages_with_a_workflow_py_are_workflows(tmp_path) -> None:
    root = write_stages(tmp_path / "stages", {**GOOD, "not_a_workflow/helper.py": "x = 1\n", "README.md": "hi\n"})
    assert list(load_workflows(root).workflows) == ["good"]


def test_a_module_option_overrides_the_file_name(tmp_path) -> None:
    files = bad("""
        s = workflow.script("s", module="elsewhere")
    """, elsewhere=SCRIPT)
    assert load_workflows(write_stages(tmp_path / "stages", files)).get("bad").stage("s").module is not None


# -- each validation error ------------------------------------------------------------------------


def test_a_transition_to_an_unknown_stage(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
        workflow.transition(a, "nowhere")  # <-
    """, a=SCRIPT))
    assert 'transition target "nowhere" is not a stage of "bad"' in error.message


def test_a_transition_from_an_unknown_stage(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
        workflow.transition("ghost", a)  # <-
    """, a=SCRIPT))
    assert 'transition source "ghost" is not a stage of "bad"' in error.message


def test_a_transition_to_a_stage_of_another_workflow(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        from engine import Workflow as W
        other = W("other").script("a")
        a = workflow.script("a")
        workflow.transition(a, other)  # <-
    """, a=SCRIPT))
    assert 'transition target "a" is not a stage of "bad"' in error.message


def test_a_duplicate_stage_name(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
        again = workflow.script("a")  # <-
    """, a=SCRIPT))
    assert 'duplicate stage name "a" (first declared at line 3)' in error.message


def test_a_duplicate_workflow_name(tmp_path) -> None:
    files = {**GOOD, "zzz/workflow.py": 'from engine import Workflow\nworkflow = Workflow("good")  # <-\n'}
    [error] = errors_of(tmp_path, files)
    file, line = marked_line(tmp_path, "zzz/workflow.py")
    assert (error.file, error.line) == (file, line)
    assert 'duplicate workflow name "good"' in error.message and "good/workflow.py" in error.message


def test_a_missing_stage_module(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("send-invoice")  # <-
    """))
    assert 'stage "send-invoice": module send_invoice.py not found' in error.message


def test_a_module_without_its_entry_function(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")  # <-
    """, a="def handler(task, ctx):\n    pass\n"))
    assert 'stage "a": a.py must define run(task, ctx)' in error.message


def test_an_entry_function_with_the_wrong_parameters(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")  # <-
    """, a="def run(task):\n    pass\n"))
    assert "run must take 2 arguments: run(task, ctx)" in error.message


@pytest.mark.parametrize(("kind", "entry", "signature"), [
    ("job", JOB.replace("ctx", "ctx, extra"), "run(ctx)"),
    ("hook", "x = 1\n", "run(request, ctx)"),
])
def test_each_kind_checks_its_own_entry_point(tmp_path, kind, entry, signature) -> None:
    declare = {"job": 'workflow.job("s", schedule="daily")  # <-',
               "hook": 'workflow.hook("s", auth=None)  # <-'}[kind]
    error = only_error(tmp_path, bad(declare + "\n", s=entry))
    assert signature in error.message


def test_a_form_module_without_a_form(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        f = workflow.form("f")  # <-
    """, f="def run(task, answers, ctx):\n    pass\n"))
    assert 'form "f": f.py must define form(task) or form = Form(...)' in error.message


@pytest.mark.parametrize("kind", ["job", "hook"])
def test_a_job_or_hook_with_an_incoming_transition(tmp_path, kind) -> None:
    declare = {"job": 'target = workflow.job("target", schedule="hourly")',
               "hook": 'target = workflow.hook("target", auth=None)'}[kind]
    error = only_error(tmp_path, bad(f"""
        a = workflow.script("a")
        {declare}
        workflow.transition(a, target)  # <-
    """, a=SCRIPT, target={"job": JOB, "hook": HOOK}[kind]))
    assert f'{kind} "target" cannot have an incoming transition' in error.message


def test_a_form_with_an_incoming_transition_and_no_assignee(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
        review = workflow.form("review")  # <-
        workflow.transition(a, review)
    """, a=SCRIPT, review=FORM))
    assert 'form "review" has incoming transitions but no assignee= rule' in error.message


def test_a_start_form_needs_no_assignee(tmp_path) -> None:
    files = bad("""
        submit = workflow.form("submit")
        review = workflow.form("review", assignee="{manager}")
        workflow.transition(submit, review)
    """, submit=FORM, review=FORM)
    wf = load_workflows(write_stages(tmp_path / "stages", files)).get("bad")
    assert wf.stage("submit").kind is StageKind.FORM and wf.stage("submit").is_start


@pytest.mark.parametrize(("schedule", "timezone", "message"), [
    ("61 * * * *", "UTC", 'invalid schedule "61 * * * *"'),
    ("every tuesday-ish", "UTC", 'invalid schedule "every tuesday-ish"'),
    ("0 9 * * MON", "Mars/Olympus_Mons", 'unknown timezone "Mars/Olympus_Mons"'),
])
def test_an_invalid_cron_string_or_timezone(tmp_path, schedule, timezone, message) -> None:
    error = only_error(tmp_path, bad(f"""
        digest = workflow.job("digest", schedule="{schedule}", timezone="{timezone}")  # <-
    """, digest=JOB))
    assert message in error.message


def test_a_valid_schedule_loads(tmp_path) -> None:
    files = bad("""
        digest = workflow.job("digest", schedule="0 9 * * MON", timezone="America/Sao_Paulo")
    """, digest=JOB)
    assert load_workflows(write_stages(tmp_path / "stages", files)).get("bad").stage("digest").kind is StageKind.JOB


def test_a_syntax_error_in_a_stage_module(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
    """, a="def run(task, ctx):\n    return (  # <-\n"), rel="bad/a.py")
    assert error.message.startswith("syntax error")


def test_an_exception_while_importing_workflow_py_points_at_the_user_line(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
        workflow.transition(a, a, on=1 / 0)  # <-
    """, a=SCRIPT))
    assert error.message == "ZeroDivisionError: division by zero"


def test_a_join_needs_two_incoming_transitions(tmp_path) -> None:
    error = only_error(tmp_path, bad("""
        a = workflow.script("a")
        j = workflow.script("j", join="all")  # <-
        workflow.transition(a, j)
    """, a=SCRIPT, j=SCRIPT))
    assert 'join="all" needs at least two incoming transitions' in error.message


def test_bad_names_and_limits(tmp_path) -> None:
    errors = errors_of(tmp_path, bad("""
        a = workflow.script("Not OK")
        b = workflow.script("b", max_attempts=0)
        c = workflow.script("c", lease=0)
    """, Not_OK=SCRIPT, b=SCRIPT, c=SCRIPT))
    messages = [e.message for e in errors]
    assert any('stage name "Not OK" must be lowercase' in m for m in messages)
    assert 'stage "b": max_attempts must be at least 1' in messages
    assert 'stage "c": lease must be at least 1 second' in messages
    assert {e.line for e in errors} >= {3, 4, 5}


def test_workflow_py_without_a_workflow_object(tmp_path) -> None:
    [error] = errors_of(tmp_path, {"bad/workflow.py": "x = 1\n"})
    assert error.message == "workflow.py must define `workflow = Workflow(...)`"
    assert error.file is not None and error.file.endswith("bad/workflow.py") and error.line == 1


def test_every_error_is_reported_and_good_workflows_are_not_hidden_by_bad_ones(tmp_path) -> None:
    files = {**GOOD, **bad("""
        a = workflow.script("a")
        workflow.transition(a, "nowhere")
        workflow.transition("ghost", a)
        b = workflow.script("missing-module")
    """, a=SCRIPT)}
    errors = errors_of(tmp_path, files)
    assert len(errors) == 3
    assert all(e.file and e.file.endswith("bad/workflow.py") for e in errors)
    assert [e.line for e in errors] == [4, 5, 6]


# -- wait stages -----------------------------------------------------------------------------------


def _wait_errors(tmp_path: Path, line: str) -> list[WorkflowError]:
    return errors_of(tmp_path, {
        "w/workflow.py": f"""
            from engine import Workflow
            workflow = Workflow("w")
            a = workflow.script("a")
            {line}  # <-
            workflow.transition(a, "pay")
        """,
        "w/a.py": "def run(task, ctx):\n    pass\n",
    })


@pytest.mark.parametrize(("line", "message"), [
    ('workflow.wait("pay", event="", key="{id}")', "event name must be"),
    ('workflow.wait("pay", event="paid", key="")', "key= must be a non-empty string"),
    ('workflow.wait("pay", event="paid", key="{id}", timeout="soon")', 'timeout= duration \'soon\''),
    ('workflow.wait("pay", event="paid", key="{id}", on_timeout="late")', "on_timeout= needs timeout="),
    ('workflow.wait("pay", event="paid", key="{id}", timeout="1h", on_timeout=3)', "on_timeout= must be a task type"),
    ('workflow.wait_for_children("pay", timeout="2 fortnights")', "timeout= duration"),
])
def test_a_wait_stage_with_a_bad_parameter_is_an_error_at_its_line(tmp_path, line, message) -> None:
    [error] = _wait_errors(tmp_path, line)
    assert message in error.message
    assert error.file and error.file.endswith("workflow.py") and error.line == 4


def test_a_workflow_with_an_unknown_timezone_is_an_error(tmp_path) -> None:
    [error] = errors_of(tmp_path, {
        "w/workflow.py": """
            from engine import Workflow
            workflow = Workflow("w", timezone="Mars/Olympus")
        """,
    })
    assert 'unknown timezone "Mars/Olympus"' in error.message and error.line == 2


def test_a_wait_stage_needs_no_module(tmp_path) -> None:
    root = write_stages(tmp_path / "ok", {
        "w/workflow.py": """
            from engine import Workflow
            workflow = Workflow("w", timezone="Europe/Paris")
            a = workflow.script("a")
            pay = workflow.wait("pay", event="payment.received", key="{id}", timeout="2 business days",
                                on_timeout="late")
            kids = workflow.wait_for_children()
            workflow.transition(a, pay)
            workflow.transition(pay, kids)
        """,
        "w/a.py": "def run(task, ctx):\n    pass\n",
    })
    wf = load_workflows(root).get("w")
    assert wf.stage("pay").kind is StageKind.WAIT and wf.stage("children").kind is StageKind.WAIT
    assert str(wf.stage("pay").options["timeout"]) == "2 business days"
