"""Imports go one way (DESIGN.md "Layers"); third-party packages stay in their modules.

Module-level imports only: a function-level import (as in `Certificate.load`, which hands
the work to the file layer) is how a lower layer offers a convenience without depending
on a higher one at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "curvecert"

# Lower number = lower layer. A module may import curvecert modules of a lower or equal rank
# only when listed below; unknown modules default to the "live" rank.
RANK = {
    "errors": 0, "z85": 0, "zpl": 0, "zmtp": 0, "fileio": 0,
    "keys": 1, "cert": 1,
    "certfile": 2, "store": 2, "passwords": 2, "zap": 2, "config": 2,
    "policy": 3, "verify": 3,
    "watch": 4, "authenticator": 4, "aio": 4, "forwarder": 4, "gateway": 4, "probe": 4,
    "daemon": 4, "providers": 4, "compat": 5,
    "render": 6, "cli": 7,
}
LIVE = 4
# third-party package -> modules (first component after curvecert.) allowed to import it
THIRD_PARTY = {
    "watchdog": {"watch"},
    "rich": {"render", "cli"},
    "click": {"cli"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def _rank(mod: str) -> int:
    return RANK.get(mod, LIVE)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    rel = path.relative_to(PKG)
    me = rel.parts[0].removesuffix(".py")
    if me in ("__init__", "__main__"):
        return
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            top, *rest = name.split(".")
            if top == "curvecert" and rest:
                other = rest[0]
                if other in ("__init__", "__version__", me):
                    continue
                assert _rank(other) <= _rank(me), f"{rel}: imports higher layer {name}"
                if _rank(other) == _rank(me):
                    assert other in ALLOWED_SAME.get(me, ()), f"{rel}: same-layer import {name}"
            allowed = THIRD_PARTY.get(top)
            if allowed is not None:
                assert me in allowed, f"{rel}: {top} may only be imported in {sorted(allowed)}"


# same-rank imports that are part of the design
ALLOWED_SAME: dict[str, tuple[str, ...]] = {
    "cert": ("keys",),
    "z85": ("errors",), "zpl": ("errors",), "zmtp": ("errors",), "fileio": ("errors",),
    "store": ("certfile",), "passwords": (), "zap": (),
    "config": ("certfile", "store", "passwords"),
    "policy": ("verify",), "verify": (),
    "authenticator": ("watch", "providers"), "aio": ("authenticator", "providers"),
    "providers": (),
    "forwarder": ("authenticator",), "gateway": ("authenticator", "daemon"),
    "daemon": ("authenticator", "forwarder", "watch", "gateway"), "probe": (),
}
