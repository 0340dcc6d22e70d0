"""The authoring API: a ``Workflow`` is stages connected by typed transitions.

Declaring records where each stage and transition was written (file and line) so that
validation, which happens when workflows load (``engine.loader``), can point at it.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

#: A hook must say how it authenticates; ``auth=None`` is an explicit "no authentication".
_REQUIRED: Any = object()


class StageKind(enum.StrEnum):
    """What starts a stage: a task (script, form), an HTTP request (hook), a clock (job)."""

    SCRIPT = "script"
    FORM = "form"
    HOOK = "hook"
    JOB = "job"
    #: No code: completes when an event (or the run's children finishing) arrives, or times out.
    WAIT = "wait"


@dataclass(frozen=True)
class Where:
    """A place in a workflow file."""

    file: str
    line: int


def _caller(depth: int = 2) -> Where:
    frame = sys._getframe(depth)
    return Where(frame.f_code.co_filename, frame.f_lineno)


@dataclass(eq=False)
class Stage:
    """One step of a workflow; its code lives in its own module next to ``workflow.py``."""

    workflow: Workflow
    name: str
    kind: StageKind
    module_name: str
    where: Where
    max_attempts: int = 3
    lease: int | None = None
    join: str | None = None
    assignee: Any = None
    path: str | None = None
    auth: Any = None
    methods: tuple[str, ...] = ("POST",)
    schedule: str | None = None
    timezone: str = "UTC"
    options: dict[str, Any] = field(default_factory=dict)
    #: Filled in by the loader: the imported stage module.
    module: ModuleType | None = None

    @property
    def key(self) -> str:
        """``workflow/stage``: unique across all loaded workflows."""
        return f"{self.workflow.name}/{self.name}"

    def entry(self, name: str = "run") -> Callable[..., Any]:
        """The stage module's function ``name`` (validated at load)."""
        assert self.module is not None, f"stage {self.key} is not loaded"
        fn: Callable[..., Any] = getattr(self.module, name)
        return fn

    @property
    def incoming(self) -> list[Transition]:
        """Transitions that deliver tasks to this stage."""
        return [t for t in self.workflow.transitions if t.target is self]

    @property
    def outgoing(self) -> list[Transition]:
        """Transitions tasks sent by this stage may take."""
        return [t for t in self.workflow.transitions if t.source is self]

    @property
    def is_start(self) -> bool:
        """A stage nothing flows into: a hook, a job, or a script/form started by hand."""
        return not self.incoming

    def __repr__(self) -> str:
        return f"<Stage {self.key} ({self.kind.value})>"


@dataclass(eq=False)
class Transition:
    """An arrow from one stage to another, taken by sent tasks whose type matches ``on``."""

    source: Stage | str
    target: Stage | str
    on: tuple[str, ...] | None
    where: Where

    def matches(self, task_type: str) -> bool:
        """Whether a task of this type takes this transition (``on=None`` takes every type)."""
        return self.on is None or task_type in self.on

    @property
    def source_name(self) -> str:
        return self.source if isinstance(self.source, str) else self.source.name

    @property
    def target_name(self) -> str:
        return self.target if isinstance(self.target, str) else self.target.name


