"""`curvecert probe` against servers that do not play fair (the probe talks to untrusted peers).

The server here is a raw TCP socket that speaks just enough ZMTP 3.0 (RFC 23, NULL
mechanism) to finish the handshake as a "REQ" socket and then does what a real REQ never
would: announces a huge frame, or starts a multipart message that never ends. The probe
must stay bounded in memory and time and say what happened; every text it prints from the
wire must reach the terminal escaped.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
import zmq

from curvecert.errors import ConfigError
from curvecert.probe.client import probe
from curvecert.probe.wire import MAX_FRAME
from tests.integration.test_json_schemas import REGISTRY, SCHEMAS
from tests.integration.test_probe import RawServer

Script = Callable[[socket.socket], None]


def _command(body: bytes) -> bytes:
    return bytes([0x04, len(body)]) + body


def _ready(socket_type: bytes) -> bytes:
    name = b"Socket-Type"
    return _command(b"\x05READY" + bytes([len(name)]) + name
                    + struct.pack(">I", len(socket_type)) + socket_type)


class RawZmtpServer(RawServer):
    """Every connection (each in its own thread): a ZMTP 3.0 greeting naming `mechanism`,
    READY, then `script`. After the script the connection stays open until the probe closes
    it or `stop()`. With `hold`, the server sends only the greeting and closes the
    connection `hold` seconds later.
    """

    def __init__(self, script: Script, *, mechanism: bytes = b"NULL",
                 socket_type: bytes = b"REQ", hold: float | None = None) -> None:
        self._script = script
        self._hold = hold
        self._threads: list[threading.Thread] = []
        self._greeting = (b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + mechanism.ljust(20, b"\x00")
                          + b"\x01" + b"\x00" * 31)
        self._ready = _ready(socket_type)
        super().__init__(None)

    def _on_accept(self, conn: socket.socket) -> None:
        thread = threading.Thread(target=self._connection, args=(conn,),
                                  name="test-raw-zmtp-conn")
        self._threads.append(thread)
        thread.start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            try:
                if self._hold is not None:
                    conn.sendall(self._greeting)
                    self._stop.wait(self._hold)
                    return
                self._serve(conn)
            except OSError:
                pass  # the probe went away

    def _serve(self, conn: socket.socket) -> None:
        conn.sendall(self._greeting)
        got = b""
        while len(got) < len(self._greeting) and not self._stop.is_set():
            try:
                data = conn.recv(len(self._greeting) - len(got))
            except TimeoutError:
                continue
            if not data:
                return
            got += data
        conn.sendall(self._ready)
        self._script(conn)
        while not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        super().stop()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawZmtpServer]]:
    servers: list[RawZmtpServer] = []

    def start(script: Script, **kwargs: Any) -> RawZmtpServer:
        servers.append(RawZmtpServer(script, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _send_all(conn: socket.socket, data: bytes) -> None:
    conn.settimeout(10)
    conn.sendall(data)
    conn.settimeout(0.05)


def test_a_frame_over_the_limit_is_not_taken(raw_server: Any) -> None:
    # A delimiter, then a frame of 64 MiB: without ZMQ_MAXMSGSIZE libzmq allocates and
    # takes it whole, and the probe answers it like any request.
    size = 64 * MAX_FRAME

    def huge_request(conn: socket.socket) -> None:
        _send_all(conn, b"\x01\x00" + b"\x02" + struct.pack(">Q", size))
        chunk = b"A" * MAX_FRAME
        for _ in range(size // len(chunk)):
            _send_all(conn, chunk)

    server = raw_server(huge_request)
    result = probe(server.endpoint, server_type="REQ", timeout=20)
    assert result.exchange is not None
    assert (result.exchange.outcome, result.exchange.received) == ("dropped", 0)
    assert result.verdict.value == "dropped-after-handshake"
    assert "1 MiB" in result.cause


def test_a_message_that_never_ends_is_cut_off(raw_server: Any, run_cli: Any) -> None:
    # 16 Mi empty frames, each flagged MORE: 32 MiB on the wire, about 1 GiB in libzmq's
    # pipe (which keeps an unfinished message whatever its length), and never a last frame.
    def endless_request(conn: socket.socket) -> None:
        chunk = b"\x01\x00" * (1 << 20)
        for _ in range(16):
            _send_all(conn, chunk)

    server = raw_server(endless_request)
    r = run_cli("probe", server.endpoint, "--server-type", "REQ", "--timeout", "30",
                "--json")
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    assert doc["verdict"] == "protocol-error"
    assert doc["round_trip"] == {"outcome": "flooded", "received": 0, "sent": 0,
                                 "socket_type": None}
    validator = jsonschema.Draft202012Validator(SCHEMAS["probe"], registry=REGISTRY)
    assert not list(validator.iter_errors(doc))


def test_greeting_text_reaches_the_terminal_escaped(raw_server: Any, run_cli: Any) -> None:
    # The mechanism name is the only free text of a greeting, and the probe prints it.
    server = raw_server(lambda conn: None, mechanism=b"\x1b]0;x\x07\x1b[2J\xff\x00Z")
    r = run_cli("probe", server.endpoint, "--timeout", "10")
    assert r.code == 1, r.err
    assert r.out.startswith("MECHANISM MISMATCH")
    assert "\x1b" not in r.out and "\x07" not in r.out and "\x00" not in r.out
    assert "\\x1b]0;x" in r.out


def test_a_dealer_sending_like_a_req_is_not_taken_for_one(ctx: zmq.Context[Any]) -> None:
    # A DEALER server sends two "requests" at once, envelope and all. Counting the second
    # as proof that the first reply was taken would call it a working REQ server.
    server = ctx.socket(zmq.DEALER)
    server.linger = 0
    port = server.bind_to_random_port("tcp://127.0.0.1")

    def send_two() -> None:
        if server.poll(20_000, zmq.POLLOUT):  # once the probe is connected
            server.send_multipart([b"", b"job-1"])
            server.send_multipart([b"", b"job-2"])

    sender = threading.Thread(target=send_two, name="test-dealer-server")
    sender.start()
    result = probe(f"tcp://127.0.0.1:{port}", server_type="REQ", timeout=20)
    sender.join(timeout=30)
    assert result.exchange is not None
    assert (result.exchange.outcome, result.exchange.socket_type) == ("not-req", "DEALER")
    assert "--server-type DEALER" in result.fix
    server.close()


def test_socket_type_retries_share_the_timeout(raw_server: Any) -> None:
    # A ZMTP server that drops every connection a while after its greeting looks like a
    # socket-type mismatch, so the probe tries the next client type. Each drop comes after
    # more than half of --timeout: one deadline for all attempts leaves room for two at most
    # (with a fresh timeout per attempt the probe tried all six, six times as long).
    server = raw_server(lambda conn: None, hold=1.2)
    result = probe(server.endpoint, timeout=2.0)
    assert 1 <= len(result.attempts) <= 2, result.attempts


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "86401"])
def test_timeout_out_of_range_is_a_usage_error(run_cli: Any, value: str) -> None:
    r = run_cli("probe", "tcp://127.0.0.1:9", "--timeout", value)
    assert r.code == 2, r.err
    assert r.err.count("\n") == 1 and "--timeout" in r.err


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0])
def test_library_refuses_timeout_out_of_range(value: float) -> None:
    with pytest.raises(ConfigError):
        probe("tcp://127.0.0.1:9", timeout=value)
