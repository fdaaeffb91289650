"""Watching a store directory: which reader, which events, when to poll.

On Linux the store reads inotify itself (`curvecert.store.inotify`): whole buffers of
events, deduplicated, delivered as one batch, so a revocation is seen ahead of a burst
queued before it. Elsewhere watchdog's platform observer is used. When the kernel is out
of inotify resources (ENOSPC, EMFILE, ENFILE, ENOMEM: FIELD-NOTES B3) the watch falls back
to polling with a warning, and a directory on a network file system (NFS, CIFS, sshfs,
9p...), where inotify sees no remote changes, is polled from the start. Polling has no
observer here: the owner rescans every `poll_interval` seconds with its stat cache, so
there is one view of the directory. (watchdog's poller kept a second one, and a file
that came and went between its polls was never reported gone, though the store had read
it.)

Whatever the reader, changes reach one callback (`CertStore._on_changes`) as a batch:
`(paths, root_event)`, `paths` mapping absolute paths (bytes) to inotify(7) event bits
(watchdog's events are translated). The callback runs in the reader's thread and only
records what changed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from curvecert.store.files import SKIP_SUFFIXES
from curvecert.store.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Batch,
    InotifyReader,
    available,
)

__all__ = ["IGNORED", "K8S", "READ", "REMOTE_FS", "Batch", "DirectoryWatch", "classify",
           "filesystem_type"]

_logger = logging.getLogger(__name__)

#: Errors from inotify that mean "out of watches or instances".
_LIMIT_ERRORS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM})
#: File systems on which inotify does not see changes made by other hosts.
REMOTE_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph",
                       "glusterfs", "lustre", "gpfs", "fuse.sshfs", "fuse.rclone",
                       "fuse.s3fs", "fuse.gcsfuse", "fuse.glusterfs", "fuse.cephfs",
                       "virtiofs"})
# The events asked of watchdog's observers. Leaving out opened / accessed /
# closed-without-writing keeps the kernel from queueing three events per file the store
# itself reads during a scan (at 100k files that flood made a scan five times slower).
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent, FileMovedEvent,
    DirMovedEvent, FileModifiedEvent, FileClosedEvent, FileAttribEvent, DirAttribEvent]
# watchdog event type -> the inotify(7) bits it stands for (source path, destination path)
_BITS = {"created": (IN_CREATE, 0), "deleted": (IN_DELETE, 0),
         "moved": (IN_MOVED_FROM, IN_MOVED_TO),
         "modified": (IN_MODIFY, 0), "closed": (IN_CLOSE_WRITE, 0),
         "attrib": (IN_ATTRIB, 0)}

READ, IGNORED, K8S = 0, 1, 2


def classify(rel: str | bytes) -> int:
    """Whether an event's path (relative to the store) is READ, IGNORED, or a Kubernetes
    `..`-name, K8S (a full rescan); the rules of `curvecert.store.files.is_ignored_name`."""
    b = os.fsencode(rel)
    for part in b.split(b"/"):
        if (not part or part[0] == 0x2E or part.endswith(SKIP_SUFFIXES)
                or (len(part) > 1 and part[0] == 0x23 and part[-1] == 0x23)):
            return K8S if part.startswith(b"..") else IGNORED
    return READ


def filesystem_type(path: str) -> str | None:
    """The type of the file system holding `path`, from /proc/self/mountinfo (Linux)."""
    try:
        real = os.path.realpath(path)
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    best, fstype = -1, None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > best:
            best, fstype = len(mount), right.split()[0]
    return fstype


class _OverflowSpy(logging.Filter):
    """Sees watchdog's "Inotify queue overflowed" warning and tells the watches concerned.

    When the kernel's inotify queue overflows (`fs.inotify.max_queued_events`, 16,384 by
    default: a burst of a few thousand files is enough), events are lost and watchdog
    only logs it. A lost event may be a revocation, so every watch below the named path
    asks its owner for a full rescan. A logging filter is the one hook watchdog offers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watches: set[DirectoryWatch] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Inotify queue overflowed"):
            for watch in list(self.watches):
                watch.on_overflow()
        return True


_SPY = _OverflowSpy()
for _name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
    logging.getLogger(_name).addFilter(_SPY)


