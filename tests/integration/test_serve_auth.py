"""`curvecert serve-auth` as a real process, with this test process as the application.

The application side is the test process: a zmq context with a `ZapForwarder` bound before
a CURVE server socket. Every verdict is what libzmq's server reported for a real handshake.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs.cert import Certificate
from curvecert.formats.sanitize import field
from curvecert.serve.forwarder import ZapForwarder
from curvecert.serve.runtime import read_key
from tests.serveproc import Outcome, ServeAuth, Server, handshake, retry_until

Env = Callable[[dict[str, str] | None], dict[str, str]]


class Setup:
    """Certificates and a store: alice is trusted, bob is not."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.server = Certificate.new(name="server")
        self.alice = Certificate.new(name="alice")
        self.bob = Certificate.new(name="bob")
        self.store = tmp / "clients"
        self.store.mkdir()
        store.add_certificate(self.store, self.alice)
        self.ipc = f"ipc://{tmp}/run/zap.sock"


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture
def app(ctx: zmq.Context[Any], setup: Setup) -> Iterator[Callable[..., Server]]:
    """Build the application side: forwarder first, then the CURVE server."""
    made: list[tuple[ZapForwarder, Server]] = []

    def make(endpoint: str, **fwd_kwargs: Any) -> Server:
        fwd = ZapForwarder(ctx, endpoint, **fwd_kwargs).start()
        srv = Server(ctx, setup.server)
        made.append((fwd, srv))
        return srv

    yield make
    for fwd, srv in made:
        srv.close()
        fwd.stop()


def serve(setup: Setup, cli_env: Env, *args: str, env: dict[str, str] | None = None
          ) -> ServeAuth:
    base = ["--store", str(setup.store), "--zap-endpoint", setup.ipc, "--log-format", "json",
            "--log-stream", "stdout"]
    return ServeAuth([*base, *args], cli_env(env))


def test_ipc_admits_and_refuses(setup: Setup, app: Callable[..., Server], cli_env: Env) -> None:
    with serve(setup, cli_env) as daemon:
        assert daemon.endpoint == setup.ipc
        sock_file = Path(setup.ipc[len("ipc://"):])
        assert stat.S_IMODE(sock_file.stat().st_mode) == 0o600
        srv = app(setup.ipc)
        assert handshake(srv, setup.alice) == Outcome(200, setup.alice.public_txt)
        assert handshake(srv, setup.bob).status == 400
        # the audit stream: one JSON object per decision, no secrets
        daemon.wait_stdout(r'"status":400')
        records = [r for r in daemon.json_lines() if r["event"] == "decision"]
        assert [r["status"] for r in records] == [200, 400]
        ok, no = records
        assert ok["user_id"] == setup.alice.public_txt and ok["mechanism"] == "CURVE"
        assert ok["address"] == "127.0.0.1" and ok["domain"] == ""
        # the same fields whatever the outcome; user_id is always the key field
        assert no["user_id"] == setup.bob.public_txt and no["cert_name"] is None
        assert no["reason"] == "unknown key" and no["outcome"] == "denied"
        assert ok["cert_name"] == "alice" and ok["fingerprint"] == setup.alice.fingerprint
        assert no["fingerprint"] == setup.bob.fingerprint
        assert set(ok) == set(no) == {"event", "time", "outcome", "domain", "address",
                                      "mechanism", "status", "user_id", "cert_name",
                                      "fingerprint", "reason"}
        text = "\n".join(daemon.out.lines + daemon.err.lines)
        for cert in (setup.server, setup.alice, setup.bob):
            secret = cert.secret_txt
            assert secret is not None and secret not in text


def test_curve_secured_tcp_endpoint(setup: Setup, app: Callable[..., Server],
                                    cli_env: Env) -> None:
    daemon_cert = Certificate.new(name="daemon")
    daemon_cert.save(setup.tmp / "daemon")
    forwarders = setup.tmp / "forwarders"
    forwarders.mkdir()
    fwd_cert = Certificate.new(name="app-1")
    store.add_certificate(forwarders, fwd_cert)
    args = ["--store", str(setup.store), "--zap-endpoint", "tcp://127.0.0.1:*",
            "--server-cert", str(setup.tmp / "daemon_secret"), "--forwarders", str(forwarders),
            "--log-format", "json", "--log-stream", "stdout"]
    with ServeAuth(args, cli_env(None)) as daemon:
        ep = daemon.endpoint
        assert ep.startswith("tcp://127.0.0.1:")
        srv = app(ep, server_key=daemon_cert.public_key, cert=fwd_cert)
        assert handshake(srv, setup.alice) == Outcome(200, setup.alice.public_txt)
        assert handshake(srv, setup.bob).status == 400
        # a forwarder whose key the daemon does not know never gets an answer: denied (500)
        other: zmq.Context[Any] = zmq.Context()
        try:
            with ZapForwarder(other, ep, server_key=daemon_cert.public_key,
                              cert=Certificate.new(), timeout=0.3):
                srv2 = Server(other, setup.server)
                try:
                    assert handshake(srv2, setup.alice).status == 500
                finally:
                    srv2.close()
        finally:
            other.destroy(linger=0)
        daemon.wait_stderr("refused a forwarder connection")


