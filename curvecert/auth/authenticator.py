"""`Authenticator`: the embedded ZAP handler, a thread answering `inproc://zeromq.zap.01`.

Why another one: CZMQ's zauth aborts the process on a malformed request and ignores ZAP
domains; pyzmq's ThreadAuthenticator logs PLAIN passwords, has one global "allow any",
dies silently when a credentials callback raises (every later handshake then hangs) and
its `stop()` can block forever. This one:

- only moves frames: `curvecert.auth.policy.prepare`/`encode` (pure, never raise) turn each
  request into a reply, so malformed input, a raising key lookup or a broken provider gets
  a 500 and the loop carries on;
- swaps an immutable `Policy` reference on every configuration change (thread-safe, no
  locks on the hot path);
- binds a ROUTER socket, so several requests can be in flight: a request that needs a
  provider (a database lookup, ...) is handed to `curvecert.auth.providers` (a small pool of
  daemon worker threads for blocking callbacks, a private event loop for async ones) and
  answered when the call completes or, at its deadline, with a 500, while other requests
  are answered meanwhile. With no provider call in flight the thread blocks in a plain
  `recv` (no poller on the hot path); with some, it polls the socket and a wake-up pipe
  until the nearest deadline;
- `stop()` wakes it with a one-frame message carrying a random 128-bit token only this
  object knows, answers the requests still waiting for a provider with 500, and returns
  as soon as the thread has handed the still-bound ZAP socket to a deny-all responder
  (`curvecert.auth.endpoint`; bounded by a join timeout); it is idempotent;
- never unbinds: an error while handling one request answers it 500, anything else is
  logged and retried; only ETERM (the context terminating) closes the socket;
- logs one line per decision on the `curvecert.audit` logger (ALLOWED/DENIED at INFO,
  500s at WARNING), formatted only when that level is enabled, never with a password or a
  secret key; keeps counters; calls an optional `on_decision(request, decision)` hook
  after the reply has been sent.

`BaseAuthenticator` holds everything but the transport (policy, configuration methods,
counters, logging, hook); `curvecert.auth.aio.AsyncioAuthenticator` is the same on an asyncio
loop. libzmq looks the ZAP endpoint up in the server socket's own context, so there is one
authenticator per context (a second `start()` in the same context fails with a clear
`OperationalError`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from curvecert.auth.base import (
    AUDIT_LOGGER,
    BaseAuthenticator,
    DecisionAdjust,
    DecisionHook,
    ProviderCallback,
    format_decision,
)
from curvecert.auth.calls import ProviderCalls, _Call
from curvecert.auth.decision import Decision
from curvecert.auth.endpoint import ZapLease, acquire, error_reply
from curvecert.auth.pending import Pending
from curvecert.auth.policy import Policy, answer, prepare, respond
from curvecert.auth.providers import DEFAULT_WORKERS, ProviderRunner, resolve_now
from curvecert.auth.wire import fast_io
from curvecert.errors import OperationalError
from curvecert.formats.zap import ZAP_ENDPOINT, ZapRequest, split_envelope

# BaseAuthenticator and the decision-log names live in curvecert.auth.base; they are
# re-exported here because this module was their documented home.
__all__ = ["AUDIT_LOGGER", "ZAP_ENDPOINT", "Authenticator", "BaseAuthenticator",
           "DecisionAdjust", "DecisionHook", "ProviderCallback", "answer", "fast_io",
           "format_decision", "respond"]

_logger = logging.getLogger(__name__)


class Authenticator(ProviderCalls, BaseAuthenticator):
    """The ZAP handler for one zmq context, in a thread; start it before binding servers.

    ```python
    with Authenticator(ctx) as auth:
        auth.allow("127.0.0.1")
        auth.configure_curve(store="authorized_clients/")
        server = ctx.socket(zmq.ROUTER); server_cert.apply_server(server); ...
    ```

    Configuration: see `BaseAuthenticator`. `context` may be a `zmq.Context` or a
    `zmq.asyncio.Context` (the handler's own socket is always a plain one).
    """

    def __init__(self, context: zmq.Context[Any] | None = None, policy: Policy | None = None,
                 *, log_decisions: bool = True, on_decision: DecisionHook | None = None,
                 max_workers: int = DEFAULT_WORKERS) -> None:
        """Prepare (not start) an authenticator for `context` (default: the global one)."""
        super().__init__(context, policy, log_decisions=log_decisions,
                         on_decision=on_decision, max_workers=max_workers)
        self._thread: threading.Thread | None = None
        self._token: bytes | None = None
        self._runner: ProviderRunner | None = None
        self._done: collections.deque[tuple[int, concurrent.futures.Future[Any]]] = \
            collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_w: int | None = None
        self._in_flight = 0
        self._call_ids = itertools.count(1)  # never reused, also across restarts

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the handler thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def in_flight(self) -> int:
        """Requests waiting for a provider right now."""
        return self._in_flight

    def start(self, timeout: float = 10.0) -> Authenticator:
        """Bind `inproc://zeromq.zap.01` (or take it over) and start answering; returns
        once bound.

        The endpoint is held through `curvecert.auth.endpoint`: if a stopped curvecert
        handler's deny-all responder holds it, this one takes the bound socket over with
        no unbound moment. Raises `OperationalError` if another live handler holds it,
        or if the socket or thread cannot be made (then the endpoint, if it was bound,
        stays bound and denies). `timeout` is kept for compatibility.
        """
        with self._lock:
            if self.running:
                return self
            lease = acquire(self.context)
            rfd = wfd = -1
            try:
                rfd, wfd = os.pipe()
                os.set_blocking(rfd, False)
                os.set_blocking(wfd, False)
                token = secrets.token_bytes(16)
                runner = ProviderRunner(self.max_workers)
                thread = threading.Thread(target=self._run,
                                          args=(token, runner, lease, rfd, wfd),
                                          name="curvecert-authenticator", daemon=True)
                with self._wake_lock:
                    self._wake_w = wfd
                    self._done.clear()
                thread.start()
            except BaseException as exc:
                with self._wake_lock:
                    self._wake_w = None
                for fd in (rfd, wfd):
                    if fd >= 0:
                        os.close(fd)
                lease.release()  # never unbind: the deny-all responder answers meanwhile
                raise OperationalError(f"cannot start the authenticator: {exc}") from exc
            self._thread, self._token, self._runner = thread, token, runner
            _logger.info("authenticator started on %s", ZAP_ENDPOINT)
            self._warn_unsafe(self._policy)
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering; idempotent, never blocks longer than `timeout`.

        The ZAP endpoint is NOT unbound: a deny-all responder answers 500 "authenticator
        stopped" until the context terminates or a new handler takes over (an unbound
        endpoint would make libzmq admit every client of a server still bound in this
        context). Close server sockets first, then stop. Requests still waiting for a
        provider are answered 500 first. Also stops
        certificate stores this authenticator opened from a directory. A blocking provider
        call that never returns keeps its (daemon) worker thread, nothing else.
        """
        with self._lock:
            thread, token, runner = self._thread, self._token, self._runner
            self._thread = self._token = None
            self._runner = None
        deadline = time.monotonic() + timeout
        if thread is not None and thread.is_alive():
            self._wake(token)
            if thread is not threading.current_thread():  # stop() from the hook: no join
                thread.join(timeout)
                if thread.is_alive():
                    _logger.error("the authenticator thread did not stop within %ss", timeout)
        if runner is not None:
            runner.close(max(0.1, min(2.0, deadline - time.monotonic())))
        self._stop_owned(max(0.1, deadline - time.monotonic()))
        if thread is not None:
            _logger.info("authenticator stopped")

    def _wake(self, token: bytes | None) -> None:
        """Send the stop token to our own ZAP socket (a DEALER needs the empty delimiter)."""
        if token is None:
            return
        try:
            sock = self.context.socket(zmq.DEALER, socket_class=zmq.Socket)
        except zmq.ZMQError:  # the context is terminated: the thread has left on ETERM
            return
        try:
            sock.linger = 0
            sock.connect(ZAP_ENDPOINT)
            sock.send_multipart([b"", token], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        finally:
            sock.close(linger=0)

    def __enter__(self) -> Authenticator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the thread ---------------------------------------------------------------------

    def _run(self, token: bytes, runner: ProviderRunner, lease: ZapLease, rfd: int,
             wfd: int) -> None:
        terminated = False
        try:
            terminated = self._loop(lease.socket, token, runner, rfd)
        except zmq.ContextTerminated:
            terminated = True
        except BaseException:  # pragma: no cover - the loop catches everything it expects
            _logger.exception("authenticator loop failed; the ZAP endpoint stays bound and "
                              "denies")
        finally:
            with self._wake_lock:  # no late provider may write to a recycled descriptor
                self._wake_w = None
            os.close(rfd)
            os.close(wfd)
            if terminated:
                lease.terminated()
            else:
                lease.release()  # bound to the end: a deny-all responder takes over

    def _loop(self, zsock: zmq.Socket[Any], token: bytes, runner: ProviderRunner,
              rfd: int) -> bool:
        """Answer until the stop token (returns False) or ETERM (returns True).

        Nothing else ends it: a failure while handling one request answers that request
        500; a failure around it (receiving, polling) is logged and retried after a short
        back-off, with the endpoint still bound.
        """
        recv, send = fast_io(zsock)
        calls: dict[int, _Call] = {}
        poller = zmq.Poller()
        poller.register(zsock, zmq.POLLIN)
        poller.register(rfd, zmq.POLLIN)
        failures = 0
        try:
            while True:
                frames: list[bytes] | None = None
                try:
                    if calls:
                        frames = self._wait(recv, zsock, poller, rfd, calls, send)
                        if frames is None:
                            continue
                    else:
                        frames = recv(0)
                    failures = 0
                    if self._handle(frames, token, runner, calls, send):
                        return False
                except zmq.ContextTerminated:
                    return True
                except Exception as exc:
                    failures += 1
                    if frames is not None:
                        self._fail(send, frames, exc)
                    elif not (isinstance(exc, zmq.ZMQError) and exc.errno == errno.EINTR):
                        _backoff(failures, exc)
        finally:
            self._answer_all(calls, send)

    def _handle(self, frames: list[bytes], token: bytes, runner: ProviderRunner,
                calls: dict[int, _Call], send: Callable[..., Any]) -> bool:
        """Answer (or dispatch) one message; True for the stop token."""
        self._t0 = time.monotonic()  # metrics: decision latency (hook, issue 15)
        # ROUTER: [routing id, b"", request...] from libzmq and REQ/DEALER clients
        if len(frames) > 2 and not frames[1]:
            envelope, body = frames[:2], frames[2:]
        else:
            split = split_envelope(frames)
            if split is None:
                _logger.debug("dropped a ZAP message without a routing envelope")
                return False
            envelope, body = split
        if len(body) == 1 and body[0] == token:  # stop(): nobody else knows it
            return True
        request, outcome = prepare(self._policy, body)
        if type(outcome) is Pending:
            now = resolve_now(outcome)
            if now is None:
                self._dispatch(next(self._call_ids), envelope, body, outcome, runner, calls)
                return False
            outcome = now
        self._reply(send, envelope, request, outcome, body)  # type: ignore[arg-type]
        return False

    def _fail(self, send: Callable[..., Any], frames: list[bytes], exc: BaseException) -> None:
        """Answer 500 to a message whose handling raised (a thread that cannot start, ...)."""
        _logger.error("handling a ZAP request failed (%s): answered 500", type(exc).__name__)
        reply = error_reply(frames, f"internal error: {type(exc).__name__}")
        if reply is None:
            return
        try:
            send(reply)
        except zmq.ContextTerminated:
            raise
        except Exception as send_exc:
            _logger.error("cannot send a ZAP reply: %s", send_exc)

    def _reply(self, send: Callable[..., Any], envelope: list[bytes],
               request: ZapRequest | None, decision: Decision, frames: list[bytes]) -> None:
        decision, reply = self._final(request, decision, frames)
        try:
            send(envelope + reply)
        except zmq.ContextTerminated:
            raise
        except zmq.ZMQError as exc:
            _logger.error("cannot send a ZAP reply: %s", exc)
        self._after(request, decision)



def _backoff(failures: int, exc: BaseException) -> None:
    """Log a failure outside any one request and wait a little before trying again.

    The first failure is logged at ERROR, then every 100th; the wait grows to 0.5 s, so a
    persistent fault (EMFILE while polling) costs little CPU and the loop retries on its
    own once the fault clears. The endpoint stays bound throughout.
    """
    if failures == 1 or failures % 100 == 0:
        _logger.error("authenticator loop: %s: %s (retrying; the endpoint stays bound)",
                      type(exc).__name__, exc)
    time.sleep(min(0.5, 0.001 * failures))
