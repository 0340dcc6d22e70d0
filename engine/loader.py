"""Discover workflows under the stages directory, import them and validate them.

Every problem is reported with the file and line where it was written; one bad workflow does not
hide the problems of another (all errors are collected, then raised together).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, NotStartable, UnknownWorkflow, WorkflowError, WorkflowLoadError
from engine.workflow import NAME_RE, Stage, StageKind, Transition, Where, Workflow

ROOT_PACKAGE = "_flowbot_stages"

#: Entry points each kind of stage must define, with the parameters they take.
ENTRY_POINTS: dict[StageKind, tuple[str, int]] = {
    StageKind.SCRIPT: ("run(task, ctx)", 2),
    StageKind.HOOK: ("run(request, ctx)", 2),
    StageKind.JOB: ("run(ctx)", 1),
    StageKind.FORM: ("run(task, answers, ctx)", 3),
}

#: Extra checks other parts of flowbot plug in (schedules, hook auth, forms): each returns
#: error messages for one stage. Kept as a list so the loader needs no import of them.
StageCheck = Callable[[Stage], list[str]]
STAGE_CHECKS: list[StageCheck] = []


@dataclass
class Registry:
    """Every loaded, valid workflow, by name."""

    workflows: dict[str, Workflow] = field(default_factory=dict)
    stages_dir: Path | None = None

    def get(self, name: str) -> Workflow:
        """The workflow called ``name`` (raises UnknownWorkflow)."""
        try:
            return self.workflows[name]
        except KeyError:
            raise UnknownWorkflow(f'no workflow named "{name}"') from None

    def stages(self, kind: StageKind | None = None) -> list[Stage]:
        """All stages of all workflows, optionally of one kind."""
        return [
            s
            for w in self.workflows.values()
            for s in w.stages.values()
            if kind is None or s.kind is kind
        ]


def _error_from_exception(exc: BaseException, file: Path) -> WorkflowError:
    if isinstance(exc, SyntaxError):
        return WorkflowError(f"syntax error: {exc.msg}", file=exc.filename or str(file), line=exc.lineno)
    # Point at the deepest frame inside the stages directory: the user's line, not ours.
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if str(file.parent) in f.filename] or tb[-1:]
    frame = frames[-1] if frames else None
    return WorkflowError(
        f"{type(exc).__name__}: {exc}",
        file=frame.filename if frame else str(file),
        line=frame.lineno if frame else None,
    )


def _ensure_root() -> None:
    if ROOT_PACKAGE not in sys.modules:
        root = types.ModuleType(ROOT_PACKAGE)
        root.__path__ = []
        sys.modules[ROOT_PACKAGE] = root


def _import_package(pkg_dir: Path) -> str:
    """Import a workflow's directory as a package (so stage modules can import each other)."""
    _ensure_root()
    name = f"{ROOT_PACKAGE}.{pkg_dir.name.replace('-', '_')}"
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]  # reloading (tests, `flowbot workflows` after an edit)
    init = pkg_dir / "__init__.py"
    if init.exists():
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(pkg_dir)]
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = types.ModuleType(name)
        module.__path__ = [str(pkg_dir)]
        module.__file__ = None
        sys.modules[name] = module
    return name


def discover(stages_dir: Path) -> list[Path]:
    """Every package under ``stages_dir`` that has a ``workflow.py``, sorted by name."""
    if not stages_dir.is_dir():
        return []
    return sorted(
        p for p in stages_dir.iterdir() if p.is_dir() and (p / "workflow.py").is_file()
    )


