"""Ironhouse: CURVE, and only clients whose public certificate is in the store (pattern 5).

The server trusts the directory `authorized_clients/`: one public certificate file per
client (what `curvecert store add` manages), watched, so adding or removing a file takes
effect for the next handshake. The server reads the client's key as `User-Id` and the
certificate's metadata as message properties. The negative case is a client whose key is
not in the store (status 400).

    python examples/ironhouse.py [--negative]
"""

from __future__ import annotations

from pathlib import Path

import _demo
import zmq

from curvecert import Authenticator, Certificate


def run(workdir: Path, negative: bool = False) -> _demo.Outcome:
    """Deliver Hello from a client in the store (or be refused as a stranger)."""
    server_cert = Certificate.new(name="ironhouse server")
    client_cert = Certificate.new(name="Alice", email="alice@example.org")
    stranger = Certificate.new(name="Mallory")
    server_cert.save(workdir / "server")
    client_cert.save(workdir / "client")
    stranger.save(workdir / "stranger")
    store = workdir / "authorized_clients"
    store.mkdir()
    client_cert.save_public(store / "alice")
    ctx = zmq.Context()
    try:
        with Authenticator(ctx) as auth:
            auth.allow("127.0.0.1")
            auth.configure_curve(store=store)
            server = ctx.socket(zmq.PULL)
            server.linger = 0
            server_cert.apply_server(server)
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client = ctx.socket(zmq.PUSH)
            client.linger = 0
            (stranger if negative else client_cert).apply_client(client, server_cert)
            # exchange() closes server and client: servers close before the authenticator
            # stops, so no handshake ever meets a stopped authenticator (docs/security.md)
            return _demo.exchange(server, client, port, properties=("name", "email"))
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    _demo.main("ironhouse", run, __doc__)