def test_daemon_killed_then_restarted(setup: Setup, app: Callable[..., Server],
                                      cli_env: Env) -> None:
    daemon = serve(setup, cli_env)
    try:
        srv = app(setup.ipc, timeout=0.3)
        assert handshake(srv, setup.alice).status == 200
        daemon.proc.kill()
        daemon.wait_exit()
    finally:
        daemon.close()
    # outage: fail closed with the forwarder's own 500, never admitted
    assert handshake(srv, setup.alice).status == 500
    with serve(setup, cli_env):
        outcome = retry_until(lambda: handshake(srv, setup.alice), lambda o: o.status == 200)
        assert outcome.user_id == setup.alice.public_txt


def test_store_change_is_enforced_on_next_connection(setup: Setup, app: Callable[..., Server],
                                                     cli_env: Env) -> None:
    with serve(setup, cli_env):
        srv = app(setup.ipc)
        assert handshake(srv, setup.alice).status == 200
        store.add_certificate(setup.store, setup.bob)
        retry_until(lambda: handshake(srv, setup.bob), lambda o: o.status == 200)
        store.remove(setup.store, setup.alice.public_txt)
        retry_until(lambda: handshake(srv, setup.alice), lambda o: o.status == 400)


def test_sighup_reloads_config_and_keeps_old_on_error(setup: Setup, app: Callable[..., Server],
                                                      cli_env: Env) -> None:
    other = setup.tmp / "other"
    other.mkdir()
    store.add_certificate(other, setup.bob)
    conf = setup.tmp / "serve-auth.toml"

    def write(stores: str, extra: str = "") -> None:
        conf.write_text(f'zap-endpoint = "{setup.ipc}"\nlog-format = "json"\n'
                        f'log-stream = "stdout"\n[domains."*"]\nstores = [{stores}]\n{extra}')

    write(f'"{setup.store}"')
    with ServeAuth(["--config", str(conf)], cli_env(None)) as daemon:
        srv = app(setup.ipc)
        assert handshake(srv, setup.alice).status == 200
        assert handshake(srv, setup.bob).status == 400
        write(f'"{other}"')
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_stderr("configuration reloaded")
        assert handshake(srv, setup.bob).status == 200
        assert handshake(srv, setup.alice).status == 400
        # a broken file is refused; the running policy stays
        n = len(daemon.err.lines)
        write(f'"{setup.store}"', "typo = 1\n")
        daemon.send_signal(signal.SIGHUP)
        line = daemon.wait_stderr("reload failed", start=n)
        assert "typo: unknown key" in line and str(conf) in line
        assert handshake(srv, setup.bob).status == 200


def test_sighup_keeps_old_policy_on_hostile_config(setup: Setup, app: Callable[..., Server],
                                                   cli_env: Env) -> None:
    """inf, nan, a huge number, nesting beyond the TOML reader, a missing store, a FIFO:
    each reload is refused with the file named, and the running policy keeps answering."""
    conf = setup.tmp / "serve-auth.toml"
    good = (f'zap-endpoint = "{setup.ipc}"\nlog-format = "json"\nlog-stream = "stdout"\n'
            f'[domains."*"]\nstores = ["{setup.store}"]\n')
    conf.write_text(good)
    hostile = [good.replace('log-format', 'stats-interval = inf\nlog-format'),
               good.replace('log-format', 'stats-interval = nan\nlog-format'),
               good.replace('log-format', 'stats-interval = 1e300\nlog-format'),
               good.replace('log-format', 'stats-interval = ' + '[' * 3000 + ']' * 3000
                            + '\nlog-format'),
               good.replace(str(setup.store), str(setup.tmp / "gone"))]
    with ServeAuth(["--config", str(conf)], cli_env(None)) as daemon:
        srv = app(setup.ipc)
        assert handshake(srv, setup.alice).status == 200
        for text in hostile:
            n = len(daemon.err.lines)
            conf.write_text(text)
            daemon.send_signal(signal.SIGHUP)
            line = daemon.wait_stderr("reload failed", start=n)
            assert str(conf) in line and line.startswith("curvecert: ERROR: ")
            assert handshake(srv, setup.alice).status == 200
            assert handshake(srv, setup.bob).status == 400
        n = len(daemon.err.lines)
        conf.unlink()
        os.mkfifo(conf)  # a FIFO with no writer: refused at once, never waited on
        daemon.send_signal(signal.SIGHUP)
        assert "FIFO" in daemon.wait_stderr("reload failed", start=n)
        assert handshake(srv, setup.alice).status == 200


