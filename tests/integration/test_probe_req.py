"""`curvecert probe` against a REQ socket bound as a CURVE server (issue 11, REQ servers).

libzmq 4.3 completes the handshake of a REQ server whose ZAP reply carried a non-empty
User-Id, then drops the connection when the client's reply arrives. So for a REQ server
the probe must see one real round trip before it says admitted. The servers here are real
pyzmq REQ sockets in a thread, authenticated by curvecert's own `Authenticator` (with and
without `user_id=False`); the server records every request it sent and every reply it got.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zmq

from curvecert.auth.authenticator import Authenticator
from curvecert.auth.keylookup import StaticKeys
from curvecert.certs.cert import Certificate
from curvecert.probe.advice import ProbeVerdict, classify
from curvecert.probe.client import probe
from curvecert.probe.wire import Exchange, Greeting, Observation, after_handshake
from tests.conftest import wait_until
from tests.integration.test_json_schemas import REGISTRY, SCHEMAS

Ctx = zmq.Context[zmq.Socket[bytes]]
Certs = tuple[Certificate, Certificate]
V = ProbeVerdict
TIMEOUT = 3.0  # only the outcomes that are decided by the deadline wait for all of it


class ReqServer:
    """A REQ socket bound as a CURVE server; a thread sends up to `requests` requests.

    Each request goes out once a peer can take it, and the next only after the reply to
    the previous one arrived (strict REQ). `sent` holds the requests sent, `replies` the
    reply bodies received with the `User-Id` property libzmq attached to them.
    """

    def __init__(self, ctx: Ctx, cert: Certificate, requests: int):
        self.requests = requests
        self.closed = threading.Event()
        self.sent: list[bytes] = []
        self.replies: list[tuple[bytes, str]] = []
        self._stop = threading.Event()
        self._sock = ctx.socket(zmq.REQ)
        self._sock.linger = 0
        cert.apply_server(self._sock)
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.monitor = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._thread = threading.Thread(target=self._run, name="test-req-server")
        self._thread.start()

    def _wait(self, event: int) -> bool:
        while not self._stop.is_set():
            if self._sock.poll(20, event):
                return True
        return False

    def _run(self) -> None:
        try:
            for i in range(self.requests):
                if not self._wait(zmq.POLLOUT):
                    return
                body = f"job-{i + 1}".encode()
                self._sock.send(body)
                self.sent.append(body)
                if not self._wait(zmq.POLLIN):
                    return
                frame = self._sock.recv(copy=False)
                self.replies.append((frame.bytes, frame.get("User-Id")))
            self._stop.wait()  # keep the socket (and the connection) open until stopped
        finally:
            self._sock.disable_monitor()
            self.monitor.close(linger=0)
            self._sock.close(linger=0)
            self.closed.set()

    def stop(self) -> None:
        """Stop the thread; it closes the socket (before the authenticator stops)."""
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def certs() -> Certs:
    """The REQ server's certificate and a client certificate its ZAP domain knows."""
    return Certificate.new(name="server"), Certificate.new(name="client")


@pytest.fixture
def req_server(ctx: Ctx, certs: Certs) -> Iterator[Any]:
    """`start(user_id=..., requests=...)`: a REQ server whose ZAP domain knows the client."""
    server_cert, client_cert = certs
    started: list[ReqServer] = []
    auth = Authenticator(ctx)
    auth.start()

    def start(*, user_id: bool, requests: int) -> ReqServer:
        auth.configure_curve(store=StaticKeys.from_certificates([client_cert.public_only()]),
                             user_id=user_id)
        server = ReqServer(ctx, server_cert, requests)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for s in started:
            s.stop()  # server sockets close first; then the handler goes
        auth.stop()


def _probe(server: ReqServer, cert: Certificate, client: Certificate | None, *,
           timeout: float = TIMEOUT, server_type: str | None = "REQ",
           stranger: bool = False) -> Any:
    return probe(server.endpoint, server_key=cert.public_key, client_cert=client,
                 timeout=timeout, server_type=server_type, stranger=stranger)


def test_user_id_drops_the_reply(req_server: Any, certs: Certs) -> None:
    server_cert, client_cert = certs
    server = req_server(user_id=True, requests=1)
    result = _probe(server, server_cert, client_cert)
    assert result.verdict is V.DROPPED_AFTER_HANDSHAKE and not result.ok
    assert "HANDSHAKE_SUCCEEDED" in [e.name for e in result.events]
    assert result.exchange == Exchange("dropped", received=1, sent=1)
    assert "User-Id" in result.cause
    assert "user-id = false" in result.fix and "user_id=False" in result.fix
    # The server did send its request, and its reply never came.
    assert server.sent == [b"job-1"] and server.replies == []


def test_no_user_id_round_trip_confirmed(req_server: Any, certs: Certs) -> None:
    server_cert, client_cert = certs
    server = req_server(user_id=False, requests=2)
    result = _probe(server, server_cert, client_cert)
    assert result.verdict is V.ADMITTED and result.ok, result.cause
    assert result.exchange is not None and result.exchange.outcome == "confirmed"
    assert (result.exchange.received, result.exchange.sent) == (2, 2)
    assert "round trip" in result.cause
    # The server really got the probe's (empty) reply, with an empty User-Id, and sent again.
    assert server.sent == [b"job-1", b"job-2"]
    assert server.replies[0] == (b"", "")


