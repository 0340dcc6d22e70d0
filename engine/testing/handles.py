"""What a test holds on to: a run (``Run``), a form task waiting on a person (``Task``), and an
execution report (``Report``, the dict ``flowbot runs show --json`` prints, with a few shortcuts)."""

from __future__ import annotations

from typing import Any, Protocol

from engine.errors import UnknownStage
from engine.ops import tasks as task_ops
from engine.ops.actor import Actor, Edge, Role
from engine.ops.base import Ops
from engine.runtime.app import App
from engine.workflow import StageKind


class Flow(Protocol):
    """What runs and tasks need of the test's flowbot (``engine.testing.kit.Flow``)."""

    @property
    def app(self) -> App: ...

    @property
    def ops(self) -> Ops: ...

    async def settle(self, within: float = 30.0) -> None: ...

#: Run statuses ``Run.wait`` returns on: the run ended, or it waits (on a person, an event or the clock).
SETTLED = ("completed", "failed", "cancelled", "waiting")


class FlowTestError(AssertionError):
    """Raised when a test asks the kit for something the run does not have (an unknown stage, a
    task nobody waits on, a run that did not settle): the message says where the run stands."""


class Report(dict[str, Any]):
    """A run's execution report (a dict: ``id``, ``workflow``, ``status``, ``context``, ``steps``,
    ``children``, ``audit``...), with shortcuts."""

    @property
    def status(self) -> str:
        """``running``, ``waiting``, ``completed``, ``failed`` or ``cancelled``."""
        return str(self["status"])

    @property
    def context(self) -> dict[str, Any]:
        """The run's shared context (``ctx.run``)."""
        return dict(self["context"])

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Its steps (tasks), oldest first."""
        return list(self["steps"])

    @property
    def stages(self) -> list[str]:
        """The stages of its steps, in order: ``["submit", "review", "pay"]``."""
        return [s["stage"] for s in self["steps"]]

    def step(self, stage: str) -> dict[str, Any]:
        """The latest step at ``stage`` (``FlowTestError`` when the run has none there)."""
        found = [s for s in self["steps"] if s["stage"] == stage]
        if not found:
            raise FlowTestError(f"run {self['id']} has no step at {stage!r}; its steps: {describe_steps(self)}")
        return dict(found[-1])


def describe_steps(report: dict[str, Any]) -> str:
    """The steps of a report in one line: ``submit completed, review pending (bob@example.com)``."""
    parts = []
    for s in report["steps"]:
        text = f"{s['stage']} {s['status']}"
        if s["status"] == "pending" and s["kind"] == "form":
            text += f" (waiting on {_who(s.get('assignee'))})"
        if s.get("due_at"):
            text += f" (due {s['due_at']})"
        if s.get("waiting_for"):
            w = s["waiting_for"]
            text += f" (waiting for event {w['event']} key {w['key']}" + (
                f" until {w['deadline']}" if w.get("deadline") else "") + ")"
        if s.get("error") and s["status"] != "completed":
            text += f" (error: {str(s['error']).splitlines()[0]})"
        parts.append(text)
    return ", ".join(parts) or "none yet"


def _who(assignee: Any) -> str:
    if not assignee:
        return "nobody"
    if assignee.get("claimed_by"):
        return f"{assignee['claimed_by']} (claimed for {assignee.get('team')})"
    if assignee.get("team"):
        return str(assignee["team"])
    return ", ".join(str(u) for u in assignee.get("users") or []) or "nobody"


class Task:
    """A form task waiting on a person; act on it as that person (or as ``as_``)."""

    def __init__(self, flow: Flow, run: Run, step: dict[str, Any]) -> None:
        self.flow = flow
        self.run = run
        self.id: int = int(step["task_id"])
        self.stage: str = step["stage"]
        self.payload: dict[str, Any] = dict(step.get("payload") or {})
        self.assignee: dict[str, Any] = dict(step.get("assignee") or {})

    def __repr__(self) -> str:
        return f"<Task {self.id} at {self.stage!r} of run {self.run.id}, waiting on {_who(self.assignee)}>"

    def _actor(self, as_: str | None) -> Actor:
        if as_ is None:
            users = self.assignee.get("users") or []
            if self.assignee.get("claimed_by"):
                users = [self.assignee["claimed_by"]]
            elif self.assignee.get("team"):
                users = []
            if len(users) != 1:
                raise FlowTestError(f"task {self.id} at {self.stage!r} waits on {_who(self.assignee)}: "
                                    "say who acts with as_=\"someone@example.com\"")
            as_ = str(users[0])
        return Actor(as_, Role.MEMBER, Edge.API)

    async def approve(self, *, as_: str | None = None, comment: str | None = None) -> dict[str, Any]:
        """Approve (an ``Approval`` form) as ``as_`` (default: the one assignee); then settle."""
        return await self._act(task_ops.submit(self.flow.ops, self.id, None, self._actor(as_),
                                               decision="approved", comment=comment))

    async def decline(self, *, comment: str | None = None, as_: str | None = None) -> dict[str, Any]:
        """Decline (an ``Approval`` form; the form may require ``comment``) as ``as_``; then settle."""
        return await self._act(task_ops.submit(self.flow.ops, self.id, None, self._actor(as_),
                                               decision="declined", comment=comment))

    async def submit(self, answers: dict[str, Any], *, as_: str | None = None) -> dict[str, Any]:
        """Submit the form's ``answers`` (validated as Slack and the API validate them) as ``as_``."""
        return await self._act(task_ops.submit(self.flow.ops, self.id, answers, self._actor(as_)))

    async def claim(self, *, as_: str) -> dict[str, Any]:
        """Claim a team's task as ``as_`` (a member): it becomes theirs alone."""
        return await self._act(task_ops.claim(self.flow.ops, self.id, Actor(as_, Role.MEMBER, Edge.API)))

    async def reassign(self, to: str, *, as_: str | None = None) -> dict[str, Any]:
        """Give the task to ``to`` (a person or ``@team``), as ``as_`` (default: the one assignee)."""
        return await self._act(task_ops.reassign(self.flow.ops, self.id, to, self._actor(as_)))

    async def _act(self, action: Any) -> dict[str, Any]:
        result: dict[str, Any] = await action
        await self.flow.settle()
        return result


