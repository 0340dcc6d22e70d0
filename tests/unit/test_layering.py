"""The architecture holds: ``engine`` never imports ``bot``, the engine's layers import downward
only, and no module imports another that imports it back (at any depth, lazy imports included).

Every ``import`` statement counts, including those inside functions and under
``TYPE_CHECKING``: a cycle that is only broken by importing late is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The engine's layers, lowest first: a module may import its own layer and those below it.
#: ``engine`` itself (the authoring API stage authors use) is the bottom; its ``__init__`` is the
#: public façade and re-exports from the layers, so it is not a layer member.
LAYERS = ["engine", "engine.store", "engine.runtime", "engine.people", "engine.ops", "engine.triggers", "engine.web",
          "engine.cli", "engine.testing"]


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in ("engine", "bot"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module an imported name lives in (``engine.store.queries`` for ``...store.queries.X``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every project module ``module`` imports, wherever the import statement stands."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            target = _resolve(name)
            if target and target != module and not module.startswith(target + "."):
                out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> int | None:
    if module == "engine" or not module.startswith("engine"):
        return None
    best = 0
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            best = i
    return best


def test_engine_never_imports_bot() -> None:
    offenders = [f"{m} imports {t}" for m, ts in GRAPH.items() if m.startswith("engine")
                 for t in ts if t == "bot" or t.startswith("bot.")]
    assert offenders == []


def test_engine_layers_import_downward_only() -> None:
    offenders = []
    for module, targets in GRAPH.items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in targets:
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                offenders.append(f"{module} ({LAYERS[mine]}) imports {target} ({LAYERS[theirs]})")
    assert offenders == []


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w == "engine" or w not in GRAPH:  # the façade re-exports; nothing imports it back
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_what_it_holds(package: str) -> None:
    assert ast.get_docstring(ast.parse(MODULES[package].read_text(encoding="utf-8")))
