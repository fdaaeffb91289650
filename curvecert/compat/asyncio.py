"""pyzmq's `zmq.auth.asyncio.AsyncioAuthenticator`, on curvecert's asyncio authenticator.

Why: `from zmq.auth.asyncio import AsyncioAuthenticator` becomes
`from curvecert.compat.asyncio import AsyncioAuthenticator`. As in pyzmq, `start()` is
called inside the running event loop and the handler runs there; underneath is
`curvecert.auth.aio.AsyncioAuthenticator`, which answers requests concurrently (a slow async
callback no longer holds up other handshakes), puts a deadline on every callback and
answers 500 when one raises or runs late.
"""

from __future__ import annotations

import warnings
from typing import Any

import zmq

from curvecert.auth.aio import AsyncioAuthenticator as _AsyncioTransport
from curvecert.auth.providers import DEFAULT_WORKERS
from curvecert.compat.base import Authenticator

__all__ = ["AsyncioAuthenticator"]


class AsyncioAuthenticator(Authenticator, _AsyncioTransport):
    """ZAP authentication on the running asyncio loop (pyzmq's call shape).

    `loop` is accepted and ignored with a `DeprecationWarning`, as in pyzmq 25+.
    """

    def __init__(self, context: zmq.Context[Any] | None = None, loop: Any = None,
                 encoding: str = "utf-8", log: Any = None, *,
                 max_workers: int = DEFAULT_WORKERS) -> None:
        """Prepare (not start) the authenticator for `context` (default: the global one)."""
        if loop is not None:
            warnings.warn(f"{type(self).__name__}(loop) is deprecated and ignored",
                          DeprecationWarning, stacklevel=2)
        _AsyncioTransport.__init__(self, context, max_workers=max_workers)
        self._compat_init(encoding, log)

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return _AsyncioTransport.running.fget(self)  # type: ignore[attr-defined,no-any-return]

    def start(self) -> None:  # type: ignore[override]
        """Start answering on the running loop (`OperationalError` outside of one)."""
        _AsyncioTransport.start(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering; bounded and idempotent."""
        _AsyncioTransport.stop(self, timeout)

    def __enter__(self) -> AsyncioAuthenticator:
        self.start()
        return self

    async def __aenter__(self) -> AsyncioAuthenticator:
        self.start()
        return self
