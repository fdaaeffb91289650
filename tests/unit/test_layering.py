"""The package layout holds (DESIGN.md "Layers and packages", issue 14).

- Imports between packages point down the order in `RANK`; a package may import itself.
- Third-party packages stay in the packages named in `THIRD_PARTY`.
- No import cycle between modules, counting function-level imports too: a deferred import
  hides a cycle from the interpreter, not from the reader.
- No module is longer than `MAX_LINES`.

Module-level imports decide the direction; function-level imports only count for cycles
(a function-level import of a *lower* module is how start-up stays lazy).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "curvecert"

#: Package (or top-level module) -> rank. Lower ranks may not import higher ones.
RANK = {
    "errors": 0,
    "formats": 1,
    "certs": 2,
    "store": 3,
    "auth": 4,
    "serve": 5, "probe": 5,
    "compat": 6,
    "cli": 7,
    "__main__": 8, "__init__": 8,
}
#: third-party package -> curvecert packages allowed to import it at module level
THIRD_PARTY = {
    "watchdog": {"store"},
    "etcd3gw": {"store"},
    "rich": {"cli"},
    "click": {"cli"},
}
#: Past this a module is split by responsibility (issue 14 asks for ~400).
MAX_LINES = 450
#: Cycles that exist today and are being removed; each entry must name its issue.
KNOWN_CYCLES: set[frozenset[str]] = set()


#: Modules still over MAX_LINES while issue 14's split is under way; must end empty.
KNOWN_LARGE: set[str] = set()


def _modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, *, module_level_only: bool) -> Iterator[str]:
    """Absolute curvecert module names imported by `path` (`from X import y` yields X.y too)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _known_modules() -> set[str]:
    return {_name(p) for p in _modules()}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    me = _package(_name(path))
    for name in _imports(path, module_level_only=True):
        top, *rest = name.split(".")
        if top == "curvecert" and rest and rest[0] != "__version__":
            other = rest[0]
            if other not in RANK:
                continue  # a public name re-exported by curvecert/__init__
            assert RANK[other] <= RANK[me], f"{path.relative_to(PKG)}: imports higher {name}"
            if RANK[other] == RANK[me]:
                assert other == me, f"{path.relative_to(PKG)}: sideways import {name}"
        allowed = THIRD_PARTY.get(top)
        if allowed is not None:
            assert me in allowed, f"{path.relative_to(PKG)}: {top} only in {sorted(allowed)}"


def test_no_import_cycles() -> None:
    known = _known_modules()
    graph: dict[str, set[str]] = {}
    for path in _modules():
        me = _name(path)
        deps = {n for n in _imports(path, module_level_only=False) if n in known and n != me}
        # `import curvecert.a.b` also runs curvecert/a/__init__: count the package only if
        # its __init__ imports something, which the package docstrings here do not.
        graph[me] = deps
    cycles: set[frozenset[str]] = set()
    for start in graph:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.add(frozenset(trail))
                elif nxt not in trail and len(trail) < 8:
                    stack.append((nxt, [*trail, nxt]))
    new = {c for c in cycles if c not in KNOWN_CYCLES}
    assert not new, f"import cycles: {sorted(sorted(c) for c in new)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_size(path: Path) -> None:
    if str(path.relative_to(PKG)) in KNOWN_LARGE:
        pytest.xfail("being split (issue 14)")
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(PKG)} has {lines} lines (> {MAX_LINES})"