def load_workflows(stages_dir: Path) -> Registry:
    """Import and validate every workflow; raise WorkflowLoadError listing all problems."""
    # Hook, job and form checks plug themselves in when their modules are imported: import them
    # here so validation never depends on what the caller happened to import first.
    for checks in ("engine.triggers.hooks", "engine.triggers.jobs", "engine.people.actions"):
        importlib.import_module(checks)
    if not stages_dir.is_dir():
        raise ConfigError(f"the stages directory {stages_dir.resolve()} does not exist "
                          f"(set FLOWBOT_STAGES or --stages to where your workflows are)")
    stages_dir = stages_dir.resolve()
    errors: list[WorkflowError] = []
    registry = Registry(stages_dir=stages_dir)
    for pkg_dir in discover(stages_dir):
        wf_file = pkg_dir / "workflow.py"
        try:
            package = _import_package(pkg_dir)
            module = importlib.import_module(f"{package}.workflow")
        except Exception as exc:
            errors.append(_error_from_exception(exc, wf_file))
            continue
        wf = getattr(module, "workflow", None)
        if not isinstance(wf, Workflow):
            errors.append(
                WorkflowError(
                    "workflow.py must define `workflow = Workflow(...)`", file=str(wf_file), line=1
                )
            )
            continue
        wf.package_dir = str(pkg_dir)
        if wf.name in registry.workflows:
            other = registry.workflows[wf.name].where
            errors.append(
                WorkflowError(
                    f'duplicate workflow name "{wf.name}" (also in {other.file})',
                    file=wf.where.file,
                    line=wf.where.line,
                )
            )
            continue
        found = validate(wf, package)
        errors.extend(found)
        if not found:
            registry.workflows[wf.name] = wf
            wf.registry = registry
    errors.extend(_check_across(registry))
    if errors:
        raise WorkflowLoadError(errors)
    return registry


def _err(message: str, where: Where) -> WorkflowError:
    return WorkflowError(message, file=where.file, line=where.line)


def _resolve_transitions(wf: Workflow) -> list[WorkflowError]:
    errors = []
    for t in wf.transitions:
        for end in ("source", "target"):
            value = getattr(t, end)
            if isinstance(value, str):
                if value not in wf.stages:
                    errors.append(_err(f'transition {end} "{value}" is not a stage of "{wf.name}"', t.where))
                    continue
                setattr(t, end, wf.stages[value])
            elif isinstance(value, Stage):
                if value.workflow is not wf or wf.stages.get(value.name) is not value:
                    errors.append(_err(f'transition {end} "{value.name}" is not a stage of "{wf.name}"', t.where))
            else:
                errors.append(_err(f"transition {end} must be a stage or a stage name, got {value!r}", t.where))
        if t.on is not None and (not t.on or not all(isinstance(o, str) and o for o in t.on)):
            errors.append(_err("transition on= must be a task type or a list of task types", t.where))
    return errors


def validate(wf: Workflow, package: str) -> list[WorkflowError]:
    """Every problem of one workflow, with file and line."""
    errors = [_err(msg, where) for msg, where in wf.declaration_errors]
    if not NAME_RE.match(wf.name):
        errors.append(_err(f'workflow name "{wf.name}" must be lowercase letters, digits, - or _', wf.where))
    errors.extend(_resolve_transitions(wf))
    resolved: list[Transition] = [
        t for t in wf.transitions if isinstance(t.source, Stage) and isinstance(t.target, Stage)
    ]
    for t in resolved:
        assert isinstance(t.target, Stage) and isinstance(t.source, Stage)
        if t.target.kind in (StageKind.JOB, StageKind.HOOK):
            errors.append(
                _err(
                    f'{t.target.kind.value} "{t.target.name}" cannot have an incoming transition '
                    f"(it is started by {'its schedule' if t.target.kind is StageKind.JOB else 'HTTP requests'})",
                    t.where,
                )
            )
    for stage in wf.stages.values():
        errors.extend(_validate_stage(stage, package))
    return errors


def _validate_stage(stage: Stage, package: str) -> list[WorkflowError]:
    errors: list[WorkflowError] = []
    where = stage.where
    if not NAME_RE.match(stage.name):
        errors.append(_err(f'stage name "{stage.name}" must be lowercase letters, digits, - or _', where))
    if stage.max_attempts < 1:
        errors.append(_err(f'stage "{stage.name}": max_attempts must be at least 1', where))
    if stage.lease is not None and stage.lease < 1:
        errors.append(_err(f'stage "{stage.name}": lease must be at least 1 second', where))
    if stage.join not in (None, "all"):
        errors.append(_err(f'stage "{stage.name}": join must be "all" or None', where))
    if stage.join == "all" and len(stage.incoming) < 2:
        errors.append(_err(f'stage "{stage.name}": join="all" needs at least two incoming transitions', where))
    if stage.kind is StageKind.FORM and stage.assignee is None and stage.incoming:
        errors.append(
            _err(
                f'form "{stage.name}" has incoming transitions but no assignee= rule '
                "(only a start form may go without one)",
                where,
            )
        )
    if stage.kind is not StageKind.WAIT:  # a wait has no code
        errors.extend(_load_module(stage, package))
    for check in STAGE_CHECKS:
        errors.extend(_err(msg, where) for msg in check(stage))
    return errors


