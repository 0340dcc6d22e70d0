"""A workflow's graph as SVG, laid out by Graphviz (``dot -Tsvg``), and a run's path over it.

The layout of a workflow is computed once per loaded definition and cached; a run page adds only a
``<style>`` colouring the stages the run went through, where it stands, and where it failed. When
Graphviz is not installed the pages show the stages as a list instead (``render`` returns None).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterable

from markupsafe import Markup

from engine.workflow import StageKind, Workflow

_SHAPES = {StageKind.SCRIPT: "box", StageKind.FORM: "note", StageKind.HOOK: "cds", StageKind.JOB: "component"}
_cache: dict[tuple[str, int], str | None] = {}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_id(stage: str) -> str:
    """The SVG element id of a stage's node."""
    # Graphviz writes "-" in an id as "&#45;": ids keep to letters, digits and "_".
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", stage)


def dot_source(wf: Workflow) -> str:
    """The workflow in Graphviz's DOT language."""
    lines = ["digraph workflow {", '  graph [rankdir=LR, bgcolor="transparent", fontname="Helvetica", pad=0.2];',
             '  node [fontname="Helvetica", fontsize=12, style="filled,rounded", fillcolor="#ffffff", '
             'color="#5b6475"];',
             '  edge [fontname="Helvetica", fontsize=10, color="#5b6475", fontcolor="#5b6475"];']
    for stage in wf.stages.values():
        # "\n" is DOT's line break inside a label: added after quoting, so it is not escaped.
        label = _q(stage.name)[:-1] + f'\\n({stage.kind.value})"'
        lines.append(f"  {_q(stage.name)} [id={_q(node_id(stage.name))}, shape={_SHAPES.get(stage.kind, 'box')}, "
                     f"label={label}, tooltip={_q(stage.name)}];")
    for t in wf.transitions:
        label = f' [label={_q(", ".join(t.on))}]' if t.on else ""
        lines.append(f"  {_q(t.source_name)} -> {_q(t.target_name)}{label};")
    lines.append("}")
    return "\n".join(lines)


async def render(wf: Workflow) -> str | None:
    """The SVG of a workflow's graph (cached per loaded definition), or None without Graphviz."""
    key = (wf.name, id(wf))
    if key in _cache:
        return _cache[key]
    dot = shutil.which("dot")
    svg: str | None = None
    if dot is not None:
        proc = await asyncio.create_subprocess_exec(dot, "-Tsvg", stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _err = await proc.communicate(dot_source(wf).encode())
        if proc.returncode == 0:
            text = out.decode()
            svg = text[text.index("<svg"):]  # without the XML prolog and doctype
    _cache[key] = svg
    return svg


def overlay(visited: Iterable[str], current: Iterable[str], failed: Iterable[str]) -> str:
    """CSS colouring a run's path on its workflow's graph."""
    rules = []
    for stages, fill, stroke in ((visited, "#e7f5ec", "#1f7a3f"), (current, "#efe9fb", "#6941c6"),
                                 (failed, "#fdecea", "#b42318")):
        for stage in stages:
            sel = f"#{node_id(stage)}"
            rules.append(f"{sel} polygon, {sel} path, {sel} ellipse {{ fill: {fill}; stroke: {stroke}; "
                         f"stroke-width: 2px; }}")
    return "\n".join(rules)


async def run_graph(wf: Workflow, visited: Iterable[str], current: Iterable[str],
                    failed: Iterable[str]) -> Markup | None:
    """The workflow's SVG with a run's path coloured (None without Graphviz)."""
    svg = await render(wf)
    if svg is None:
        return None
    return Markup(f"<style>{overlay(visited, current, failed)}</style>{svg}")
