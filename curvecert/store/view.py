"""The reading side every live store shares: one current snapshot behind a condition.

A live store (the watched directory `CertStore`, the etcd `EtcdStore`) publishes a new
immutable `Snapshot` by swapping `self._snapshot` under `self._cond` and notifying it.
`SnapshotView` turns that into the read API the authenticators use: lookups are one
dict access in the current snapshot (no lock, no I/O), and waiters block on the condition
with a bounded timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from curvecert.store.snapshot import Entry, Snapshot, StoreFinding

__all__ = ["ReloadCallback", "SnapshotView", "reload_callbacks"]

_V = TypeVar("_V", bound="SnapshotView")
_logger = logging.getLogger(__name__)

#: Called with every new snapshot, in the publishing thread.
ReloadCallback = Callable[[Snapshot], None]


def reload_callbacks(on_reload: ReloadCallback | Iterable[ReloadCallback] | None
                     ) -> list[ReloadCallback]:
    """The `on_reload` argument of a store as a list (one callable, several, or none)."""
    if on_reload is None:
        return []
    if callable(on_reload):
        return [on_reload]
    return list(on_reload)


class SnapshotView:
    """Mixin: the read API over `self._snapshot`, published under `self._cond` by
    `_publish`, plus `with store:` (start/stop)."""

    _snapshot: Snapshot
    _cond: threading.Condition
    on_reload: list[ReloadCallback]

    def start(self) -> Any:
        """Read the store and start following it (each store defines it)."""
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following the store, bounded by `timeout` (each store defines it)."""
        raise NotImplementedError

    def __enter__(self: _V) -> _V:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable; keep it to get a consistent view)."""
        return self._snapshot

    def lookup(self, key: bytes | str) -> Entry | None:
        """The trusted entry for a public key (32 bytes or Z85), or None. No I/O."""
        return self._snapshot.lookup(key)

    def __contains__(self, key: object) -> bool:
        return key in self._snapshot

    def __len__(self) -> int:
        return len(self._snapshot)

    @property
    def generation(self) -> int:
        """Number of snapshots published so far; goes up by one with each."""
        return self._snapshot.generation

    @property
    def findings(self) -> tuple[StoreFinding, ...]:
        """Problems found by the last read (entries not trusted, dropped metadata...)."""
        return self._snapshot.findings

    @property
    def healthy(self) -> bool:
        """False when the store cannot be read: then nothing is trusted (fail closed)."""
        return self._snapshot.healthy

    @property
    def problem(self) -> str | None:
        """Why the store is unhealthy, or None."""
        return self._snapshot.problem

    def wait_for_generation(self, generation: int, timeout: float | None = None) -> bool:
        """Block until `generation` reaches `generation`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._snapshot.generation >= generation,
                                       timeout)

    def wait_for(self, predicate: Callable[[Snapshot], object],
                 timeout: float | None = None) -> bool:
        """Block until `predicate(snapshot)` is true, re-checked on each new snapshot."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(predicate(self._snapshot)), timeout)

    def _publish(self, snap: Snapshot) -> None:
        """Make `snap` current (unless a newer one already is), wake waiters, then run the
        `on_reload` callbacks in the publishing thread (a failing one is logged)."""
        with self._cond:
            if snap.generation < self._snapshot.generation:
                return  # a concurrent reload already published a newer snapshot
            self._snapshot = snap
            self._cond.notify_all()
        for callback in list(self.on_reload):
            try:
                callback(snap)
            except Exception:
                _logger.exception("on_reload callback %r failed", callback)
