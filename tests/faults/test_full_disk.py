"""A full disk: writes fail with a clear one-line error (exit 3) and the old file intact.

Two real ways to run out of space:

- `RLIMIT_FSIZE` in the child (set in `preexec_fn`, SIGXFSZ ignored), so every write past
  the limit fails with EFBIG, exactly where a full disk fails with ENOSPC;
- a 64 KiB tmpfs filled to the last block (ENOSPC), when this process may mount one
  (root in a container that allows it); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from curvecert import store
from curvecert.auth import passwords
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from tests.faults.support import leftover_temps, one_error_line, run_cli_as

Env = Callable[..., dict[str, str]]


def _limit(nbytes: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# --- the cases, shared by both kinds of full disk ---------------------------------------------

def check_new_force(env: dict[str, str], d: Path, why: str,
                    preexec: Callable[[], None] | None, full: Callable[[], None]) -> None:
    pub = d / "server"
    certfile.save(Certificate.new(name="old"), pub)
    before = _snapshot(d)
    full()
    result = run_cli_as(env, "new", "--force", "--name", "new", str(pub), preexec=preexec)
    one_error_line(result, pub.parent, why)
    assert _snapshot(d) == before, "the old pair changed"
    assert not leftover_temps(d)


def check_new_fresh(env: dict[str, str], d: Path, why: str,
                    preexec: Callable[[], None] | None, full: Callable[[], None]) -> None:
    pub = d / "fresh"
    full()
    result = run_cli_as(env, "new", str(pub), preexec=preexec)
    one_error_line(result, pub, why)
    assert not pub.exists() and not Path(certfile.secret_path(pub)).exists()
    assert not leftover_temps(d)


def check_store_add(env: dict[str, str], d: Path, why: str,
                    preexec: Callable[[], None] | None, full: Callable[[], None]) -> None:
    sd = d / "store"
    cert = Certificate.new(name="old")
    target = Path(store.add_certificate(sd, cert))
    before = target.read_bytes()
    newer = d / "newer.cert"
    certfile.save_public(Certificate(cert.public_key, None, [("name", "x" * 300)]), newer)
    full()
    result = run_cli_as(env, "store", "add", "--force", "--store", str(sd), str(newer),
                  preexec=preexec)
    one_error_line(result, target, why)
    assert target.read_bytes() == before
    assert not leftover_temps(sd)
    assert len(store.scan(sd, log_findings=False)) == 1


def check_passwd_add(env: dict[str, str], d: Path, why: str,
                     preexec: Callable[[], None] | None, full: Callable[[], None]) -> None:
    pwfile = d / "passwords"
    passwords.PasswordFile(pwfile, missing_ok=True).add("alice", "a" * 255, plaintext=True)
    before = pwfile.read_bytes()
    full()
    result = run_cli_as(env, "passwd", "add", "--stdin", "--file", str(pwfile), "bob",
                  stdin=b"bob-password\n", preexec=preexec)
    one_error_line(result, pwfile, why)
    assert pwfile.read_bytes() == before
    assert not leftover_temps(d)


CASES = [check_new_force, check_new_fresh, check_store_add, check_passwd_add]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[6:])
def test_file_size_limit(case: Callable[..., None], tmp_path: Path, cli_env: Env) -> None:
    # 340 bytes: a secret certificate (~310) fits, its public file (~360) does not, so
    # `new` fails half-way through its pair; every other write fails outright.
    case(cli_env(None), tmp_path, "File too large", _limit(340), lambda: None)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted on a fresh directory, or a skip saying why not."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs",
                             str(mnt)], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(mnt: Path) -> None:
    """Use up every free block of the file system (ENOSPC)."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert os.statvfs(mnt).f_bavail == 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[6:])
def test_full_tmpfs(case: Callable[..., None], tiny_tmpfs: Path, cli_env: Env) -> None:
    work = tiny_tmpfs / "work"
    work.mkdir()
    case(cli_env(None), work, "No space left on device", None, lambda: _fill(tiny_tmpfs))