def test_config_store_missing_is_a_start_up_error(setup: Setup, cli_env: Env) -> None:
    conf = setup.tmp / "serve-auth.toml"
    conf.write_text(f'zap-endpoint = "{setup.ipc}"\n[domains."*"]\nstores = ["gone"]\n')
    proc = subprocess.run([sys.executable, "-m", "curvecert", "serve-auth", "--config",
                           str(conf)], capture_output=True, text=True, env=cli_env(None),
                          timeout=30)
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"curvecert: error: {conf}: domains.\"*\".stores[0]: ")
    assert "does not exist" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_removes_socket(setup: Setup, cli_env: Env, sig: int) -> None:
    with serve(setup, cli_env) as daemon:
        sock_file = Path(setup.ipc[len("ipc://"):])
        assert sock_file.exists()
        assert daemon.stop(sig) == 0
        assert not sock_file.exists()
        assert not list(sock_file.parent.iterdir())  # no temporary left behind either


def test_terminal_handler_for_req_and_routed_envelopes(setup: Setup, ctx: zmq.Context[Any],
                                                       cli_env: Env) -> None:
    request = [b"1.0", b"1", b"", b"10.0.0.1", b"", b"CURVE", setup.alice.public_key]
    with serve(setup, cli_env) as daemon:
        daemon_key = read_key(daemon.endpoint[len("ipc://"):], {os.geteuid()})
        req = ctx.socket(zmq.REQ)
        req.linger = 0
        Certificate.new().apply_client(req, daemon_key)  # the daemon's ipc socket is CURVE
        req.connect(daemon.endpoint)
        req.send_multipart(request)
        assert req.poll(5000)
        reply = req.recv_multipart()
        assert reply[:3] == [b"1.0", b"1", b"200"]
        assert reply[4] == setup.alice.public_txt.encode()
        # a DEALER carrying a two-hop envelope gets it back unchanged
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        Certificate.new().apply_client(dealer, daemon_key)
        dealer.connect(daemon.endpoint)
        dealer.send_multipart([b"hop-1", b"hop-2", b"", *request[:6], setup.bob.public_key])
        assert dealer.poll(5000)
        reply = dealer.recv_multipart()
        assert reply[:3] == [b"hop-1", b"hop-2", b""]
        assert reply[3:6] == [b"1.0", b"1", b"400"]
        # garbage gets a 500, and the daemon keeps answering
        dealer.send_multipart([b"", b"2.0", b"9"])
        assert dealer.poll(5000)
        assert dealer.recv_multipart()[1:4] == [b"1.0", b"9", b"500"]
        req.close(linger=0)
        dealer.close(linger=0)


def test_bind_conflict_exits_3(setup: Setup, cli_env: Env) -> None:
    with serve(setup, cli_env):
        second = subprocess.run(
            [sys.executable, "-m", "curvecert", "serve-auth", "--store", str(setup.store),
             "--zap-endpoint", setup.ipc], capture_output=True, text=True, env=cli_env(None),
            timeout=30)
        assert second.returncode == 3
        assert "already running" in second.stderr


def test_defaults_and_sd_notify(tmp_path: Path, cli_env: Env) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    st = tmp_path / "store"
    st.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify")
    notify.bind(notify_path)
    notify.settimeout(10)
    env = {"XDG_RUNTIME_DIR": str(runtime), "CURVECERT_STORE": str(st),
           "NOTIFY_SOCKET": notify_path}
    try:
        with ServeAuth([], cli_env(env)) as daemon:
            assert daemon.endpoint == f"ipc://{runtime}/curvecert/zap.sock"
            msg = notify.recv(4096).decode()
            assert "READY=1" in msg.splitlines()
            assert daemon.stop() == 0
            assert "STOPPING=1" in notify.recv(4096).decode()
    finally:
        notify.close()


def test_stats_and_text_log(setup: Setup, app: Callable[..., Server], cli_env: Env) -> None:
    with ServeAuth(["--store", str(setup.store), "--zap-endpoint", setup.ipc,
                    "--stats-interval", "1"], cli_env(None)) as daemon:
        srv = app(setup.ipc)
        assert handshake(srv, setup.bob).status == 400
        line = daemon.wait_stderr(r"✗ DENIED \(CURVE\) status=400 .*address=127\.0\.0\.1")
        assert "reason=unknown key" in line and f"user_id={field(setup.bob.public_txt)}" in line
        assert f"fingerprint={setup.bob.fingerprint}" in line and 'cert_name=""' in line
        daemon.wait_stderr(r"stats: requests=1 .*400=1")


