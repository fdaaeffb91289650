"""Provider calls in flight on the thread authenticator (`curvecert.auth.authenticator`).

A request whose decision needs a provider (a database lookup, ...) becomes a `_Call`: the
provider runs in `curvecert.auth.providers`' workers, its completion is queued and wakes
the handler thread through a pipe, and the handler answers it, or answers 500 at the
call's deadline, while it goes on answering other requests.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import zmq

from curvecert.auth.decision import Decision
from curvecert.auth.pending import Pending
from curvecert.auth.providers import ProviderRunner, settle
from curvecert.errors import OperationalError
from curvecert.formats.zap import ZapRequest

__all__ = ["ProviderCalls"]

_logger = logging.getLogger("curvecert.auth.authenticator")


class _Call(NamedTuple):
    """A request waiting for its provider (thread transport)."""

    envelope: list[bytes]
    request: ZapRequest
    pending: Pending
    frames: list[bytes]
    deadline: float
    future: concurrent.futures.Future[Any]


class ProviderCalls:
    """The in-flight bookkeeping the thread authenticator mixes in: dispatch a provider
    call, wait for completions and deadlines, answer what is due, answer all on stop."""

    _done: collections.deque[tuple[int, concurrent.futures.Future[Any]]]
    _wake_lock: threading.Lock
    _wake_w: int | None
    _in_flight: int
    _t0: float

    def _reply(self, send: Callable[..., Any], envelope: list[bytes],
               request: ZapRequest | None, decision: Decision, frames: list[bytes]) -> None:
        raise NotImplementedError

    def _poke(self) -> None:
        """Wake the handler thread (called from provider threads when a call completes)."""
        with self._wake_lock:
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"\0")
                except OSError:  # the pipe is full: the thread has wake-ups queued anyway
                    pass

    def _answer_all(self, calls: dict[int, _Call], send: Callable[..., Any]) -> None:
        """Stopping: answer 500 to every request still waiting for its provider."""
        for call in list(calls.values()):
            call.future.cancel()
            decision = call.pending.fail(OperationalError("authenticator stopped"))
            try:
                self._reply(send, call.envelope, call.request, decision, call.frames)
            except Exception as exc:  # the context is going away: nobody to answer
                _logger.debug("answering a waiting request on stop: %s", exc)
        calls.clear()
        self._in_flight = 0

    def _dispatch(self, call_id: int, envelope: list[bytes], frames: list[bytes],
                  pending: Pending, runner: ProviderRunner, calls: dict[int, _Call]) -> None:
        """Start a provider call; its completion wakes the loop through the pipe."""
        fut = runner.call(pending)
        calls[call_id] = _Call(envelope, pending.request, pending, frames,
                               time.monotonic() + pending.provider.timeout, fut)
        self._in_flight = len(calls)
        done = self._done

        def completed(f: concurrent.futures.Future[Any]) -> None:
            done.append((call_id, f))
            self._poke()

        fut.add_done_callback(completed)

    def _wait(self, recv: Callable[[int], list[bytes]], zsock: zmq.Socket[Any],
              poller: zmq.Poller, rfd: int, calls: dict[int, _Call],
              send: Callable[..., Any]) -> list[bytes] | None:
        """With provider calls in flight: wait for a request, a completion or a deadline;
        answer completed and expired calls; return a request's frames if one is ready."""
        nearest = min(call.deadline for call in calls.values())
        wait_ms = max(0, math.ceil((nearest - time.monotonic()) * 1000))
        events = dict(poller.poll(wait_ms)) if wait_ms > 0 or not self._done else {}
        if rfd in events:
            try:
                while os.read(rfd, 4096):
                    pass
            except BlockingIOError:
                pass
        done = self._done
        while done:
            call_id, fut = done.popleft()
            call = calls.get(call_id)
            # else: answered 500 at its deadline already, or a late completion from before
            # a restart (the future's identity tells them apart from a reused id)
            if call is not None and call.future is fut:
                del calls[call_id]
                self._t0 = call.deadline - call.pending.provider.timeout
                self._reply(send, call.envelope, call.request, settle(call.pending, fut),
                            call.frames)
        now = time.monotonic()
        for call_id in [i for i, c in calls.items() if c.deadline <= now]:
            call = calls.pop(call_id)
            call.future.cancel()  # a queued call never starts; a running one is abandoned
            self._t0 = call.deadline - call.pending.provider.timeout
            self._reply(send, call.envelope, call.request, settle(call.pending, None),
                        call.frames)
        self._in_flight = len(calls)
        if zsock in events:
            try:
                return recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
        return None
