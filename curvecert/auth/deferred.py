"""Pending decisions for a single-threaded request loop (the `serve-auth` daemon).

A loop that owns one socket (a ROUTER answering ZAP requests) cannot wait for a provider
or a PLAIN password check (`curvecert.auth.plainpool`) without delaying every other
request. `DeferredCalls` starts the call (`curvecert.auth.providers.ProviderRunner`), keeps
whatever the loop needs to answer later (its `key`: envelope, request, frames), wakes the
loop when a call completes, and hands back the finished and the expired ones with their
decisions. Only the owning thread calls `start`, `due`, `timeout` and `close`; completions
arrive from worker threads through `wake`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from curvecert.auth.decision import Decision
from curvecert.auth.pending import Pending
from curvecert.auth.providers import DEFAULT_WORKERS, ProviderRunner, settle
from curvecert.errors import OperationalError

__all__ = ["DeferredCalls"]


class _Call(NamedTuple):
    key: Any
    pending: Pending
    deadline: float
    future: concurrent.futures.Future[Any]


class DeferredCalls:
    """Calls in flight for one loop: `start` them, answer what `due()` returns."""

    def __init__(self, wake: Callable[[], None], max_workers: int = DEFAULT_WORKERS,
                 name: str = "curvecert-provider") -> None:
        """`wake()` is called from a worker thread whenever a call completes (it must be
        thread-safe and non-blocking, e.g. a write to the loop's wake-up pipe)."""
        self._wake = wake
        self._runner = ProviderRunner(max_workers, name)
        self._calls: dict[int, _Call] = {}
        self._done: collections.deque[tuple[int, concurrent.futures.Future[Any]]] = \
            collections.deque()
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._calls)

    def start(self, key: Any, pending: Pending) -> None:
        """Start `pending`'s call; `key` comes back with its decision from `due()`."""
        call_id = next(self._ids)
        fut = self._runner.call(pending)
        self._calls[call_id] = _Call(key, pending, time.monotonic() + pending.provider.timeout,
                                     fut)
        done, wake = self._done, self._wake

        def completed(f: concurrent.futures.Future[Any]) -> None:
            done.append((call_id, f))
            wake()

        fut.add_done_callback(completed)

    def timeout(self) -> float | None:
        """Seconds until the nearest deadline (0 when a completion waits), None if idle."""
        if self._done:
            return 0.0
        if not self._calls:
            return None
        return max(0.0, min(c.deadline for c in self._calls.values()) - time.monotonic())

    def due(self) -> list[tuple[Any, Pending, Decision]]:
        """The completed calls and those past their deadline (500), with their decisions."""
        out: list[tuple[Any, Pending, Decision]] = []
        while self._done:
            call_id, fut = self._done.popleft()
            call = self._calls.pop(call_id, None)
            if call is not None:
                out.append((call.key, call.pending, settle(call.pending, fut)))
        now = time.monotonic()
        for call_id in [i for i, c in self._calls.items() if c.deadline <= now]:
            call = self._calls.pop(call_id)
            call.future.cancel()  # a queued call never starts; a running one is abandoned
            out.append((call.key, call.pending, settle(call.pending, None)))
        return out

    def close(self) -> list[tuple[Any, Pending, Decision]]:
        """Stop: every call still in flight gets its 500 decision here; workers are not
        waited for."""
        out = []
        for call in self._calls.values():
            call.future.cancel()
            out.append((call.key, call.pending,
                        call.pending.fail(OperationalError("shutting down"))))
        self._calls.clear()
        self._done.clear()
        self._runner.close()
        return out
