"""`curvecert probe` against real servers over loopback, one test per verdict.

Servers are real pyzmq sockets in the test process. ZAP is answered by a minimal REP
handler thread written here (not curvecert's authenticator), so these tests depend only
on libzmq's behaviour: it answers 200/300/400/500 by a rule and records every request.
The CLI tests run the real `curvecert` process against those servers.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert.certs.cert import Certificate
from curvecert.errors import CertificateError, ConfigError, OperationalError
from curvecert.probe.advice import ProbeVerdict, classify
from curvecert.probe.client import probe
from curvecert.probe.wire import (
    Greeting,
    Observation,
    ProbeEvent,
    observe,
    parse_endpoint,
    parse_greeting,
)
from tests.conftest import wait_until

Ctx = zmq.Context[zmq.Socket[bytes]]
Rule = Callable[[list[bytes]], bytes]

V = ProbeVerdict
FAST = 2.0  # probe timeout for outcomes that are decided by an early event
ZAP_ENDPOINT = "inproc://zeromq.zap.01"


# --- servers ----------------------------------------------------------------------------


class ZapHandler:
    """A raw RFC 27 handler: a REP socket on the ZAP endpoint answering `rule(request)`."""

    def __init__(self, ctx: Ctx, rule: Rule):
        self.rule = rule
        self.requests: list[list[bytes]] = []
        self.replies: list[bytes] = []
        self._stop = threading.Event()
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)  # bound before any server socket exists (RFC 27)
        self._thread = threading.Thread(target=self._run, name="test-zap")
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(20):
                continue
            request = self._sock.recv_multipart()
            status = self.rule(request)
            self.requests.append(request)
            self.replies.append(status)
            if status == b"none":
                # never answer: a hung handler (REP can't take another request after this)
                continue
            user = b"test-user" if status == b"200" else b""  # RFC 27: empty unless 200
            self._sock.send_multipart([b"1.0", request[1], status, b"test", user, b""])
        self._sock.close()

    def stop(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def zap(ctx: Ctx) -> Iterator[Callable[[Rule], ZapHandler]]:
    """Start a test ZAP handler in `ctx` with a rule; stopped after the test."""
    handlers: list[ZapHandler] = []

    def start(rule: Rule) -> ZapHandler:
        handler = ZapHandler(ctx, rule)
        handlers.append(handler)
        return handler

    yield start
    for h in handlers:
        h.stop()


def allow_keys(*certs: Certificate) -> Rule:
    """CURVE rule: 200 for the given client keys, 400 for anything else."""
    allowed = {c.public_key for c in certs}
    return lambda req: b"200" if req[5] == b"CURVE" and req[6] in allowed else b"400"


def password_rule(user: bytes, password: bytes) -> Rule:
    """PLAIN rule: 200 for exactly one username/password."""
    return lambda req: b"200" if req[5] == b"PLAIN" and req[6:8] == [user, password] else b"400"


_KEEP: dict[int, list[zmq.Socket[bytes]]] = {}


def bind(sock: zmq.Socket[bytes]) -> str:
    """Bind to a random loopback port and return the endpoint a client connects to.

    The socket is kept referenced until its context is destroyed (pyzmq closes a socket
    when the last reference goes, which would silently turn a server into "nothing
    listening").
    """
    sock.linger = 0
    _KEEP.setdefault(id(sock.context), []).append(sock)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _forget_servers() -> Iterator[None]:
    """Drop the references `bind` kept (the `ctx` fixture closes the sockets)."""
    yield
    _KEEP.clear()


def curve_server(ctx: Ctx, cert: Certificate, *, kind: int = zmq.ROUTER,
                 domain: str | None = None) -> tuple[zmq.Socket[bytes], str]:
    """A CURVE server socket with `cert`'s keys."""
    sock = ctx.socket(kind)
    cert.apply_server(sock)
    if domain:
        sock.zap_domain = domain.encode()
    return sock, bind(sock)


def plain_server(ctx: Ctx, *, domain: str = "global") -> str:
    """A PLAIN server socket (the domain makes pyzmq/CZMQ-style handlers consult it)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.plain_server = True
    sock.zap_domain = domain.encode()
    return bind(sock)


def null_server(ctx: Ctx, *, domain: str | None = None) -> str:
    """A server with no security (NULL); ZAP is consulted only when `domain` is set."""
    sock = ctx.socket(zmq.ROUTER)
    if domain:
        sock.zap_domain = domain.encode()
    return bind(sock)


class RawServer:
    """A plain TCP server that is not ZeroMQ: it sends `banner` (or nothing) and waits."""

    def __init__(self, banner: bytes | None):
        self.banner = banner
        self.accepted = 0
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.02)
        self.endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name="test-raw-tcp")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._conns.append(conn)
            self._on_accept(conn)

    def _on_accept(self, conn: socket.socket) -> None:
        if self.banner is not None:
            conn.sendall(self.banner)

    def stop(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._conns:
            c.close()
        self._listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes | None], RawServer]]:
    """Start non-ZeroMQ TCP servers; stopped after the test."""
    servers: list[RawServer] = []

    def start(banner: bytes | None) -> RawServer:
        server = RawServer(banner)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def free_port_endpoint() -> str:
    """An endpoint where nothing listens (a port the kernel just handed out and freed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture
def server_cert() -> Certificate:
    """The server's certificate."""
    return Certificate.new(name="server")


@pytest.fixture
def client_cert() -> Certificate:
    """A client certificate (with its secret key)."""
    return Certificate.new(name="client")


def names(result: Any) -> list[str]:
    """Event names of a probe result."""
    return [e.name for e in result.events]


# --- library: one test per verdict ------------------------------------------------------


def test_nothing_listening() -> None:
    result = probe(free_port_endpoint(), timeout=FAST)
    assert result.verdict is V.NOTHING_LISTENING
    assert not result.ok
    assert "CONNECT_RETRIED" in names(result) and "CONNECTED" not in names(result)


def test_nothing_listening_ipc(tmp_path: Path) -> None:
    result = probe(f"ipc://{tmp_path}/nobody.sock", timeout=FAST)
    assert result.verdict is V.NOTHING_LISTENING


def test_not_zmq_peer_sending_other_protocol(raw_server: Callable[[bytes | None], RawServer]
                                             ) -> None:
    server = raw_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    # A CURVE client gives up at once (libzmq reads the bytes as a ZMTP 1.0 peer, which
    # cannot do security) ...
    result = probe(server.endpoint, server_key=Certificate.new().public_key, timeout=FAST)
    assert result.verdict is V.NOT_ZMQ_PEER
    assert "HTTP/1.1 400" in result.cause
    assert result.greeting.status == "not-zmtp"
    assert names(result)[-1] == "DISCONNECTED"
    assert not result.ok
    # ... a NULL client waits for more ZMTP 1.0 bytes, so only the deadline ends it.
    result = probe(server.endpoint, timeout=0.5)
    assert result.verdict is V.NOT_ZMQ_PEER
    assert "DISCONNECTED" not in names(result)


def test_not_zmq_peer_silent(raw_server: Callable[[bytes | None], RawServer]) -> None:
    server = raw_server(None)
    result = probe(server.endpoint, timeout=0.5)
    assert result.verdict is V.NOT_ZMQ_PEER
    assert result.greeting.status == "silent"


def test_null_server_probed_with_curve(ctx: Ctx, server_cert: Certificate) -> None:
    endpoint = null_server(ctx)
    result = probe(endpoint, server_key=server_cert.public_key, timeout=FAST)
    assert result.verdict is V.MECHANISM_MISMATCH
    assert result.server_mechanism == "NULL"
    assert "NULL" in result.fix
    assert not result.ok


def test_curve_server_probed_with_null(ctx: Ctx, server_cert: Certificate) -> None:
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, timeout=FAST)
    assert result.verdict is V.MECHANISM_MISMATCH
    assert result.server_mechanism == "CURVE"
    assert "--server-cert" in result.fix


def test_wrong_server_key(ctx: Ctx, server_cert: Certificate, client_cert: Certificate) -> None:
    sock, endpoint = curve_server(ctx, server_cert)
    server_monitor = sock.get_monitor_socket()
    other = Certificate.new()
    result = probe(endpoint, server_key=other.public_key, client_cert=client_cert,
                   timeout=FAST)
    assert result.verdict is V.WRONG_SERVER_KEY
    assert "HANDSHAKE_FAILED_NO_DETAIL" in names(result)
    assert result.server_mechanism == "CURVE"
    # The server side of the same failure: it could not open the client's HELLO.
    seen: list[tuple[int, int]] = []

    def crypto_failure() -> bool:
        while server_monitor.poll(0):
            msg = recv_monitor_message(server_monitor)
            seen.append((int(msg["event"]), int(msg["value"])))
        return (int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
                int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)) in seen

    wait_until(crypto_failure, timeout=5, message="server-side ZMTP_CRYPTOGRAPHIC event")
    sock.disable_monitor()
    server_monitor.close()


