"""Shared pieces of the fault tests: unprivileged children, file-state checks, handshakes.

Running as root (as CI does) defeats permission bits, so tests that need "cannot read" or
"cannot write" run the child process without root's file-access override:

- as `nobody` (uid/gid 65534) when that user can run this interpreter and read the
  repository (then the working directory is made traversable for it);
- otherwise as root *without* the capabilities that bypass permission checks
  (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_LINUX_IMMUTABLE dropped from the
  bounding set before exec, so the kernel checks mode bits against the owner, root);
- not at all when we are not root (the bits already apply).
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs.cert import Certificate

__all__ = ["ROOT", "Unprivileged", "client_outcome", "leftover_temps", "one_error_line",
           "run_cli_as", "secret_mode_problems", "unprivileged", "wait_outcome"]

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
_PR_CAPBSET_DROP = 24
# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_LINUX_IMMUTABLE
_DAC_CAPS = (1, 2, 3, 9)


def _others_can_use(path: Path, *, execute: bool) -> bool:
    """True when a user with no relation to `path`'s owner can reach and read/run it."""
    path = path.resolve()
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(path).st_mode
    need = stat.S_IROTH | (stat.S_IXOTH if execute or stat.S_ISDIR(mode) else 0)
    return mode & need == need


def _drop_dac_caps() -> None:  # runs in the forked child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            os._exit(121)


def _become_nobody() -> None:  # runs in the forked child, before exec
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@dataclass
class Unprivileged:
    """How to start a child that permission bits apply to."""

    preexec_fn: Callable[[], None] | None
    how: str
    as_nobody: bool

    def prepare(self, *paths: Path) -> None:
        """Make `paths` (and their parents) usable by the child (nobody needs o+rx)."""
        if not self.as_nobody:
            return
        for p in paths:
            for q in [p, *p.parents]:
                if q == Path("/"):
                    break
                st = os.stat(q)
                if st.st_mode & 0o005 != 0o005 and stat.S_ISDIR(st.st_mode):
                    os.chmod(q, stat.S_IMODE(st.st_mode) | 0o005)

    def check(self) -> None:
        """Prove the restriction is real: the child cannot read a 0o000 file."""
        probe = ROOT / "tests" / "faults" / "__init__.py"
        code = ("import sys\ntry:\n    open(sys.argv[1] + '/x').read()\nexcept "
                "PermissionError:\n    sys.exit(0)\nsys.exit(1)")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "x").write_text("secret")
            os.chmod(Path(tmp, "x"), 0)
            os.chmod(tmp, 0o755)
            rc = subprocess.run([sys.executable, "-c", code, tmp], preexec_fn=self.preexec_fn,
                                timeout=30).returncode
        assert probe.exists()
        if rc != 0:
            pytest.skip(f"could not make a child that permission bits apply to ({self.how})")


def unprivileged() -> Unprivileged:
    """The best available way to run an unprivileged child (see the module docstring)."""
    if os.geteuid() != 0:
        return Unprivileged(None, f"uid {os.geteuid()} (not root)", False)
    exe = Path(sys.executable)
    if _others_can_use(exe, execute=True) and _others_can_use(ROOT / "curvecert",
                                                               execute=False):
        u = Unprivileged(_become_nobody, "uid/gid 65534 (nobody)", True)
    else:
        u = Unprivileged(_drop_dac_caps, "root without CAP_DAC_OVERRIDE/DAC_READ_SEARCH/"
                         f"FOWNER ({exe} is not reachable by nobody)", False)
    u.check()
    return u


# --- file state ---------------------------------------------------------------------------

def leftover_temps(directory: Path) -> list[str]:
    """Temporary files `atomic_write` left behind (a kill between create and rename)."""
    return sorted(n for n in os.listdir(directory) if n.startswith(".") and n.endswith(".tmp"))


def secret_mode_problems(directory: Path, secret_names: Callable[[str], bool]) -> list[str]:
    """Secret files (and their temporaries) with any group/other permission bit."""
    out = []
    for name in os.listdir(directory):
        base = name[1:].rsplit(".", 2)[0] if name.startswith(".") and name.endswith(".tmp") \
            else name
        if secret_names(base):
            mode = stat.S_IMODE(os.lstat(directory / name).st_mode)
            if mode & 0o077:
                out.append(f"{name}: {mode:04o}")
    return out


def temps_are_ignored(directory: Path) -> None:
    """Leftover temporaries are dot-files, which the store scan never reads."""
    for name in leftover_temps(directory):
        assert store.is_ignored_name(name), name


# --- running the CLI -----------------------------------------------------------------------

def run_cli_as(env: dict[str, str], *args: str, stdin: bytes = b"",
         preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m curvecert ARGS` with `preexec` in the child (limits, privileges)."""
    env = dict(env, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "curvecert", *args], input=stdin,
                            capture_output=True, env=env, preexec_fn=preexec, timeout=60)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def one_error_line(result: subprocess.CompletedProcess[str], path: Path, why: str) -> None:
    """Exit 3 with exactly one stderr line, `curvecert: error: ...PATH...WHY...`."""
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("curvecert: error: "), lines[0]
    assert str(path) in lines[0] and why in lines[0], lines[0]
    assert "Traceback" not in result.stderr


# --- handshakes from the client side --------------------------------------------------------

def client_outcome(ctx: zmq.Context[Any], endpoint: str, server: Certificate,
                   client: Certificate, timeout: float = 5.0) -> int:
    """One CURVE handshake; 200 when admitted, else the ZAP status the server sent back."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    client.apply_client(sock, server)
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    try:
        sock.connect(endpoint)
        if not mon.poll(int(timeout * 1000)):
            raise AssertionError(f"no handshake outcome within {timeout}s")
        from zmq.utils.monitor import recv_monitor_message

        event = recv_monitor_message(mon)
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return 200
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return int(event["value"])
        raise AssertionError(f"handshake failed with a protocol error: {event}")
    finally:
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)


def wait_outcome(attempt: Callable[[], int], want: int, timeout: float = 10.0,
                 interval: float = 0.01) -> int:
    """Repeat `attempt` every `interval` s until it returns `want` (bounded); returns how
    many attempts it took."""
    deadline = time.monotonic() + timeout
    n = 0
    last = None
    while True:
        n += 1
        last = attempt()
        if last == want:
            return n
        if time.monotonic() > deadline:
            raise AssertionError(f"still {last} (want {want}) after {timeout}s")
        time.sleep(interval)  # polling pace, not synchronisation


def iter_lines(stream: Any) -> Iterator[str]:
    """Lines of a text stream until EOF (for a child's output)."""
    for line in stream:
        yield line.rstrip("\n")
