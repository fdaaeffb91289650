"""Stonehouse: CURVE encryption, ANY client key accepted (pattern 4). Not authentication.

The client must know the server's public key, so a man in the middle cannot listen in;
but the server accepts every client key, so anybody who knows the server key gets in.
`configure_curve_unsafe_allow_any` says so in its name and logs a warning. The negative
case is a client that expects the wrong server key: the handshake fails.

    python examples/stonehouse.py [--negative]
"""

from __future__ import annotations

from pathlib import Path

import _demo
import zmq

from curvecert import Authenticator, Certificate


def run(workdir: Path, negative: bool = False) -> _demo.Outcome:
    """Deliver Hello over CURVE to a server that accepts any client key."""
    server_cert = Certificate.new(name="stonehouse server")
    client_cert = Certificate.new(name="a client")
    server_cert.save(workdir / "server")
    client_cert.save(workdir / "client")
    ctx = zmq.Context()
    try:
        with Authenticator(ctx) as auth:
            auth.allow("127.0.0.1")
            auth.configure_curve_unsafe_allow_any()  # every domain; logged as UNSAFE
            server = ctx.socket(zmq.PULL)
            server.linger = 0
            server_cert.apply_server(server)
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client = ctx.socket(zmq.PUSH)
            client.linger = 0
            expected = Certificate.new() if negative else server_cert.public_only()
            client_cert.apply_client(client, expected)
            # exchange() closes server and client: servers close before the authenticator
            # stops, so no handshake ever meets a stopped authenticator (docs/security.md)
            return _demo.exchange(server, client, port)
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    _demo.main("stonehouse", run, __doc__)
