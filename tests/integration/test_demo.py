"""The README's demo (`examples/demo.py`) runs end to end and says so."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.conftest import ROOT


def test_demo_runs(cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")],
                          capture_output=True, text=True, env=cli_env(None), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "✗" not in out.replace("✗ DENIED", "")  # only the daemon's own refusal line
    for n in range(1, 8):
        assert f"✓ {n}." in out
    assert "alice admitted" in out and "User-Id" in out
    assert "alice refused on a new connection (status 400" in out
