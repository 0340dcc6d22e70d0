"""A workflow as data: nodes, edges and metadata (the API and `flowbot workflows --json`)."""

from __future__ import annotations

from typing import Any

from engine.workflow import Stage, StageKind, Workflow


def _node(stage: Stage) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": stage.name,
        "kind": stage.kind.value,
        "module": f"{stage.module_name}.py",
        "start": stage.is_start,
        "file": stage.where.file,
        "line": stage.where.line,
    }
    if stage.kind is StageKind.SCRIPT:
        node["max_attempts"] = stage.max_attempts
    if stage.join:
        node["join"] = stage.join
    if stage.kind is StageKind.FORM:
        node["assignee"] = stage.assignee if isinstance(stage.assignee, str | list | None) else repr(stage.assignee)
    if stage.kind is StageKind.HOOK:
        node["path"] = f"/hooks/{stage.path}"
        node["methods"] = list(stage.methods)
        node["auth"] = stage.auth.describe() if hasattr(stage.auth, "describe") else None
    if stage.kind is StageKind.JOB:
        node["schedule"] = stage.schedule
        node["timezone"] = stage.timezone
    if stage.kind is StageKind.WAIT:
        timeout = stage.options.get("timeout")
        node["event"] = None if stage.options.get("children") else stage.options["event"]
        node["key"] = None if stage.options.get("children") else stage.options["key"]
        node["children"] = bool(stage.options.get("children"))
        node["timeout"] = str(timeout) if timeout else None
        node["on_timeout"] = stage.options.get("on_timeout")
        del node["module"]
    return node


def export(wf: Workflow) -> dict[str, Any]:
    """``{"name", "title", "description", "nodes": [...], "edges": [...]}``."""
    return {
        "name": wf.name,
        "title": wf.title,
        "description": wf.description,
        "nodes": [_node(s) for s in wf.stages.values()],
        "edges": [
            {"source": t.source_name, "target": t.target_name, "on": list(t.on) if t.on else None}
            for t in wf.transitions
        ],
    }
