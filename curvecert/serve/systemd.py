"""systemd's readiness protocol (sd_notify(3)) without libsystemd."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["sd_notify"]

_logger = logging.getLogger("curvecert.serve.daemon")


def sd_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. `READY=1`) to systemd's `$NOTIFY_SOCKET`; False if there is none.

    The protocol is one datagram on a unix socket (sd_notify(3)); an address starting
    with `@` is in the abstract namespace.
    """
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    target = "\0" + addr[1:] if addr.startswith("@") else addr
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(target)
            s.sendall(state.encode("utf-8"))
    except OSError as exc:
        _logger.warning("sd_notify to %s failed: %s", addr, exc)
        return False
    return True

