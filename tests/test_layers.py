"""The package's layers, read from the source with ``ast``: no import climbs a layer, no import cycle,
no module over 400 lines, each command in its owner's ``cli.py``.

Every import counts, at module level and inside functions (an import deferred into a function is
still a dependency, and a cycle hidden that way is still a cycle). Layers, lowest first; a module
may import its own subpackage and any lower layer, never a higher one nor a sibling subpackage of
its own layer.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dsa_plugin"

#: Subpackages (first component below ``dsa_plugin``) by layer, lowest first. ``""`` is the root
#: ``dsa_plugin/__init__.py`` (only ``__version__``).
LAYERS: list[set[str]] = [
    {"", "core"},
    {"data", "mining", "transforms"},
    {"models"},
    {"night"},
    {"training", "gan", "evaluation"},
    {"integrations"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (``from pkg import submodule`` names
    the submodule)."""
    path = modules()[name]
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(name, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif target in known:
                    found.add(target)
    found.discard(name)
    return found


@cache
def graph() -> dict[str, set[str]]:
    return {name: imports_of(name) for name in modules()}


def subpackage(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(name: str) -> int:
    for rank, members in enumerate(LAYERS):
        if subpackage(name) in members:
            return rank
    raise AssertionError(f"{name}: subpackage {subpackage(name)!r} is in no layer; add it to LAYERS")


def package_of(name: str) -> str:
    """The folder a module lives in (a package's ``__init__`` belongs to its own folder)."""
    return name if modules()[name].name == "__init__.py" else name.rpartition(".")[0]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_subpackage_has_a_layer():
    for name in modules():
        layer(name)


def test_no_import_climbs_a_layer_or_crosses_to_a_sibling():
    bad = []
    for name, targets in graph().items():
        for target in targets:
            if subpackage(target) == subpackage(name):
                continue
            if layer(target) >= layer(name):
                bad.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(sorted(bad))


def test_core_imports_nothing_else_of_the_package():
    for name, targets in graph().items():
        if subpackage(name) == "core":
            assert {subpackage(t) for t in targets} <= {"core"}, (name, targets)


def test_no_module_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_import_cycle():
    edges: dict[str, set[str]] = {}
    for name, targets in graph().items():
        for target in targets:
            a, b = package_of(name), package_of(target)
            # a package's own modules, and a module reaching up to its parent package's __init__
            if a != b and not a.startswith(b + "."):
                edges.setdefault(a, set()).add(b)
    cycle = find_cycle(edges)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_find_cycle_sees_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_at_most_400_lines(name):
    lines = modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{modules()[name]} has {lines} lines (limit {MAX_LINES}); split it by concern"


def test_each_command_lives_in_its_owners_cli_module():
    from dsa_plugin.cli import COMMANDS

    for command, (module, _) in COMMANDS.items():
        assert module.endswith(".cli"), (command, module)
        assert module in modules(), (command, module)
    # no other module defines a command entry point
    mains = {name for name, path in modules().items()
             if any(isinstance(n, ast.FunctionDef) and n.name == "main"
                    for n in ast.parse(path.read_text(encoding="utf-8")).body)}
    assert mains <= {module for module, _ in COMMANDS.values()} | {"dsa_plugin.cli"}, mains