def test_usage_errors(setup: Setup, cli_env: Env) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "curvecert", "serve-auth", *args],
                              capture_output=True, text=True, env=cli_env(None), timeout=30)

    r = run("--config", "x.toml", "--store", str(setup.store))
    assert r.returncode == 2 and "--store" in r.stderr
    r = run("--store", str(setup.store), "--zap-endpoint", "tcp://127.0.0.1:*")
    assert r.returncode == 2 and "--server-cert" in r.stderr
    r = run("--store", str(setup.tmp / "missing"), "--zap-endpoint", setup.ipc)
    assert r.returncode == 3 and "does not exist" in r.stderr
    r = run("--store", str(setup.store), "--zap-endpoint", setup.ipc, "--allow", "nope")
    assert r.returncode == 3 and "--allow" in r.stderr
    bad = setup.tmp / "bad.toml"
    bad.write_text('zap-endpoint = "ipc:///x"\n[domains.a]\nbogus = 1\n')
    r = run("--config", str(bad))
    assert r.returncode == 3 and f"{bad}: domains.a.bogus: unknown key" in r.stderr


def test_unsafe_allow_any_warns(setup: Setup, app: Callable[..., Server], cli_env: Env) -> None:
    with ServeAuth(["--curve-allow-any", "--zap-endpoint", setup.ipc], cli_env(None)) as daemon:
        assert any("WARNING" in line and "ANY client key" in line for line in daemon.err.lines)
        srv = app(setup.ipc)
        assert handshake(srv, setup.bob) == Outcome(200, setup.bob.public_txt)


def test_ipc_group_mode(setup: Setup, cli_env: Env) -> None:
    gid = os.getgid()
    with serve(setup, cli_env, "--ipc-group", str(gid)):
        st = Path(setup.ipc[len("ipc://"):]).stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == gid


def test_json_lines_parse_for_many_decisions(setup: Setup, app: Callable[..., Server],
                                             cli_env: Env) -> None:
    with serve(setup, cli_env) as daemon:
        srv = app(setup.ipc)
        for _ in range(3):
            assert handshake(srv, setup.alice).status == 200
        daemon.wait_stdout(r'"status":200', start=2)
        assert daemon.stop() == 0
        lines = [json.loads(line) for line in daemon.out.lines if line]
        assert len([r for r in lines if r["event"] == "decision"]) == 3


def test_refuses_to_replace_a_regular_file(setup: Setup, cli_env: Env) -> None:
    victim = setup.tmp / "important.txt"
    victim.write_text("keep me")
    r = subprocess.run([sys.executable, "-m", "curvecert", "serve-auth", "--store",
                        str(setup.store), "--zap-endpoint", f"ipc://{victim}"],
                       capture_output=True, text=True, env=cli_env(None), timeout=30)
    assert r.returncode == 3 and "not a socket" in r.stderr
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_hostile_plain_user_name_stays_one_inert_line(setup: Setup, ctx: zmq.Context[Any],
                                                      cli_env: Env, fmt: str) -> None:
    """The issue-12 attack: a PLAIN user name that forges a log line and drives the
    terminal. Through a real PLAIN handshake, the daemon's log keeps one clean record."""
    pw = setup.tmp / "passwords"
    pw.write_text("admin=secret\n")
    pw.chmod(0o600)
    user = ("x\x1b[2J\x1b]0;owned\x07\n12:00:00 ✓ ALLOWED (PLAIN) status=200 user_id=admin"
            "\u2028\u202e\x85")
    with ServeAuth(["--store", str(setup.store), "--zap-endpoint", setup.ipc, "--passwords",
                    str(pw), "--log-format", fmt], cli_env(None)) as daemon:
        fwd = ZapForwarder(ctx, setup.ipc).start()
        srv = ctx.socket(zmq.PULL)
        srv.plain_server = True
        mon = srv.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        port = srv.bind_to_random_port("tcp://127.0.0.1")
        cli = ctx.socket(zmq.PUSH)
        cli.plain_username = user.encode("utf-8")
        cli.plain_password = b"wrong"
        cli.connect(f"tcp://127.0.0.1:{port}")
        try:
            assert mon.poll(10_000), "no handshake verdict"
            line = daemon.wait_stderr("PLAIN" if fmt == "text" else '"mechanism":"PLAIN"')
        finally:
            for s in (cli, mon, srv):
                s.close(linger=0)
            fwd.stop()
        lines = [ln for ln in daemon.err.lines if "PLAIN" in ln]
        assert lines == [line]  # one record, one line: nothing forged
        assert not any(ch in line for ch in "\x1b\x07\u2028\u202e\x85\r")
        if fmt == "json":
            assert json.loads(line)["user_id"] == user and json.loads(line)["status"] == 400
        else:
            assert "DENIED (PLAIN) status=400" in line and "\\x1b[2J" in line
