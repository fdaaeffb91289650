"""The control channel of a real `serve-auth` process: status, trusted, decisions (--follow),
a malformed request, another local user, and metrics scraped over HTTP.

The application side is this process (a `ZapForwarder` and a CURVE server); every decision
counted comes from a real handshake. JSON output is validated against the shipped schemas.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from curvecert import store
from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder
from tests.conftest import wait_until
from tests.promtool import promtool
from tests.serveproc import ServeAuth, Server, handshake

Env = Callable[[dict[str, str] | None], dict[str, str]]
SCHEMAS = Path(__file__).resolve().parents[2] / "curvecert" / "schemas"


def validate(obj: Any, schema_name: str, definition: str | None = None) -> None:
    schema = json.loads((SCHEMAS / schema_name).read_text())
    if definition is not None:
        schema = {**schema, "$ref": f"#/$defs/{definition}"}
        schema.pop("required", None)
        schema.pop("properties", None)
        schema.pop("additionalProperties", None)
        schema.pop("type", None)
    jsonschema.Draft202012Validator(schema).validate(obj)


class Live:
    """A serve-auth process with an ipc ZAP endpoint, its control socket and metrics."""

    def __init__(self, tmp: Path, ctx: zmq.Context[Any], env: Env):
        self.tmp = tmp
        self.env = env(None)
        self.server = Certificate.new(name="server")
        self.alice = Certificate.new(name="alice")
        self.bob = Certificate.new(name="bob")
        self.store = tmp / "clients"
        store.add_certificate(self.store, self.alice)
        self.control = f"ipc://{tmp}/run/control.sock"
        self.proc = ServeAuth(["--store", str(self.store), "--zap-endpoint",
                               f"ipc://{tmp}/run/zap.sock", "--metrics", "127.0.0.1:0",
                               "--log-format", "json", "--log-stream", "stdout"], self.env)
        line = self.proc.wait_stderr(r"metrics http://")
        self.metrics_url = re.search(r"metrics (http://\S+)", line).group(1)  # type: ignore[union-attr]
        self.fwd = ZapForwarder(ctx, self.proc.endpoint).start()
        self.srv = Server(ctx, self.server)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "curvecert", *args, "--endpoint",
                               self.control], capture_output=True, text=True, env=self.env,
                              timeout=60)

    def json(self, *args: str) -> dict[str, Any]:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert isinstance(out, dict)
        return out

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            return str(resp.read().decode())

    def close(self) -> None:
        self.srv.close()
        self.fwd.stop()
        self.proc.close()


@pytest.fixture
def live(tmp_path: Path, ctx: zmq.Context[Any], cli_env: Env) -> Iterator[Live]:
    lv = Live(tmp_path, ctx, cli_env)
    try:
        yield lv
    finally:
        lv.close()


def test_status_trusted_decisions(live: Live) -> None:
    assert handshake(live.srv, live.alice).status == 200
    assert handshake(live.srv, live.bob).status == 400

    status = live.json("status")
    validate(status, "status.json")
    assert status["healthy"] is True and status["problems"] == []
    assert status["decisions"]["CURVE"] == {"200": 1, "400": 1}
    assert status["domains"][0]["stores"][0]["certificates"] == 1
    assert status["endpoints"]["control"] == live.control
    assert status["forwarders"]["seen"] >= 1

    trusted = live.json("trusted")
    validate(trusted, "trusted.json")
    assert [t["fingerprint"] for t in trusted["items"]] == [live.alice.fingerprint]
    assert trusted["items"][0]["name"] == "alice"
    text = live.cli("trusted")
    assert text.returncode == 0 and live.alice.fingerprint in text.stdout

    decisions = live.json("decisions")
    validate(decisions, "decisions.json")
    allowed, denied = decisions["items"]
    assert (allowed["status"], allowed["name"], allowed["fingerprint"]) == \
        (200, "alice", live.alice.fingerprint)
    assert (denied["status"], denied["reason"], denied["name"]) == (400, "unknown key", None)
    assert denied["fingerprint"] == live.bob.fingerprint
    only_denied = live.json("decisions", "--denied")
    assert [d["status"] for d in only_denied["items"]] == [400]
    plain = live.cli("decisions", "--last", "1")
    assert plain.returncode == 0 and "unknown key" in plain.stdout

    # revoke alice: the live snapshot (not the disk listing) is what `trusted` shows
    store.remove(live.store, live.alice.public_txt)
    wait_until(lambda: live.json("trusted")["items"] == [], message="trusted follows the store")


def test_decisions_follow_streams_and_stops_on_sigterm(live: Live) -> None:
    follow = subprocess.Popen([sys.executable, "-m", "curvecert", "decisions", "--follow",
                               "--json", "--interval", "0.05", "--endpoint", live.control],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=live.env)
    try:
        assert handshake(live.srv, live.alice).status == 200
        assert handshake(live.srv, live.bob).status == 400
        assert follow.stdout is not None
        first = json.loads(follow.stdout.readline())
        second = json.loads(follow.stdout.readline())
        for item in (first, second):
            validate(item, "decisions.json", "decision")
        assert [first["status"], second["status"]] == [200, 400]
        assert second["seq"] > first["seq"]
        follow.send_signal(signal.SIGTERM)
        assert follow.wait(15) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_malformed_request_gets_an_error_and_the_daemon_keeps_serving(
        live: Live, ctx: zmq.Context[Any]) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(live.control)
    try:
        for bad in (b"not json", b'{"command": "shutdown"}', b"\xff" * 5000,
                    b'{"command": "decisions", "last": -1}'):
            sock.send_multipart([b"", bad])
            assert sock.poll(10_000), "no reply to a malformed request"
            reply = json.loads(sock.recv_multipart()[-1])
            assert reply["ok"] is False and reply["error"]
        sock.send_multipart([b"", b"{}", b"extra frame"])
        assert sock.poll(10_000)
        assert json.loads(sock.recv_multipart()[-1])["ok"] is False
    finally:
        sock.close(linger=0)
    assert handshake(live.srv, live.alice).status == 200  # ZAP still answered
    assert live.json("status")["healthy"] is True
    assert live.proc.proc.poll() is None


_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    sys.exit(13)
except OSError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
sys.exit(0)
"""


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run `argv` as uid/gid 65534 (the system Python: this venv's is under /root)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs setpriv and /usr/bin/python3 to act as another local user")
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user (setpriv --reuid)")
    return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                           *argv], capture_output=True, text=True, timeout=60)


