"""Trust-store integrity (issue 11 §5, issue 12): modes, weak keys, non-regular files.

- A store directory, sub-directory or certificate file that group/others can write is a
  finding (a warning, logged at WARNING); with strict modes it is refused.
- All-zero and small-order public keys are never trusted, and `add_certificate` refuses them.
- A FIFO, socket or device in a store is a finding and is never opened: no hang.
- Directories curvecert creates are 0755 whatever the umask (a real `umask 000` child).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from curvecert import store
from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.certs.verify import verify_file
from curvecert.errors import InvalidKey, OperationalError

P = 2**255 - 19
WEAK = [bytes(32), (1).to_bytes(32, "little"), (P - 1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7")]


def put(d: Path, cert: Certificate, name: str | None = None) -> Path:
    path = d / (name or store.store_filename(cert.public_key))
    path.write_text(certfile.dump(cert, secret=False))
    path.chmod(0o644)
    return path


def codes(snap: store.Snapshot) -> list[str]:
    return [f.code for f in snap.findings]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "store"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


# --- modes ----------------------------------------------------------------------------------

def test_group_writable_file_is_a_warning_and_trusted(root: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    c = Certificate.new(name="a")
    put(root, c).chmod(0o664)
    with caplog.at_level(logging.WARNING, logger="curvecert.store.scan"):
        snap = store.scan(root)
    assert c.public_key in snap
    [f] = snap.findings
    assert (f.code, f.severity) == ("writable-file", "warning")
    assert "group" in f.message and "chmod go-w" in f.message
    assert any("writable-file" in r.getMessage() for r in caplog.records)


def test_strict_modes_refuse_writable_file(root: Path) -> None:
    good, bad = Certificate.new(), Certificate.new()
    put(root, good)
    put(root, bad).chmod(0o646)
    snap = store.scan(root, strict=True, log_findings=False)
    assert good.public_key in snap and bad.public_key not in snap
    assert [(f.code, f.severity) for f in snap.findings] == [("writable-file", "error")]


def test_writable_subdirectory(root: Path) -> None:
    sub = root / "team"
    sub.mkdir()
    c = Certificate.new()
    put(sub, c)
    sub.chmod(0o777)
    relaxed = store.scan(root, log_findings=False)
    assert c.public_key in relaxed and codes(relaxed) == ["writable-directory"]
    strict = store.scan(root, strict=True, log_findings=False)
    assert c.public_key not in strict
    assert sorted(codes(strict)) == ["in-writable-directory", "writable-directory"]


def test_writable_store_directory(root: Path) -> None:
    c = Certificate.new()
    put(root, c)
    root.chmod(0o775)
    relaxed = store.scan(root, log_findings=False)
    assert c.public_key in relaxed and "writable-directory" in codes(relaxed)
    strict = store.scan(root, strict=True, log_findings=False)
    assert not strict.healthy and len(strict) == 0
    assert "group" in (strict.problem or "")


def test_incremental_apply_sees_a_chmod(root: Path) -> None:
    c = Certificate.new()
    path = put(root, c)
    scanner = store.Scanner(root, strict=True, log_findings=False)
    assert c.public_key in scanner.scan()
    path.chmod(0o666)
    assert c.public_key not in scanner.apply([path])
    path.chmod(0o644)
    assert c.public_key in scanner.apply([path])


def test_directories_are_0755_whatever_the_umask(tmp_path: Path) -> None:
    """A real child process with umask 000 creates a nested store through the CLI."""
    src = tmp_path / "alice"
    Certificate.new(name="alice").save(src)
    target = tmp_path / "a" / "b" / "store"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run(
        ["sh", "-c", f'umask 000 && exec "{sys.executable}" -m curvecert store --store '
         f'"{target}" add "{src}"'], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for d in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    [f] = list(target.iterdir())
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert store.scan(target, log_findings=False).findings == ()


# --- weak keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", WEAK, ids=lambda k: k.hex()[:8])
def test_weak_keys_are_never_trusted(root: Path, key: bytes) -> None:
    assert keys.weak_public_key(key) is not None
    weak = Certificate(key, meta={"name": "mallory"})
    put(root, weak, "mallory.key")
    snap = store.scan(root, log_findings=False)
    assert len(snap) == 0 and codes(snap) == ["weak-key"]
    with pytest.raises(InvalidKey, match="not stored"):
        store.add_certificate(root / "other", weak)
    assert not (root / "other").exists()
    assert any(f.code in ("key-zero", "key-weak") for f in verify_file(root / "mallory.key"))


def test_ordinary_keys_are_not_weak() -> None:
    for _ in range(50):
        assert keys.weak_public_key(Certificate.new().public_key) is None


# --- not regular files ----------------------------------------------------------------------

def _scan_in_thread(root: Path) -> store.Snapshot:
    out: list[store.Snapshot] = []
    t = threading.Thread(target=lambda: out.append(store.scan(root, log_findings=False)),
                         daemon=True)
    t.start()
    t.join(30)
    assert out, "the scan hung"
    return out[0]


def test_fifo_and_socket_in_a_store_are_findings_not_hangs(root: Path) -> None:
    c = Certificate.new()
    put(root, c)
    os.mkfifo(root / "pipe")
    (root / "to-pipe").symlink_to(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        snap = _scan_in_thread(root)
    finally:
        sock.close()
    assert c.public_key in snap
    found = {(Path(f.path).name, f.code) for f in snap.findings}
    assert found == {("pipe", "not-regular-file"), ("to-pipe", "not-regular-file"),
                     ("sock", "not-regular-file")}
    assert "FIFO" in next(f.message for f in snap.findings if f.path.endswith("pipe"))


def test_fifo_swapped_in_is_applied_without_hanging(root: Path) -> None:
    c = Certificate.new()
    path = put(root, c)
    scanner = store.Scanner(root, log_findings=False)
    scanner.scan()
    path.unlink()
    os.mkfifo(path)
    snap = scanner.apply([path])
    assert c.public_key not in snap and codes(snap) == ["not-regular-file"]


def test_read_bytes_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    from curvecert.certs.fileio import read_bytes

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OperationalError, match="FIFO"):
        read_bytes(fifo)
