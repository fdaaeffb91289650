"""Strawhouse: NULL mechanism, clients checked by IP address (tutorial pattern 2).

An `Authenticator` answers ZAP in the server's context. libzmq only asks ZAP about a
NULL client when the server socket has a ZAP domain, so the server sets one ("global");
the authenticator allows NULL in every domain ("*") from the address 127.0.0.1 only.
The negative case denies 127.0.0.1: the client is refused (ZAP status 400).

    python examples/strawhouse.py [--negative]
"""

from __future__ import annotations

from pathlib import Path

import _demo
import zmq

from curvecert import Authenticator


def run(workdir: Path, negative: bool = False) -> _demo.Outcome:
    """Deliver Hello from an allowed address (or be refused from a denied one)."""
    ctx = zmq.Context()
    try:
        with Authenticator(ctx) as auth:
            auth.allow("127.0.0.1")
            if negative:
                auth.deny("127.0.0.1")       # deny beats allow
            auth.configure_null()            # NULL is allowed in every domain ("*")
            server = ctx.socket(zmq.PULL)
            server.linger = 0
            server.zap_domain = b"global"    # without a domain libzmq never asks ZAP for NULL
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client = ctx.socket(zmq.PUSH)
            client.linger = 0
            # exchange() closes server and client: servers close before the authenticator
            # stops, so no handshake ever meets a stopped authenticator (docs/security.md)
            return _demo.exchange(server, client, port)
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    _demo.main("strawhouse", run, __doc__)
