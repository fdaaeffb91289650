"""Revocation for a server that owns its socket: drop a removed key's messages at once.

ZAP runs once per connection, so removing a client's certificate from the store refuses
its *next* handshake while the open connection keeps delivering. libzmq cannot close one
peer of a bound socket, but every message carries the connection's User-Id, and
`auth.still_allowed(frame)` answers "would this peer still be admitted?" from the live
store (a dict lookup once cached). One line in the receive loop is enough.

Run: python examples/revocation.py   (prints "revocation: OK: ..." on success)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curvecert import store
from curvecert.auth.authenticator import Authenticator
from curvecert.certs.cert import Certificate


def serve_one(server: zmq.Socket[bytes], auth: Authenticator) -> str:
    """Receive one request on the ROUTER; answer it only if its sender is still allowed."""
    if not server.poll(10_000):
        raise SystemExit("revocation: FAILED: no request arrived")
    routing_id, body = server.recv_multipart(copy=False)
    if not auth.still_allowed(body):  # the one line: body.get("User-Id") re-checked
        return "dropped"
    server.send_multipart([routing_id.bytes, b"pong: " + body.bytes])
    return "answered"


def main() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        clients = Path(tmp) / "clients"
        server_cert, client_cert = Certificate.new(name="server"), Certificate.new(name="app")
        store.add_certificate(clients, client_cert)
        with Authenticator(ctx) as auth:
            auth.configure_curve(store=clients)  # a watched store
            server = ctx.socket(zmq.ROUTER)
            server_cert.apply_server(server)
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client = ctx.socket(zmq.DEALER)
            client_cert.apply_client(client, server_cert)
            client.connect(f"tcp://127.0.0.1:{port}")

            client.send(b"ping 1")
            first = serve_one(server, auth)
            reply = client.recv() if client.poll(10_000) else b""

            store.remove(clients, client_cert.public_txt)  # revoke while connected
            deadline = time.monotonic() + 10
            while auth.still_allowed(client_cert.public_txt):  # the store rescans (~50 ms)
                if time.monotonic() > deadline:
                    raise SystemExit("revocation: FAILED: the store never noticed")
                time.sleep(0.01)

            client.send(b"ping 2")
            second = serve_one(server, auth)
            for s in (client, server):
                s.close(linger=0)
    ctx.term()
    if (first, reply, second) != ("answered", b"pong: ping 1", "dropped"):
        raise SystemExit(f"revocation: FAILED: {first}, {reply!r}, {second}")
    print("revocation: OK: answered while trusted, dropped after `store remove` "
          "on the same connection")


if __name__ == "__main__":
    main()
