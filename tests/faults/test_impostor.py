"""Know who answers (issue 11 §3; docs/security.md "Know who answers"), with a real other
local user (uid 65534 through `setpriv`, running the system Python with only the standard
library): a pre-created runtime directory, a swapped socket, a path bound during a
restart. The daemon refuses to start or the forwarder refuses the impostor; no stranger is
admitted and the impostor receives no request (so no PLAIN password).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs.cert import Certificate
from curvecert.errors import OperationalError
from curvecert.serve.forwarder import ZapForwarder
from curvecert.serve.runtime import publish_key
from tests.faults.zaphandlers import KNOWN, STRANGER, known_admitted_again, outcome, server_socket
from tests.serveproc import ServeAuth

Env = Callable[[dict[str, str] | None], dict[str, str]]
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
PASSWORD = b"correct horse battery staple"

#: An impostor daemon: binds a unix socket at argv[1], records every byte any client sends
#: to argv[2], prints READY. Standard library only (it runs as nobody).
IMPOSTOR = r"""
import os, socket, sys, threading
path, log = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(64)
print("READY", flush=True)
def serve(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            with open(log, "ab") as f:
                f.write(data)
            # the start of a ZMTP 3 greeting, so a plain client would go on talking
            conn.sendall(b"\xff" + b"\0" * 8 + b"\x7f\x03")
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def _as_nobody(*argv: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                             "--clear-groups", *argv], text=True, **kw)


@pytest.fixture(autouse=True)
def _need_setpriv() -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, setpriv and the system Python to act as another user")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A directory both users can use, like /tmp (world-writable, sticky)."""
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)
    for p in [tmp_path, *tmp_path.parents]:
        if p == Path("/"):
            break
        st = p.stat()
        if st.st_mode & 0o001 == 0:
            p.chmod(st.st_mode | 0o001)  # nobody may pass through
    return d


def _impostor(path: Path, log: Path) -> subprocess.Popen[str]:
    proc = _as_nobody(SYSTEM_PYTHON, "-c", IMPOSTOR, str(path), str(log),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"impostor did not start: {line!r} {proc.stderr.read()!r}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_precreated_runtime_directory_is_refused(shared: Path, ctx: zmq.Context[Any],
                                                 cli_env: Env, tmp_path: Path) -> None:
    run = shared / "curvecert-0"
    mk = _as_nobody("mkdir", "-m", "0777", str(run))
    assert mk.wait(10) == 0
    clients = tmp_path / "clients"
    store.add_certificate(clients, KNOWN)
    endpoint = f"ipc://{run}/zap.sock"
    daemon = subprocess.run([*_serve_auth(), "--store", str(clients), "--zap-endpoint",
                             endpoint], env=cli_env(None), capture_output=True, text=True,
                            timeout=60)
    assert daemon.returncode == 3, daemon.stderr
    assert f"{run}: the socket directory is owned by" in daemon.stderr
    assert "Traceback" not in daemon.stderr
    with pytest.raises(OperationalError, match="owned by"):
        ZapForwarder(ctx, endpoint).start()
    # the impostor now serves in its own directory: nothing reaches it from us
    log = tmp_path / "impostor.log"
    log.touch()
    log.chmod(0o666)
    impostor = _impostor(run / "zap.sock", log)
    try:
        with pytest.raises(OperationalError):
            ZapForwarder(ctx, endpoint).start()
        assert log.read_bytes() == b""
    finally:
        _stop(impostor)


def test_world_writable_directory_is_refused(shared: Path, cli_env: Env,
                                            tmp_path: Path) -> None:
    """The README's old `/tmp/app-zap.sock`: a directory others can write is refused."""
    clients = tmp_path / "clients"
    store.add_certificate(clients, KNOWN)
    daemon = subprocess.run([*_serve_auth(), "--store", str(clients), "--zap-endpoint",
                             f"ipc://{shared}/app-zap.sock"], env=cli_env(None),
                            capture_output=True, text=True, timeout=60)
    assert daemon.returncode == 3, daemon.stderr
    assert "writable by group or others" in daemon.stderr