def test_ironhouse_client_absent_is_refused(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                            server_cert: Certificate,
                                            client_cert: Certificate) -> None:
    handler = zap(allow_keys(Certificate.new()))
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, client_cert=client_cert,
                   timeout=FAST)
    assert result.verdict is V.REFUSED
    assert not result.ok
    assert ("HANDSHAKE_FAILED_AUTH", 400) in [(e.name, e.value) for e in result.events]
    assert handler.requests[0][6] == client_cert.public_key  # the handler saw our key
    assert client_cert.fingerprint in result.cause


def test_ironhouse_client_present_is_admitted(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                              server_cert: Certificate,
                                              client_cert: Certificate) -> None:
    handler = zap(allow_keys(client_cert))
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, client_cert=client_cert,
                   timeout=FAST)
    assert result.verdict is V.ADMITTED
    assert result.ok
    assert handler.replies == [b"200"]
    assert names(result)[-1] == "HANDSHAKE_SUCCEEDED"


def test_stranger_admitted_without_zap_handler_fails_open(ctx: Ctx,
                                                          server_cert: Certificate) -> None:
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, stranger=True, timeout=FAST)
    assert result.verdict is V.FAILS_OPEN
    assert not result.ok
    assert "ANY CURVE client" in result.cause


def test_stranger_refused_with_zap_handler(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                           server_cert: Certificate,
                                           client_cert: Certificate) -> None:
    handler = zap(allow_keys(client_cert))
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, stranger=True, timeout=FAST)
    assert result.verdict is V.REFUSED
    assert result.ok
    stranger_key = handler.requests[0][6]
    assert stranger_key != client_cert.public_key
    assert result.client_key is not None and result.stranger


