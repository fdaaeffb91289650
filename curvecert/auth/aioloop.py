"""Event-loop helpers of the asyncio ZAP handler (`curvecert.auth.aio`).

Which loop a handler started outside a coroutine belongs to (pyzmq's rule: the thread's
current loop, answered once it runs), and how its socket is watched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from typing import Any

import zmq

__all__ = ["add_reader", "current_loop"]

_logger = logging.getLogger("curvecert.auth.aio")


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop, else the thread's current event loop if one is set, else None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return None
    return None if loop.is_closed() else loop


def add_reader(loop: asyncio.AbstractEventLoop, sock: zmq.Socket[Any],
                callback: Any) -> int | None:
    """Watch a private duplicate of `sock.FD` with `loop.add_reader`; None if impossible.

    Selectors key readers by descriptor number, and another library's late `remove_reader`
    for a recycled number (pyzmq's poller cleans up a few callbacks after its socket
    closed) must not silently unhook this handler. None (no `add_reader`, or no
    descriptor left to duplicate) means: poll with `zmq.asyncio.Poller` instead.
    """
    try:
        fd = os.dup(sock.FD)
    except OSError as exc:
        _logger.warning("cannot watch the ZAP socket's descriptor (%s): polling instead",
                        exc.strerror)
        return None
    try:
        loop.add_reader(fd, callback)
    except NotImplementedError:
        os.close(fd)
        return None
    return fd