class Workflow:
    """A named process: stages plus the transitions between them.

    >>> workflow = Workflow("expense", title="Expense approval")
    >>> review = workflow.form("review", assignee="{manager_email}")
    """

    def __init__(self, name: str, *, title: str | None = None, description: str = "",
                 starters: Sequence[Any] | None = None, operators: Sequence[Any] | None = None,
                 viewers: Sequence[Any] | None = None, timezone: str = "UTC") -> None:
        self.name = name
        #: Where business days are counted (``"2 business days"`` timers and timeouts).
        self.timezone = timezone
        self.title = title or name.replace("-", " ").replace("_", " ").capitalize()
        self.description = description
        self.stages: dict[str, Stage] = {}
        self.transitions: list[Transition] = []
        self.where = _caller()
        #: Problems found while declaring (duplicate names...), reported by the loader.
        self.declaration_errors: list[tuple[str, Where]] = []
        #: Who may start a run from Slack (`/flowbot start`): emails, Slack user ids, user groups
        #: (``S…`` / ``@handle``), channels (``C…`` / ``#name``) or ``Team``s; None: everyone.
        self.starters: tuple[Any, ...] | None = None if starters is None else tuple(
            [starters] if isinstance(starters, str) else starters)
        self.declaration_errors += [(msg, self.where) for msg in check_people_refs("starters", self.starters)]
        #: Who may cancel, retry, rerun, reassign and start its runs (people references, as
        #: ``starters``); admins always may.
        self.operators: tuple[Any, ...] = _people(operators)
        #: Who may read its runs (besides operators, the people who started them and assignees).
        self.viewers: tuple[Any, ...] = _people(viewers)
        for what, refs in (("operators", self.operators), ("viewers", self.viewers)):
            self.declaration_errors += [(msg, self.where) for msg in check_people_refs(what, refs)]
        from engine.durations import check_timezone

        if (problem := check_timezone(timezone)) is not None:
            self.declaration_errors.append((f"workflow {name!r}: {problem}", self.where))
        #: Filled in by the loader: the workflow's package directory, and the registry it is in
        #: (``ctx.start`` finds the workflows it names there).
        self.package_dir: str | None = None
        self.registry: Any = None
        #: Filled in by the loader: a hash of the package's files as loaded (``engine.loader.
        #: package_version``), recorded on each run it starts and each task it runs.
        self.version: str | None = None

    # -- declaring stages ---------------------------------------------------------------------

    def _add(self, name: str, kind: StageKind, module: str | None, **kw: Any) -> Stage:
        where = _caller(3)
        stage = Stage(
            workflow=self,
            name=name,
            kind=kind,
            module_name=module or name.replace("-", "_"),
            where=where,
            **kw,
        )
        if name in self.stages:
            first = self.stages[name].where
            self.declaration_errors.append(
                (f'duplicate stage name "{name}" (first declared at line {first.line})', where)
            )
        else:
            self.stages[name] = stage
        return stage

    def script(
        self,
        name: str,
        *,
        module: str | None = None,
        max_attempts: int = 3,
        lease: int | None = None,
        join: str | None = None,
    ) -> Stage:
        """A stage that runs ``run(task, ctx)`` when a task arrives."""
        return self._add(
            name, StageKind.SCRIPT, module, max_attempts=max_attempts, lease=lease, join=join
        )

    def form(
        self,
        name: str,
        *,
        assignee: Any = None,
        module: str | None = None,
        join: str | None = None,
        max_attempts: int = 3,
        timeout: Any = None,
        on_timeout: Any = None,
        **options: Any,
    ) -> Stage:
        """A stage a person completes: ``form(task)`` builds the Form, ``run(task, answers, ctx)``
        handles the answers. Without ``assignee`` it is a start form (nothing flows into it).

        ``timeout`` (``"48h"``, ``"2 business days"``) with ``on_timeout``: what happens when
        nobody answers in time: a task type to send (``"declined"``), an ``Escalate(to=...)``, or
        None (the default) to fail the run (``engine.deadlines``)."""
        from engine.deadlines import Escalate, check_form_timeout

        steps, problems = check_form_timeout(name, timeout, on_timeout)
        problems += [f'form "{name}": on_timeout=Escalate(to=...): {p}' for s in steps
                     if isinstance(s.outcome, Escalate) for p in check_assignee_rule(s.outcome.to)]
        if steps:
            options["deadlines"] = steps
        stage = self._add(
            name,
            StageKind.FORM,
            module,
            assignee=assignee,
            join=join,
            max_attempts=max_attempts,
            options=options,
        )
        self.declaration_errors += [(msg, stage.where) for msg in check_follow_up(name, options)]
        self.declaration_errors += [(msg, stage.where) for msg in problems]
        return stage

    def hook(
        self,
        name: str,
        *,
        path: str | None = None,
        auth: Any = _REQUIRED,
        methods: Sequence[str] = ("POST",),
        module: str | None = None,
        **options: Any,
    ) -> Stage:
        """A stage served at ``/hooks/<path>``: ``run(request, ctx)`` returns the response."""
        stage = self._add(
            name,
            StageKind.HOOK,
            module,
            path=(path or name).strip("/"),
            auth=auth,
            methods=tuple(m.upper() for m in methods),
            options=options,
        )
        if auth is _REQUIRED:
            self.declaration_errors.append(
                (
                    f'hook "{name}" must declare auth= (a BearerAuth, HmacAuth, GitHubAuth, '
                    "StripeAuth or SlackAuth), or auth=None to accept unauthenticated requests",
                    stage.where,
                )
            )
            stage.auth = None
        return stage

    def job(
        self,
        name: str,
        *,
        schedule: str,
        timezone: str = "UTC",
        module: str | None = None,
        **options: Any,
    ) -> Stage:
        """A stage run by the clock: ``run(ctx)`` on a cron or hourly/daily/weekly/monthly schedule."""
        return self._add(
            name,
            StageKind.JOB,
            module,
            schedule=schedule,
            timezone=timezone,
            options=options,
        )

    def wait(
        self,
        name: str,
        *,
        event: str,
        key: str,
        timeout: Any = None,
        on_timeout: str | None = None,
    ) -> Stage:
        """A stage that completes when an event called ``event`` arrives with the key ``key`` (a
        ``{payload_key}`` template filled from the arriving task), sending a task of type ``event``
        with the task's payload and the event's merged. After ``timeout`` (``"7d"``,
        ``"2 business days"``) it sends a task of type ``on_timeout`` instead, or fails the run when
        ``on_timeout`` is None. Events that arrived before the wait began count
        (``FLOWBOT_EVENT_LOOKBACK``)."""
        from engine.waiting import check_wait

        options, problems = check_wait(name, event=event, key=key, timeout=timeout, on_timeout=on_timeout)
        stage = self._add(name, StageKind.WAIT, None, options=options)
        self.declaration_errors += [(msg, stage.where) for msg in problems]
        return stage

    def wait_for_children(
        self,
        name: str = "children",
        *,
        timeout: Any = None,
        on_timeout: str | None = None,
    ) -> Stage:
        """A stage that completes when every run this run started (``ctx.start``) has finished,
        sending a task of type ``children.finished`` whose payload lists their outcomes."""
        from engine.waiting import CHILDREN_EVENT, check_wait

        options, problems = check_wait(name, event=CHILDREN_EVENT, key="{run_id}", timeout=timeout,
                                       on_timeout=on_timeout, children=True)
        stage = self._add(name, StageKind.WAIT, None, options=options)
        self.declaration_errors += [(msg, stage.where) for msg in problems]
        return stage

    # -- connecting them ----------------------------------------------------------------------

    def transition(
        self, source: Stage | str, target: Stage | str, *, on: str | Sequence[str] | None = None
    ) -> Transition:
        """Route tasks sent by ``source`` to ``target`` when their type matches ``on``."""
        on_tuple = (on,) if isinstance(on, str) else (tuple(on) if on is not None else None)
        t = Transition(source=source, target=target, on=on_tuple, where=_caller())
        self.transitions.append(t)
        return t

    # -- reading it ---------------------------------------------------------------------------

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (raises UnknownStage)."""
        from engine.errors import UnknownStage

        try:
            return self.stages[name]
        except KeyError:
            raise UnknownStage(f'workflow "{self.name}" has no stage "{name}"') from None

    def start_stages(self) -> list[Stage]:
        """Scripts and forms nothing flows into: where a manual run begins."""
        return [
            s
            for s in self.stages.values()
            if s.is_start and s.kind in (StageKind.SCRIPT, StageKind.FORM)
        ]

    def __repr__(self) -> str:
        return f"<Workflow {self.name} ({len(self.stages)} stages)>"


# -- people references of a declaration (starters, escalation targets) ----------------------------

#: A Slack user id, user group id, channel id; an email; a user group handle or channel name; a
#: ``{payload_key}`` template (filled from the task, for ``escalate_to=``).
_PEOPLE_REF_RE = re.compile(
    r"^([UWSCG][A-Z0-9]{2,}|[^@\s{}]+@[^@\s{}]+\.[^@\s{}]+|[@#][a-z0-9][a-z0-9._-]*|\{[A-Za-z_][A-Za-z0-9_.]*\})$"
)
#: Form options of the follow-up of a waiting task: reminder and escalation delays in seconds.
FOLLOW_UP_DELAYS = ("remind_after", "escalate_after")


def _people(refs: Sequence[Any] | str | None) -> tuple[Any, ...]:
    if refs is None:
        return ()
    return (refs,) if isinstance(refs, str) else tuple(refs)


def check_people_refs(what: str, refs: Sequence[Any] | None) -> list[str]:
    """Problems of a list of people references (``starters=``, ``escalate_to=``)."""
    if refs is None:
        return []
    from engine.assignees import Team

    problems = []
    for ref in refs:
        value = ref.ref if isinstance(ref, Team) else ref
        if not isinstance(value, str) or not _PEOPLE_REF_RE.match(value.strip()):
            problems.append(
                f"{what}: {ref!r} is not an email, a Slack user id (U…), a user group (S… or @handle), "
                "a channel (C… or #name) or a Team"
            )
    return problems


def check_assignee_rule(rule: Any) -> list[str]:
    """Problems of an assignee rule given where the task is not yet known (``Escalate(to=)``)."""
    from engine.assignees import Team

    if rule is None:
        return ["an assignee rule is needed"]
    if callable(rule) and not isinstance(rule, Team):
        return []
    refs = [rule] if isinstance(rule, str | Team) or not isinstance(rule, list | tuple) else list(rule)
    return check_people_refs("assignee", refs)


def check_follow_up(name: str, options: dict[str, Any]) -> list[str]:
    """Problems of a form's ``remind_after=`` / ``escalate_after=`` / ``escalate_to=``."""
    problems = []
    for key in FOLLOW_UP_DELAYS:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            problems.append(f'form "{name}": {key} must be a positive number of seconds, got {value!r}')
    target = options.get("escalate_to")
    if (options.get("escalate_after") is None) != (target is None):
        problems.append(f'form "{name}": escalate_after= and escalate_to= go together')
    if target is not None:
        refs = [target] if isinstance(target, str) or not isinstance(target, list | tuple) else list(target)
        problems += check_people_refs(f'form "{name}": escalate_to', refs)
    return problems