def test_throwaway_key_admitted_warns(ctx: Ctx, server_cert: Certificate) -> None:
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, timeout=FAST)
    assert result.verdict is V.ADMITTED and result.ok
    assert "throwaway key" in result.cause


def test_plain_wrong_password_is_refused(ctx: Ctx, zap: Callable[[Rule], ZapHandler]) -> None:
    zap(password_rule(b"admin", b"secret"))
    endpoint = plain_server(ctx)
    result = probe(endpoint, plain=("admin", "pw-Xq7-bad"), timeout=FAST)
    assert result.verdict is V.REFUSED
    assert "password" in result.cause
    assert "pw-Xq7-bad" not in json.dumps(result.to_dict()) + repr(result)


def test_plain_right_password_is_admitted(ctx: Ctx, zap: Callable[[Rule], ZapHandler]) -> None:
    handler = zap(password_rule(b"admin", b"secret"))
    endpoint = plain_server(ctx)
    result = probe(endpoint, plain=("admin", "secret"), timeout=FAST)
    assert result.verdict is V.ADMITTED and result.ok
    assert handler.requests[0][2] == b"global"  # the domain is the server's, not ours


def test_plain_without_zap_handler_is_dropped(ctx: Ctx) -> None:
    endpoint = plain_server(ctx)
    result = probe(endpoint, plain=("admin", "secret"), timeout=FAST)
    assert result.verdict is V.DROPPED
    assert "no ZAP handler" in result.cause
    assert result.server_mechanism == "PLAIN"


def test_server_error_500(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                          server_cert: Certificate) -> None:
    zap(lambda req: b"500")
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, timeout=FAST)
    assert result.verdict is V.SERVER_ERROR
    assert ("HANDSHAKE_FAILED_AUTH", 500) in [(e.name, e.value) for e in result.events]