def test_no_user_id_one_request_kept(req_server: Any, certs: Certs) -> None:
    server_cert, client_cert = certs
    server = req_server(user_id=False, requests=1)
    result = _probe(server, server_cert, client_cert)
    assert result.verdict is V.ADMITTED and result.ok, result.cause
    assert result.exchange == Exchange("kept", received=1, sent=1)
    wait_until(lambda: server.replies, message="the server's reply")
    assert server.replies == [(b"", "")]


def test_server_that_never_sends_is_not_admitted(req_server: Any, certs: Certs) -> None:
    server_cert, client_cert = certs
    server = req_server(user_id=False, requests=0)
    result = _probe(server, server_cert, client_cert, timeout=1.0)
    assert result.verdict is V.NO_MESSAGE and not result.ok
    assert result.exchange == Exchange("no-request")
    assert "HANDSHAKE_SUCCEEDED" in [e.name for e in result.events]
    assert "no request arrived within 1s" in result.cause


def test_server_closing_after_the_handshake(req_server: Any, certs: Certs) -> None:
    server_cert, client_cert = certs
    server = req_server(user_id=False, requests=0)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(
        _probe(server, server_cert, client_cert, timeout=30)))
    thread.start()
    try:
        # The server sees the probe's handshake succeed, then closes its socket.
        assert server.monitor.poll(10_000), "no handshake on the server"
    finally:
        server.stop()
        thread.join(timeout=60)
    [result] = results
    assert result.verdict is V.DROPPED_AFTER_HANDSHAKE and not result.ok
    assert result.exchange == Exchange("dropped", received=0, sent=0)
    assert "before any request arrived" in result.cause and "user-id" not in result.fix


def test_stranger_still_refused(req_server: Any, certs: Certs) -> None:
    server_cert, _ = certs
    server = req_server(user_id=True, requests=1)
    result = _probe(server, server_cert, None, stranger=True)
    assert result.verdict is V.REFUSED and result.ok
    assert result.exchange is None and server.sent == []


def test_req_server_found_without_server_type(req_server: Any, certs: Certs) -> None:
    server_cert, client_cert = certs
    server = req_server(user_id=False, requests=2)
    result = _probe(server, server_cert, client_cert, server_type=None)
    assert result.verdict is V.ADMITTED, result.cause
    assert result.server_type_found == "REQ" and result.attempts[-1] == ("ROUTER", "admitted")
    assert result.exchange is not None and result.exchange.outcome == "confirmed"


def test_cli_outputs(req_server: Any, certs: Certs,
                     tmp_path: Path, run_cli: Any) -> None:
    server_cert, client_cert = certs
    server_cert.save(tmp_path / "server.key")
    client_cert.save(tmp_path / "client.key")
    server = req_server(user_id=True, requests=1)
    args = ("probe", server.endpoint, "--server-cert", str(tmp_path / "server.key"),
            "--cert", str(tmp_path / "client.key_secret"), "--server-type", "req",
            "--timeout", str(TIMEOUT))
    r = run_cli(*args)
    assert r.code == 1, r.err
    assert r.out.startswith("DROPPED AFTER HANDSHAKE") and "user-id = false" in r.out
    assert "round trip: dropped (1 request received, 1 reply sent)" in r.out
    server.stop()
    server = req_server(user_id=False, requests=2)
    r = run_cli(args[0], server.endpoint, *args[2:], "--json")
    doc = json.loads(r.out)
    assert r.code == 0 and doc["verdict"] == "admitted", r.err
    assert doc["round_trip"] == {"outcome": "confirmed", "received": 2, "sent": 2,
                                 "socket_type": None}
    validator = jsonschema.Draft202012Validator(SCHEMAS["probe"], registry=REGISTRY)
    assert not list(validator.iter_errors(doc))


@pytest.mark.parametrize("exchange, verdict, text", [
    (Exchange("dropped", 1, 1), V.DROPPED_AFTER_HANDSHAKE, "user-id = false"),
    (Exchange("dropped", 0, 0), V.DROPPED_AFTER_HANDSHAKE, "before any request arrived"),
    (Exchange("dropped", 1, 0), V.DROPPED_AFTER_HANDSHAKE, "before the probe could answer"),
    (Exchange("no-request"), V.NO_MESSAGE, "no request arrived"),
    (Exchange("kept", 1, 1), V.ADMITTED, "kept the connection open"),
    (Exchange("confirmed", 2, 2), V.ADMITTED, "sent its next request"),
])
def test_classify_after_handshake(exchange: Exchange, verdict: ProbeVerdict,
                                  text: str) -> None:
    verdict_, cause, fix = classify(after_handshake(exchange), Greeting("skipped"),
                                    mechanism="PLAIN", server_type="REQ", timeout=2,
                                    exchange=exchange)
    assert verdict_ is verdict and text in cause + fix


def test_null_fix_names_the_user_id_only_with_a_domain() -> None:
    silent = Observation("no-message")
    _, _, fix = classify(silent, Greeting("skipped"), mechanism="NULL", server_type="REQ",
                         exchange=Exchange("no-request"))
    assert "user-id" not in fix
    _, _, fix = classify(silent, Greeting("skipped"), mechanism="NULL", server_type="REQ",
                         zap_domain="jobs", exchange=Exchange("no-request"))
    assert "user-id = false" in fix and "'jobs'" in fix
