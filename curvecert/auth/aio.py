"""`AsyncioAuthenticator`: the ZAP handler on the application's own asyncio event loop.

Why: asyncio applications (zmq.asyncio sockets) want authentication on their loop, and
credential lookups that are themselves coroutines (an async database or HTTP client).
pyzmq's AsyncioAuthenticator answers one request at a time, so one awaiting callback holds
up every other handshake on the context, and a raising callback ends its task for good.
This one has the same policy objects, configuration methods, counters, decision log and
`on_decision` hook as the thread `curvecert.Authenticator` (both are
`curvecert.auth.base.BaseAuthenticator`s), and the same guarantees:

- it never dies on input: malformed requests, raising lookups and providers get a 500;
- requests are handled concurrently: the ZAP socket is a ROUTER, every request that needs
  a provider becomes its own task (an async provider runs on this loop, a blocking one in
  a small pool of daemon worker threads), bounded by the provider's deadline (500 after
  it), and its reply is routed back by its envelope; everything else is answered at once,
  in the socket's read callback, without a task;
- `stop()` is synchronous, bounded and idempotent: requests still waiting for a provider
  are answered 500 and their tasks cancelled; the ZAP socket stays bound and is handed
  to the deny-all responder of `curvecert.auth.endpoint` (never unbound while the
  context lives);
- an error while handling one request answers it 500; a receive error is retried.

The socket is a plain (non-asyncio) `zmq.Socket` watched with `loop.add_reader` on a
private duplicate of its `FD`; each readiness callback drains it with non-blocking
receives (the FD is edge-triggered, see libzmq's ZMQ_FD notes), a bounded number at a
time so a flood cannot starve the application's other callbacks. That costs no future per
message. On a loop without `add_reader` (Windows' proactor loop) it falls back to a task
polling the socket through `zmq.asyncio.Poller`, as pyzmq does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from types import TracebackType
from typing import Any, NamedTuple

import zmq

from curvecert.auth.aioloop import add_reader, current_loop
from curvecert.auth.base import BaseAuthenticator, DecisionHook
from curvecert.auth.decision import Decision
from curvecert.auth.endpoint import ZapLease, acquire, error_reply
from curvecert.auth.pending import Pending
from curvecert.auth.policy import Policy, prepare
from curvecert.auth.providers import DEFAULT_WORKERS, WorkerPool, resolve_now, run_pending
from curvecert.auth.wire import fast_io
from curvecert.errors import OperationalError
from curvecert.formats.zap import ZAP_ENDPOINT, ZapRequest, split_envelope

__all__ = ["DRAIN_BUDGET", "AsyncioAuthenticator"]

_logger = logging.getLogger(__name__)

#: Requests handled per readiness callback before yielding to the loop's other callbacks.
DRAIN_BUDGET = 256


class _InFlight(NamedTuple):
    """A request waiting for its provider task."""

    envelope: list[bytes]
    request: ZapRequest
    pending: Pending
    frames: list[bytes]


class AsyncioAuthenticator(BaseAuthenticator):
    """The ZAP handler for one zmq context, running on the current asyncio event loop.

    ```python
    async def main():
        ctx = zmq.asyncio.Context()
        auth = AsyncioAuthenticator(ctx)
        auth.configure_curve(store="authorized_clients/")
        auth.start()                 # inside the running loop, before servers bind
        try:
            ...
        finally:
            auth.stop()
    ```

    Also `async with AsyncioAuthenticator(ctx) as auth: ...`. Configuration: see
    `curvecert.auth.base.BaseAuthenticator` (callable from any thread). `context` may
    be a `zmq.Context` or a `zmq.asyncio.Context`.
    """

    def __init__(self, context: zmq.Context[Any] | None = None, policy: Policy | None = None,
                 *, log_decisions: bool = True, on_decision: DecisionHook | None = None,
                 max_workers: int = DEFAULT_WORKERS, use_reader: bool = True) -> None:
        """Prepare (not start) an authenticator for `context` (default: the global one).

        `use_reader=False` forces the `zmq.asyncio.Poller` fallback (for tests; it is
        picked automatically on loops without `add_reader`).
        """
        super().__init__(context, policy, log_decisions=log_decisions,
                         on_decision=on_decision, max_workers=max_workers)
        self._use_reader = use_reader
        self._sock: zmq.Socket[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader_fd: int | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._drain_scheduled = False
        self._tasks: dict[asyncio.Task[None], _InFlight] = {}
        self._pool: WorkerPool | None = None
        self._recv: Any = None
        self._send: Any = None
        self._lease: ZapLease | None = None
        self._failures = 0

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._lease is not None

    @property
    def in_flight(self) -> int:
        """Requests waiting for a provider right now."""
        return len(self._tasks)

    def start(self) -> AsyncioAuthenticator:
        """Bind `inproc://zeromq.zap.01` (or take it over) and answer on the event loop;
        returns at once, bound.

        The loop is the running one, or, called before the loop runs, the thread's
        current (set) event loop: the endpoint is bound now and requests are answered
        once that loop runs (pyzmq's behaviour). With no loop at all `OperationalError`
        says so. Raises `OperationalError` if another live handler holds the endpoint
        (there is one per context); see `curvecert.auth.endpoint` for the take-over of a
        stopped handler's endpoint.
        """
        loop = current_loop()
        if loop is None:
            raise OperationalError(
                "AsyncioAuthenticator.start() needs an asyncio event loop: call it inside "
                "the running loop or after asyncio.set_event_loop(); use "
                "curvecert.Authenticator for a thread of its own")
        if self._lease is not None:
            return self
        lease = acquire(self.context)
        sock = lease.socket
        try:
            self._sock, self._loop, self._lease = sock, loop, lease
            self._recv, self._send = fast_io(sock)
            self._drain_scheduled = False
            self._failures = 0
            if self._use_reader:
                self._reader_fd = add_reader(loop, sock, self._on_readable)
            if self._reader_fd is None:
                self._poll_task = loop.create_task(self._poll(sock))
            self._schedule_drain()  # requests queued before the reader was armed
        except BaseException as exc:
            self._shutdown()  # hands the bound socket to the deny-all responder
            raise OperationalError(f"cannot start the asyncio authenticator: {exc}") from exc
        _logger.info("asyncio authenticator started on %s", ZAP_ENDPOINT)
        self._warn_unsafe(self._policy)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering; idempotent and bounded by `timeout`. The ZAP endpoint stays
        bound and denies (see `curvecert.auth.endpoint`): close server sockets first.

        Requests still waiting for a provider are answered 500 and their tasks cancelled.
        Also stops certificate stores opened from a directory. Call it from the loop (or,
        while the loop runs, from another thread: it then waits at most `timeout`).
        """
        loop = self._loop
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if (self._sock is not None and loop is not None and loop.is_running()
                and current is not loop):
            done: concurrent.futures.Future[None] = concurrent.futures.Future()

            def in_loop() -> None:
                try:
                    self._shutdown()
                finally:
                    done.set_result(None)

            try:
                loop.call_soon_threadsafe(in_loop)
                done.result(timeout)
            except (RuntimeError, concurrent.futures.TimeoutError):
                _logger.error("the asyncio authenticator did not stop within %ss", timeout)
        else:
            self._shutdown()
        self._stop_owned(timeout)

    def _shutdown(self, terminated: bool = False) -> None:
        sock, loop, lease = self._sock, self._loop, self._lease
        if lease is None or sock is None:
            return
        self._sock = None
        self._lease = None
        if self._reader_fd is not None:
            if loop is not None:
                try:
                    loop.remove_reader(self._reader_fd)
                except Exception as exc:  # the loop is closed already
                    _logger.debug("removing the ZAP reader: %s", exc)
            os.close(self._reader_fd)
            self._reader_fd = None
        if self._poll_task is not None:
            try:
                self._poll_task.cancel()
            except RuntimeError:
                pass
            self._poll_task = None
        tasks, self._tasks = self._tasks, {}
        for task, call in tasks.items():
            try:
                task.cancel()
            except RuntimeError:  # the loop is closed
                pass
            if not terminated:
                decision = call.pending.fail(OperationalError("authenticator stopped"))
                self._reply_on(sock, call.envelope, call.request, decision, call.frames)
        if terminated:
            lease.terminated()
        else:
            lease.release()  # never unbind: a deny-all responder answers from now on
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
        _logger.info("asyncio authenticator stopped")

    def __enter__(self) -> AsyncioAuthenticator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> AsyncioAuthenticator:
        return self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- the loop side ------------------------------------------------------------------

    def _get_pool(self) -> WorkerPool:
        if self._pool is None:
            self._pool = WorkerPool(self.max_workers, "curvecert-aio-provider")
        return self._pool

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._on_readable)

    async def _poll(self, sock: zmq.Socket[Any]) -> None:
        """Fallback for loops without `add_reader`: wait with `zmq.asyncio.Poller`."""
        import zmq.asyncio

        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        while self._sock is sock:
            await poller.poll()
            self._on_readable()

    def _on_readable(self) -> None:
        """Handle what the socket holds (up to `DRAIN_BUDGET` requests, then yield).

        A request whose handling raises is answered 500; a receive error is logged and
        retried shortly (the endpoint stays bound); ETERM ends the handler.
        """
        self._drain_scheduled = False
        recv = self._recv
        for _ in range(DRAIN_BUDGET):
            if self._sock is None:
                return
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                self._failures = 0
                return
            except zmq.ContextTerminated:
                _logger.warning("the zmq context was terminated: asyncio authenticator stops")
                self._shutdown(terminated=True)
                return
            except Exception as exc:
                self._retry_later(exc)
                return
            try:
                self._handle(frames)
            except Exception as exc:
                _logger.error("handling a ZAP request failed (%s): answered 500",
                              type(exc).__name__)
                reply = error_reply(frames, f"internal error: {type(exc).__name__}")
                if reply is not None:
                    try:
                        self._send(reply)
                    except Exception as send_exc:
                        _logger.error("cannot send a ZAP reply: %s", send_exc)
        self._schedule_drain()

    def _retry_later(self, exc: BaseException) -> None:
        """A failure outside any one request: log it and look at the socket again soon."""
        self._failures += 1
        if self._failures == 1 or self._failures % 100 == 0:
            _logger.error("asyncio authenticator: %s: %s (retrying; the endpoint stays "
                          "bound)", type(exc).__name__, exc)
        if self._loop is not None and not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                self._loop.call_later(min(0.5, 0.001 * self._failures), self._on_readable)
            except RuntimeError:  # the loop is closed
                self._drain_scheduled = False

    def _handle(self, frames: list[bytes]) -> None:
        self._t0 = time.monotonic()  # metrics: decision latency (hook, issue 15)
        if len(frames) > 2 and not frames[1]:
            envelope, body = frames[:2], frames[2:]
        else:
            split = split_envelope(frames)
            if split is None:
                _logger.debug("dropped a ZAP message without a routing envelope")
                return
            envelope, body = split
        request, outcome = prepare(self._policy, body)
        if type(outcome) is Pending:
            now = resolve_now(outcome)
            if now is None:
                assert self._loop is not None and request is not None
                task = self._loop.create_task(self._call(envelope, body, outcome))
                self._tasks[task] = _InFlight(envelope, request, outcome, body)
                task.add_done_callback(self._forget)
                return
            outcome = now
        self._reply(envelope, request, outcome, body)  # type: ignore[arg-type]

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _call(self, envelope: list[bytes], frames: list[bytes],
                    pending: Pending) -> None:
        started = time.monotonic()
        try:
            decision = await run_pending(pending, self._get_pool)
        except asyncio.CancelledError:
            # Cancelled by someone else than stop() (which answers its own), e.g. by
            # asyncio.run() ending: answer now rather than leave the handshake waiting.
            task = asyncio.current_task()
            if self._sock is not None and task is not None and task in self._tasks:
                self._reply(envelope, pending.request,
                            pending.fail(OperationalError("provider call cancelled")), frames)
            raise
        if self._sock is None:
            return
        self._t0 = started
        self._reply(envelope, pending.request, decision, frames)
        self._schedule_drain()  # the send may have consumed the FD's readiness edge

    def _reply(self, envelope: list[bytes], request: ZapRequest | None, decision: Decision,
               frames: list[bytes]) -> None:
        decision, reply = self._final(request, decision, frames)
        try:
            self._send(envelope + reply)
        except zmq.ZMQError as exc:
            _logger.error("cannot send a ZAP reply: %s", exc)
        self._after(request, decision)

    def _reply_on(self, sock: zmq.Socket[Any], envelope: list[bytes],
                  request: ZapRequest | None, decision: Decision, frames: list[bytes]) -> None:
        decision, reply = self._final(request, decision, frames)
        try:
            sock.send_multipart(envelope + reply, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self._after(request, decision)