def test_another_user_cannot_connect(live: Live) -> None:
    path = live.control[len("ipc://"):]
    run_dir = Path(path).parent
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for parent in [live.tmp, *live.tmp.parents]:  # only the socket's own rules may stop it
        if parent != Path("/"):
            os.chmod(parent, stat.S_IMODE(os.stat(parent).st_mode) | 0o005)
    code = _as_nobody("/usr/bin/python3", "-c", _CONNECT, path)
    assert code.returncode == 13, code  # EACCES: the 0700 directory
    os.chmod(run_dir, 0o755)  # even with the directory opened up, the 0600 socket refuses
    try:
        code = _as_nobody("/usr/bin/python3", "-c", _CONNECT, path)
        assert code.returncode == 13, code
    finally:
        os.chmod(run_dir, 0o700)
    assert live.json("status")["healthy"] is True


def test_metrics_over_http_move_with_handshakes(live: Live) -> None:
    def decisions(text: str) -> dict[tuple[str, str], float]:
        out = {}
        for family in text_string_to_metric_families(text):
            if family.name == "curvecert_decisions":
                for sample in family.samples:
                    if sample.name == "curvecert_decisions_total":
                        out[sample.labels["mechanism"], sample.labels["status"]] = sample.value
        return out

    before = decisions(live.scrape())
    assert handshake(live.srv, live.alice).status == 200
    assert handshake(live.srv, live.bob).status == 400
    text = live.scrape()
    after = decisions(text)
    assert after[("CURVE", "200")] == before.get(("CURVE", "200"), 0) + 1
    assert after[("CURVE", "400")] == before.get(("CURVE", "400"), 0) + 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("curvecert_decision_duration_seconds", "curvecert_store_certificates",
                 "curvecert_store_healthy", "curvecert_store_findings", "curvecert_reloads",
                 "curvecert_reload_duration_seconds", "curvecert_last_reload_timestamp_seconds",
                 "curvecert_provider_timeouts", "curvecert_provider_errors"):
        assert name in families, name
    healthy = families["curvecert_store_healthy"].samples[0]
    assert healthy.value == 1 and healthy.labels["store"] == str(live.store)
    count = next(s for s in families["curvecert_decision_duration_seconds"].samples
                 if s.name.endswith("_count"))
    assert count.value >= 2
    promtool("check", "metrics", stdin=text)


