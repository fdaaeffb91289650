"""Running credential providers (`curvecert.auth.pending.Provider`) without wedging a ZAP handler.

Why this exists: a provider looks a key or a password up somewhere else (a database, a
directory service, a web API). Such a lookup can be slow, can raise, and can hang for
ever. pyzmq runs its credentials callback on the handler itself, one request at a time:
an awaiting callback blocks every other handshake, and a raising one kills the thread,
after which every new connection hangs in its handshake. Here:

- a plain (blocking) callback runs in a `WorkerPool` of a few daemon threads, an async
  callback on an event loop (the application's for `AsyncioAuthenticator`, a private
  `LoopThread` for the thread authenticator); the handler answers other requests
  meanwhile;
- every call has a deadline (`Provider.timeout`, 1 s by default). At the deadline the
  request is answered 500 and the call is abandoned: an async call is cancelled, a
  blocking one cannot be interrupted in Python, so its worker stays busy until it
  returns and its late result is dropped. A call still queued at its deadline never
  starts. With every worker stuck, blocking providers can only time out (500) but
  everything else (stores, password files, async providers) is still answered;
- an exception is a 500 for that request, logged at WARNING with its type only (a
  careless provider may put a credential in its message);
- `Provider.cache` answers repeated identical requests from memory (allow results
  only, for a bounded time: `curvecert.auth.pending.ResultCache`).

Threads here are daemon threads: a call that never returns never blocks interpreter exit.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from curvecert.auth.decision import Decision
from curvecert.auth.pending import Busy, Pending, run_inline
from curvecert.errors import OperationalError

__all__ = [
    "DEFAULT_WORKERS",
    "LoopThread",
    "ProviderRunner",
    "WorkerPool",
    "log_failure",
    "resolve_now",
    "run_pending",
    "settle",
]

_logger = logging.getLogger(__name__)

#: Worker threads per authenticator for blocking providers (each one stuck in a call that
#: never returns is lost until it does; more workers only delay that point).
DEFAULT_WORKERS = 4

_Job = Callable[[], None]
#: The end of the reason of a decision refused by a full pool (`Busy`).
_BUSY_SUFFIX = "queue full"


def _settle(fut: concurrent.futures.Future[Any], result: Any = None,
            exc: BaseException | None = None) -> None:
    """Complete `fut` unless it is already done (cancelled at its deadline)."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except concurrent.futures.InvalidStateError:
        if inspect.iscoroutine(result):
            result.close()  # a late awaitable nobody will await


