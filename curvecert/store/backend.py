"""What a live certificate store is to its users, and how one is opened from its name.

`StoreBackend` is the contract the authenticators, the daemon and `status` rely on: an
immutable current `Snapshot`, a `lookup` that never blocks on I/O, a `generation` that goes
up with every new snapshot (and waits on it), health, and start/stop. Two backends:

- `curvecert.store.watch.CertStore`: a watched directory (the default; unchanged);
- `curvecert.store.etcd.EtcdStore`: a prefix in an etcd cluster, for a fleet of hosts
  (`etcd://HOST:PORT[,HOST:PORT...]/PREFIX`, see `curvecert.store.etcdurl`).

`open_store(spec)` picks the backend from the name; the etcd modules (and etcd3gw, the
`etcd` extra) are imported only when an etcd URL is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from curvecert.store.etcdurl import EtcdOptions, is_etcd_url
from curvecert.store.snapshot import Entry, Snapshot, StoreFinding

__all__ = ["StoreBackend", "StoreSpec", "is_etcd_url", "open_store", "store_name"]

#: How a store is named: a directory, or an etcd URL (a `str` starting with `etcd://`).
StoreSpec = str | os.PathLike[str]


@runtime_checkable
class StoreBackend(Protocol):
    """A live store of trusted public certificates (see the module docstring)."""

    directory: str
    """Where the store is: a directory path, or the etcd URL (no credentials)."""

    @property
    def snapshot(self) -> Snapshot:
        """The current immutable snapshot."""

    def lookup(self, key: bytes | str) -> Entry | None:
        """The trusted entry for a 32-byte (or Z85) public key, or None; no I/O."""

    @property
    def generation(self) -> int:
        """Snapshots published so far."""

    @property
    def healthy(self) -> bool:
        """False when the store cannot be read (then nothing is trusted: fail closed)."""

    @property
    def problem(self) -> str | None:
        """Why the store is unhealthy, or None."""

    @property
    def findings(self) -> tuple[StoreFinding, ...]:
        """Entries not trusted (or trusted with a warning) and why."""

    def wait_for_generation(self, generation: int, timeout: float | None = None) -> bool:
        """Block until `generation` is reached; False on timeout."""

    def wait_for(self, predicate: Callable[[Snapshot], object],
                 timeout: float | None = None) -> bool:
        """Block until `predicate(snapshot)` holds; False on timeout."""

    def start(self) -> StoreBackend:
        """Read the store and start following it."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following it (bounded)."""


def store_name(spec: StoreSpec) -> str:
    """The text of a store name: an etcd URL as given, a path via `os.fspath`."""
    return spec if isinstance(spec, str) else os.fspath(spec)


def open_store(spec: StoreSpec, *, etcd: EtcdOptions | None = None,
               watch: bool = True, strict_modes: bool = False) -> StoreBackend:
    """A started live store for `spec` (a directory, or an `etcd://` URL).

    `etcd` options apply to etcd URLs (default: from the environment,
    `EtcdOptions.from_env`). `strict_modes` (sshd's StrictModes, see `CertStore`) refuses
    group/other-writable files and store directories; etcd URLs have no file modes and
    ignore it. Raises `ConfigError` for a malformed etcd URL.
    """
    if is_etcd_url(spec):
        from curvecert.store.etcd import EtcdStore

        options = etcd if etcd is not None else EtcdOptions.from_env()
        return EtcdStore(str(spec), options).start()
    from curvecert.store.watch import CertStore

    return CertStore(spec, watch=watch, strict_modes=strict_modes).start()