def test_temporary_300_stalls_the_handshake(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                            server_cert: Certificate) -> None:
    handler = zap(lambda req: b"300")
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, timeout=0.5)
    # libzmq sends no ERROR for 300: the client sees a handshake that never ends or, when
    # the server closes first (a race inside libzmq), the same silent drop as a wrong key.
    # Either way the verdict names 300 as a possible cause.
    assert handler.replies[:1] == [b"300"]
    assert result.verdict in (V.STALLED, V.WRONG_SERVER_KEY)
    assert not result.ok
    assert "300" in result.cause
    assert result.server_mechanism == "CURVE"
    assert "HANDSHAKE_FAILED_AUTH" not in names(result)


def test_hung_zap_handler_stalls_the_handshake(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                               server_cert: Certificate) -> None:
    handler = zap(lambda req: b"none")
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, stranger=True, timeout=0.5)
    assert len(handler.requests) == 1
    assert result.verdict is V.STALLED
    assert not result.ok  # a stranger that is neither admitted nor refused is not "ok"


def test_null_is_checked_only_with_a_zap_domain(ctx: Ctx,
                                                zap: Callable[[Rule], ZapHandler]) -> None:
    handler = zap(lambda req: b"400")
    without_domain = null_server(ctx)
    with_domain = null_server(ctx, domain="global")
    admitted = probe(without_domain, timeout=FAST)
    assert admitted.verdict is V.ADMITTED and "ZAP domain" in admitted.cause
    assert handler.requests == []  # libzmq never asked
    refused = probe(with_domain, timeout=FAST, zap_domain="global")
    assert refused.verdict is V.REFUSED
    assert [r[5] for r in handler.requests] == [b"NULL"]
    assert "'global'" in refused.cause


def test_socket_type_must_fit(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                              server_cert: Certificate, client_cert: Certificate) -> None:
    zap(allow_keys(client_cert))
    _, endpoint = curve_server(ctx, server_cert, kind=zmq.PUB)
    result = probe(endpoint, server_key=server_cert.public_key, client_cert=client_cert,
                   timeout=FAST, server_type="PUB")
    assert result.verdict is V.ADMITTED
    # Told the wrong type (a DEALER probe), libzmq drops the pair exactly like a wrong key.
    mismatched = probe(endpoint, server_key=server_cert.public_key, client_cert=client_cert,
                       timeout=FAST, server_type="ROUTER")
    assert mismatched.verdict is V.WRONG_SERVER_KEY
    assert "--server-type" in mismatched.fix
    # Not told, the probe retries with the other client types and finds the PUB server.
    found = probe(endpoint, server_key=server_cert.public_key, client_cert=client_cert,
                  timeout=FAST)
    assert found.verdict is V.ADMITTED and found.server_type_found == "PUB/XPUB"
    assert [t for t, _ in found.attempts] == ["DEALER", "PULL", "SUB"]
    # A wrong key is dropped whatever the type: every type is tried, then the verdict.
    wrong = probe(endpoint, server_key=client_cert.public_key, timeout=FAST)
    assert wrong.verdict is V.WRONG_SERVER_KEY
    assert len(wrong.attempts) == 6 and "--server-type" not in wrong.fix


def test_ipc_admitted(ctx: Ctx, tmp_path: Path, server_cert: Certificate) -> None:
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    server_cert.apply_server(sock)
    endpoint = f"ipc://{tmp_path}/server.sock"
    sock.bind(endpoint)
    result = probe(endpoint, server_key=server_cert.public_key, stranger=True, timeout=FAST)
    assert result.verdict is V.FAILS_OPEN


def test_result_never_holds_the_client_secret(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                              server_cert: Certificate,
                                              client_cert: Certificate) -> None:
    zap(allow_keys(client_cert))
    _, endpoint = curve_server(ctx, server_cert)
    result = probe(endpoint, server_key=server_cert.public_key, client_cert=client_cert,
                   timeout=FAST)
    text = json.dumps(result.to_dict()) + repr(result)
    assert client_cert.secret_txt is not None and client_cert.secret_txt not in text
    assert result.to_dict()["client"]["public_key"] == client_cert.public_txt


# --- library: argument checks and pure parts --------------------------------------------


