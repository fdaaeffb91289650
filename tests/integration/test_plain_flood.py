"""A PLAIN flood never delays or refuses CURVE (issue 12): real sockets, embedded and
through a real `serve-auth` process.

400 anonymous wrong-password PLAIN logins (each client tries once: reconnection off)
hit a PLAIN server while CURVE clients handshake with a CURVE server of the same
context. Password hashing runs in `curvecert.auth.plainpool`'s bounded pool, so every
CURVE request is answered 200 and no PLAIN login is admitted; PLAIN requests beyond the
pool's queue are answered 500 at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert.auth import plainpool
from curvecert.auth.authenticator import Authenticator
from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.passwords import PasswordFile
from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder
from curvecert.store import add_certificate
from tests.conftest import wait_until
from tests.serveproc import Outcome, ServeAuth, Server, handshake

FLOOD = 400
CURVE_CLIENTS = 10
Ctx = zmq.Context[zmq.Socket[bytes]]


class PlainFlood:
    """FLOOD PLAIN clients (one attempt each) against a PLAIN server in `ctx`."""

    def __init__(self, ctx: Ctx) -> None:
        self.server = ctx.socket(zmq.PULL)
        self.server.linger = 0
        self.server.plain_server = True
        self.port = self.server.bind_to_random_port("tcp://127.0.0.1")
        self.cctx: Ctx = zmq.Context()
        self.clients: list[zmq.Socket[bytes]] = []

    def start(self) -> None:
        for i in range(FLOOD):
            sock = self.cctx.socket(zmq.PUSH)
            sock.linger = 0
            sock.reconnect_ivl = -1  # one login attempt per client
            sock.plain_username = f"anon{i}".encode()
            sock.plain_password = b"wrong password"
            sock.connect(f"tcp://127.0.0.1:{self.port}")
            self.clients.append(sock)

    def close(self) -> None:
        for sock in self.clients:
            sock.close(linger=0)
        self.cctx.destroy(linger=0)
        self.server.close(linger=0)


@pytest.fixture
def flood(ctx: Ctx) -> Iterator[PlainFlood]:
    f = PlainFlood(ctx)
    yield f
    f.close()


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwords"
    PasswordFile(path, missing_ok=True).add("admin", "the real one")  # argon2id
    return path


def test_embedded_flood_never_refuses_curve(ctx: Ctx, tmp_path: Path,
                                            flood: PlainFlood) -> None:
    server_cert = Certificate.new()
    clients = [Certificate.new() for _ in range(CURVE_CLIENTS)]
    with Authenticator(ctx) as auth:
        auth.configure_plain(passwords=_password_file(tmp_path))
        auth.configure_curve(store=StaticKeys.from_certificates(
            c.public_only() for c in clients))
        server = Server(ctx, server_cert)
        try:
            flood.start()
            wait_until(lambda: auth.counters.get("PLAIN", {}).get("errors", 0) > 0,
                       message="the PLAIN queue to overflow")
            outcomes = [handshake(server, c) for c in clients]
            pool = plainpool.hash_pool()
            still_hashing = pool.busy > 0 or auth.in_flight > 0
        finally:
            server.close()
        assert outcomes == [Outcome(200, c.public_txt) for c in clients]
        assert still_hashing, "the flood was over before the CURVE handshakes"
        wait_until(lambda: sum(auth.counters["PLAIN"].values()) == FLOOD, timeout=60,
                   message="every PLAIN login answered")
        plain = auth.counters["PLAIN"]
        assert plain["allowed"] == 0 and plain["errors"] > 0 and plain["denied"] > 0
        assert auth.counters["CURVE"] == {"allowed": CURVE_CLIENTS, "denied": 0, "errors": 0}


def pump(daemon: ServeAuth) -> Callable[[], None]:
    """Keep reading a daemon's output while the test floods it (its log must not fill
    the pipe and block it); returns the function that stops the reader."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            daemon._pump(0.05)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()

    def halt() -> None:
        stop.set()
        reader.join(5)

    return halt


def test_serve_auth_flood_never_refuses_curve(ctx: Ctx, tmp_path: Path, flood: PlainFlood,
                                              cli_env: Callable[[Any], dict[str, str]]
                                              ) -> None:
    server_cert = Certificate.new()
    clients = [Certificate.new() for _ in range(CURVE_CLIENTS)]
    store = tmp_path / "clients"
    store.mkdir()
    for c in clients:
        add_certificate(store, c)
    ipc = f"ipc://{tmp_path}/zap.sock"
    args = ["--store", str(store), "--passwords", str(_password_file(tmp_path)),
            "--zap-endpoint", ipc, "--log-format", "json", "--log-stream", "stdout"]
    with ServeAuth(args, cli_env(None)) as daemon:
        fwd = ZapForwarder(ctx, ipc).start()
        server = Server(ctx, server_cert)
        halt = pump(daemon)
        try:
            flood.start()
            outcomes = [handshake(server, c) for c in clients]
        finally:
            server.close()
        try:
            _check_daemon_log(daemon, outcomes, clients)
        finally:
            halt()
            fwd.stop()


def _check_daemon_log(daemon: ServeAuth, outcomes: list[Outcome],
                      clients: list[Certificate]) -> None:
    assert outcomes == [Outcome(200, c.public_txt) for c in clients]

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(daemon.out.lines)
                if line.startswith("{")]

    wait_until(lambda: sum(r.get("mechanism") == "PLAIN" for r in records()) == FLOOD,
               timeout=60, message="every PLAIN login answered")
    got = records()
    plain = [r for r in got if r.get("mechanism") == "PLAIN"]
    curve = [r for r in got if r.get("mechanism") == "CURVE"]
    assert not any(int(r["status"]) == 200 for r in plain)
    assert {int(r["status"]) for r in plain} >= {500}
    assert [int(r["status"]) for r in curve] == [200] * CURVE_CLIENTS
    # the CURVE answers came while PLAIN checks were still being answered
    last_curve = max(i for i, r in enumerate(got) if r.get("mechanism") == "CURVE")
    assert any(r.get("mechanism") == "PLAIN" for r in got[last_curve + 1:])
