"""`serve-auth --front ... --back ...`: Ironhouse in front of unmodified ZeroMQ sockets.

The "application" is a plain socket in this test process with no security at all; the
gateway is a real `curvecert serve-auth` process. Remote peers are CURVE clients.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert import store
from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.certs.cert import Certificate
from curvecert.serve.gateway import Gateway
from tests.conftest import wait_until
from tests.serveproc import ServeAuth

Env = Callable[[dict[str, str] | None], dict[str, str]]


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Any]:
    gw = Certificate.new(name="gateway")
    gw.save(tmp_path / "gateway")
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    clients = tmp_path / "clients"
    clients.mkdir()
    store.add_certificate(clients, alice)
    return {"gw": gw, "alice": alice, "bob": bob, "clients": clients,
            "secret": tmp_path / "gateway_secret"}


def gateway(certs: dict[str, Any], cli_env: Env, back: str, pattern: str) -> ServeAuth:
    return ServeAuth(["--front", "tcp://127.0.0.1:*", "--back", back, "--pattern", pattern,
                      "--server-cert", str(certs["secret"]), "--store", str(certs["clients"]),
                      "--log-format", "json", "--log-stream", "stdout"], cli_env(None))


def front_of(daemon: ServeAuth) -> str:
    # readiness: "gateway tcp://127.0.0.1:PORT -> BACK (pattern)"
    return daemon.where[0].split()[1]


def client(cctx: zmq.Context[Any], kind: int, cert: Certificate, server: Certificate,
           endpoint: str) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    sock = cctx.socket(kind)
    sock.linger = 0
    cert.apply_client(sock, server)
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    sock.connect(endpoint)
    return sock, mon


def verdict(mon: zmq.Socket[Any]) -> int:
    """The client's view: 200 on success, else the ZAP status the server's ERROR carried."""
    assert mon.poll(10_000), "no handshake event"
    event = recv_monitor_message(mon)
    return 200 if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED else int(event["value"])


def test_push_pull(ctx: zmq.Context[Any], certs: dict[str, Any], cli_env: Env) -> None:
    app = ctx.socket(zmq.PULL)  # the unmodified application: plain PULL on loopback
    app.linger = 0
    port = app.bind_to_random_port("tcp://127.0.0.1")
    with gateway(certs, cli_env, f"tcp://127.0.0.1:{port}", "push-pull") as daemon:
        front = front_of(daemon)
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            push, mon = client(cctx, zmq.PUSH, certs["alice"], certs["gw"], front)
            assert verdict(mon) == 200
            push.send(b"from alice")
            assert app.poll(10_000)
            assert app.recv() == b"from alice"
            evil, emon = client(cctx, zmq.PUSH, certs["bob"], certs["gw"], front)
            assert verdict(emon) == 400
            try:  # queued locally, or refused at once when libzmq already dropped the pipe
                evil.send(b"from bob", zmq.NOBLOCK)
            except zmq.Again:
                pass
            push.send(b"again")
            assert app.poll(10_000) and app.recv() == b"again"
            # a client without CURVE cannot even start a handshake with the front
            for s in (push, mon, evil, emon):
                s.close(linger=0)
        finally:
            cctx.destroy(linger=0)
        daemon.wait_stdout(r'"status":400')
        statuses = [r["status"] for r in daemon.json_lines() if r["event"] == "decision"]
        assert sorted(statuses) == [200, 400]
    app.close(linger=0)


def test_router_dealer(ctx: zmq.Context[Any], certs: dict[str, Any], cli_env: Env) -> None:
    app = ctx.socket(zmq.REP)  # the unmodified application: a plain REP service
    app.linger = 0
    port = app.bind_to_random_port("tcp://127.0.0.1")
    with gateway(certs, cli_env, f"tcp://127.0.0.1:{port}", "router-dealer") as daemon:
        front = front_of(daemon)
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            req, mon = client(cctx, zmq.REQ, certs["alice"], certs["gw"], front)
            req.send(b"ping")
            assert verdict(mon) == 200
            assert app.poll(10_000)
            assert app.recv() == b"ping"
            app.send(b"pong")
            assert req.poll(10_000) and req.recv() == b"pong"
            bad, bmon = client(cctx, zmq.REQ, certs["bob"], certs["gw"], front)
            bad.send(b"ping")
            assert verdict(bmon) == 400
            assert not app.poll(200)
            for s in (req, mon, bad, bmon):
                s.close(linger=0)
        finally:
            cctx.destroy(linger=0)
    app.close(linger=0)


def test_pub_sub_inbound(ctx: zmq.Context[Any], certs: dict[str, Any], cli_env: Env) -> None:
    app = ctx.socket(zmq.SUB)  # the application subscribes on a bound plain socket
    app.linger = 0
    app.subscribe(b"")
    port = app.bind_to_random_port("tcp://127.0.0.1")
    with gateway(certs, cli_env, f"tcp://127.0.0.1:{port}", "pub-sub") as daemon:
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            pub, mon = client(cctx, zmq.PUB, certs["alice"], certs["gw"], front_of(daemon))
            assert verdict(mon) == 200

            def delivered() -> bool:
                pub.send(b"tick")  # PUB drops until the subscription has travelled
                return bool(app.poll(50)) and app.recv() == b"tick"

            wait_until(delivered, message="a published message reached the application")
            bad, bmon = client(cctx, zmq.PUB, certs["bob"], certs["gw"], front_of(daemon))
            assert verdict(bmon) == 400
            for s in (pub, mon, bad, bmon):
                s.close(linger=0)
        finally:
            cctx.destroy(linger=0)
    app.close(linger=0)


def test_pub_sub_outbound(ctx: zmq.Context[Any], certs: dict[str, Any], cli_env: Env) -> None:
    app = ctx.socket(zmq.PUB)  # the application publishes on a bound plain socket
    app.linger = 0
    port = app.bind_to_random_port("tcp://127.0.0.1")
    with gateway(certs, cli_env, f"tcp://127.0.0.1:{port}", "pub-sub-out") as daemon:
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            sub, mon = client(cctx, zmq.SUB, certs["alice"], certs["gw"], front_of(daemon))
            sub.subscribe(b"")
            assert verdict(mon) == 200

            def received() -> bool:
                app.send(b"news")
                return bool(sub.poll(50)) and sub.recv() == b"news"

            wait_until(received, message="a remote subscriber got the application's message")
            bad, bmon = client(cctx, zmq.SUB, certs["bob"], certs["gw"], front_of(daemon))
            assert verdict(bmon) == 400
            for s in (sub, mon, bad, bmon):
                s.close(linger=0)
        finally:
            cctx.destroy(linger=0)
    app.close(linger=0)


def test_gateway_class_in_process(ctx: zmq.Context[Any]) -> None:
    """The library object: start/stop are prompt, policy swaps apply to new handshakes."""
    gw_cert, alice = Certificate.new(), Certificate.new()
    app = ctx.socket(zmq.PULL)
    app.linger = 0
    port = app.bind_to_random_port("tcp://127.0.0.1")
    empty = Policy({"*": DomainPolicy(curve=StaticKeys())})
    with Gateway("tcp://127.0.0.1:*", f"tcp://127.0.0.1:{port}", "push-pull", gw_cert,
                 empty) as gw:
        assert gw.front_endpoint is not None
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            _, mon = client(cctx, zmq.PUSH, alice, gw_cert, gw.front_endpoint)
            assert verdict(mon) == 400
            gw.set_policy(Policy({"*": DomainPolicy(curve=StaticKeys.from_keys(
                [alice.public_key]))}))
            push, mon2 = client(cctx, zmq.PUSH, alice, gw_cert, gw.front_endpoint)
            assert verdict(mon2) == 200
            push.send(b"x")
            assert app.poll(10_000) and app.recv() == b"x"
            assert gw.stats()["front_in_msgs"] >= 1
            for s in (push, mon, mon2):
                s.close(linger=0)
        finally:
            cctx.destroy(linger=0)
    app.close(linger=0)