def test_swapped_socket_is_refused(shared: Path, ctx: zmq.Context[Any], tmp_path: Path,
                                   cli_env: Env) -> None:
    """A directory others can write (mode 0777, ours): the impostor swaps the socket in;
    the forwarder refuses the directory and its socket; no stranger admitted, no bytes."""
    run = shared / "run"
    run.mkdir()
    run.chmod(0o777)
    log = tmp_path / "impostor.log"
    log.touch()
    log.chmod(0o666)
    impostor = _impostor(run / "zap.sock", log)
    server, endpoint = server_socket(ctx)
    try:
        with pytest.raises(OperationalError, match="writable by group or others"):
            ZapForwarder(ctx, f"ipc://{run}/zap.sock").start()
        run.chmod(0o755)  # even with the directory fixed, the socket is not the daemon's
        with pytest.raises(OperationalError, match="socket is owned by"):
            ZapForwarder(ctx, f"ipc://{run}/zap.sock").start()
        assert outcome(ctx, endpoint, STRANGER, 1.0) != 200
        assert log.read_bytes() == b""
    finally:
        server.close(linger=0)
        _stop(impostor)


def test_path_bound_during_a_restart(tmp_path: Path, ctx: zmq.Context[Any],
                                     cli_env: Env) -> None:
    """The daemon stops; another user tries to bind its path (it cannot: the directory is
    the daemon's, 0700); the forwarder denies meanwhile and follows the new daemon's key."""
    clients = tmp_path / "clients"
    store.add_certificate(clients, KNOWN)
    for p in [tmp_path, *tmp_path.parents]:
        if p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o001)
    run = tmp_path / "run"
    endpoint = f"ipc://{run}/zap.sock"
    args = ["--store", str(clients), "--zap-endpoint", endpoint]
    server, tcp = server_socket(ctx)
    fwd = None
    try:
        with ServeAuth(args, cli_env(None)) as daemon:
            assert (run.stat().st_mode & 0o777) == 0o700
            fwd = ZapForwarder(ctx, endpoint, timeout=0.3).start()
            known_admitted_again(ctx, tcp)
            assert daemon.stop() == 0
        log = tmp_path / "impostor.log"
        log.touch()
        log.chmod(0o666)
        grab = _as_nobody(SYSTEM_PYTHON, "-c", IMPOSTOR, str(run / "zap.sock"), str(log),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert grab.wait(20) != 0  # PermissionError: not its directory
        assert outcome(ctx, tcp, STRANGER, 2.0) != 200
        assert outcome(ctx, tcp, KNOWN, 2.0) != 200  # daemon down: denied
        with ServeAuth(args, cli_env(None)):
            known_admitted_again(ctx, tcp, 20.0)  # the new run's key, re-read
    finally:
        server.close(linger=0)
        if fwd is not None:
            fwd.stop()


def test_an_impostor_without_the_key_gets_no_request(tmp_path: Path,
                                                     ctx: zmq.Context[Any]) -> None:
    """Pinning: a listener at the right path with the wrong key (here the same user, so
    the directory checks pass) never completes the handshake, so it sees no request and
    no PLAIN password; every handshake is denied."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    path = run / "zap.sock"
    impostor_ctx: zmq.Context[Any] = zmq.Context()
    sock = impostor_ctx.socket(zmq.ROUTER)
    sock.linger = 0
    Certificate.new().apply_server(sock)  # not the key published below
    sock.bind(f"ipc://{path}")
    publish_key(str(path), Certificate.new().public_key)
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                  | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    server.plain_server = True
    port = server.bind_to_random_port("tcp://127.0.0.1")
    try:
        with ZapForwarder(ctx, f"ipc://{path}", timeout=0.3) as fwd:
            client_ctx: zmq.Context[Any] = zmq.Context()
            client = client_ctx.socket(zmq.DEALER)
            client.linger = 0
            client.plain_username = b"admin"
            client.plain_password = PASSWORD
            client.connect(f"tcp://127.0.0.1:{port}")
            deadline = time.monotonic() + 10
            while fwd.timed_out == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # polling pace: wait for the forwarder's own 500
            assert fwd.timed_out >= 1 and fwd.answered == 0
            client.close(linger=0)
            client_ctx.term()
            assert outcome(ctx, f"tcp://127.0.0.1:{port}", STRANGER, 1.0) != 200
        assert not sock.poll(100)  # the impostor never received a request
        events = []
        while mon.poll(0):
            events.append(mon.recv_multipart())
        assert events, "the forwarder never even tried the impostor"
    finally:
        server.close(linger=0)
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)
        impostor_ctx.term()


def _serve_auth() -> list[str]:
    import sys

    return [sys.executable, "-m", "curvecert", "serve-auth"]