class WorkerPool:
    """A few daemon threads running blocking calls, started on demand.

    Unlike `concurrent.futures.ThreadPoolExecutor` (whose threads are joined at
    interpreter exit), a worker stuck in a call that never returns blocks nothing. A job
    whose future is already done (cancelled or expired) when a worker takes it is skipped.
    """

    def __init__(self, max_workers: int = DEFAULT_WORKERS,
                 name: str = "curvecert-provider", *, max_queue: int | None = None,
                 nice: int = 0) -> None:
        """Allow up to `max_workers` threads named `name-N`; with `max_queue`, at most
        that many calls wait for a worker (`run` raises `Busy` past it); `nice` > 0
        lowers the workers' CPU priority (Linux: per thread) so handlers win the CPU."""
        if max_workers < 1:
            raise OperationalError("a worker pool needs at least one worker")
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.nice = nice
        self.name = name
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[concurrent.futures.Future[Any], _Job]] = \
            collections.deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def __repr__(self) -> str:
        return (f"<WorkerPool {len(self._threads)}/{self.max_workers} threads, "
                f"{self._idle} idle, {len(self._queue)} queued>")

    @property
    def busy(self) -> int:
        """Workers currently running a call."""
        return len(self._threads) - self._idle

    @property
    def full(self) -> bool:
        """True when `run` would raise `Busy` now (a hint: it may change at once)."""
        return self.max_queue is not None and len(self._queue) >= self.max_queue

    def run(self, fut: concurrent.futures.Future[Any], job: _Job) -> None:
        """Queue `job`; it is skipped if `fut` is done by the time a worker is free.

        `job` must complete `fut` itself (and never raise).
        """
        with self._cond:
            if self._closed:
                raise OperationalError("the provider worker pool is shut down")
            if self.max_queue is not None and len(self._queue) >= self.max_queue:
                raise Busy(_BUSY_SUFFIX)
            self._queue.append((fut, job))
            if self._idle == 0 and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.name}-{len(self._threads) + 1}")
                self._threads.append(thread)
                thread.start()
            else:
                self._cond.notify()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `fn()` in a worker; its result or exception completes the returned future."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # the future carries it; the worker lives on
                _settle(fut, exc=exc)
            else:
                _settle(fut, result)

        self.run(fut, job)
        return fut

    def _work(self) -> None:
        me = threading.current_thread()
        if self.nice > 0 and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:  # not allowed or not per-thread here: run at normal priority
                pass
        try:
            while True:
                with self._cond:
                    self._idle += 1
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    self._idle -= 1
                    if not self._queue:
                        return  # closed and drained
                    fut, job = self._queue.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue  # cancelled at its deadline while queued
                job()
        finally:
            with self._cond:
                if me in self._threads:
                    self._threads.remove(me)

    def shutdown(self) -> None:
        """Stop taking jobs and cancel the queued ones; never waits for a running call."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for fut, _job in queued:
            fut.cancel()


class LoopThread:
    """An asyncio event loop in a daemon thread, for async providers of a thread-based
    authenticator (so one slow coroutine never holds up the handler)."""

    def __init__(self, name: str = "curvecert-provider-loop") -> None:
        """Start the loop thread; returns once the loop runs."""
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name,
                                        daemon=True)
        self._thread.start()
        if not ready.wait(10):  # pragma: no cover - a thread that cannot start
            raise OperationalError("the provider event loop did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(
                        asyncio.wait(tasks, timeout=1.0))
            finally:
                self.loop.close()

    def start(self, fut: concurrent.futures.Future[Any],
              make: Callable[[], Awaitable[Any]], deadline: float) -> None:
        """Await `make()` on the loop until `deadline` (monotonic); settle `fut` with it."""
        async def call() -> None:
            if fut.done():
                return
            try:
                awaitable = make()
                result = await asyncio.wait_for(_as_coroutine(awaitable),
                                                max(0.0, deadline - time.monotonic()))
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except BaseException as exc:
                _settle(fut, exc=exc)
            else:
                _settle(fut, result)

        def schedule() -> None:
            self.loop.create_task(call())

        try:
            self.loop.call_soon_threadsafe(schedule)
        except RuntimeError:  # the loop is closed: stop() raced with a late call
            fut.cancel()

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel running calls and stop the loop; waits at most `timeout` seconds."""
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class ProviderRunner:
    """Starts provider calls for a thread-based transport; each returns a future.

    Blocking callbacks go to a `WorkerPool`, async ones (and awaitables a blocking
    callback returns) to a `LoopThread`; both are created on first use. The caller owns
    the deadline: it answers 500 when the future is not done by then and cancels it.
    """

    def __init__(self, max_workers: int = DEFAULT_WORKERS,
                 name: str = "curvecert-provider") -> None:
        """Nothing starts until the first call."""
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._loop: LoopThread | None = None
        self._closed = False

    def _get_pool(self) -> WorkerPool:
        with self._lock:
            if self._closed:
                raise OperationalError("the provider runner is closed")
            if self._pool is None:
                self._pool = WorkerPool(self._max_workers, self._name)
            return self._pool

    def _get_loop(self) -> LoopThread:
        with self._lock:
            if self._closed:
                raise OperationalError("the provider runner is closed")
            if self._loop is None:
                self._loop = LoopThread(f"{self._name}-loop")
            return self._loop

    @property
    def pool(self) -> WorkerPool | None:
        """The worker pool, once a blocking provider has run."""
        return self._pool

    def call(self, pending: Pending) -> concurrent.futures.Future[Any]:
        """Start `pending`'s provider; the future holds its result or exception."""
        provider, request = pending.provider, pending.request
        deadline = time.monotonic() + provider.timeout
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            if provider.is_async:
                fut.set_running_or_notify_cancel()
                self._get_loop().start(fut, lambda: provider(request),  # type: ignore[arg-type,return-value]
                                       deadline)
                return fut

            def job() -> None:
                try:
                    result = provider(request)
                except BaseException as exc:
                    _settle(fut, exc=exc)
                    return
                if inspect.isawaitable(result):
                    try:
                        self._get_loop().start(fut, lambda: result, deadline)
                    except BaseException as exc:
                        if inspect.iscoroutine(result):
                            result.close()
                        _settle(fut, exc=exc)
                    return
                _settle(fut, result)

            (provider.pool or self._get_pool()).run(fut, job)
        except OperationalError as exc:
            _settle(fut, exc=exc)
        return fut

    def close(self, timeout: float = 2.0) -> None:
        """Cancel queued calls, stop the loop thread; never waits for a blocking call."""
        with self._lock:
            self._closed = True
            pool, loop = self._pool, self._loop
            self._pool = self._loop = None
        if pool is not None:
            pool.shutdown()
        if loop is not None:
            loop.stop(timeout)


