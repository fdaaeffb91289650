"""Certificate pairs are written both-or-neither, with and without force (issue 11 §4).

The public file's move into place is made to fail for real (a directory where the public
file goes; an immutable public file via `chattr +i`): afterwards the directory holds
exactly what it held before, compared by names, bytes and modes, and the error says
whether the old pair was kept or nothing was written.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.compat import create_certificates
from curvecert.errors import CurvecertError


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes | None]]:
    """name -> (mode, bytes or None for a directory), for everything under `directory`."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for p in sorted(directory.rglob("*")):
        st = p.lstat()
        data = None if stat.S_ISDIR(st.st_mode) else p.read_bytes()
        out[str(p.relative_to(directory))] = (st.st_mode, data)
    return out


def _old_pair(directory: Path) -> Path:
    path = directory / "server"
    certfile.save(Certificate.new(name="old"), path)
    return path


def test_forced_rotation_with_a_directory_in_the_way_keeps_the_old_secret(
        tmp_path: Path) -> None:
    path = _old_pair(tmp_path)
    path.unlink()
    path.mkdir()  # the public file's place is taken by a directory
    (path / "inside").write_text("x")
    before = _snapshot(tmp_path)
    with pytest.raises(CurvecertError, match="the old pair was kept unchanged"):
        certfile.save(Certificate.new(name="new"), path, force=True)
    assert _snapshot(tmp_path) == before


def test_forced_first_write_with_a_directory_in_the_way_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(CurvecertError, match="nothing was written"):
        certfile.save(Certificate.new(name="new"), tmp_path / "server", force=True)
    assert _snapshot(tmp_path) == before


def test_compat_create_certificates_is_both_or_neither(tmp_path: Path) -> None:
    public_file, _secret_file = create_certificates(str(tmp_path), "server")
    os.unlink(public_file)
    os.mkdir(public_file)
    before = _snapshot(tmp_path)
    with pytest.raises(CurvecertError):
        create_certificates(str(tmp_path), "server")  # pyzmq's API always overwrites
    assert _snapshot(tmp_path) == before


def test_cli_new_force_says_the_old_pair_was_kept(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]],
        immutable: Callable[[Path], None]) -> None:
    path = _old_pair(tmp_path)
    immutable(path)
    _require_enforced(path)
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "curvecert", "new", "--force", str(path)],
                          capture_output=True, text=True, env=cli_env(None), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("curvecert: error: ") and proc.stderr.count("\n") == 1
    assert "the old pair was kept unchanged" in proc.stderr
    assert _snapshot(tmp_path) == before


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """`chattr +i` a file for the test (undone afterwards); skips where unsupported."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    marked: list[Path] = []

    def mark(path: Path) -> None:
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {proc.stderr.strip()}")
        marked.append(path)

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def _require_enforced(path: Path) -> None:
    probe = path.with_name(".probe")
    probe.write_text("")
    try:
        os.replace(probe, path)
    except OSError:
        probe.unlink()  # the flag is enforced: the real test can run
    else:
        pytest.skip("the immutable flag is not enforced here")


def test_forced_rotation_onto_an_immutable_public_file_keeps_the_old_pair(
        tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    path = _old_pair(tmp_path)
    immutable(path)
    _require_enforced(path)
    before = _snapshot(tmp_path)
    with pytest.raises(CurvecertError, match="the old pair was kept unchanged"):
        certfile.save(Certificate.new(name="new"), path, force=True)
    assert _snapshot(tmp_path) == before
    assert Certificate.load(certfile.secret_path(path)).meta["name"] == "old"