def _load_module(stage: Stage, package: str) -> list[WorkflowError]:
    wf_dir = Path(stage.workflow.package_dir or ".")
    file = wf_dir / f"{stage.module_name}.py"
    if not file.is_file():
        return [_err(f'stage "{stage.name}": module {file.name} not found in {wf_dir}', stage.where)]
    try:
        module = importlib.import_module(f"{package}.{stage.module_name}")
    except Exception as exc:
        return [_error_from_exception(exc, file)]
    stage.module = module
    errors = []
    signature, n_params = ENTRY_POINTS[stage.kind]
    run = getattr(module, "run", None)
    if not callable(run):
        errors.append(_err(f'stage "{stage.name}": {file.name} must define {signature}', stage.where))
    elif not _accepts(run, n_params):
        errors.append(
            _err(f'stage "{stage.name}": {file.name}: run must take {n_params} arguments: {signature}', stage.where)
        )
    if stage.kind is StageKind.FORM and getattr(module, "form", None) is None:
        errors.append(
            _err(f'form "{stage.name}": {file.name} must define form(task) or form = Form(...)', stage.where)
        )
    return errors


def _accepts(fn: Any, n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:  # builtins without a signature
        return True
    return True


def _check_across(registry: Registry) -> list[WorkflowError]:
    """Problems between workflows: two hooks on one path."""
    errors = []
    paths: dict[str, Stage] = {}
    for stage in registry.stages(StageKind.HOOK):
        assert stage.path is not None
        if stage.path in paths:
            errors.append(
                _err(f'hook path "/hooks/{stage.path}" is already used by {paths[stage.path].key}', stage.where)
            )
        paths[stage.path] = stage
    return errors


def find_stage(registry: Registry, workflow: str, stage: str | None) -> Stage:
    """The stage a manual run starts at: the named one, or the workflow's only start stage."""
    wf = registry.get(workflow)
    if stage is not None:
        return wf.stage(stage)
    starts = wf.start_stages()
    if len(starts) != 1:
        from engine.errors import UnknownStage

        names = ", ".join(s.name for s in starts) or "none"
        raise UnknownStage(
            f'workflow "{workflow}" has {len(starts)} start stages ({names}): name one with --stage'
        )
    return starts[0]


def check_triggerable(stage: Stage) -> None:
    """Refuse a manual run (``flowbot trigger``, ``POST /api/workflows/<name>/runs``) at a stage
    that would never finish: a start form has no one to assign it to (a person starts it), and
    hooks and jobs are started by requests and clocks."""
    wf = stage.workflow
    if stage.kind is StageKind.FORM and stage.assignee is None:
        what = f'"{stage.name}" is the start form of workflow "{wf.name}": the person who starts the run fills it in'
    elif stage.kind not in (StageKind.SCRIPT, StageKind.FORM):
        what = f'stage "{stage.name}" of workflow "{wf.name}" is a {stage.kind.value}'
    else:
        return
    ways = [f"POST /hooks/{s.path}" for s in wf.stages.values() if s.kind is StageKind.HOOK]
    ways += [f"the job {s.name!r} on its schedule" for s in wf.stages.values() if s.kind is StageKind.JOB]
    if any(s.kind is StageKind.FORM and s.assignee is None for s in wf.stages.values()):
        ways.append(f"/flowbot start {wf.name} in Slack")
    startable = [s.name for s in wf.stages.values()
                 if s.kind is StageKind.SCRIPT or (s.kind is StageKind.FORM and s.assignee is not None)]
    lines = [f"{what}, so a manual run cannot start there."]
    if ways:
        lines.append(f"Start {wf.name} with {' or '.join(ways)}.")
    lines.append("Stages a manual run can start at (--stage): " + (", ".join(startable) or "none") + ".")
    raise NotStartable("\n".join(lines))


def describe_errors(exc: WorkflowLoadError) -> str:
    """The errors of a failed load, one per line."""
    return "\n".join(str(e) for e in exc.errors)


__all__ = ["Registry", "check_triggerable", "describe_errors", "discover", "find_stage", "load_workflows", "validate"]

