"""`ZapForwarder` against an in-test terminal handler: relay, envelope, fail closed, recover.

The terminal handler is a real ROUTER on ipc (or CURVE tcp) in its own context, like the
daemon; the forwarder lives in the test's context, like an application's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError
from curvecert.serve.forwarder import UNREACHABLE_TEXT, ZapForwarder
from curvecert.serve.runtime import publish_key
from tests.conftest import wait_until

ZAP = "inproc://zeromq.zap.01"


class Terminal:
    """A terminal RFC 27 handler: answers 200 with user id = the request's domain frame.

    `silent` makes it swallow requests (kept in `held`) to play a hung daemon.
    """

    def __init__(self, endpoint: str, *, server: Certificate | None = None):
        self.context: zmq.Context[Any] = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        if server is None and endpoint.startswith("ipc://"):
            server = Certificate.new()  # ipc is CURVE too: the forwarder pins this key
        if server is not None:
            server.apply_server(self.sock)
        self.sock.bind(endpoint)
        if endpoint.startswith("ipc://") and server is not None:
            publish_key(endpoint[len("ipc://"):], server.public_key)
        self.silent = False
        self.hold: set[bytes] = set()
        self.seen: list[list[bytes]] = []
        self.held: list[list[bytes]] = []
        self._answer_held = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._answer_held.is_set():
                self._answer_held.clear()
                for frames in self.held:
                    self._answer(frames)
                self.held.clear()
            if not self.sock.poll(10):
                continue
            frames = self.sock.recv_multipart()
            self.seen.append(frames)
            if self.silent or frames[frames.index(b"") + 3] in self.hold:
                self.held.append(frames)
            else:
                self._answer(frames)

    def _answer(self, frames: list[bytes]) -> None:
        split = frames.index(b"")
        envelope, body = frames[:split], frames[split + 1:]
        self.sock.send_multipart([*envelope, b"", b"1.0", body[1], b"200", b"OK", body[2], b""])

    def answer_held(self) -> None:
        self._answer_held.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close(linger=0)
        self.context.term()


@pytest.fixture
def ipc_ep(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/zap.sock"


@pytest.fixture
def terminal(ipc_ep: str) -> Iterator[Terminal]:
    t = Terminal(ipc_ep)
    try:
        yield t
    finally:
        t.close()


def request(ctx: zmq.Context[Any], domain: bytes, timeout_ms: int = 5000) -> list[bytes]:
    """One ZAP request as libzmq sends it (delimiter first), through a DEALER."""
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    try:
        s.connect(ZAP)
        s.send_multipart([b"", b"1.0", b"1", domain, b"127.0.0.1", b"", b"NULL"])
        assert s.poll(timeout_ms), "no ZAP reply"
        frames: list[bytes] = s.recv_multipart()
        assert frames[0] == b""
        return frames[1:]
    finally:
        s.close(linger=0)


def curve_roundtrip(ctx: zmq.Context[Any], server: Certificate) -> tuple[str | None, int]:
    """Connect a CURVE client to a fresh server in `ctx`: (User-Id or None, auth event value)."""
    srv = ctx.socket(zmq.PULL)
    srv.linger = 0
    server.apply_server(srv)
    srv.zap_domain = b"alice"
    mon = srv.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    port = srv.bind_to_random_port("tcp://127.0.0.1")
    cli_ctx: zmq.Context[Any] = zmq.Context()
    cli = cli_ctx.socket(zmq.PUSH)
    cli.linger = 0
    Certificate.new().apply_client(cli, server)
    try:
        cli.connect(f"tcp://127.0.0.1:{port}")
        assert mon.poll(10_000), "no handshake event"
        from zmq.utils.monitor import recv_monitor_message

        event = recv_monitor_message(mon)
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return None, int(event["value"])
        cli.send(b"hi")
        assert srv.poll(5000)
        frame = srv.recv(copy=False)
        return frame.get("User-Id"), 200
    finally:
        cli.close(linger=0)
        cli_ctx.term()
        srv.disable_monitor()
        mon.close(linger=0)
        srv.close(linger=0)


def test_relays_and_keeps_envelopes_apart(ctx: zmq.Context[Any], terminal: Terminal,
                                          ipc_ep: str) -> None:
    with ZapForwarder(ctx, ipc_ep) as fwd:
        socks = []
        for i in range(5):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(ZAP)
            s.send_multipart([b"", b"1.0", b"1", b"d%d" % i, b"127.0.0.1", b"", b"NULL"])
            socks.append(s)
        for i, s in enumerate(socks):
            assert s.poll(5000)
            reply = s.recv_multipart()
            assert reply == [b"", b"1.0", b"1", b"200", b"OK", b"d%d" % i, b""]
            s.close(linger=0)
        assert fwd.stats.forwarded == 5 and fwd.stats.answered == 5
    # The terminal saw: its own routing id, the forwarder's tag, libzmq-side id, "", request
    for frames in terminal.seen:
        split = frames.index(b"")
        assert split == 3
        assert frames[split + 1:split + 3] == [b"1.0", b"1"]


def test_real_curve_handshake_is_answered_by_terminal(ctx: zmq.Context[Any],
                                                     terminal: Terminal, ipc_ep: str) -> None:
    server = Certificate.new()
    with ZapForwarder(ctx, ipc_ep):
        user, status = curve_roundtrip(ctx, server)
    assert (user, status) == ("alice", 200)


def test_absent_daemon_denies_with_500(ctx: zmq.Context[Any], ipc_ep: str) -> None:
    with ZapForwarder(ctx, ipc_ep, timeout=0.2) as fwd:
        reply = request(ctx, b"d")
        assert reply[2:4] == [b"500", UNREACHABLE_TEXT]
        assert reply[4] == b""  # no user id on failure
        user, status = curve_roundtrip(ctx, Certificate.new())
        assert (user, status) == (None, 500)
        assert fwd.stats.answered == 0


def test_hung_daemon_times_out_then_late_reply_is_dropped(ctx: zmq.Context[Any],
                                                          terminal: Terminal,
                                                          ipc_ep: str) -> None:
    terminal.silent = True
    with ZapForwarder(ctx, ipc_ep, timeout=0.2) as fwd:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(ZAP)
        s.send_multipart([b"", b"1.0", b"1", b"d", b"127.0.0.1", b"", b"NULL"])
        assert s.poll(5000)
        assert s.recv_multipart()[3:5] == [b"500", UNREACHABLE_TEXT]
        assert fwd.timed_out == 1
        # The daemon was silent for the whole deadline: the link is reopened.
        wait_until(lambda: fwd.resets == 1, message="link reset")
        terminal.silent = False
        terminal.answer_held()
        # The held request's reply goes to the old link and is never delivered twice.
        assert request(ctx, b"again")[2:] == [b"200", b"OK", b"again", b""]
        assert not s.poll(100)
        s.close(linger=0)


def test_late_reply_on_live_link_is_dropped(ctx: zmq.Context[Any], terminal: Terminal,
                                            ipc_ep: str) -> None:
    terminal.hold.add(b"slow")
    with ZapForwarder(ctx, ipc_ep, timeout=0.3) as fwd:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(ZAP)
        s.send_multipart([b"", b"1.0", b"1", b"slow", b"127.0.0.1", b"", b"NULL"])
        wait_until(lambda: fwd.forwarded == 1, message="slow request forwarded")
        # the daemon is alive (it answers others), so the link is kept
        assert request(ctx, b"fast")[2] == b"200"
        assert s.poll(5000)
        assert s.recv_multipart()[3:5] == [b"500", UNREACHABLE_TEXT]
        terminal.answer_held()
        wait_until(lambda: fwd.stats.late == 1, message="late reply dropped")
        assert fwd.resets == 0
        assert fwd.stats.timed_out == 1
        s.close(linger=0)


def test_recovers_when_daemon_returns(ctx: zmq.Context[Any], ipc_ep: str) -> None:
    with ZapForwarder(ctx, ipc_ep, timeout=0.2):
        assert request(ctx, b"d")[2] == b"500"
        t = Terminal(ipc_ep)
        try:
            replies: list[bytes] = []

            def admitted() -> bool:
                replies.append(request(ctx, b"back")[2])
                return replies[-1] == b"200"

            wait_until(admitted, message="answers after the daemon returned")
        finally:
            t.close()
        # and after it leaves again, denies again
        wait_until(lambda: request(ctx, b"gone")[2] == b"500", message="deny after outage")


def test_stop_is_prompt_with_requests_in_flight(ctx: zmq.Context[Any], terminal: Terminal,
                                                ipc_ep: str) -> None:
    terminal.silent = True
    fwd = ZapForwarder(ctx, ipc_ep, timeout=30).start()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(ZAP)
    s.send_multipart([b"", b"1.0", b"1", b"d", b"127.0.0.1", b"", b"NULL"])
    wait_until(lambda: fwd.forwarded == 1, message="request forwarded")
    fwd.stop()
    assert not fwd.running
    # the waiting request was denied, not left to libzmq's 30 s handshake timeout
    assert s.poll(5000)
    assert s.recv_multipart()[3] == b"500"
    s.close(linger=0)
    fwd.stop()  # idempotent


def test_curve_secured_tcp_link(ctx: zmq.Context[Any]) -> None:
    daemon = Certificate.new()
    fwd_cert = Certificate.new()
    probe = zmq.Context()
    port_sock = probe.socket(zmq.ROUTER)
    port = port_sock.bind_to_random_port("tcp://127.0.0.1")
    port_sock.close(linger=0)
    probe.term()
    t = Terminal(f"tcp://127.0.0.1:{port}", server=daemon)
    try:
        with ZapForwarder(ctx, f"tcp://127.0.0.1:{port}", server_key=daemon.public_key,
                          cert=fwd_cert):
            wait_until(lambda: request(ctx, b"sec")[2] == b"200", message="answer over CURVE")
    finally:
        t.close()


def test_bind_conflict_and_bad_config(ctx: zmq.Context[Any], ipc_ep: str) -> None:
    with ZapForwarder(ctx, ipc_ep):
        with pytest.raises(OperationalError, match="another authenticator"):
            ZapForwarder(ctx, ipc_ep).start()
    with pytest.raises(ConfigError, match="CURVE"):
        ZapForwarder(ctx, "tcp://127.0.0.1:5")
    with pytest.raises(ConfigError):
        ZapForwarder(ctx, "ipc:///x", timeout=0)
    with pytest.raises(ConfigError, match="secret"):
        ZapForwarder(ctx, "tcp://127.0.0.1:5", server_key=Certificate.new().public_key,
                     cert=Certificate.new().public_only())


def test_bad_version_is_denied_locally(ctx: zmq.Context[Any], ipc_ep: str) -> None:
    with ZapForwarder(ctx, ipc_ep) as fwd:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(ZAP)
        s.send_multipart([b"", b"2.0", b"7", b"d", b"127.0.0.1", b"", b"NULL"])
        assert s.poll(5000)
        assert s.recv_multipart()[1:4] == [b"1.0", b"7", b"500"]
        s.close(linger=0)
        assert fwd.forwarded == 0
