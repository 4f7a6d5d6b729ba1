"""The package's shape, checked from its source: no import cycle (function-level imports
included), the layers import only downwards, and no module is over 500 lines.

Every module under src/irlhf is parsed with `ast` (nothing is imported). An edge A -> B means
that A's source imports module B somewhere: at the top, inside a function or under
`if TYPE_CHECKING:`; `from irlhf.x import y` is an edge to irlhf.x.y when that is a module, else
to irlhf.x. The parent packages Python initialises on the way (`import irlhf.x.y` runs
irlhf/x/__init__.py first) are not edges: a package's __init__ importing its own submodules is
not a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "irlhf"
MAX_LINES = 500

LAYER_RULES = {
    # layer: the packages its modules must not import
    "irlhf.experiments": ("irlhf.kinds", "irlhf.studies", "irlhf.algorithms"),
    "irlhf.kinds": ("irlhf.studies",),
}
"""experiments/ is the platform: it never imports science (a kind's module and results version
reach it as data, through `register_kind`); a kind is below every study."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the package."""
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of a `from ... import` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported module of the package, line) for every import statement in `module`."""
    known = modules()
    tree = ast.parse(known[module].read_text(encoding="utf-8"), str(known[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import irlhf.x.y.z` of a non-module
                target = target.rpartition(".")[0]
            if target.split(".")[0] == PACKAGE and target != module:
                yield target, node.lineno


@cache
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}."""
    graph: dict[str, dict[str, int]] = {}
    for module in modules():
        edges: dict[str, int] = {}
        for target, line in imports_of(module):
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a list of
    its modules, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_top_level_and_function_level_imports() -> None:
    graph = import_graph()
    assert "irlhf.kinds.imitation" in graph["irlhf.kinds"]  # package __init__, from-import
    assert "irlhf.kinds.world_spec" in graph["irlhf.kinds.common"]
    assert "irlhf.policies.causal_lm" in graph["irlhf.kinds.common"]  # inside build_policy
    assert "irlhf.kinds" in graph["irlhf.cli"]  # `import irlhf.kinds` inside a function
    tiny = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycles(tiny) == [["a", "b", "c"]] and find_cycles({"a": {"b": 1}}) == []


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    described = [
        "; ".join(f"{m}:{line} imports {t}" for m in c for t, line in graph[m].items() if t in c)
        for c in cycles
    ]
    assert not cycles, "import cycles (one line per cycle):\n" + "\n".join(described)


@pytest.mark.parametrize("layer", sorted(LAYER_RULES))
def test_layers_import_only_downwards(layer: str) -> None:
    forbidden = LAYER_RULES[layer]
    found = [
        f"{module}:{line} imports {target}"
        for module, edges in import_graph().items()
        if _inside(module, layer)
        for target, line in edges.items()
        if any(_inside(target, f) for f in forbidden)
    ]
    assert not found, f"{layer} must not import {', '.join(forbidden)}:\n" + "\n".join(found)


def test_the_platform_names_no_science_module_even_in_a_string() -> None:
    """No string import either (importlib.import_module("irlhf.kinds...")): the platform learns
    a kind's module from `register_kind`."""
    found = [
        f"{path.relative_to(SRC)}: {name!r}"
        for module, path in modules().items()
        if _inside(module, "irlhf.experiments")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for name in LAYER_RULES["irlhf.experiments"]
        if name in node.value
    ]
    assert not found, "\n".join(found)


def _lines(module: str) -> int:
    return len(modules()[module].read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_500_lines() -> None:
    long = {m: _lines(m) for m in modules() if _lines(m) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