@pytest.mark.parametrize("endpoint", ["foo", "tcp://127.0.0.1", "tcp://127.0.0.1:0",
                                      "tcp://127.0.0.1:99999", "tcp://*:5555",
                                      "inproc://zeromq.zap.01", "tcp://nonexistent.invalid:5"])
def test_bad_endpoints_are_operational_errors(endpoint: str) -> None:
    with pytest.raises(OperationalError):
        probe(endpoint, timeout=FAST)


def test_conflicting_arguments(server_cert: Certificate, client_cert: Certificate) -> None:
    ep = "tcp://127.0.0.1:1"
    with pytest.raises(ConfigError):
        probe(ep, server_key=server_cert.public_key, plain=("a", "b"))
    with pytest.raises(ConfigError):
        probe(ep, stranger=True)
    with pytest.raises(ConfigError):
        probe(ep, server_key=server_cert.public_key, client_cert=client_cert, stranger=True)
    with pytest.raises(ConfigError):
        probe(ep, server_key=server_cert.public_key, server_type="STREAM")
    with pytest.raises(CertificateError):
        probe(ep, server_key=server_cert.public_key, client_cert=client_cert.public_only())


def test_parse_endpoint_forms() -> None:
    assert parse_endpoint("tcp://[::1]:5555").host == "::1"
    assert parse_endpoint("tcp://127.0.0.2;127.0.0.1:7").port == 7
    assert parse_endpoint("ipc://@abstract").path == "@abstract"


