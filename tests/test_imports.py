"""The import graph of meta-rl's own modules has no cycle, not even under TYPE_CHECKING.

The graph is read from the source (every ``import`` statement, wherever it is), so a cycle
that only a particular import order would trigger, or one hidden behind TYPE_CHECKING, fails
here too. The layering it protects: ``functional`` knows no policy, ``episodes`` and
``adaptation`` know no algorithm, ``samplers`` know no algorithm.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> source folder (envs/ and agents/ install as meta_rl.envs, meta_rl.agents)
PACKAGES = {
    "meta_rl": ROOT / "meta_rl",
    "meta_rl.envs": ROOT / "envs",
    "meta_rl.agents": ROOT / "agents",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def imports_of(name: str) -> set[str]:
    """The meta-rl modules that ``name`` imports anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m in MODULES and m != name}


def test_the_graph_is_read_from_the_source():
    assert "meta_rl.algorithms.closed_form" in imports_of("meta_rl.algorithms.maml_trpo")
    assert "meta_rl.agents.policies" in imports_of("meta_rl.algorithms.closed_form")
    assert "meta_rl.envs" in imports_of("meta_rl.samplers.base")


def test_no_import_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("meta_rl.functional", "meta_rl.algorithms"),  # policy-agnostic: no closed form
        ("meta_rl.episodes", "meta_rl.adaptation"),
        ("meta_rl.adaptation", "meta_rl.algorithms"),
        ("meta_rl.samplers", "meta_rl.algorithms"),
    ],
)
def test_lower_layers_do_not_import_upper_ones(module, forbidden):
    names = [m for m in MODULES if m == module or m.startswith(module + ".")]
    for name in names:
        bad = sorted(m for m in imports_of(name) if m == forbidden or m.startswith(forbidden + "."))
        assert not bad, f"{name} imports {bad}"
