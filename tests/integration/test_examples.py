"""Every security-pattern example, run as a real process over loopback TCP, both ways."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PATTERNS = ["grasslands", "strawhouse", "woodhouse", "stonehouse", "ironhouse", "ironhouse2"]
# Why each negative case must be refused (the example prints the handshake event).
REASONS = {
    "grasslands": "protocol error",        # a CURVE client cannot talk to a NULL server
    "strawhouse": "status/code 400",       # address denied
    "woodhouse": "status/code 400",        # wrong password
    "stonehouse": "protocol error",        # wrong server key
    "ironhouse": "status/code 400",        # unknown client key
    "ironhouse2": "server: refused event=8192",  # wrong server key, separate processes
}


@pytest.mark.parametrize("negative", [False, True], ids=["allowed", "refused"])
@pytest.mark.parametrize("name", PATTERNS)
def test_example(name: str, negative: bool,
                 cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    args = [sys.executable, str(EXAMPLES / f"{name}.py")] + (["--negative"] if negative else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=cli_env(None), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    if negative:
        assert last.startswith(f"{name}: refused as expected: "), last
        assert REASONS[name] in last, last
    else:
        assert last.startswith(f"{name}: OK: "), last
        assert "Hello" in last


def test_examples_are_the_documented_set() -> None:
    found = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))
    assert set(PATTERNS) <= set(found)
