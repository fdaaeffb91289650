"""A reader that goes away (`curvecert ... | head -1`) loses the output, not the outcome.

Each command runs as a real process whose stdout is a pipe with no reader left, so its
first write fails with EPIPE. The exit status must be the one the command has with a
reader (0 for a listing, 1 for a negative verdict), with no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from curvecert import store
from curvecert.certs.cert import Certificate


def _without_reader(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    r, w = os.pipe()
    os.close(r)  # nobody will ever read: the first write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "curvecert", *args], stdout=w,
                              stderr=subprocess.PIPE, env=env, timeout=60)
    finally:
        os.close(w)
    return proc.returncode, proc.stderr.decode(errors="replace")


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    d = tmp_path / "store"
    for i in range(40):
        store.add_certificate(d, Certificate.new(name=f"client-{i}"))
    return d


@pytest.mark.parametrize("as_json", [False, True])
def test_a_listing_without_reader_exits_0(populated: Path, as_json: bool,
                                          cli_env: Callable[..., dict[str, str]]) -> None:
    args = ["store", "list", "--store", str(populated)] + (["--json"] if as_json else [])
    code, err = _without_reader(args, cli_env(None))
    assert code == 0, err
    assert "Traceback" not in err


def test_a_negative_verdict_survives_a_closed_pipe(
        tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text('metadata\ncurve\n    public-key = "short"\n')
    with_reader = subprocess.run([sys.executable, "-m", "curvecert", "verify", str(bad)],
                                 capture_output=True, env=cli_env(None), timeout=60)
    assert with_reader.returncode == 1, with_reader.stderr
    code, err = _without_reader(["verify", str(bad)], cli_env(None))
    assert code == 1, err
    assert "Traceback" not in err


def test_an_export_without_reader_is_an_error(populated: Path,
                                              cli_env: Callable[..., dict[str, str]]) -> None:
    """The export is the data: a lost export must not look like a success."""
    code, err = _without_reader(["store", "export", "--store", str(populated)],
                                cli_env(None))
    assert code == 3, err
    assert err.count("\n") == 1 and "reader went away" in err
