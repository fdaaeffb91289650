"""`promtool check ...` for tests: skipped with a reason where promtool is not installed,
unless `CURVECERT_REQUIRE_PROMTOOL=1` (CI installs Debian's `prometheus` package)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["promtool"]


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> None:
    """Run `promtool ARGS` and fail the test unless it exits 0."""
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CURVECERT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (CURVECERT_REQUIRE_PROMTOOL=1) but not found")
        pytest.skip("promtool is not installed (Debian: prometheus)")
    result = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True,
                            timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
