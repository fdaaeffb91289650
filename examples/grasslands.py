"""Grasslands: no security at all (the ZeroMQ security tutorial, pattern 1).

The server and the client use the NULL mechanism and no authenticator: anybody who can
reach the port can talk, nothing is encrypted. The negative case shows the one thing a
Grasslands server refuses: a client that insists on CURVE (mechanism mismatch).

    python examples/grasslands.py              # exit 0: Hello delivered
    python examples/grasslands.py --negative   # exit 0: the CURVE client is refused
"""

from __future__ import annotations

from pathlib import Path

import _demo
import zmq

from curvecert import Certificate


def run(workdir: Path, negative: bool = False) -> _demo.Outcome:
    """Deliver Hello over a plain connection (or fail to, with a CURVE client)."""
    ctx = zmq.Context()
    try:
        server = ctx.socket(zmq.PULL)
        server.linger = 0
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client = ctx.socket(zmq.PUSH)
        client.linger = 0
        if negative:  # a client that expects a CURVE server cannot talk to a NULL one
            Certificate.new().apply_client(client, Certificate.new())
        return _demo.exchange(server, client, port)
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    _demo.main("grasslands", run, __doc__)