def test_top_in_a_terminal_shows_the_counts(live: Live) -> None:
    import pexpect
    import pyte

    assert handshake(live.srv, live.alice).status == 200
    assert handshake(live.srv, live.bob).status == 400
    assert handshake(live.srv, live.bob).status == 400
    env = {k: v for k, v in live.env.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    screen = pyte.Screen(120, 40)
    stream = pyte.ByteStream(screen)
    child = pexpect.spawn(sys.executable, ["-m", "curvecert", "top", "--interval", "0.2",
                                           "--endpoint", live.control],
                          env=env, dimensions=(40, 120), timeout=20)
    try:
        def shown() -> str:
            try:
                stream.feed(child.read_nonblocking(65536, timeout=0.1))
            except pexpect.TIMEOUT:
                pass
            return "\n".join(screen.display)

        def counts_visible() -> bool:
            # table rows read "│ 200    │     1 │   0.0 │" (status, total, per second)
            text = shown()
            rows = dict(re.findall(r"^\W*(200|400)\W+(\d+)\W", text, re.MULTILINE))
            # the store's health and the last denials are drawn in the same frame
            return rows.get("200") == "1" and rows.get("400") == "2" \
                and "healthy" in text and "unknown key" in text

        try:
            wait_until(counts_visible, timeout=20, message="top showing 200=1 and 400=2")
        except AssertionError:
            raise AssertionError("screen:\n" + "\n".join(screen.display)) from None
        child.sendintr()
        child.expect(pexpect.EOF, timeout=15)
        child.close()
        assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_top_plain_when_not_a_terminal(live: Live) -> None:
    assert handshake(live.srv, live.bob).status == 400
    result = live.cli("top", "--once")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "400=1" in result.stdout and "unknown key" in result.stdout


def test_status_reports_an_unhealthy_store(live: Live) -> None:
    shutil.rmtree(live.store)  # the store is gone: the domain trusts nobody (fail closed)

    def unhealthy() -> bool:
        return live.cli("status", "--json").returncode == 1

    wait_until(unhealthy, message="status exit 1")
    result = live.cli("status", "--json")
    status = json.loads(result.stdout)
    validate(status, "status.json")
    assert status["healthy"] is False
    assert any(str(live.store) in p for p in status["problems"])
    text = live.cli("status")
    assert text.returncode == 1 and "UNHEALTHY" in text.stdout
    assert handshake(live.srv, live.alice).status == 400



def test_an_unsafe_control_directory_is_refused(tmp_path: Path, cli_env: Env) -> None:
    clients = tmp_path / "clients"
    store.add_certificate(clients, Certificate.new(name="x"))
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # others may write: they could swap the socket file
    with ServeAuth(["--store", str(clients), "--zap-endpoint", f"ipc://{tmp_path}/run/zap.sock",
                    "--control", f"ipc://{shared}/control.sock"], cli_env(None),
                   ready_timeout=0) as daemon:
        assert daemon.wait_exit() == 3
        errors = [line for line in daemon.err.lines if line.startswith("curvecert: error:")]
        assert len(errors) == 1 and "group or others may write" in errors[0]
    assert not (shared / "control.sock").exists()


#: A forging daemon for the control channel, standard library only (it runs as nobody): a
#: minimal ZMTP 3.0 NULL ROUTER at argv[1] that logs every connection to argv[2] and answers
#: every request with a forged reply full of terminal escapes and a fake line.
FORGER = r"""
import json, os, socket, struct, sys, threading
path, log = sys.argv[1], sys.argv[2]
EVIL = "\x1b]0;pwned\x07\x1b[2J\ncurvecert: all clear\u2028"
REPLIES = {
    "status": {"healthy": True, "pid": EVIL, "uptime": EVIL, "generation": EVIL,
               "problems": [], "domains": [], "findings": [], "decisions": {},
               "forwarders": {}},
    "trusted": {"items": [{"domain": "global", "fingerprint": EVIL, "name": "x",
                           "path": "/x"}]},
}
def note(text):
    with open(log, "a") as f:
        f.write(text + "\n")
def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
def frame(conn):
    flags = recv_exact(conn, 1)[0]
    size = struct.unpack(">Q", recv_exact(conn, 8))[0] if flags & 2 else recv_exact(conn, 1)[0]
    return flags, recv_exact(conn, size)
def send(conn, flags, body):
    conn.sendall(bytes([flags, len(body)]) + body if len(body) < 256
                 else bytes([flags | 2]) + struct.pack(">Q", len(body)) + body)
def serve(conn):
    try:
        greeting = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") \
            + b"\0" + b"\0" * 31
        conn.sendall(greeting)
        recv_exact(conn, 64)
        send(conn, 4, b"\x05READY\x0bSocket-Type" + struct.pack(">I", 6) + b"ROUTER")
        frame(conn)  # the peer's READY
        while True:
            parts = []
            while True:
                flags, body = frame(conn)
                parts.append(body)
                if not flags & 1:
                    break
            note("REQUEST " + repr(parts))
            cmd = json.loads(parts[-1]).get("command")
            reply = json.dumps({"ok": True, "result": REPLIES.get(cmd, {})}).encode()
            send(conn, 1, b"")
            send(conn, 0, reply)
    except (EOFError, OSError, ValueError):
        pass
    finally:
        conn.close()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(16)
print("READY", flush=True)
while True:
    conn, _ = srv.accept()
    note("CONNECT")
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def _open_for_nobody(tmp: Path) -> Path:
    """A directory both users can use, like /tmp (world-writable, sticky)."""
    for parent in [tmp, *tmp.parents]:
        if parent != Path("/"):
            os.chmod(parent, stat.S_IMODE(os.stat(parent).st_mode) | 0o001)
    shared = tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def test_the_client_refuses_a_control_socket_of_another_user(
        tmp_path: Path, ctx: zmq.Context[Any], cli_env: Env) -> None:
    """Know who answers: a runtime directory pre-created 0777 by another user, who binds a
    forging listener at control.sock. `status` (default endpoint, via XDG_RUNTIME_DIR) and
    `trusted` (--endpoint) exit 3 with one error line; the forger is never contacted."""
    _as_nobody("/usr/bin/true")  # skips without root, setpriv or the system Python
    shared = _open_for_nobody(tmp_path)
    run_dir = shared / "curvecert"  # the default directory under XDG_RUNTIME_DIR=shared
    assert _as_nobody("mkdir", "-m", "0777", str(run_dir)).returncode == 0
    log = tmp_path / "forger.log"
    log.touch()
    log.chmod(0o666)
    sock_path = run_dir / "control.sock"
    forger = _forger(sock_path, log)
    try:
        assert os.stat(sock_path).st_uid == 65534
        # the threat is real: a client that does not check gets the forged reply
        probe = ctx.socket(zmq.DEALER)
        probe.linger = 0
        probe.connect(f"ipc://{sock_path}")
        try:
            probe.send_multipart([b"", b'{"command": "status"}'])
            assert probe.poll(10_000), "the forger did not answer"
            assert "pwned" in json.loads(probe.recv_multipart()[-1])["result"]["pid"]
        finally:
            probe.close(linger=0)
        log.write_text("")

        env = cli_env({"XDG_RUNTIME_DIR": str(shared)})
        for args in (["status"], ["trusted", "--endpoint", f"ipc://{sock_path}"],
                     ["decisions", "--endpoint", f"ipc://{sock_path}"]):
            result = subprocess.run([sys.executable, "-m", "curvecert", *args],
                                    capture_output=True, text=True, env=env, timeout=60)
            assert result.returncode == 3, (args, result)
            assert result.stdout == "", (args, result.stdout)
            errors = result.stderr.splitlines()
            assert len(errors) == 1 and errors[0].startswith("curvecert: error: "), errors
            assert f"{run_dir}: the socket directory is owned by" in errors[0]
            assert "pwned" not in result.stderr and "\x1b" not in result.stderr
        assert log.read_text() == "", "the forger was contacted"
    finally:
        forger.kill()
        forger.wait(10)


def _forger(sock_path: Path, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "/usr/bin/python3", "-c", FORGER, str(sock_path), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def test_the_client_refuses_a_swapped_control_socket(tmp_path: Path, cli_env: Env) -> None:
    """Our own directory, but group/others may write (0777): another user binds there.
    Refused for the directory; with the directory fixed, refused for the socket's owner."""
    _as_nobody("/usr/bin/true")
    run_dir = _open_for_nobody(tmp_path) / "ours"
    run_dir.mkdir()
    run_dir.chmod(0o777)
    log = tmp_path / "forger.log"
    log.touch()
    log.chmod(0o666)
    sock_path = run_dir / "control.sock"
    forger = _forger(sock_path, log)
    try:
        for mode, why in ((0o777, "writable by group or others"),
                          (0o755, f"{sock_path}: the socket is owned by")):
            run_dir.chmod(mode)
            result = subprocess.run([sys.executable, "-m", "curvecert", "status", "--endpoint",
                                     f"ipc://{sock_path}"], capture_output=True, text=True,
                                    env=cli_env(None), timeout=60)
            assert (result.returncode, result.stdout) == (3, ""), result
            errors = result.stderr.splitlines()
            assert len(errors) == 1 and why in errors[0], errors
        assert log.read_text() == "", "the forger was contacted"
    finally:
        forger.kill()
        forger.wait(10)
