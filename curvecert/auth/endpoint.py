"""The ZAP endpoint guard: once a curvecert handler bound a context's ZAP endpoint, it
stays bound until that context terminates.

Why: libzmq admits every CURVE/PLAIN client of a server socket whose context has nothing
bound at `inproc://zeromq.zap.01` (RFC 27 leaves "no handler" to the implementation, and
libzmq chose "accept"). So unbinding the endpoint while server sockets live is a full
authentication bypass, whether it happens because a handler loop died, because a
resource ran out, or because the application called `stop()` before closing its servers.

The rule every curvecert handler (thread and asyncio authenticators, the pyzmq mirror,
the forwarder, the gateway's and the daemon's authenticators) follows through this module:

- **One socket per context, bound once.** `acquire(context)` returns a lease on the
  bound ROUTER of that context's endpoint, binding it the first time. A second live
  handler in the same context gets `OperationalError` (one ZAP handler per context).
- **Release never unbinds.** `ZapLease.release()` (a handler's `stop()`, or a loop that
  cannot go on) hands the socket to a deny-all responder thread that answers every
  request with 500 "authenticator stopped" until the context terminates; it leaves on
  ETERM and closes the socket, so `ctx.term()` completes. If even that thread cannot be
  started, the socket stays bound and unanswered: handshakes stall, which is closed.
- **Take-over without a gap.** `acquire` on a context whose endpoint is held by the
  responder stops the responder and hands the same bound socket to the new handler: there
  is no moment when nothing is bound.
- **Context gone, socket gone.** `ZapLease.terminated()` (a handler saw ETERM) closes the
  socket and forgets the context.

The socket is created outside `Context.socket()`, so `Context.destroy()` does not close it
from a foreign thread while a handler or the responder blocks on it: `destroy()` closes
the application's sockets and then waits, in `term()`, until the owner of this one sees
ETERM and closes it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any

import zmq

from curvecert.auth.wire import fast_io
from curvecert.errors import OperationalError
from curvecert.formats.zap import ZAP_ENDPOINT, fallback_reply, split_envelope

__all__ = ["STOPPED_TEXT", "ZapLease", "acquire", "error_reply", "guarded"]

_logger = logging.getLogger(__name__)

#: Status text of the deny-all responder's 500 replies.
STOPPED_TEXT = "authenticator stopped"
_HANDOVER_TIMEOUT = 5.0

_registry_lock = threading.Lock()
_registry: dict[tuple[int, str], _Guard] = {}


def error_reply(frames: list[bytes], text: str) -> list[bytes] | None:
    """The routed 500 reply (`envelope + RFC 27 reply`) to a ROUTER message; never raises.

    None when the message has no routing envelope (nobody to answer). libzmq's ZAP client
    sends `[routing id, b"", version, request id, ...]`; proxies add routing ids.
    """
    try:
        if len(frames) > 2 and not frames[1]:
            envelope, body = frames[:2], frames[2:]
        else:
            split = split_envelope(frames)
            if split is None:
                return None
            envelope, body = split
        return [*envelope, *fallback_reply(body, "500", text)]
    except Exception:  # pragma: no cover - frames of a strange type
        return None


class ZapLease:
    """A handler's hold on the bound ZAP socket of one context (see the module docstring).

    `socket` is the bound ROUTER; only the holder's thread uses it until `release()` or
    `terminated()`, each of which may be called once (later calls do nothing).
    """

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        self.socket: zmq.Socket[Any] = guard.socket
        self._done = False

    def release(self) -> None:
        """Hand the socket to the deny-all responder; the endpoint stays bound."""
        if not self._done:
            self._done = True
            self._guard.to_responder(self)

    def terminated(self) -> None:
        """The context is terminating: close the socket and forget the context."""
        if not self._done:
            self._done = True
            self._guard.close()


class _Guard:
    """The bound socket of one (context, endpoint) and who holds it right now."""

    def __init__(self, key: tuple[int, str], context: zmq.Context[Any], endpoint: str) -> None:
        self.key = key
        self.endpoint = endpoint
        sock: zmq.Socket[Any] = zmq.Socket(context, zmq.ROUTER)  # untracked: see module doc
        rfd = wfd = -1
        try:
            sock.linger = 0
            # libzmq's own ZAP pipes have no HWM; a burst must never make the ROUTER drop
            # a reply (it drops when a pipe is full).
            sock.sndhwm = sock.rcvhwm = 0
            # The responder's wake-up pipe is made now, so a later release needs nothing.
            rfd, wfd = os.pipe()
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
            sock.bind(endpoint)
        except BaseException:
            sock.close(linger=0)
            for fd in (rfd, wfd):
                if fd >= 0:
                    os.close(fd)
            raise
        self.socket = sock
        self._rfd, self._wfd = rfd, wfd
        self.holder: ZapLease | None = None
        self.responder: threading.Thread | None = None
        self._handover = threading.Event()
        self._closed = False
        self._lock = threading.Lock()  # one ownership change at a time

    # --- ownership ----------------------------------------------------------------------

    def take(self) -> ZapLease:
        """A lease for a new handler; stops the responder first (the socket stays bound)."""
        with self._lock:
            return self._take()

    def _take(self) -> ZapLease:
        if self.holder is not None:
            raise OperationalError(f"cannot bind {self.endpoint}: another authenticator or "
                                   "forwarder is running in this context (one ZAP handler: "
                                   "there is one per context)")
        responder = self.responder
        if responder is not None and responder.is_alive():
            self._handover.set()
            self._poke()
            responder.join(_HANDOVER_TIMEOUT)
            if responder.is_alive():
                raise OperationalError(f"{self.endpoint}: the stopped authenticator's "
                                       "responder did not hand over the ZAP socket")
        if self._closed:
            raise OperationalError(f"{self.endpoint}: the zmq context is terminated")
        self.responder = None
        self._handover.clear()
        self._drain()
        lease = ZapLease(self)
        self.holder = lease
        return lease

    def to_responder(self, lease: ZapLease) -> None:
        with self._lock:
            self._to_responder(lease)

    def _to_responder(self, lease: ZapLease) -> None:
        if self.holder is lease:
            self.holder = None
        if self._closed:
            return
        self._handover.clear()
        thread = threading.Thread(target=self._respond, name="curvecert-zap-deny-all",
                                  daemon=True)
        try:
            thread.start()
        except BaseException as exc:  # RuntimeError: can't start new thread, ...
            _logger.error("cannot start the deny-all ZAP responder (%s): %s stays bound and "
                          "unanswered, handshakes in this context stall until a handler "
                          "takes over", type(exc).__name__, self.endpoint)
            return
        self.responder = thread

    def close(self) -> None:
        with _registry_lock:  # forget first: term() returns only after the close below
            if _registry.get(self.key) is self:
                del _registry[self.key]
            if self._closed:
                return
            self._closed = True
        self.holder = None
        try:
            self.socket.close(linger=0)
        finally:
            for fd in (self._rfd, self._wfd):
                try:
                    os.close(fd)
                except OSError:
                    pass

    # --- the deny-all responder ----------------------------------------------------------

    def _poke(self) -> None:
        try:
            os.write(self._wfd, b"\0")
        except OSError:  # full: a wake-up is pending anyway
            pass

    def _drain(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _respond(self) -> None:
        """Answer 500 to everything until a handler takes over or the context terminates."""
        sock = self.socket
        recv, send = fast_io(sock)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._rfd, zmq.POLLIN)
        failures = 0
        while not self._handover.is_set():
            try:
                events = dict(poller.poll())
                if self._rfd in events:
                    self._drain()
                    if self._handover.is_set():
                        return
                if sock not in events:
                    continue
                while True:
                    try:
                        frames = recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    reply = error_reply(frames, STOPPED_TEXT)
                    if reply is not None:
                        try:
                            send(reply)
                        except zmq.Again:
                            pass
                failures = 0
            except zmq.ContextTerminated:
                self.close()
                return
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                failures += 1
                _retry(failures, exc)
            except Exception as exc:  # keep the endpoint bound and answering, whatever it was
                failures += 1
                _retry(failures, exc)


def _retry(failures: int, exc: BaseException) -> None:
    """Log the first failure (then every 100th) and back off up to 0.5 s before retrying."""
    if failures == 1 or failures % 100 == 0:
        _logger.error("deny-all ZAP responder: %s: %s (retrying; the endpoint stays bound)",
                      type(exc).__name__, exc)
    time.sleep(min(0.5, 0.001 * failures))


def acquire(context: zmq.Context[Any], endpoint: str = ZAP_ENDPOINT) -> ZapLease:
    """A lease on `context`'s bound ZAP socket at `endpoint` (bound on first use).

    Raises `OperationalError` when another live handler holds it, when something else
    already bound the endpoint (e.g. pyzmq's own authenticator: EADDRINUSE), or when the
    socket cannot be made (EMFILE, `ZMQ_MAX_SOCKETS`, a terminated context); in those
    cases nothing changed.
    """
    key = (int(context.underlying), endpoint)
    with _registry_lock:
        guard = _registry.get(key)
        if guard is None:
            try:
                guard = _Guard(key, context, endpoint)
            except zmq.ZMQError as exc:
                hint = (" (another ZAP handler is already bound in this context; there is "
                        "one per context)") if exc.errno == errno.EADDRINUSE else ""
                raise OperationalError(f"cannot bind {endpoint}: {exc}{hint}") from exc
            except OSError as exc:
                raise OperationalError(f"cannot bind {endpoint}: {exc.strerror}") from exc
            _registry[key] = guard
    return guard.take()


def guarded(context: zmq.Context[Any], endpoint: str = ZAP_ENDPOINT) -> bool:
    """True while curvecert keeps `endpoint` bound in `context` (a handler or the responder)."""
    with _registry_lock:
        return (int(context.underlying), endpoint) in _registry
