"""The live certificate store: a watched directory, reloaded into a fresh snapshot on change.

`CertStore` keeps the newest `curvecert.store.snapshot.Snapshot` behind one reference. A lookup
reads that reference and does one dict access: no lock, no disk. Changes are picked up by
inotify (`curvecert.store.inotify`; watchdog's observer off Linux; polling is this
module's own rescan, see `curvecert.store.observe`) and applied by one reload thread:

- The reader's callback only records what changed and notifies (STYLE R9). The reload
  thread waits for a quiet period (`debounce`, capped so a steady stream of events cannot
  postpone a reload for ever), takes the pending work, releases the lock, reloads, and
  swaps the snapshot in. `generation` then goes up by one and waiters wake.
- Events that name files (created, modified, closed-after-write, deleted, both ends of a
  move, attribute changes) are applied incrementally: only those paths (or sub-trees)
  are read again. Editors and tools that write a temporary dot-file and rename it into
  place are covered by the move's destination; temporaries themselves are ignored.
- Kubernetes ConfigMap/Secret volumes change by swapping the `..data` symlink; inotify
  then reports only `..`-names, never the visible files (FIELD-NOTES B2). Any event on a
  `..`-name therefore triggers a full rescan, cheap thanks to the stat cache.
- The store directory deleted or replaced (FIELD-NOTES B4): every reload cycle, and at
  least once a second, the directory's (device, inode) is compared with the one being
  watched. When it is gone the snapshot becomes empty and unhealthy (fail closed); the
  directory is then checked five times a second, and when it is back the watch is
  re-created and the store rescanned.
- inotify limits (FIELD-NOTES B3): when the native observer cannot start (ENOSPC,
  EMFILE, ENOMEM) the store falls back to polling with a warning: a full rescan (stat
  cache) every `poll_interval` seconds; one that finds nothing new publishes nothing.
  Stores on network file systems (NFS, CIFS, sshfs, 9p...), where inotify sees no remote
  changes, are polled from the start.
- A kernel queue overflow (IN_Q_OVERFLOW) re-reads every trusted file first, then the
  whole store; a reader thread that died is re-created at the next directory check. A
  full rescan every `rescan_interval` seconds is the last safety net.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Iterable

from curvecert.errors import StoreError
from curvecert.store.observe import IGNORED, K8S, Batch, DirectoryWatch, classify
from curvecert.store.scan import ScanCancelled, Scanner
from curvecert.store.snapshot import Snapshot
from curvecert.store.view import ReloadCallback, SnapshotView, reload_callbacks

__all__ = ["CertStore", "ReloadCallback"]

_logger = logging.getLogger(__name__)


#: Seconds between checks that the watched directory is still the same directory.
_ROOT_CHECK = 1.0
#: Seconds between checks for a deleted store directory to come back.
_REAPPEAR_CHECK = 0.2
#: A burst is applied at the latest this long after its first event (x debounce, >= 0.25 s).
_MAX_DELAY_FACTOR = 10
#: Paths applied per step of a big burst (a revocation waits for one step at most).
_SLICE = 1024
class CertStore(SnapshotView):
    """A directory of trusted public certificates, kept current by watching it.

    ```python
    with CertStore("/etc/curvecert/store") as store:
        entry = store.lookup(client_key)        # None: not trusted
        if entry is not None:
            reply_metadata = entry.metadata     # ZMTP blob for the ZAP reply
    ```

    `watch=False` reads the directory only on `start()` and `reload()`. `poll=True`
    forces polling (a full rescan with the stat cache every `poll_interval` seconds),
    `poll=False` forces the native observer (inotify; no fallback), `poll=None` picks
    inotify and falls back to polling when inotify is out of resources or the directory
    is on a network file system. `debounce` is the quiet period that ends a burst of
    events;
    `rescan_interval` (None: never) the period of the safety-net full rescan.
    `on_reload` callbacks run after every new snapshot, in the reloading thread.
    `strict_modes` (sshd's StrictModes): do not trust files, sub-directories or a store
    directory that group/others can write (`curvecert.store.scan`); without it they are
    trusted and reported as findings, logged at WARNING.

    Revocation: an event on a path a trusted key is read from skips the quiet period and
    the queue; big bursts are applied in slices, so removing a key takes effect within
    one slice even while thousands of other files change (issue 11 §6).
    """

    def __init__(self, directory: str | os.PathLike[str], *, watch: bool = True,
                 poll: bool | None = None, debounce: float = 0.05,
                 rescan_interval: float | None = 300.0, poll_interval: float = 1.0,
                 on_reload: ReloadCallback | Iterable[ReloadCallback] | None = None,
                 strict_modes: bool = False):
        """Configure the store; nothing is read until `start()`."""
        if debounce < 0 or poll_interval <= 0 or (rescan_interval is not None
                                                  and rescan_interval <= 0):
            raise StoreError("debounce must be >= 0; poll_interval and rescan_interval > 0")
        self.directory = os.path.abspath(os.fspath(directory))
        self._watch = watch
        self._debounce = debounce
        self._max_delay = max(debounce * _MAX_DELAY_FACTOR, 0.25)
        self._rescan_interval = rescan_interval
        self.on_reload: list[ReloadCallback] = reload_callbacks(on_reload)

        self._scanner = Scanner(self.directory, strict=strict_modes)
        self._snapshot: Snapshot = self._scanner.snapshot
        self._scan_lock = threading.Lock()      # one scanner user at a time
        self._cond = threading.Condition(threading.Lock())  # pending work + publication
        self._dir_b = os.fsencode(self.directory)
        self._prefix_b = self._dir_b.rstrip(b"/") + b"/"
        self._pending: set[bytes] = set()
        self._urgent: set[bytes] = set()        # pending paths that trusted keys came from
        self._overflowed = False                # events were lost: rescan without delay
        self._full = False
        self._root_event = False
        self._dirty = False
        self._first_event = 0.0
        self._last_event = 0.0
        self._stopping = False
        self._started = False
        self._thread: threading.Thread | None = None
        self._dirwatch = DirectoryWatch(self.directory, self._on_changes, poll=poll,
                                        poll_interval=poll_interval,
                                        stopping=self._cancelled,
                                        overflow=self._on_overflow)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> CertStore:
        """Read the directory (synchronously) and, with `watch`, start watching it.

        The watch is set up before the first scan, so no change made meanwhile is missed.
        A missing directory is not an error: the store trusts nothing and logs it, and
        picks the directory up when it appears.
        """
        if self._started:
            raise StoreError("this CertStore has already been started")
        self._started = True
        if not self._watch:
            self.reload()
            return self
        self._dirwatch.choose_mode()
        self._dirwatch.start()
        self.reload()
        self._thread = threading.Thread(target=self._run, name="curvecert-store-reload",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and join every thread; bounded by `timeout`, never hangs for ever."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                _logger.warning("store reload thread did not stop within %.1fs", timeout)
        self._dirwatch.stop(max(0.1, deadline - time.monotonic()))

    # --- reading ----------------------------------------------------------------------------

    @property
    def polling(self) -> bool:
        """True when changes are detected by polling rather than by inotify."""
        return self._dirwatch.polling

    def reload(self) -> Snapshot:
        """Rescan the whole directory now (stat cache: only changed files are parsed)."""
        with self._scan_lock:
            snap = self._scanner.scan()
        self._publish(snap)
        return snap

    # --- events (the reader's thread) -----------------------------------------------------

    def _on_changes(self, batch: Batch) -> None:
        # Hot path: a burst of 20,000 files brings 40,000-100,000 events (issue 11 §6),
        # which arrive here deduplicated, one batch per read of the kernel's queue.
        paths, root_event = batch
        pending: list[bytes] = []
        urgent: list[bytes] = []
        full = False
        prefix, n = self._prefix_b, len(self._prefix_b)
        trusts_at, links = self._snapshot.trusts_at, self._snapshot.reads_links
        for path in paths:
            if not path.startswith(prefix):
                full = True  # the directory itself (e.g. its mode changed), or outside it
                continue
            rel = path[n:]
            kind = classify(rel)
            if kind == IGNORED:
                if links:  # not read itself, but a symbolic link may point there
                    pending.append(path)
                continue
            if kind == K8S:
                full = True  # Kubernetes atomic writer: ..data, ..data_tmp, ..<ts>
            # a path a trusted key is read from (or a directory above one) may be a
            # revocation: it skips the quiet period and the queue
            elif trusts_at(rel):
                urgent.append(path)
            else:
                pending.append(path)
        if not (pending or urgent or full or root_event):
            return
        now = time.monotonic()
        with self._cond:
            self._pending.update(pending)
            if urgent:
                self._urgent.update(urgent)
            self._full |= full
            self._root_event |= root_event
            wake = urgent or not self._dirty
            if not self._dirty:
                self._first_event = now
            self._dirty = True
            self._last_event = now
            if wake:  # later events of a burst only move the quiet period: no wake-up each
                self._cond.notify_all()

    def _on_overflow(self) -> None:
        """The kernel dropped events (one may be a revocation): re-read every trusted file
        at once, then rescan the whole store, with no quiet period."""
        _logger.warning("%s: file events may have been lost; re-reading the trusted files, "
                        "then the whole store", self.directory)
        # the trusted files first (as possible revocations), then everything
        trusted = [self._prefix_b + os.fsencode(e.relpath) for e in self._snapshot]
        with self._cond:
            self._urgent.update(trusted)
            self._full = self._dirty = self._overflowed = True
            self._cond.notify_all()

    # --- reload thread ----------------------------------------------------------------------

    def _rescan_period(self) -> float:
        """Seconds between full rescans: `poll_interval` when polling, else
        `rescan_interval` (infinite when None)."""
        period = self._rescan_interval or float("inf")
        if self._dirwatch.polling:
            period = min(period, self._dirwatch.poll_interval)
        return period

    def _run(self) -> None:
        now = time.monotonic()
        last_full = now
        next_check = now + self._check_period()
        while True:
            with self._cond:
                while not (self._stopping or self._dirty):
                    now = time.monotonic()
                    deadline = min(last_full + self._rescan_period(), next_check)
                    if now >= deadline:
                        break
                    self._cond.wait(deadline - now)
                while (self._dirty and not self._stopping and not self._urgent
                       and not self._overflowed):
                    now = time.monotonic()
                    due = min(self._last_event + self._debounce,
                              self._first_event + self._max_delay)
                    if now >= due:
                        break
                    self._cond.wait(due - now)
                if self._stopping:
                    return
                paths, full, root_event = self._take()
            # -- outside the lock: the handler keeps queueing while we read the disk
            now = time.monotonic()
            if now >= last_full + self._rescan_period():
                full = True
            if full:
                last_full = now
            root_changed = root_event
            if root_event or now >= next_check or paths or full:
                root_changed = root_changed or self._root_changed()
                next_check = time.monotonic() + self._check_period()
            try:
                if root_changed:
                    self._rewatch()
                    last_full = time.monotonic()
                elif full:
                    self._reload(None)
                elif paths:
                    self._reload(paths)
            except ScanCancelled:
                return
            except Exception:  # never let the reload thread die: the store would go stale
                _logger.exception("reloading the certificate store %s failed", self.directory)
            next_check = min(next_check, time.monotonic() + self._check_period())

    def _take(self) -> tuple[set[bytes], bool, bool]:
        """The next piece of work (called with `_cond` held).

        Urgent paths (possible revocations) go first and alone, without waiting for the
        burst to end; other paths go in slices of `_SLICE`, so that a revocation arriving
        during a burst of many thousand events waits for one slice at most.
        """
        if self._urgent:
            paths, self._urgent = self._urgent, set()
            self._pending -= paths
            self._dirty = bool(self._pending or self._full or self._root_event)
            return paths, False, False
        if len(self._pending) > _SLICE:
            paths = set(itertools.islice(self._pending, _SLICE))
            self._pending -= paths
        else:
            paths, self._pending = self._pending, set()
        full, root_event = self._full, self._root_event
        self._full = self._root_event = self._overflowed = False
        self._dirty = bool(self._pending)  # the rest is already due: no new quiet period
        return paths, full, root_event

    def _check_period(self) -> float:
        return _ROOT_CHECK if self._dirwatch.watched_id is not None else _REAPPEAR_CHECK

    def _cancelled(self) -> bool:
        return self._stopping

    def _reload(self, paths: set[bytes] | None) -> None:
        try:
            with self._scan_lock:
                if paths is None:
                    before = self._scanner.snapshot
                    snap = self._scanner.scan(cancel=self._preempt)
                    if snap.same_as(before):  # a poll or a safety-net rescan: nothing new
                        self._scanner.keep(before)
                        return
                else:
                    snap = self._scanner.apply(sorted(paths), cancel=self._preempt)
        except ScanCancelled:
            if self._stopping:
                raise
            # a possible revocation arrived during a long scan: it goes first, and the
            # scan starts again afterwards (the stat cache keeps that cheap)
            with self._cond:
                if paths is None:
                    self._full = True
                else:
                    self._pending.update(paths)
                self._dirty = True
            return
        self._publish(snap)

    def _preempt(self) -> bool:
        return self._stopping or bool(self._urgent)

    def _root_changed(self) -> bool:
        """True when the watch must be re-created: the directory went, came back, was
        replaced, or is there but could not be read last time (a watch set up while it was
        unreadable may be missing, and nothing else would retry)."""
        try:
            st = os.stat(self.directory)
        except OSError:
            return self._dirwatch.watched_id is not None or self._snapshot.healthy
        if not stat.S_ISDIR(st.st_mode):
            return self._dirwatch.watched_id is not None or self._snapshot.healthy
        return ((st.st_dev, st.st_ino) != self._dirwatch.watched_id
                or not self._snapshot.healthy or not self._dirwatch.alive())

    def _rewatch(self) -> None:
        """The directory went away or was replaced: re-create the watch, rescan everything."""
        self._dirwatch.stop(5.0)
        if self._stopping:
            return
        self._dirwatch.start()
        self._reload(None)
        if self._dirwatch.watched_id is None:
            _logger.debug("%s is not there; checking again in %.1fs", self.directory,
                          _REAPPEAR_CHECK)

    def __repr__(self) -> str:
        mode = "polling" if self._dirwatch.polling else "inotify"
        return f"<CertStore {self.directory!r} {mode} {self._snapshot!r}>"
