"""Expiry reaches open connections where curvecert relays the messages (the gateway):
a client whose certificate expires while connected is cut off at that moment, like a
revoked one (issue 15's re-check), while a client without dates is unaffected."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from curvecert import store
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.auth.recheck import Rechecker
from curvecert.certs import validity
from curvecert.certs.cert import Certificate
from curvecert.serve.gatewayrelay import GatewayRelay
from curvecert.store.watch import CertStore
from tests.integration.test_gateway import client, verdict
from tests.serveproc import ServeAuth

Env = Callable[[dict[str, str] | None], dict[str, str]]


def test_relay_cuts_off_at_expiry(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    from curvecert.auth.authenticator import Authenticator

    not_after = math.floor(time.time()) + 2
    alice = Certificate.new(validity.with_validity([("name", "alice")], not_after=not_after))
    bob = Certificate.new(name="bob")
    for c in (alice, bob):
        store.add_certificate(tmp_path, c)
    server = Certificate.new(name="gw")
    with CertStore(tmp_path) as certs:
        policy = Policy({"*": DomainPolicy(curve=certs)})
        generation = certs.generation
        auth = Authenticator(ctx, policy, log_decisions=False).start()
        front, back, app = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        pipe_out, pipe_in = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        server.apply_server(front)
        endpoint = f"tcp://127.0.0.1:{front.bind_to_random_port('tcp://127.0.0.1')}"
        app.bind("inproc://expiry-app")
        back.connect("inproc://expiry-app")
        pipe_out.bind("inproc://expiry-pipe")
        pipe_in.connect("inproc://expiry-pipe")
        checker = Rechecker(policy)
        relay = GatewayRelay(front, back, pipe_in, checker)
        thread = threading.Thread(target=relay.run, daemon=True)
        thread.start()
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            a, _ = client(cctx, zmq.PUSH, alice, server, endpoint)
            b, _ = client(cctx, zmq.PUSH, bob, server, endpoint)
            a.send(b"alice before")
            assert app.poll(10_000) and app.recv() == b"alice before"
            assert time.time() < not_after and relay.dropped == 0
            # No new message needed to notice: the relay wakes at the expiry by itself.
            deadline = not_after + 2.0
            while checker.invalidations == 0:
                assert time.time() < deadline, "the relay did not re-check at expiry"
                app.poll(50)
            assert time.time() >= not_after
            a.send(b"alice after")
            b.send(b"bob after")
            assert app.poll(10_000) and app.recv() == b"bob after"
            while relay.dropped == 0:
                assert time.time() < deadline + 8, "alice's message was not dropped"
                app.poll(50)
            assert relay.dropped == 1 and not app.poll(0)
            assert certs.generation == generation  # the store did not change
        finally:
            pipe_out.send(b"TERMINATE")
            thread.join(5)
            for s in (front, back, app, pipe_out, pipe_in):
                s.close(linger=0)
            cctx.destroy(linger=0)
            auth.stop()


def test_serve_auth_gateway_drops_an_expired_client(ctx: zmq.Context[Any], tmp_path: Path,
                                                    cli_env: Env) -> None:
    not_after = math.floor(time.time()) + 3
    alice = Certificate.new(validity.with_validity([("name", "alice")], not_after=not_after))
    clients = tmp_path / "clients"
    store.add_certificate(clients, alice)
    gw = Certificate.new(name="gw")
    gw.save(tmp_path / "gw")
    app = ctx.socket(zmq.PULL)
    app.linger = 0
    back = f"tcp://127.0.0.1:{app.bind_to_random_port('tcp://127.0.0.1')}"
    with ServeAuth(["--front", "tcp://127.0.0.1:*", "--back", back, "--pattern", "push-pull",
                    "--server-cert", str(tmp_path / "gw_secret"), "--store", str(clients)],
                   cli_env(None)) as daemon:
        front = daemon.where[0].split()[1]
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            push, mon = client(cctx, zmq.PUSH, alice, gw, front)
            assert verdict(mon) == 200
            push.send(b"before")
            assert app.poll(10_000) and app.recv() == b"before"
            _send_until_dropped(push, app, not_after)
            daemon.wait_stderr(r"dropping messages from user_id=", timeout=15)
        finally:
            cctx.destroy(linger=0)


def _send_until_dropped(push: zmq.Socket[Any], app: zmq.Socket[Any], not_after: float) -> None:
    """Send until a message sent after `not_after` fails to arrive (bounded)."""
    deadline = not_after + 10
    while time.time() < deadline:
        sent_at = time.time()
        push.send(b"tick")
        arrived = app.poll(500)
        if arrived:
            app.recv()
            assert sent_at < not_after + 2, "messages still relayed after expiry"
        elif sent_at >= not_after:
            return
    raise AssertionError("no message was dropped after expiry")
