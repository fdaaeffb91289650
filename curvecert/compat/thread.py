"""pyzmq's `zmq.auth.thread.ThreadAuthenticator`, on curvecert's thread authenticator.

Why: `from zmq.auth.thread import ThreadAuthenticator` becomes
`from curvecert.compat.thread import ThreadAuthenticator` and the rest of the application
stays as it is. Underneath is `curvecert.Authenticator`: a ROUTER-based handler thread
that never dies on input (a raising callback is a 500, not a dead thread and hanging
handshakes), answers other requests while a callback runs (callbacks run in worker
threads, async ones on a private loop, each with a deadline), and whose `stop()` is
bounded even after a failure.
"""

from __future__ import annotations

from typing import Any

import zmq

from curvecert.auth.authenticator import Authenticator as _ThreadTransport
from curvecert.auth.providers import DEFAULT_WORKERS
from curvecert.compat.base import Authenticator

__all__ = ["ThreadAuthenticator"]


class ThreadAuthenticator(Authenticator, _ThreadTransport):
    """Run ZAP authentication in a background thread (pyzmq's call shape).

    `start()` binds `inproc://zeromq.zap.01` in `context` and returns once the thread
    answers; `stop()` is idempotent and bounded; `is_alive()` tells whether it runs.
    """

    def __init__(self, context: zmq.Context[Any] | None = None, encoding: str = "utf-8",
                 log: Any = None, *, max_workers: int = DEFAULT_WORKERS) -> None:
        """Prepare (not start) the authenticator for `context` (default: the global one)."""
        _ThreadTransport.__init__(self, context, max_workers=max_workers)
        self._compat_init(encoding, log)

    @property
    def running(self) -> bool:
        """True while the handler thread is alive."""
        return _ThreadTransport.running.fget(self)  # type: ignore[attr-defined,no-any-return]

    def start(self) -> None:  # type: ignore[override]
        """Start the authentication thread (raises `OperationalError` if it cannot bind)."""
        _ThreadTransport.start(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the authentication thread; never blocks longer than `timeout` seconds."""
        _ThreadTransport.stop(self, timeout)

    def __enter__(self) -> ThreadAuthenticator:
        self.start()
        return self