@pytest.mark.parametrize(("data", "eof", "status", "mechanism"), [
    (b"", True, "closed", None),
    (b"", False, "silent", None),
    (b"SSH-2.0-OpenSSH_9.6\r\n", False, "not-zmtp", None),
    (b"\xff" + b"\x00" * 7 + b"\x01\x7f\x03\x01" + b"CURVE".ljust(20, b"\x00") + b"\x00" * 32,
     False, "zmtp", "CURVE"),
    (b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f", False, "zmtp", None),
    (b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x00", False, "not-zmtp", None),  # ZMTP 1.0 bit
])
def test_parse_greeting(data: bytes, eof: bool, status: str, mechanism: str | None) -> None:
    g = parse_greeting(data, eof=eof)
    assert (g.status, g.mechanism) == (status, mechanism)


def _ev(name: str, value: int = 0) -> ProbeEvent:
    return ProbeEvent(name, value, 0.0)


@pytest.mark.parametrize(("events", "timed_out", "kind"), [
    ([_ev("CONNECT_DELAYED"), _ev("CLOSED"), _ev("CONNECT_RETRIED")], False, "refused"),
    ([_ev("CONNECTED"), _ev("DISCONNECTED")], False, "closed"),
    ([_ev("CONNECTED"), _ev("HANDSHAKE_FAILED_AUTH", 400)], False, "auth"),
    ([_ev("CONNECTED")], False, None),
    ([_ev("CONNECTED")], True, "stalled"),
    ([_ev("CONNECT_DELAYED")], True, "silent"),
])
def test_observe(events: list[ProbeEvent], timed_out: bool, kind: str | None) -> None:
    obs = observe(events, timed_out=timed_out)
    assert (obs.kind if obs else None) == kind


def test_classify_uses_the_greeting_when_the_mismatch_shows_as_a_reset() -> None:
    # libzmq usually resets the connection before the client reads the greeting, so a
    # mismatch often reaches the client as NO_DETAIL; the greeting settles it.
    obs = Observation("no-detail", 104)
    verdict, _, _ = classify(obs, Greeting("zmtp", mechanism="NULL"), mechanism="CURVE")
    assert verdict is V.MECHANISM_MISMATCH
    verdict, _, _ = classify(obs, Greeting("closed"), mechanism="CURVE")
    assert verdict is V.NOT_ZMQ_PEER
    verdict, _, _ = classify(obs, Greeting("skipped"), mechanism="CURVE")
    assert verdict is V.WRONG_SERVER_KEY


@pytest.mark.parametrize(("status", "verdict"), [(300, V.TEMPORARY), (400, V.REFUSED),
                                                 (500, V.SERVER_ERROR), (600, V.PROTOCOL_ERROR)])
def test_classify_auth_status(status: int, verdict: ProbeVerdict) -> None:
    got, cause, fix = classify(Observation("auth", status), Greeting("skipped"),
                               mechanism="CURVE")
    assert got is verdict and cause and fix


# --- the real CLI -----------------------------------------------------------------------


@pytest.fixture
def cert_files(tmp_path: Path, server_cert: Certificate,
               client_cert: Certificate) -> tuple[Path, Path]:
    """The server's public certificate file and the client's secret certificate file."""
    server_cert.save(tmp_path / "server.key")
    client_cert.save(tmp_path / "client.key")
    return tmp_path / "server.key", tmp_path / "client.key_secret"


def test_cli_nothing_listening(run_cli: Any) -> None:
    r = run_cli("probe", free_port_endpoint(), "--timeout", "2")
    assert r.code == 1, r.err
    assert "NOTHING LISTENING" in r.out


def test_cli_ironhouse_absent_then_present(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                           run_cli: Any, server_cert: Certificate,
                                           client_cert: Certificate,
                                           cert_files: tuple[Path, Path]) -> None:
    allowed: set[bytes] = set()
    zap(lambda req: b"200" if req[6] in allowed else b"400")
    _, endpoint = curve_server(ctx, server_cert)
    server_file, client_file = cert_files
    args = ("probe", endpoint, "--server-cert", str(server_file), "--cert", str(client_file),
            "--timeout", "2")
    refused = run_cli(*args)
    assert refused.code == 1, refused.err
    assert "REFUSED" in refused.out and "400" in refused.out
    allowed.add(client_cert.public_key)
    admitted = run_cli(*args)
    assert admitted.code == 0, admitted.err
    assert "ADMITTED" in admitted.out
    secret = client_cert.secret_txt
    assert secret is not None
    for r in (refused, admitted):
        assert secret not in r.out + r.err


def test_cli_stranger_fails_open_without_handler(ctx: Ctx, run_cli: Any,
                                                 server_cert: Certificate) -> None:
    _, endpoint = curve_server(ctx, server_cert)
    r = run_cli("probe", endpoint, "--server-key", server_cert.public_txt, "--stranger",
                "--timeout", "2")
    assert r.code == 1, r.err
    assert "FAILS OPEN" in r.out
    assert "accepts ANY CURVE client" in r.out
    assert "fails open" in r.err  # also a warning on stderr, for scripts using --json


def test_cli_stranger_refused_with_handler(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                           run_cli: Any, server_cert: Certificate,
                                           client_cert: Certificate,
                                           cert_files: tuple[Path, Path]) -> None:
    zap(allow_keys(client_cert))
    _, endpoint = curve_server(ctx, server_cert)
    r = run_cli("probe", endpoint, "--server-cert", str(cert_files[0]), "--stranger",
                "--timeout", "2", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["verdict"] == "refused" and doc["ok"] is True and doc["stranger"] is True


def test_cli_plain_password_from_stdin(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                       run_cli: Any) -> None:
    zap(password_rule(b"admin", b"s3cret-pw"))
    endpoint = plain_server(ctx)
    wrong = run_cli("probe", endpoint, "--plain", "admin", "--timeout", "2",
                    input="not-the-pw\n")
    assert wrong.code == 1, wrong.err
    assert "REFUSED" in wrong.out
    right = run_cli("probe", endpoint, "--plain", "admin", "--timeout", "2", "--json",
                    input="s3cret-pw\n")
    assert right.code == 0, right.err
    assert json.loads(right.out)["verdict"] == "admitted"
    for r in (wrong, right):
        assert "s3cret-pw" not in r.out + r.err and "not-the-pw" not in r.out + r.err


def test_cli_json_shape_for_server_error(ctx: Ctx, zap: Callable[[Rule], ZapHandler],
                                         run_cli: Any, server_cert: Certificate) -> None:
    zap(lambda req: b"500")
    _, endpoint = curve_server(ctx, server_cert)
    r = run_cli("probe", endpoint, "--server-key", server_cert.public_txt, "--json",
                "--zap-domain", "global", "--timeout", "2")
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    assert doc["verdict"] == "server-error" and doc["ok"] is False
    assert doc["cause"] and doc["fix"] and doc["zap_domain"] == "global"
    events = [(e["name"], e["value"]) for e in doc["events"]]
    assert ("HANDSHAKE_FAILED_AUTH", 500) in events


def test_cli_wrong_key_and_mismatch(ctx: Ctx, run_cli: Any, server_cert: Certificate) -> None:
    _, curve_ep = curve_server(ctx, server_cert)
    null_ep = null_server(ctx)
    wrong = run_cli("probe", curve_ep, "--server-key", Certificate.new().public_txt,
                    "--json", "--timeout", "2")
    assert wrong.code == 1 and json.loads(wrong.out)["verdict"] == "wrong-server-key"
    mismatch = run_cli("probe", null_ep, "--server-key", server_cert.public_txt,
                       "--json", "--timeout", "2")
    assert mismatch.code == 1
    assert json.loads(mismatch.out)["server_mechanism"] == "NULL"


@pytest.mark.parametrize("args", [
    ("--plain", "admin", "--server-key", "x" * 40),
    ("--stranger",),
    ("--cert", "client.key_secret"),
    ("--server-key", "too-short"),
    ("--timeout", "0"),
])
def test_cli_usage_errors(run_cli: Any, args: tuple[str, ...]) -> None:
    r = run_cli("probe", "tcp://127.0.0.1:1", *args, input="")
    assert r.code == 2, (r.out, r.err)


def test_cli_operational_errors(run_cli: Any, tmp_path: Path,
                                cert_files: tuple[Path, Path]) -> None:
    # A malformed endpoint is a usage error (a value given on the command line).
    assert run_cli("probe", "tcp://127.0.0.1", "--timeout", "1").code == 2
    missing = run_cli("probe", "tcp://127.0.0.1:1", "--server-cert", str(tmp_path / "nope"))
    assert missing.code == 3 and "nope" in missing.err
    public_only = run_cli("probe", "tcp://127.0.0.1:1", "--server-cert", str(cert_files[0]),
                          "--cert", str(cert_files[0]))
    assert public_only.code == 3 and "secret" in public_only.err


@pytest.mark.parametrize(("obs", "greeting", "mechanism", "verdict"), [
    (Observation("silent"), Greeting("skipped"), "NULL", V.TIMEOUT),
    (Observation("closed"), Greeting("zmtp", mechanism="NULL"), "NULL", V.DROPPED),
    (Observation("no-detail", 32), Greeting("zmtp", mechanism="PLAIN"), "PLAIN", V.DROPPED),
    (Observation("stalled"), Greeting("zmtp", mechanism="CURVE"), "CURVE", V.STALLED),
    (Observation("stalled"), Greeting("silent"), "CURVE", V.NOT_ZMQ_PEER),
    (Observation("protocol", 0x10000011), Greeting("zmtp", mechanism="CURVE"), "CURVE",
     V.PROTOCOL_ERROR),
])
def test_classify_table(obs: Observation, greeting: Greeting, mechanism: str,
                        verdict: ProbeVerdict) -> None:
    got, cause, fix = classify(obs, greeting, mechanism=mechanism, endpoint="tcp://h:1",
                               timeout=1.0)
    assert got is verdict and cause and fix


def test_advice_fits_the_transport(tmp_path: Path) -> None:
    ipc = probe(f"ipc://{tmp_path}/nobody-here.sock", timeout=FAST)
    assert ipc.verdict is V.NOTHING_LISTENING
    assert "ipc path" in ipc.cause and "port" not in ipc.fix
    tcp = classify(Observation("refused"), Greeting("skipped"), mechanism="NULL",
                   endpoint="tcp://127.0.0.1:1", transport="tcp")
    assert "port" in tcp[2]


def test_throwaway_refusal_does_not_ask_to_store_the_key() -> None:
    verdict, cause, fix = classify(Observation("auth", 400), Greeting("skipped"),
                                   mechanism="CURVE", throwaway=True)
    assert verdict is V.REFUSED and "throwaway" in cause
    assert "store add" not in fix and "--cert" in fix
    _, _, known = classify(Observation("auth", 400), Greeting("skipped"), mechanism="CURVE")
    assert "store add" in known
