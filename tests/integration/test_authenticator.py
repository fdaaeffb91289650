"""The embedded authenticator with real sockets: raw ZAP requests over inproc, and real
handshakes over loopback TCP (one allow and one deny case per mechanism)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert.auth.authenticator import Authenticator, format_decision
from curvecert.auth.decision import Decision
from curvecert.auth.keylookup import StaticKeys, UnsafeAllowAny
from curvecert.auth.passwords import PasswordFile
from curvecert.auth.pending import Grant
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats import z85
from curvecert.formats.zap import ZAP_ENDPOINT, ZapRequest
from tests.conftest import wait_until

Ctx = zmq.Context[zmq.Socket[bytes]]
KEY = bytes(range(32))
NULL = [b"1.0", b"1", b"", b"127.0.0.1", b"", b"NULL"]
CURVE = [b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", KEY]
EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
          | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


@pytest.fixture
def auth(ctx: Ctx) -> Iterator[Authenticator]:
    a = Authenticator(ctx)
    a.start()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture
def zap_req(ctx: Ctx) -> Iterator[Callable[[list[bytes]], list[bytes]]]:
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 5000
    sock.connect(ZAP_ENDPOINT)

    def ask(frames: list[bytes]) -> list[bytes]:
        sock.send_multipart(frames)
        return sock.recv_multipart()

    yield ask
    sock.close(linger=0)


# --- lifecycle ------------------------------------------------------------------------------

def test_start_answers_and_stop_hands_over(ctx: Ctx) -> None:
    auth = Authenticator(ctx)
    auth.configure_null()
    assert auth.start() is auth and auth.running
    req = ctx.socket(zmq.REQ)
    req.linger, req.rcvtimeo = 0, 5000
    req.connect(ZAP_ENDPOINT)
    req.send_multipart(NULL)
    assert req.recv_multipart()[2] == b"200"
    req.close()
    auth.stop()
    assert not auth.running
    auth.stop()  # idempotent
    # The endpoint stays bound (deny-all) and a new handler takes it over at once.
    with Authenticator(ctx) as again:
        assert again.running


def test_one_handler_per_context(ctx: Ctx, auth: Authenticator) -> None:
    with pytest.raises(OperationalError, match="one per context"):
        Authenticator(ctx).start()
    assert auth.running


def test_stop_after_context_termination_does_not_hang(ctx: Ctx) -> None:
    context: Ctx = zmq.Context()
    auth = Authenticator(context).start()
    terminated = threading.Event()
    def terminate() -> None:
        context.term()
        terminated.set()

    term = threading.Thread(target=terminate, daemon=True)
    term.start()
    # term() waits for our sockets; the thread leaves on ETERM, stop() closes the rest.
    auth.stop(timeout=5)
    assert terminated.wait(5) and not auth.running
    term.join(5)


# --- raw ZAP requests -----------------------------------------------------------------------

def test_flood_of_malformed_requests_then_valid(ctx: Ctx, auth: Authenticator,
                                                zap_req: Callable[[list[bytes]], list[bytes]]
                                                ) -> None:
    auth.configure_curve(store=StaticKeys.from_keys([KEY]))
    malformed = [
        [b"x"],
        [b"1.0"],
        [b"1.0", b"7"],
        [b"2.0", b"7", b"", b"127.0.0.1", b"", b"NULL"],
        [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE"],
        [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", KEY[:31]],
        [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", KEY, KEY],
        [b"1.0", b"7", b"", b"127.0.0.1", b"", b"PLAIN", b"only-user"],
        [b"1.0", b"7", b"\xff" * 3, b"127.0.0.1", b"", b"NULL"],
        [b"1.0", b"7", b"d" * 1_000_000, b"127.0.0.1", b"", b"NULL"],
        [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", b"k" * 2_000_000],
        [b"1.0", b"r" * 300, b"", b"127.0.0.1", b"", b"NULL"],
        [b"1.0", b"7", b"", b"127.0.0.1", b"", b"lower"],
    ]
    for frames in malformed:
        reply = zap_req(frames)
        assert len(reply) == 6 and reply[0] == b"1.0" and reply[2] == b"500", frames[:2]
        assert reply[1] == (frames[1] if len(frames) > 1 and len(frames[1]) <= 255 else b"")
    # Pipelined: a DEALER floods without waiting, then one valid request goes last.
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger, dealer.rcvtimeo = 0, 10_000
    dealer.sndhwm = dealer.rcvhwm = 0  # like libzmq's own ZAP pipes
    dealer.connect(ZAP_ENDPOINT)
    n = 3000
    for i in range(n):
        dealer.send_multipart([b"", *malformed[i % len(malformed)]])
    dealer.send_multipart([b"", *CURVE])
    replies = [dealer.recv_multipart() for _ in range(n + 1)]
    dealer.close()
    assert [r[3] for r in replies[:-1]] == [b"500"] * n
    assert replies[-1][1:] == [b"1.0", b"1", b"200", b"OK", z85.encode(KEY).encode(), b""]
    assert zap_req(CURVE)[2] == b"200"
    wait_until(lambda: auth.requests == len(malformed) + n + 2)
    errors = sum(c["errors"] for c in auth.counters.values())
    assert errors == len(malformed) + n and auth.counters["CURVE"]["allowed"] == 2
    assert auth.running


class _Raising:
    def __init__(self) -> None:
        self.calls = 0

    def lookup(self, key: bytes) -> Any:
        self.calls += 1
        raise RuntimeError("store exploded")


def test_raising_lookup_does_not_wedge(auth: Authenticator,
                                       zap_req: Callable[[list[bytes]], list[bytes]]) -> None:
    broken = _Raising()
    auth.configure_curve(store=broken)
    for _ in range(3):
        assert zap_req(CURVE)[2:5] == [b"500", b"Internal error", b""]
    assert broken.calls == 3 and auth.running
    auth.configure_curve(store=StaticKeys.from_keys([KEY]))
    assert zap_req(CURVE)[2] == b"200"
    # Counters are updated right after each reply has been sent.
    wait_until(lambda: auth.counters["CURVE"] == {"allowed": 1, "denied": 0, "errors": 3})


def test_raising_provider_and_hook_do_not_wedge(auth: Authenticator,
                                                zap_req: Callable[[list[bytes]], list[bytes]]
                                                ) -> None:
    def provider(request: ZapRequest) -> bool:
        raise KeyError("boom")

    seen: list[tuple[ZapRequest | None, Decision]] = []

    def hook(request: ZapRequest | None, decision: Decision) -> None:
        seen.append((request, decision))
        raise RuntimeError("audit sink broken")

    auth.on_decision = hook
    auth.configure_provider("CURVE", provider)
    assert zap_req(CURVE)[2] == b"500"
    auth.configure_provider("CURVE", lambda r: Grant("alice", {"Role": "ops"}))
    reply = zap_req(CURVE)
    assert reply[2:5] == [b"200", b"OK", b"alice"] and reply[5] == b"\x04Role\x00\x00\x00\x03ops"
    wait_until(lambda: len(seen) == 2)
    assert seen[0][1].status == "500" and seen[1][0] is not None and seen[1][1].allowed


def test_configuration_changes_apply_to_next_request(
        auth: Authenticator, zap_req: Callable[[list[bytes]], list[bytes]]) -> None:
    assert zap_req(NULL)[3] == b"No policy for domain"
    auth.configure_null()
    assert zap_req(NULL)[2] == b"200"
    auth.deny("127.0.0.0/8")
    assert zap_req(NULL)[2:4] == [b"400", b"Address denied"]
    auth.set_policy(Policy({"*": DomainPolicy(null=True)}))
    assert zap_req(NULL)[2] == b"200"
    with pytest.raises(ConfigError):
        auth.allow("not an address")
    with pytest.raises(ConfigError):
        auth.configure_provider("NULL", lambda r: True)


def test_decision_log_lines(auth: Authenticator, zap_req: Callable[[list[bytes]], list[bytes]],
                           caplog: pytest.LogCaptureFixture) -> None:
    auth.configure_curve(store=StaticKeys.from_keys([KEY]))
    auth.configure_plain(passwords={"admin": "hunter2"})
    with caplog.at_level(logging.INFO, logger="curvecert.audit"):
        zap_req(CURVE)
        zap_req([b"1.0", b"1", b"d", b"::1", b"", b"PLAIN", b"admin", b"hunter3"])
        zap_req([b"1.0", b"1"])
        wait_until(lambda: len(caplog.records) == 3)
    lines = [r.getMessage() for r in caplog.records]
    fingerprint = keys.fingerprint(KEY)
    assert lines[0] == (f"ALLOWED (CURVE) status=200 domain=\"\" address=127.0.0.1 "
                        f"user_id={z85.encode(KEY)} cert_name=\"\" fingerprint={fingerprint} "
                        "reason=known key")
    assert lines[1] == ("DENIED (PLAIN) status=400 domain=d address=::1 user_id=admin "
                        'cert_name="" fingerprint="" reason=wrong password')
    assert lines[2].startswith("ERROR (?) ") and "status=500" in lines[2]
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO, logging.WARNING]
    assert "hunter" not in caplog.text


def test_log_lines_escape_wire_text() -> None:
    decision = Decision("400", "x", reason="address denied", mechanism="NULL",
                        domain="a b\nALLOWED (CURVE)", address="1.2.3.4")
    line = format_decision(decision)
    assert "\n" not in line and 'domain="a b\\x0aALLOWED (CURVE)"' in line


def test_no_decision_logs_when_disabled(ctx: Ctx, zap_req: Callable[[list[bytes]], list[bytes]],
                                        caplog: pytest.LogCaptureFixture) -> None:
    with Authenticator(ctx, Policy({"*": DomainPolicy(null=True)}), log_decisions=False) as a:
        with caplog.at_level(logging.DEBUG, logger="curvecert.audit"):
            assert zap_req(NULL)[2] == b"200"
            wait_until(lambda: a.requests == 1)
    assert not [r for r in caplog.records if r.name == "curvecert.audit"]


def test_unsafe_allow_any_warns(ctx: Ctx, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="curvecert.auth.authenticator"):
        with Authenticator(ctx, Policy({"open": DomainPolicy(curve=UnsafeAllowAny())})) as a:
            a.configure_curve_unsafe_allow_any("other")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("UNSAFE" in w and "'open'" in w for w in warnings)
    assert any("UNSAFE" in w and "'other'" in w for w in warnings)


# --- real handshakes over loopback TCP ------------------------------------------------------

def handshake(ctx: Ctx, server_opts: Callable[[zmq.Socket[bytes]], None],
              client_opts: Callable[[zmq.Socket[bytes]], None]) -> tuple[int, Any]:
    """(event, frame or event value): the server's first handshake event, and on success
    the message the client then sent (a zmq.Frame with its properties)."""
    server = ctx.socket(zmq.PULL)
    client = ctx.socket(zmq.PUSH)
    server.linger = client.linger = 0
    server_opts(server)
    client_opts(client)
    monitor = server.get_monitor_socket(EVENTS)
    try:
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        assert monitor.poll(10_000), "no handshake event"
        event = recv_monitor_message(monitor)
        if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return event["event"], event["value"]
        client.send(b"hi")
        assert server.poll(10_000)
        return event["event"], server.recv(copy=False)
    finally:
        server.disable_monitor()
        monitor.close(linger=0)
        client.close(linger=0)
        server.close(linger=0)


OK, REFUSED = zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH


def test_null_handshake_allow_and_deny(ctx: Ctx, auth: Authenticator) -> None:
    auth.configure_null("global")

    def server(s: zmq.Socket[bytes]) -> None:
        s.zap_domain = b"global"

    event, frame = handshake(ctx, server, lambda c: None)
    assert event == OK and frame.get("User-Id") == "" and frame.get("Peer-Address") == "127.0.0.1"
    auth.deny("127.0.0.1")
    assert handshake(ctx, server, lambda c: None) == (REFUSED, 400)


def test_plain_handshake_allow_and_deny(ctx: Ctx, auth: Authenticator, tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    PasswordFile(path, missing_ok=True).add("admin", "correct horse", plaintext=False)
    auth.configure_plain(passwords=path)

    def server(s: zmq.Socket[bytes]) -> None:
        s.plain_server = True

    def client(password: bytes) -> Callable[[zmq.Socket[bytes]], None]:
        def opts(c: zmq.Socket[bytes]) -> None:
            c.plain_username, c.plain_password = b"admin", password
        return opts

    event, frame = handshake(ctx, server, client(b"correct horse"))
    assert event == OK and frame.get("User-Id") == "admin"
    assert handshake(ctx, server, client(b"battery staple")) == (REFUSED, 400)


def test_curve_handshake_user_id_and_metadata(ctx: Ctx, auth: Authenticator) -> None:
    server_cert = Certificate.new()
    alice = Certificate.new({"name": "Alice", "email": "alice@example.org"})
    mallory = Certificate.new(name="Mallory")
    auth.configure_curve(store=StaticKeys.from_certificates([alice.public_only()]))
    event, frame = handshake(ctx, server_cert.apply_server,
                             lambda c: alice.apply_client(c, server_cert))
    assert event == OK
    assert frame.get("User-Id") == alice.public_txt
    assert (frame.get("name"), frame.get("email")) == ("Alice", "alice@example.org")
    assert handshake(ctx, server_cert.apply_server,
                     lambda c: mallory.apply_client(c, server_cert)) == (REFUSED, 400)


def test_curve_handshake_with_watched_cert_store(ctx: Ctx, auth: Authenticator,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("curvecert.store.watch")
    server_cert = Certificate.new()
    alice = Certificate.new({"name": "Alice", "org/unit": "R&D"})
    store = tmp_path / "store"
    store.mkdir()
    alice.save_public(store / "alice")
    auth.configure_curve(store=store)
    event, frame = handshake(ctx, server_cert.apply_server,
                             lambda c: alice.apply_client(c, server_cert))
    assert event == OK and frame.get("User-Id") == alice.public_txt
    assert frame.get("name") == "Alice" and frame.get("org_unit") == "R&D"
    # Revocation: remove the file; the next handshake is refused once the store reloads.
    current = auth.policy.domains["*"].curve
    generation = current.generation  # type: ignore[union-attr]
    (store / "alice").unlink()
    assert current.wait_for_generation(generation + 1, timeout=10)  # type: ignore[union-attr]
    assert handshake(ctx, server_cert.apply_server,
                     lambda c: alice.apply_client(c, server_cert)) == (REFUSED, 400)
    auth.stop()  # stops the store it opened
    assert not any(t.name == "curvecert-store-reload" and t.is_alive()
                   for t in threading.enumerate())


def test_curve_allow_any_and_domains(ctx: Ctx, auth: Authenticator) -> None:
    server_cert = Certificate.new()
    anyone = Certificate.new()
    auth.configure_curve_unsafe_allow_any("lobby")

    def server(domain: bytes) -> Callable[[zmq.Socket[bytes]], None]:
        def opts(s: zmq.Socket[bytes]) -> None:
            server_cert.apply_server(s)
            s.zap_domain = domain
        return opts

    event, frame = handshake(ctx, server(b"lobby"), lambda c: anyone.apply_client(c, server_cert))
    assert event == OK and frame.get("User-Id") == anyone.public_txt
    # Another domain has no policy (and there is no "*"): refused, not waved through.
    assert handshake(ctx, server(b"vault"),
                     lambda c: anyone.apply_client(c, server_cert)) == (REFUSED, 400)


def test_policy_swaps_during_a_flood_keep_replies_well_formed(ctx: Ctx,
                                                              auth: Authenticator) -> None:
    allow_all = Policy({"*": DomainPolicy(null=True)})
    deny_all = Policy({"*": DomainPolicy(null=False)})
    done = threading.Event()

    def flip() -> None:
        while not done.is_set():
            auth.set_policy(allow_all)
            auth.set_policy(deny_all)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger, dealer.rcvtimeo = 0, 10_000
    dealer.sndhwm = dealer.rcvhwm = 0
    dealer.connect(ZAP_ENDPOINT)
    try:
        for i in range(500):
            dealer.send_multipart([b"", b"1.0", str(i).encode(), *NULL[2:]])
        replies = [dealer.recv_multipart() for _ in range(500)]
    finally:
        done.set()
        flipper.join(5)
        dealer.close()
    assert [r[2] for r in replies] == [str(i).encode() for i in range(500)]
    assert {r[3] for r in replies} <= {b"200", b"400"}


def test_password_file_changes_apply_without_restart(
        auth: Authenticator, zap_req: Callable[[list[bytes]], list[bytes]],
        tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    path.write_text("admin=one\n")
    path.chmod(0o600)
    auth.configure_plain(passwords=PasswordFile(path, check_interval=0))
    plain = [b"1.0", b"1", b"", b"127.0.0.1", b"", b"PLAIN", b"admin"]
    assert zap_req([*plain, b"one"])[2] == b"200"
    path.write_text("admin=two\n")
    assert zap_req([*plain, b"one"])[2] == b"400"
    assert zap_req([*plain, b"two"])[2] == b"200"
    path.write_text("admin=two\nbroken\n")
    assert zap_req([*plain, b"two"])[2:4] == [b"500", b"Internal error"]
