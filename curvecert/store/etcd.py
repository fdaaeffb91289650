"""The live etcd store: one etcd prefix, read once, then followed by a watch; fail closed.

`EtcdStore` satisfies the same contract as the directory `CertStore`
(`curvecert.store.backend.StoreBackend`): `lookup` is one dict access in the current
immutable `Snapshot`, never a network call. Two daemon threads keep the snapshot current:

- the **watch thread** reads the whole prefix (paginated, at one revision), publishes it,
  then watches the prefix from the next revision and applies each batch of events
  incrementally (copy-on-write, `generation` + 1). When the stream breaks (member killed,
  network) it reconnects to the next member with a bounded backoff and resumes from the
  revision after the last event applied, so no event is missed. When that revision was
  compacted it reads the whole prefix again. After a fail-closed period it also reads
  everything again before trusting anything.
- the **probe thread** confirms, every `probe_interval` seconds, that etcd has a quorum (a
  linearizable count-only read of the prefix) while the watch is established. Each
  confirmation is recorded (`confirmed_at`, `cluster_revision`); a third small thread
  enforces the staleness bound (checked four times a second).

Staleness bound (`EtcdOptions.staleness`, default 30 s): while etcd cannot be reached the
store keeps answering from its last snapshot; once nothing has been confirmed for longer
than the bound, it publishes an empty, unhealthy snapshot (every CURVE key is then denied,
as for an unreadable store directory) and recovers by itself when etcd answers again.

For status and metrics: `revision` (etcd revision the snapshot reflects), `cluster_revision`
(the newest revision etcd reported), `lag` (seconds since the snapshot was last confirmed
current), `healthy`/`problem`, `generation`, `staleness`, `connected` (watch established).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from curvecert.errors import StoreError
from curvecert.store.etcdclient import EtcdClient, EtcdUnavailable, KeyValue, WatchCompacted
from curvecert.store.etcdsnap import KeySpace
from curvecert.store.etcdurl import EtcdOptions, EtcdUrl, parse_url
from curvecert.store.snapshot import Snapshot
from curvecert.store.view import ReloadCallback, SnapshotView, reload_callbacks

__all__ = ["EtcdStore", "load_snapshot"]

_logger = logging.getLogger(__name__)


#: Reconnect backoff bounds (seconds).
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0


def load_snapshot(url: str | EtcdUrl, options: EtcdOptions | None = None) -> Snapshot:
    """Read an etcd prefix once into a snapshot (for `store list/check`); raises
    `EtcdUnavailable` when etcd cannot be reached."""
    parsed = parse_url(url) if isinstance(url, str) else url
    client = EtcdClient(parsed, options)
    _rev, kvs = client.range_prefix(parsed.key_prefix)
    space = KeySpace(str(parsed), parsed.key_prefix)
    space.load(kvs)
    return space.snapshot()


class EtcdStore(SnapshotView):
    """Trusted public certificates under one etcd prefix, kept current by a watch.

    ```python
    with EtcdStore("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/curvecert") as store:
        entry = store.lookup(client_key)        # None: not trusted (or etcd lost too long)
    ```
    """

    def __init__(self, url: str | EtcdUrl, options: EtcdOptions | None = None, *,
                 probe_interval: float = 1.0,
                 on_reload: ReloadCallback | Iterable[ReloadCallback] | None = None):
        """Configure; nothing is read until `start()`."""
        self.url = parse_url(url) if isinstance(url, str) else url
        self.options = options or EtcdOptions()
        if not probe_interval > 0:
            raise StoreError("probe_interval must be > 0")
        self.probe_interval = min(probe_interval, self.options.staleness / 2)
        self.directory = str(self.url)  #: where the store is (the URL; same role as a dir)
        self.on_reload: list[ReloadCallback] = reload_callbacks(on_reload)
        self._client = EtcdClient(self.url, self.options)
        self._watch_client = EtcdClient(self.url, self.options)  # its own HTTP sessions
        self._space = KeySpace(self.directory, self.url.key_prefix)
        self._snapshot = Snapshot.empty(self.directory, problem="not read from etcd yet")
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._handle: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._started = False
        self._need_full = True
        self.revision = 0
        """etcd revision the current snapshot reflects (0 before the first read)."""
        self.cluster_revision = 0
        """The newest revision etcd reported (probe or watch)."""
        self.confirmed_at: float | None = None
        """`time.monotonic()` of the last confirmation that the snapshot is current."""
        self.connected = False
        """True while the watch stream is established."""
        self.reconnects = 0
        """Watch streams lost and re-established so far."""
        self.full_reads = 0
        """Complete reads of the prefix so far (start, compaction, recovery)."""

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> EtcdStore:
        """Read the prefix (synchronously, bounded by the request timeout) and start the
        watch and probe threads. etcd being down is not an error: the store then trusts
        nothing until it can read the prefix."""
        if self._started:
            raise StoreError("this EtcdStore has already been started")
        self._started = True
        try:
            self._full_read()
        except (EtcdUnavailable, StoreError) as exc:
            self._publish(self._space.unhealthy(f"{self.directory}: cannot read the store "
                                                f"from etcd: {exc}"))
            _logger.error("%s; trusting NO key from it until etcd answers", exc)
        for target, name in ((self._watch_loop, "watch"), (self._probe_loop, "probe"),
                             (self._bound_loop, "bound")):
            thread = threading.Thread(target=target, name=f"curvecert-etcd-{name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads (bounded by `timeout`)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        EtcdClient.abort(self._handle)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # --- reading (the StoreBackend contract) ----------------------------------------------

    @property
    def staleness(self) -> float:
        """The staleness bound in seconds."""
        return self.options.staleness

    @property
    def lag(self) -> float | None:
        """Seconds since the snapshot was last confirmed current (None: never)."""
        confirmed = self.confirmed_at
        return None if confirmed is None else max(0.0, time.monotonic() - confirmed)

    def reload(self) -> Snapshot:
        """Ask for a complete re-read of the prefix (done by the watch thread)."""
        self._need_full = True
        EtcdClient.abort(self._handle)
        return self._snapshot

    # --- internals ------------------------------------------------------------------------

    def _confirm(self, revision: int) -> None:
        self.cluster_revision = max(self.cluster_revision, revision)
        self.confirmed_at = time.monotonic()

    def _full_read(self) -> None:
        revision = 0

        def stream() -> Iterator[KeyValue]:  # page by page: never all values at once
            nonlocal revision
            for page_revision, kvs in self._client.range_pages(self.url.key_prefix):
                revision = page_revision
                yield from kvs

        self._space.load(stream())
        self.revision = revision
        self.full_reads += 1
        self._need_full = False
        was = self._snapshot
        self._confirm(revision)
        self._publish(self._space.snapshot())
        if not was.healthy and was.generation:
            _logger.warning("%s: etcd answers again: %d keys trusted at revision %d",
                            self.directory, len(self._snapshot), revision)

    def _watch_loop(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stop.is_set():
            try:
                if self._need_full or not self._snapshot.healthy:
                    self._full_read()
                self._follow()
            except WatchCompacted as exc:
                _logger.warning("%s: %s; reading the whole prefix again", self.directory, exc)
                self._need_full = True
                continue
            except (EtcdUnavailable, StoreError) as exc:
                (_logger.info if self.connected else _logger.debug)("%s", exc)
            except Exception:  # never let the thread die: the store would go stale silently
                _logger.exception("%s: the etcd watch failed", self.directory)
            if self.connected:  # it had worked: retry at once, then back off
                backoff = _BACKOFF_MIN
            self.connected = False
            if self._stop.is_set():
                return
            self.reconnects += 1
            if self._need_full and self._snapshot.healthy:
                continue  # reload() asked for it: no reason to wait
            with self._cond:
                self._cond.wait_for(self._stop.is_set, backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _follow(self) -> None:
        """Watch from the revision after the snapshot's; apply events until the stream ends."""
        stream = self._watch_client.watch(self.url.key_prefix, self.revision + 1, self._stop,
                                          self._handle)
        for header_revision, events in stream:
            if not self.connected:
                self.connected = True
            self.cluster_revision = max(self.cluster_revision, header_revision)
            if self._need_full:
                return  # reload() or recovery asked for a complete read
            if not events:
                continue
            if self._space.apply((ev.deleted, ev.kv) for ev in events):
                self.revision = max(self.revision, max(ev.kv.mod_revision for ev in events))
                if self._snapshot.healthy:
                    self._publish(self._space.snapshot())

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.probe_interval):
            try:
                revision = self._client.header_revision(self.url.key_prefix)
            except (EtcdUnavailable, StoreError) as exc:
                _logger.debug("%s: probe failed: %s", self.directory, exc)
            else:
                if self.connected:
                    self._confirm(revision)

    def _bound_loop(self) -> None:
        """Enforce the staleness bound on its own clock: a probe can block for the whole
        request timeout (a member without quorum), the bound must not wait for it."""
        period = min(0.25, self.options.staleness / 8)
        while not self._stop.wait(period):
            self._check_staleness()

    def _check_staleness(self) -> None:
        lag = self.lag
        if lag is None or lag <= self.options.staleness or not self._snapshot.healthy:
            return
        problem = (f"{self.directory}: etcd not confirmed for {lag:.1f}s (staleness bound "
                   f"{self.options.staleness:g}s)")
        _logger.error("%s; trusting NO key until etcd answers again", problem)
        self._need_full = True
        self._publish(self._space.unhealthy(problem))
        EtcdClient.abort(self._handle)  # a watch on a member without quorum: start over

    def __repr__(self) -> str:
        return f"<EtcdStore {self.directory!r} rev={self.revision} {self._snapshot!r}>"
