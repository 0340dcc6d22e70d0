"""Routing: where the tasks a stage sent go, decided by their type.

Pure functions, no database: a send goes to every outgoing transition whose ``on`` matches its
type; a send no transition takes is unrouted (recorded on the run, never dropped silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine import assignees
from engine.context import ChildStart, Send, Task
from engine.errors import FlowbotError, PayloadError
from engine.loader import find_stage
from engine.waiting import Due, fill_key
from engine.workflow import Stage, StageKind


@dataclass
class NewTask:
    """A task to create at ``stage``."""

    stage: Stage
    type: str
    payload: dict[str, Any]
    source_task_id: int | None = None
    assignee: dict[str, Any] | None = None
    run_id: str | None = None
    #: When it becomes claimable (None: at once); script stages only.
    due: Due | None = None
    #: A wait stage's key, filled from the payload (None for a wait on the run's children: its key
    #: is the run id, known once the run is).
    wait_key: str | None = None


@dataclass
class Arrival:
    """A task delivered to a join stage (kept until all its incoming transitions delivered)."""

    stage: Stage
    source: Stage
    type: str
    payload: dict[str, Any]
    source_task_id: int | None = None


@dataclass
class Routes:
    """The result of routing one stage's sends."""

    tasks: list[NewTask] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    unrouted: list[dict[str, Any]] = field(default_factory=list)
    #: Runs of other workflows to start (``ctx.start``), with the stage each starts at.
    children: list[tuple[Stage, ChildStart]] = field(default_factory=list)


def new_task(stage: Stage, type: str, payload: dict[str, Any], *, source_task_id: int | None = None,
             run_id: str | None = None, due: Due | None = None) -> NewTask:
    """A task for ``stage``; for a form, its assignee rule is evaluated against the payload; for a
    wait, its key is filled from it."""
    assignee = None
    wait_key = None
    if stage.kind is StageKind.FORM and stage.assignee is not None:
        assignee = assignees.evaluate(stage.assignee, Task(None, type, payload, run_id, stage.name))
    if stage.kind is StageKind.WAIT and not stage.options.get("children"):
        wait_key = fill_key(stage.options["key"], payload, where=f"wait {stage.key}")
    if due is not None and (stage.kind is not StageKind.SCRIPT or stage.join is not None):
        raise PayloadError(f"a task sent with delay= or at= goes to {stage.kind.value} {stage.key}: "
                           "only script stages (without join) take timed tasks")
    return NewTask(stage, type, payload, source_task_id, assignee, run_id, due, wait_key)


def route(source: Stage, sends: list[Send], *, source_task_id: int | None = None) -> Routes:
    """Route every send of ``source``; raises AssigneeError when a form's rule cannot apply."""
    routes = Routes()
    outgoing = source.outgoing
    for send in sends:
        matched = False
        for t in outgoing:
            if not t.matches(send.type):
                continue
            matched = True
            target = t.target
            assert isinstance(target, Stage)
            if target.join == "all":
                if send.due is not None:
                    raise PayloadError(f"a task sent with delay= or at= goes to the join {target.key}: "
                                       "only script stages (without join) take timed tasks")
                routes.arrivals.append(Arrival(target, source, send.type, send.payload, source_task_id))
            else:
                routes.tasks.append(
                    new_task(target, send.type, send.payload, source_task_id=source_task_id, run_id=send.run_id,
                             due=send.due)
                )
        if not matched:
            routes.unrouted.append(unrouted(source, send, task_id=source_task_id))
    return routes


def unrouted(source: Stage, send: Send, *, task_id: int | None = None, at: str | None = None) -> dict[str, Any]:
    """The record of a send no transition took (kept on the run, the job fire or the delivery)."""
    record = {"stage": source.name, "type": send.type, "task_id": task_id,
              "payload_keys": sorted(send.payload)[:20], "run_id": send.run_id}
    if at is not None:
        record["at"] = at
    return record


def merge_arrivals(stage: Stage, arrivals: list[dict[str, Any]]) -> NewTask | None:
    """The joined task once every incoming transition of ``stage`` delivered, else None.

    Payloads merge in the order the transitions were declared (later ones win on a shared key).
    """
    by_source = {a["source_stage"]: a for a in arrivals}
    order = []
    for t in stage.incoming:
        if t.source_name not in order:
            order.append(t.source_name)
    if not all(name in by_source for name in order):
        return None
    payload: dict[str, Any] = {}
    types = []
    for name in order:
        payload.update(by_source[name]["payload"])
        types.append(by_source[name]["type"])
    task_type = types[0] if len(set(types)) == 1 else "joined"
    return new_task(stage, task_type, payload)


def resolve_children(source: Stage, starts: list[ChildStart]) -> list[tuple[Stage, ChildStart]]:
    """The start stage of each run ``source`` starts (``ctx.start``); a PayloadError naming the
    stage for a workflow that is not loaded or has no single start stage."""
    if not starts:
        return []
    registry = source.workflow.registry
    if registry is None:
        raise PayloadError(f"{source.key}: ctx.start needs the workflows loaded")
    found: dict[str, Stage] = {}
    out = []
    for child in starts:
        stage = found.get(child.workflow)
        if stage is None:
            try:
                stage = found[child.workflow] = find_stage(registry, child.workflow, None)
            except FlowbotError as exc:
                raise PayloadError(f"{source.key}: ctx.start({child.workflow!r}): {exc}") from None
        out.append((stage, child))
    return out