class _Handler(FileSystemEventHandler):
    """Hands each watchdog event to the callback as a one-event batch (watchdog's thread)."""

    def __init__(self, directory: str, callback: Callable[[Batch], None]):
        self._root = os.fsencode(directory)
        self._callback = callback

    def dispatch(self, event: FileSystemEvent) -> None:
        bits = _BITS.get(event.event_type)
        if bits is None or (event.event_type == "modified" and event.is_directory):
            return  # opened/closed_no_write, or a directory "modified" (a child changed)
        isdir = IN_ISDIR if event.is_directory else 0
        paths: dict[bytes, int] = {}
        root_event = False
        for raw, bit in ((event.src_path, bits[0]), (event.dest_path, bits[1])):
            if not raw or not bit:
                continue
            path = os.path.normpath(os.fsencode(raw))
            if path == self._root and bit & (IN_DELETE | IN_MOVED_FROM):
                root_event = True
            else:
                paths[path] = paths.get(path, 0) | bit | isdir
        if paths or root_event:
            self._callback((paths, root_event))


class DirectoryWatch:
    """One recursive watch on a directory, re-creatable when the directory is replaced.

    `poll`: True forces polling, False forces inotify (no fallback), None picks inotify
    and falls back to polling. `stopping()` is consulted before starting an observer, so a
    watch is never started after its owner began to shut down. `callback(batch)` gets the
    changes (see `Batch`); `overflow()` is called when the kernel dropped events. Both run
    in the reader's thread.
    """

    def __init__(self, directory: str, callback: Callable[[Batch], None], *,
                 poll: bool | None, poll_interval: float, stopping: Callable[[], bool],
                 overflow: Callable[[], None] | None = None):
        """Configure the watch; nothing runs until `start()`."""
        self.on_overflow = overflow or (lambda: None)
        self.directory = directory
        self.poll_interval = poll_interval
        self.polling = bool(poll)
        self.observer: Any = None
        self.watched_id: tuple[int, int] | None = None
        self._poll = poll
        self._stopping = stopping
        self._lock = threading.Lock()
        self._callback = callback
        self._handler = _Handler(directory, callback)

    def choose_mode(self) -> None:
        """Poll from the start when the directory is on a network file system."""
        if self._poll is None and not self.polling:
            fstype = filesystem_type(self.directory)
            if fstype in REMOTE_FS:
                _logger.info("%s is on %s, where inotify misses remote changes; polling every "
                             "%.1fs", self.directory, fstype, self.poll_interval)
                self.polling = True

    def start(self) -> None:
        """Start an observer on the directory; `watched_id` says which directory it watches."""
        with self._lock:
            self.watched_id = None
            if self._stopping():
                return
            try:
                st = os.stat(self.directory)
            except OSError:
                return
            if not stat.S_ISDIR(st.st_mode):
                return
            observer = None
            if not self.polling:
                try:
                    observer = self._launch(None)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                        return  # gone again; the next check retries
                    if self._poll is False:
                        _logger.error("cannot watch %s: %s; only the periodic rescan will "
                                      "see changes", self.directory, exc)
                        self.watched_id = (st.st_dev, st.st_ino)
                        return
                    hint = (" (raise fs.inotify.max_user_watches / max_user_instances)"
                            if exc.errno in _LIMIT_ERRORS else "")
                    _logger.warning("cannot watch %s with inotify: %s%s; falling back to "
                                    "polling every %.1fs", self.directory,
                                    exc.strerror or exc, hint, self.poll_interval)
                    self.polling = True
            # polling: no observer; the owner rescans every `poll_interval` seconds
            self.observer = observer
            _SPY.watches.add(self)
            self.watched_id = (st.st_dev, st.st_ino)

    def _launch(self, observer: Any) -> Any:
        """Start `observer` (None: the native one, this module's reader on Linux)."""
        if observer is None and available():
            reader = InotifyReader(self.directory, self._callback, self.on_overflow)
            reader.start()
            return reader
        if observer is None:
            observer = Observer()
        try:
            observer.schedule(self._handler, self.directory, recursive=True,
                              event_filter=_EVENT_FILTER)
            observer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                observer.stop()
                if observer.is_alive():
                    observer.join(5.0)
            raise
        return observer

    def alive(self) -> bool:
        """False when an observer was started and its thread has died or given up since."""
        observer = self.observer
        return observer is None or (observer.is_alive()
                                    and not getattr(observer, "failed", False))

    def stop(self, timeout: float) -> None:
        """Stop the observer (if any) and join its thread within `timeout` seconds."""
        with self._lock:
            observer, self.observer = self.observer, None
            _SPY.watches.discard(self)
            self.watched_id = None
        if observer is None:
            return
        try:
            observer.stop()
            if observer.is_alive() and observer is not threading.current_thread():
                observer.join(timeout)
        except Exception:  # a dying observer must not stop us from shutting down
            _logger.debug("stopping the file observer failed", exc_info=True)