def log_failure(pending: Pending, decision: Decision) -> None:
    """One WARNING for a provider that failed or timed out (the reason names no secret).
    A pool that refused a call (`Busy`) is not logged per request: under a flood that
    would multiply the attacker's work; the decision log still records each one."""
    if decision.status == "500" and not decision.reason.endswith(_BUSY_SUFFIX):
        _logger.warning("ZAP %s request in domain %r from %s: %s", pending.request.mechanism,
                        pending.request.domain, pending.request.address, decision.reason)


def resolve_now(pending: Pending) -> Decision | None:
    """The decision for `pending` without leaving the handler: a cache hit, or an inline
    provider called right here (failures logged); None when the call must be dispatched."""
    hit = pending.cached()
    if hit is not None:
        return hit
    if pending.provider.inline:
        decision = run_inline(pending)
        log_failure(pending, decision)
        return decision
    return None


def settle(pending: Pending, fut: concurrent.futures.Future[Any] | None) -> Decision:
    """The decision for a finished (or, with `fut` None or not done, expired) call."""
    if fut is None or not fut.done() or fut.cancelled():
        decision = pending.expire()
    else:
        exc = fut.exception()
        if exc is None:
            decision = pending.finish(fut.result())
        elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            decision = pending.expire()
        else:
            decision = pending.fail(exc)
    log_failure(pending, decision)
    return decision


async def _bounded(awaitable: Awaitable[Any], seconds: float) -> Any:
    """`await awaitable`, cancelled after `seconds` (`TimeoutError`)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10: wait_for costs one more task per call
        return await asyncio.wait_for(_as_coroutine(awaitable), seconds)
    async with timeout(seconds):
        return await awaitable


async def run_pending(pending: Pending, pool: Callable[[], WorkerPool]) -> Decision:
    """Run `pending`'s provider on the running loop, with its deadline; never raises
    (except `CancelledError`).

    A blocking callback runs in `pool()`'s threads, an async one on this loop; an
    awaitable returned by a blocking callback is awaited here.
    """
    hit = pending.cached()
    if hit is not None:
        return hit
    provider, request = pending.provider, pending.request
    if provider.inline:
        decision = run_inline(pending)
        log_failure(pending, decision)
        return decision
    deadline = time.monotonic() + provider.timeout
    try:
        result: Any
        if provider.is_async:
            result = await _bounded(provider(request),  # type: ignore[arg-type]
                                    provider.timeout)
        else:
            cfut = (provider.pool or pool()).submit(lambda: provider(request))
            result = await _bounded(asyncio.wrap_future(cfut), provider.timeout)
            if inspect.isawaitable(result):
                result = await _bounded(result, max(0.0, deadline - time.monotonic()))
    except asyncio.CancelledError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        decision = pending.expire()
    except BaseException as exc:  # a provider's exception, whatever it is, is a 500
        decision = pending.fail(exc)
    else:
        decision = pending.finish(result)
    log_failure(pending, decision)
    return decision
