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
