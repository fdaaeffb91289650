"""Permissions changed under a running authenticator: fail closed, and say so.

The authenticator runs in a child process that permission bits apply to (see
`tests.faults.support.unprivileged`): a real `Authenticator` with a watched `CertStore`
behind a CURVE server. This process is the client and judges every handshake. The rules
tested are docs/store.md's:

- a certificate file that cannot be read costs only itself (an `unreadable` finding);
- a sub-directory that cannot be listed costs only the keys below it;
- a store directory that cannot be listed trusts NO key at all (no "last known good"
  view), logged at ERROR; when it is readable again the keys come back, and that is
  logged too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from tests.conftest import wait_until
from tests.faults.support import Unprivileged, client_outcome, unprivileged, wait_outcome

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def child() -> Unprivileged:
    return unprivileged()


class Live:
    """The child authenticator, its log, and a client-side `outcome(cert)`."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, endpoint: str,
                 ctx: zmq.Context[Any], server: Certificate):
        self.proc, self.log, self.endpoint = proc, log, endpoint
        self.ctx, self.server = ctx, server

    def outcome(self, client: Certificate) -> int:
        return client_outcome(self.ctx, self.endpoint, self.server, client)

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def wait_logged(self, text: str) -> None:
        wait_until(lambda: self.logged(text), timeout=10, message=f"log line {text!r}")


@pytest.fixture
def live(child: Unprivileged, tmp_path: Path, ctx: zmq.Context[Any],
         cli_env: Callable[..., dict[str, str]]) -> Iterator[tuple[Live, dict[str, Any]]]:
    sd = tmp_path / "store"
    team = sd / "team"
    certs = {name: Certificate.new(name=name) for name in ("alice", "bob", "carol")}
    files = {"alice": Path(store.add_certificate(sd, certs["alice"])),
             "carol": Path(store.add_certificate(team, certs["carol"]))}
    server = Certificate.new(name="server")
    certfile.save(server, tmp_path / "server")
    os.chmod(tmp_path / "server_secret", 0o644)  # test fixture: the child may be nobody
    child.prepare(tmp_path, sd, team)
    log = tmp_path / "child.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.authchild", str(sd),
             str(tmp_path / "server_secret")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            env=cli_env(None), preexec_fn=child.preexec_fn)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("ready "), log.read_text()
        yield (Live(proc, log, f"tcp://127.0.0.1:{int(line.split()[1])}", ctx, server),
               {"certs": certs, "files": files, "store": sd, "team": team})
    finally:
        for d in (sd, team):
            if d.exists():
                os.chmod(d, 0o755)
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_unreadable_file_subdirectory_and_store(live: tuple[Live, dict[str, Any]]) -> None:
    auth, scene = live
    alice, bob, carol = (scene["certs"][n] for n in ("alice", "bob", "carol"))
    assert auth.outcome(alice) == 200
    assert auth.outcome(carol) == 200
    assert auth.outcome(bob) == 400

    # 1. one certificate file made unreadable: that key only
    os.chmod(scene["files"]["alice"], 0)
    wait_outcome(lambda: auth.outcome(alice), 400)
    assert auth.outcome(carol) == 200
    auth.wait_logged("cannot open: Permission denied")
    os.chmod(scene["files"]["alice"], 0o644)
    wait_outcome(lambda: auth.outcome(alice), 200)

    # 2. a sub-directory made unreadable: the keys below it only
    os.chmod(scene["team"], 0)
    wait_outcome(lambda: auth.outcome(carol), 400)
    assert auth.outcome(alice) == 200
    auth.wait_logged("cannot list this directory")
    os.chmod(scene["team"], 0o755)
    wait_outcome(lambda: auth.outcome(carol), 200)

    # 3. the store directory itself made unreadable: nothing is trusted, and it is said
    os.chmod(scene["store"], 0)
    wait_outcome(lambda: auth.outcome(alice), 400)
    assert auth.outcome(carol) == 400
    auth.wait_logged("cannot read the store directory")
    assert auth.logged("trusting NO key")
    os.chmod(scene["store"], 0o755)
    wait_outcome(lambda: auth.outcome(alice), 200)
    assert auth.outcome(carol) == 200
    assert auth.outcome(bob) == 400
    auth.wait_logged("is readable again")
    assert auth.proc.poll() is None, "the authenticator died"
