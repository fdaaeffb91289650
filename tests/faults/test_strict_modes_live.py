"""Strict modes (sshd's StrictModes) for the stores the authenticators open themselves.

A store directory is left world-writable (0777) and ANOTHER local user (uid/gid 65534,
started with `setpriv`) writes its own certificate into it. Without strict modes the key
is trusted and a WARNING says why that is dangerous (the default, unchanged); with
`configure_curve(..., strict_modes=True)` or `serve-auth --strict-modes` the planted key
is refused. Real `Authenticator` and CURVE handshakes; a real `serve-auth` process.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.auth.authenticator import Authenticator
from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder
from tests.faults.support import NOBODY, Unprivileged, client_outcome, wait_outcome
from tests.serveproc import ServeAuth, Server, handshake, retry_until, zap_asker

pytestmark = pytest.mark.slow


def _plant(tmp_path: Path, sd: Path, cert: Certificate) -> Path:
    """`cert`'s public file written into `sd` by uid/gid 65534 (another local user)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another local user")
    scratch = tmp_path / "scratch"
    data = Path(store.add_certificate(scratch, cert)).read_bytes()
    Unprivileged(None, "setpriv", True).prepare(sd)  # parents traversable for nobody
    sd.chmod(0o777)
    target = sd / "planted.key"
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    "sh", "-c", 'umask 022 && cat > "$1"', "sh", str(target)],
                   input=data, check=True, timeout=30)
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    return target


def _store_with_planted_key(tmp_path: Path) -> tuple[Path, Certificate, Certificate]:
    sd = tmp_path / "store"
    owner, intruder = Certificate.new(name="owner"), Certificate.new(name="intruder")
    store.add_certificate(sd, owner)
    _plant(tmp_path, sd, intruder)
    return sd, owner, intruder


@pytest.mark.parametrize("strict", [False, True])
def test_authenticator_refuses_a_planted_key_with_strict_modes(
        tmp_path: Path, ctx: zmq.Context[Any], caplog: pytest.LogCaptureFixture,
        strict: bool) -> None:
    sd, owner, intruder = _store_with_planted_key(tmp_path)
    server = Certificate.new(name="server")
    caplog.set_level(logging.WARNING, logger="curvecert")
    auth = Authenticator(ctx, log_decisions=False).start()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    try:
        auth.configure_curve("*", sd, strict_modes=strict)
        server.apply_server(sock)
        endpoint = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
        outcome = lambda cert: client_outcome(ctx, endpoint, server, cert)  # noqa: E731
        if strict:
            wait_outcome(lambda: outcome(intruder), 400)
            assert outcome(owner) == 400  # a writable store directory trusts nothing
            assert "not trusted (strict modes)" in caplog.text
        else:
            wait_outcome(lambda: outcome(intruder), 200)  # today's default: trusted...
            assert outcome(owner) == 200
            assert any(r.levelno == logging.WARNING and "0777" in r.getMessage()
                       and "can make the store trust their key" in r.getMessage()
                       for r in caplog.records), caplog.text  # ...with a WARNING
    finally:
        sock.close(linger=0)
        auth.stop()


@pytest.mark.parametrize("how", ["default", "--strict-modes", "strict-modes = true"])
def test_serve_auth_strict_modes(tmp_path: Path, ctx: zmq.Context[Any],
                                 cli_env: Callable[..., dict[str, str]], how: str) -> None:
    sd, owner, intruder = _store_with_planted_key(tmp_path)
    endpoint = f"ipc://{tmp_path}/run/zap.sock"
    if how == "strict-modes = true":
        conf = tmp_path / "serve-auth.toml"
        conf.write_text(f'zap-endpoint = "{endpoint}"\n\n[domains."*"]\n'
                        f'stores = ["{sd}"]\nstrict-modes = true\n')
        args = ["--config", str(conf)]
    else:
        args = ["--store", str(sd), "--zap-endpoint", endpoint]
        if how == "--strict-modes":
            args.append("--strict-modes")
    with ServeAuth(args, cli_env(None)) as daemon:
        ask = zap_asker(ctx, daemon)
        if how == "default":
            assert ask(intruder) == 200
            assert ask(owner) == 200
            daemon.wait_stderr("can make the store trust their key")
        else:
            assert ask(intruder) == 400
            assert ask(owner) == 400
            daemon.wait_stderr(re.escape("not trusted (strict modes)"))
        assert daemon.proc.poll() is None


@pytest.mark.parametrize("how", ["default", "--strict-modes", "[server] strict-modes"])
def test_forwarders_store_strict_modes(tmp_path: Path, ctx: zmq.Context[Any],
                                       cli_env: Callable[..., dict[str, str]], how: str) -> None:
    """The store of admitted forwarders (a tcp:// ZAP endpoint) follows strict modes too:
    another local user who plants a forwarder key in a writable directory gets no answers.
    """
    fwd_dir, _owner, intruder = _store_with_planted_key(tmp_path)
    clients = tmp_path / "clients"
    alice, server = Certificate.new(name="alice"), Certificate.new(name="server")
    store.add_certificate(clients, alice)
    daemon_cert = Certificate.new(name="daemon")
    daemon_cert.save(tmp_path / "daemon")
    secret = tmp_path / "daemon_secret"
    if how == "[server] strict-modes":
        conf = tmp_path / "serve-auth.toml"
        conf.write_text(f'zap-endpoint = "tcp://127.0.0.1:*"\n\n[domains."*"]\n'
                        f'stores = ["{clients}"]\n\n[server]\ncert = "{secret}"\n'
                        f'forwarders = "{fwd_dir}"\nstrict-modes = true\n')
        args = ["--config", str(conf)]
    else:
        args = ["--store", str(clients), "--zap-endpoint", "tcp://127.0.0.1:*",
                "--server-cert", str(secret), "--forwarders", str(fwd_dir)]
        if how == "--strict-modes":
            args.append("--strict-modes")
    with ServeAuth(args, cli_env(None)) as daemon:
        # the application process: a forwarder holding the planted key, then a CURVE server
        with ZapForwarder(ctx, daemon.endpoint, server_key=daemon_cert.public_key,
                          cert=intruder, timeout=0.3):
            srv = Server(ctx, server)
            try:
                want = 200 if how == "default" else 500  # 500: the daemon never answers
                retry_until(lambda: handshake(srv, alice), lambda o: o.status == want)
            finally:
                srv.close()
        if how != "default":
            daemon.wait_stderr("refused a forwarder connection")
