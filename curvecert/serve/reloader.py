"""Reloads built off the daemon's main loop, so nothing a reload does can stall it.

Why: a reload reads files (the configuration, stores, password files). A file that blocks
(a FIFO put where the password file was), a store that takes seconds to scan, or a
configuration that makes the parser recurse until `RecursionError` must neither stop the
daemon from answering ZAP requests nor from leaving on SIGTERM (issue 12). `Reloader` runs
the build in a daemon thread; the main loop keeps serving, picks the result up when the
thread wakes it, and applies it there (or logs why not, keeping the running policy). A
build that never returns only keeps its thread: the process still exits on SIGTERM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Reloader"]

_logger = logging.getLogger("curvecert.serve.daemon")

T = TypeVar("T")


class Reloader(Generic[T]):
    """Runs `build()` in the background, one build at a time, and hands back the outcome.

    `request()` starts a build (or, while one runs, remembers that another is wanted);
    `wake()` is called from the build thread when it finishes; `take()` (main loop only)
    returns `(result, error, started)` of a finished build once, else None, and starts the
    build that was asked for meanwhile.
    """

    def __init__(self, build: Callable[[], T], wake: Callable[[], None]) -> None:
        """Prepare; nothing runs until `request()`."""
        self._build = build
        self._wake = wake
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False
        self._done: tuple[T | None, BaseException | None, float] | None = None
        self.discard: Callable[[T], None] | None = None
        """Called with a result nobody will apply (the daemon stopped meanwhile)."""
        self._closed = False

    @property
    def busy(self) -> bool:
        """True while a build runs."""
        return self._thread is not None

    def request(self) -> None:
        """Start a build now, or once the running one has finished."""
        with self._lock:
            if self._closed:
                return
            if self._thread is not None:
                self._again = True
                return
            self._start()

    def _start(self) -> None:
        started = time.monotonic()
        thread = threading.Thread(target=self._run, args=(started,),
                                  name="curvecert-reload", daemon=True)
        self._thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # can't start new thread: report it as a failed reload
            self._thread = None
            self._done = (None, exc, started)
            self._wake()

    def _run(self, started: float) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = self._build()
        except BaseException as exc:  # any failure at all keeps the running policy
            error = exc
        with self._lock:
            self._thread = None
            if self._closed:
                if result is not None and self.discard is not None:
                    self.discard(result)
                return
            self._done = (result, error, started)
        self._wake()

    def take(self) -> tuple[T | None, BaseException | None, float] | None:
        """The finished build's `(result, error, started)`, once; None if none finished."""
        with self._lock:
            done, self._done = self._done, None
            if self._again and self._thread is None and not self._closed:
                self._again = False
                self._start()
        return done

    def close(self) -> None:
        """No more builds; a build still running is abandoned (its result discarded)."""
        with self._lock:
            self._closed = True
            done, self._done = self._done, None
        if done is not None and done[0] is not None and self.discard is not None:
            self.discard(done[0])