class Run:
    """A run started in the test (or found by it)."""

    def __init__(self, flow: Flow, run_id: str, workflow: str) -> None:
        self.flow = flow
        self.id = run_id
        self.workflow = workflow

    def __repr__(self) -> str:
        return f"<Run {self.id} of {self.workflow!r}>"

    async def report(self) -> Report:
        """The execution report as it stands (after letting the engine settle)."""
        await self.flow.settle()
        return await self._report()

    async def _report(self) -> Report:
        data = await self.flow.app.store.report(self.id)
        if data is None:
            raise FlowTestError(f"run {self.id} does not exist (purged?)")
        return Report(data)

    async def wait(self, *, within: float = 30.0) -> Report:
        """The report once the run has finished or waits (on a person, an event or the clock). A run
        still running with nothing to do until the clock moves (a failed stage's retry is not due
        yet) is a ``FlowTestError`` saying where it stands."""
        await self.flow.settle(within=within)
        report = await self._report()
        if report.status in SETTLED:
            return report
        raise FlowTestError(f"run {self.id} ({self.workflow}) is {report.status} and has nothing to do until "
                            f"the clock moves (flow.clock.advance); its steps: {describe_steps(report)}")

    async def tasks(self, stage: str) -> list[Task]:
        """The form tasks waiting on a person at ``stage`` (several when the stage ran more than once)."""
        try:
            found = self.flow.app.registry.get(self.workflow).stage(stage)
        except UnknownStage:
            names = ", ".join(self.flow.app.registry.get(self.workflow).stages)
            raise FlowTestError(f'workflow "{self.workflow}" has no stage "{stage}" (its stages: {names})') from None
        if found.kind is not StageKind.FORM:
            raise FlowTestError(f'stage "{stage}" of "{self.workflow}" is a {found.kind.value}: only form stages '
                                "wait on a person")
        report = await self.report()
        return [Task(self.flow, self, s) for s in report["steps"]
                if s["stage"] == stage and s["kind"] == "form" and s["status"] == "pending"]

    def task(self, stage: str) -> _PendingTask:
        """The one form task waiting at ``stage``: ``await run.task("review").approve(as_=...)``."""
        return _PendingTask(self, stage)

    async def find_task(self, stage: str) -> Task:
        """The one form task waiting at ``stage`` (``FlowTestError`` when none or several)."""
        waiting = await self.tasks(stage)
        if len(waiting) == 1:
            return waiting[0]
        report = await self._report()
        if not waiting:
            raise FlowTestError(f'no task waits on a person at "{stage}" in run {self.id} (run {report.status}; '
                                f"its steps: {describe_steps(report)})")
        raise FlowTestError(f'{len(waiting)} tasks wait at "{stage}" in run {self.id}: use run.tasks("{stage}")')


class _PendingTask:
    """``run.task(stage)``: finds the task when an action is awaited, so one line reads
    ``await run.task("review").approve(as_="bob@example.com")``; ``await run.task(stage)`` gives
    the ``Task`` itself."""

    def __init__(self, run: Run, stage: str) -> None:
        self.run = run
        self.stage = stage

    def __await__(self) -> Any:
        return self.run.find_task(self.stage).__await__()

    async def approve(self, **kw: Any) -> dict[str, Any]:
        """``Task.approve``."""
        return await (await self.run.find_task(self.stage)).approve(**kw)

    async def decline(self, **kw: Any) -> dict[str, Any]:
        """``Task.decline``."""
        return await (await self.run.find_task(self.stage)).decline(**kw)

    async def submit(self, answers: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """``Task.submit``."""
        return await (await self.run.find_task(self.stage)).submit(answers, **kw)

    async def claim(self, **kw: Any) -> dict[str, Any]:
        """``Task.claim``."""
        return await (await self.run.find_task(self.stage)).claim(**kw)

    async def reassign(self, to: str, **kw: Any) -> dict[str, Any]:
        """``Task.reassign``."""
        return await (await self.run.find_task(self.stage)).reassign(to, **kw)
