"""Revocation that reaches open connections: the relay drops a removed key's messages.

Real parts: a watched `CertStore`, a real `Authenticator`, a CURVE front socket over
loopback TCP, two real clients, and the gateway's `Relay` on its own thread. The key is
removed with `store remove`'s library call while both clients stay connected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.auth.authenticator import Authenticator
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.auth.recheck import Rechecker, user_id_of
from curvecert.certs.cert import Certificate
from curvecert.serve.gatewayrelay import GatewayRelay as Relay
from curvecert.store.watch import CertStore
from tests.conftest import wait_until


class Rig:
    def __init__(self, ctx: zmq.Context[Any], tmp_path: Path, front_type: int):
        self.server = Certificate.new(name="gateway")
        self.alice, self.bob = Certificate.new(name="alice"), Certificate.new(name="bob")
        self.dir = tmp_path / "clients"
        store.add_certificate(self.dir, self.alice)
        store.add_certificate(self.dir, self.bob)
        self.store = CertStore(self.dir).start()
        policy = Policy({"*": DomainPolicy(curve=self.store)})
        self.auth = Authenticator(ctx, policy, log_decisions=False).start()
        self.checker = Rechecker(policy)
        self.front = ctx.socket(front_type)
        self.server.apply_server(self.front)
        port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.app = ctx.socket(zmq.PULL if front_type == zmq.PULL else zmq.ROUTER)
        self.app.bind("inproc://app")
        self.back = ctx.socket(zmq.PUSH if front_type == zmq.PULL else zmq.DEALER)
        self.back.connect("inproc://app")
        self.pipe_out = ctx.socket(zmq.PAIR)
        self.pipe_out.bind("inproc://relay-pipe")
        pipe_in = ctx.socket(zmq.PAIR)
        pipe_in.connect("inproc://relay-pipe")
        self.relay = Relay(self.front, self.back, pipe_in, self.checker)
        self._pipe_in = pipe_in
        self.thread = threading.Thread(target=self.relay.run, daemon=True)
        self.thread.start()
        self.cctx: zmq.Context[Any] = zmq.Context()
        self.kind = zmq.PUSH if front_type == zmq.PULL else zmq.DEALER

    def client(self, cert: Certificate) -> zmq.Socket[Any]:
        sock = self.cctx.socket(self.kind)
        sock.linger = 0
        cert.apply_client(sock, self.server)
        sock.connect(self.endpoint)
        return sock

    def received(self, timeout: float = 10) -> bytes:
        assert self.app.poll(int(timeout * 1000)), "nothing reached the application"
        return self.app.recv_multipart()[-1]

    def close(self) -> None:
        self.pipe_out.send(b"TERMINATE")
        self.thread.join(5)
        for s in (self.front, self.back, self.app, self.pipe_out, self._pipe_in):
            s.close(linger=0)
        self.cctx.destroy(linger=0)
        self.auth.stop()
        self.store.stop()


@pytest.fixture(params=[zmq.PULL, zmq.ROUTER], ids=["pull", "router"])
def rig(request: pytest.FixtureRequest, ctx: zmq.Context[Any],
        tmp_path: Path) -> Iterator[Rig]:
    r = Rig(ctx, tmp_path, request.param)
    try:
        yield r
    finally:
        r.close()


def test_removed_key_is_cut_off_while_connected(rig: Rig) -> None:
    alice, bob = rig.client(rig.alice), rig.client(rig.bob)
    alice.send(b"alice 1")
    assert rig.received() == b"alice 1"
    bob.send(b"bob 1")
    assert rig.received() == b"bob 1"

    gen = rig.store.generation
    store.remove(rig.dir, rig.alice.public_txt)
    assert rig.store.wait_for_generation(gen + 1, 10)
    wait_until(lambda: rig.checker.invalidations > 0, message="cache invalidated")

    alice.send(b"alice 2")
    wait_until(lambda: rig.relay.dropped >= 1, message="alice's message dropped")
    bob.send(b"bob 2")
    assert rig.received() == b"bob 2"  # the other client is unaffected
    alice.send(b"alice 3")
    bob.send(b"bob 3")
    assert rig.received() == b"bob 3"
    wait_until(lambda: rig.relay.dropped >= 2, message="alice's second message dropped")
    assert not rig.app.poll(0)
    assert rig.relay.stats()["dropped_revoked"] == 2

    store.add_certificate(rig.dir, rig.alice)  # trusted again: flows again
    wait_until(lambda: rig.checker.allowed(rig.alice.public_txt), message="re-trusted")
    alice.send(b"alice 4")
    assert rig.received() == b"alice 4"


def test_user_id_of_frames_and_values(ctx: zmq.Context[Any]) -> None:
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://uid")
    b.connect("inproc://uid")
    a.send(b"x")
    assert user_id_of(b.recv(copy=False)) == ""  # no ZAP on inproc: no User-Id
    assert user_id_of(b"k") == "k" and user_id_of("k") == "k"
    with pytest.raises(TypeError):
        user_id_of(5)
    a.close(linger=0)
    b.close(linger=0)


def test_still_allowed_on_authenticators(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    from curvecert.compat.thread import ThreadAuthenticator

    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    clients = tmp_path / "clients"
    store.add_certificate(clients, alice)
    (tmp_path / "empty").mkdir()
    for cls in (Authenticator, ThreadAuthenticator):
        other: zmq.Context[Any] = zmq.Context()
        auth = cls(other)
        try:
            auth.configure_curve("*", clients)
            assert auth.still_allowed(alice.public_txt)
            assert auth.still_allowed(alice.public_txt.encode())
            assert not auth.still_allowed(bob.public_txt)
            auth.configure_curve("*", tmp_path / "empty")  # a policy swap is seen at once
            assert not auth.still_allowed(alice.public_txt)
        finally:
            auth.stop()
            other.destroy(linger=0)


def test_embedded_router_example(cli_env: Any) -> None:
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "examples" / "revocation.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          env=cli_env(None), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("revocation: OK: ")


def test_serve_auth_gateway_cuts_off_a_removed_key(ctx: zmq.Context[Any], tmp_path: Path,
                                                   cli_env: Any) -> None:
    """Through a real `serve-auth --front/--back`: `store remove` stops one client's
    messages on its open connection; the other client is unaffected; `status` counts it."""
    import json
    import subprocess
    import sys

    from tests.serveproc import ServeAuth

    gw, alice, carol = (Certificate.new(name=n) for n in ("gateway", "alice", "carol"))
    gw.save(tmp_path / "gateway")
    clients = tmp_path / "clients"
    store.add_certificate(clients, alice)
    store.add_certificate(clients, carol)
    app = ctx.socket(zmq.PULL)
    app.linger = 0
    port = app.bind_to_random_port("tcp://127.0.0.1")
    control = f"ipc://{tmp_path}/run/control.sock"
    env = cli_env(None)
    with ServeAuth(["--front", "tcp://127.0.0.1:*", "--back", f"tcp://127.0.0.1:{port}",
                    "--pattern", "push-pull", "--server-cert", str(tmp_path / "gateway_secret"),
                    "--store", str(clients), "--control", control], env) as daemon:
        front = daemon.where[0].split()[1]
        cctx: zmq.Context[Any] = zmq.Context()
        try:
            senders = {}
            for name, cert in (("alice", alice), ("carol", carol)):
                sock = cctx.socket(zmq.PUSH)
                sock.linger = 0
                cert.apply_client(sock, gw)
                sock.connect(front)
                senders[name] = sock

            def status() -> dict[str, Any]:
                out = subprocess.run([sys.executable, "-m", "curvecert", "status", "--json",
                                      "--endpoint", control], capture_output=True, text=True,
                                     env=env, timeout=60)
                assert out.returncode == 0, out.stderr
                return dict(json.loads(out.stdout))

            for name in senders:
                senders[name].send(f"{name} 1".encode())
            assert {app.recv() for _ in range(2) if app.poll(10_000)} == {b"alice 1", b"carol 1"}

            store.remove(clients, alice.public_txt)
            n = 2
            while status()["gateway"]["dropped_revoked"] == 0:  # bounded below
                n += 1
                assert n < 500, "the gateway never dropped alice's messages"
                senders["alice"].send(f"alice {n}".encode())
                while app.poll(20):
                    app.recv()
            dropped = status()["gateway"]["dropped_revoked"]
            senders["carol"].send(b"carol 2")
            senders["alice"].send(b"alice last")
            senders["carol"].send(b"carol 3")
            got = [app.recv() for _ in range(2) if app.poll(10_000)]
            assert got == [b"carol 2", b"carol 3"]
            wait_until(lambda: status()["gateway"]["dropped_revoked"] > dropped,
                       message="'alice last' dropped")
            assert not app.poll(0)
            daemon.wait_stderr(r"dropping messages from user_id=")
        finally:
            cctx.destroy(linger=0)
    app.close(linger=0)
