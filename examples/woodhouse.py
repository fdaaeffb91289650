"""Woodhouse: PLAIN user name and password, checked by the authenticator (pattern 3).

The password file holds a scrypt hash (what `curvecert passwd add` writes), never the
password. PLAIN sends the password in clear over the wire: use it on trusted networks
only, or move to CURVE. The negative case logs in with the wrong password (status 400).

    python examples/woodhouse.py [--negative]
"""

from __future__ import annotations

from pathlib import Path

import _demo
import zmq

from curvecert import Authenticator, PasswordFile

USER = "admin"
#: The demo password (a real one comes from a prompt or stdin: `curvecert passwd add`).
PASSWORD = "s3cret-Woodhouse!"
WRONG_PASSWORD = "wr0ng-Guess!"


def run(workdir: Path, negative: bool = False) -> _demo.Outcome:
    """Log in with the right password (or the wrong one) and deliver Hello."""
    passwords = workdir / "passwords"
    PasswordFile(passwords, missing_ok=True).add(USER, PASSWORD)
    ctx = zmq.Context()
    try:
        with Authenticator(ctx) as auth:
            auth.allow("127.0.0.1")
            auth.configure_plain(passwords=passwords)  # watched for changes
            server = ctx.socket(zmq.PULL)
            server.linger = 0
            server.plain_server = True
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client = ctx.socket(zmq.PUSH)
            client.linger = 0
            client.plain_username = USER.encode()
            client.plain_password = (WRONG_PASSWORD if negative else PASSWORD).encode()
            # exchange() closes server and client: servers close before the authenticator
            # stops, so no handshake ever meets a stopped authenticator (docs/security.md)
            return _demo.exchange(server, client, port)
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__":
    _demo.main("woodhouse", run, __doc__)
