"""The reading side every live store shares: one current snapshot behind a condition.

A live store (the watched directory `CertStore`, the etcd `EtcdStore`) publishes a new
immutable `Snapshot` by swapping `self._snapshot` under `self._cond` and notifying it.
`SnapshotView` turns that into the read API the authenticators use: lookups are one
dict access in the current snapshot (no lock, no I/O), and waiters block on the condition
with a bounded timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from curvecert.store.snapshot import Entry, Snapshot, StoreFinding

__all__ = ["SnapshotView"]


class SnapshotView:
    """Mixin: the read API over `self._snapshot`, published under `self._cond`."""

    _snapshot: Snapshot
    _cond: threading.Condition

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
