"""A CURVE server guarded by a curvecert `Authenticator` over a watched store directory.

    python -m tests.faults.authchild STORE_DIR SERVER_SECRET_FILE

Started by the fault tests as an unprivileged child process: it binds a ROUTER on a
random loopback port, prints `ready PORT`, logs at INFO to stderr (so the test can see
what the store said) and runs until its stdin is closed.
"""

from __future__ import annotations

import logging
import sys

import zmq

from curvecert.auth.authenticator import Authenticator
from curvecert.certs.cert import Certificate

__all__ = ["main"]


def main() -> None:
    """Serve until stdin closes."""
    store_dir, server_file = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = Authenticator(ctx, log_decisions=False).start()
    try:
        auth.configure_curve("*", store_dir)
        server = ctx.socket(zmq.ROUTER)
        server.linger = 0
        Certificate.load(server_file).apply_server(server)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        print(f"ready {port}", flush=True)
        sys.stdin.read()
        server.close(linger=0)
    finally:
        auth.stop()
        ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
