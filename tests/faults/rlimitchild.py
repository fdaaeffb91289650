"""Child process for the remote fd-exhaustion test (issue 11 §1): an application with a
CURVE server and a `ZapForwarder` toward a daemon that is down, under a low
RLIMIT_NOFILE. Prints `READY <tcp endpoint> <server public key>` and then, when its
stdin closes, `STATS <timed out> <resets>` and exits. Argument: the daemon's ipc endpoint.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time

import zmq

from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder


def main() -> None:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr,
                        format="%(name)s: %(message)s")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server_cert = Certificate.new()
    fwd = ZapForwarder(ctx, sys.argv[1], timeout=2.0).start()
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    server_cert.apply_server(server)
    server.bind("tcp://127.0.0.1:*")
    # A little headroom over what is open now: a burst of plain TCP connections uses the
    # rest, so the forwarder's link reset finds no descriptor.
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 12, in_use + 12))
    print("READY", server.last_endpoint.decode(), server_cert.public_key.hex(), flush=True)

    def announce_forwarded() -> None:  # the parent attacks once a request is waiting
        while fwd.forwarded == 0:
            time.sleep(0.005)
        print("FORWARDED", flush=True)

    threading.Thread(target=announce_forwarded, daemon=True).start()
    sys.stdin.read()
    print("STATS", fwd.timed_out, fwd.resets, flush=True)
    server.close(linger=0)
    fwd.stop()
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
