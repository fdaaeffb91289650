"""A lean recursive inotify reader for the store: whole buffers, deduplicated, in one pass.

Why not watchdog's observer on Linux: a revocation is one IN_DELETE, and during a burst of
20,000 other files it sits behind tens of thousands of events in the kernel's queue.
watchdog turns each of them into Python objects, queues them through two threads and calls
the handler once per event, about 30 µs each; the deletion was seen up to half a second
late, and a burst faster than that pipeline overflowed the kernel's queue (16,384 events by
default, `fs.inotify.max_queued_events`), which costs a full rescan (issue 11 §6).

This reader asks the kernel for everything queued in one `read(2)` of up to 1 MiB, walks
the buffer once, keeps one entry per (directory, name) with the union of its event bits,
and hands the whole batch to one callback. The store then looks for trusted paths in the
batch before anything else, so a deletion is acted on within one buffer of events however
many are queued behind it. Event layout and bits: inotify(7).

Linux only: `available()` says whether the C library has inotify; otherwise the caller uses
watchdog's platform observer. Limits (EMFILE from `inotify_init1`, ENOSPC from
`inotify_add_watch`) are raised as `OSError` so the caller can fall back to polling.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable, Iterable

__all__ = ["WATCH_MASK", "Batch", "InotifyReader", "available", "fold"]

_logger = logging.getLogger(__name__)

# inotify(7) event bits
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

#: What can change what a store trusts: contents, modes, names. Opens, reads and
#: close-without-write are left out, so the store's own reads queue nothing.
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
              | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_SELF = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT
_SPECIAL = IN_Q_OVERFLOW | IN_IGNORED | _SELF
_TREE = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE
#: A directory that went away (or cannot be entered) between the event and the watch.
_VANISHED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES})
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
#: One read takes up to this many bytes: a full default queue of short names fits.
_READ_SIZE = 1 << 20

#: One delivery: `(paths, root_event)`. `paths` maps each changed absolute path (bytes)
#: to the union of its inotify bits; `root_event` is True when the watched directory
#: itself was deleted, moved or unmounted.
Batch = tuple[dict[bytes, int], bool]

_libc: ctypes.CDLL | None = None


def fold(buf: bytes) -> tuple[dict[int, dict[bytes, int]], list[tuple[int, int]]]:
    """Decode a buffer of inotify(7) records: `(per_dir, special)`.

    `per_dir` maps each watch descriptor to `{name: union of its event bits}` (the
    empty name: the watched directory itself); `special` lists `(wd, bits)` of queue
    overflows, removed watches and events on a watched directory itself (deleted, moved,
    unmounted), in order. Pure; a truncated last record is ignored, never an error.
    Cost: about a microsecond per record, the reason this is one flat loop.
    """
    unpack = _HEADER.unpack_from
    per_dir: dict[int, dict[bytes, int]] = {}
    special: list[tuple[int, int]] = []
    end, off = len(buf), 0
    while off + 16 <= end:
        wd, mask, _cookie, length = unpack(buf, off)
        start, off = off + 16, off + 16 + length
        if off > end:
            break
        if mask & _SPECIAL:
            special.append((wd, mask))
            continue
        name = buf[start:off].rstrip(b"\0")
        names = per_dir.get(wd)
        if names is None:
            names = per_dir[wd] = {}
        names[name] = names.get(name, 0) | mask
    return per_dir, special


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            # the process's own symbols: the C library is loaded already (no subprocess,
            # unlike ctypes.util.find_library); no inotify there -> not Linux
            lib = ctypes.CDLL(None, use_errno=True)
            for fn, argtypes in (("inotify_init1", [ctypes.c_int]),
                                 ("inotify_add_watch", [ctypes.c_int, ctypes.c_char_p,
                                                        ctypes.c_uint32]),
                                 ("inotify_rm_watch", [ctypes.c_int, ctypes.c_int])):
                func = getattr(lib, fn)
                func.argtypes, func.restype = argtypes, ctypes.c_int
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


def available() -> bool:
    """True when this platform's C library offers inotify (Linux)."""
    return _load() is not None


def _check(result: int, what: str, path: bytes | None = None) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}",
                      os.fsdecode(path) if path is not None else None)
    return result


class InotifyReader:
    """Watch `directory` and every real sub-directory below it; deliver batches.

    `deliver(batch)` runs in the reader's thread once per `read(2)`, with the changes of
    that buffer (see `Batch`). `overflow()` runs there when the kernel dropped events
    (IN_Q_OVERFLOW), and once more when the thread gives up (`failed`: `deliver` raised,
    or a new sub-directory could not be watched, e.g. ENOSPC): the caller must then
    assume anything may have changed, and start a new reader. Symbolic links to
    directories below the root are not followed (the scanner does not follow them either).

    Raises `OSError` from `start()` when inotify cannot be set up (EMFILE: too many
    instances; ENOSPC: too many watches; ENOENT: the directory is gone).
    """

    def __init__(self, directory: str, deliver: Callable[[Batch], None],
                 overflow: Callable[[], None]):
        """Configure the reader; nothing is opened until `start()`."""
        self.directory = os.fsencode(os.path.abspath(directory))
        self._deliver = deliver
        self._overflow = overflow
        self._fd = -1
        self._wake_r = self._wake_w = -1
        self._paths: dict[int, bytes] = {}      # watch descriptor -> directory path
        self._root_wd = -1
        self._thread: threading.Thread | None = None
        self._fd_lock = threading.Lock()        # stop() never writes to a reused descriptor
        #: True once the thread has given up (an error, or a directory it could not watch)
        self.failed = False

    # --- lifecycle (the observer interface DirectoryWatch expects) --------------------------

    def start(self) -> None:
        """Open the inotify instance, add the watches, start the reader thread."""
        lib = _load()
        if lib is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this platform")
        self._fd = _check(lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")
        try:
            self._root_wd = self._add(self.directory, root=True)
            self._add_tree(self.directory)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._thread = threading.Thread(target=self._run, name="curvecert-inotify",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self._close()
            raise

    def stop(self) -> None:
        """Ask the thread to end (it closes the descriptors on its way out)."""
        with self._fd_lock:
            if self._wake_w >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")
                return
        if self._thread is None:
            self._close()

    def is_alive(self) -> bool:
        """True while the reader thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` seconds for the reader thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    # --- watches ----------------------------------------------------------------------------

    def _add(self, path: bytes, *, root: bool = False) -> int:
        lib = _load()
        assert lib is not None
        mask = WATCH_MASK if root else WATCH_MASK | IN_DONT_FOLLOW
        wd = _check(lib.inotify_add_watch(self._fd, path, mask), "inotify_add_watch", path)
        self._paths[wd] = path
        return wd

    def _add_tree(self, top: bytes) -> None:
        """Watch every real directory below `top` (not `top` itself).

        A directory that vanished or cannot be read is skipped (the scanner reports it);
        any other error, a limit above all (ENOSPC: `fs.inotify.max_user_watches`), is
        raised: a directory nobody watches would hide a revocation.
        """
        stack = [top]
        while stack:
            here = stack.pop()
            try:
                with os.scandir(here) as it:
                    subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue  # gone or unreadable; the scanner reports it
            for sub in subdirs:
                try:
                    self._add(sub)
                except OSError as exc:
                    if exc.errno in _VANISHED:
                        continue
                    raise
                stack.append(sub)

    def _forget_tree(self, top: bytes) -> None:
        """Drop the watches on `top` and below (moved away or deleted)."""
        lib = _load()
        assert lib is not None
        below = top + b"/"
        for wd, path in list(self._paths.items()):
            if wd != self._root_wd and (path == top or path.startswith(below)):
                del self._paths[wd]
                lib.inotify_rm_watch(self._fd, wd)

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if self._wake_r in ready:
                    return
                self._drain()
        except OSError as exc:
            self.failed = True
            _logger.warning("%s: inotify: %s; starting the watch again",
                            os.fsdecode(self.directory), exc)
        except Exception:
            self.failed = True
            _logger.exception("the inotify reader of %s failed; starting the watch again",
                              os.fsdecode(self.directory))
        finally:
            self._close()
        if self.failed:  # the owner re-reads everything and re-creates the watch
            self._overflow()

    def _drain(self) -> None:
        """Read and deliver until the queue is empty; one delivery per buffer."""
        while True:
            try:
                buf = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not buf:
                return
            self._deliver(self.parse(buf))

    def parse(self, buf: bytes) -> Batch:
        """One buffer of inotify events as a `Batch`, keeping the watch table in step.

        Sub-directories named in the buffer are re-synchronised with the disk as it is
        now (watches dropped, then added again if the directory exists), so the outcome
        does not depend on the order of creations, moves and deletions in the buffer.
        """
        per_dir, special = fold(buf)
        paths = self._paths
        root_event = False
        for wd, mask in special:
            if mask & IN_Q_OVERFLOW:
                self._overflow()
            elif mask & IN_IGNORED:
                if wd != self._root_wd:
                    paths.pop(wd, None)
            elif wd == self._root_wd:
                root_event = True
        for wd, names in per_dir.items():
            base = paths.get(wd)
            if base is None:
                continue
            for name, mask in names.items():
                if mask & IN_ISDIR and mask & _TREE:
                    path = base + b"/" + name
                    self._forget_tree(path)
                    try:
                        self._add(path)
                    except OSError as exc:
                        if exc.errno in _VANISHED:
                            continue  # gone again; its parent reported it
                        raise
                    self._add_tree(path)
        batch: dict[bytes, int] = {}
        for wd, names in per_dir.items():
            base = paths.get(wd)
            if base is None:
                continue  # removed meanwhile; its parent reported the directory itself
            prefix = base + b"/"
            for name, mask in names.items():
                batch[prefix + name if name else base] = mask
        return batch, root_event

    def _close(self) -> None:
        with self._fd_lock:
            for attr in ("_fd", "_wake_r", "_wake_w"):
                fd = getattr(self, attr)
                if fd >= 0:
                    setattr(self, attr, -1)
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._paths.clear()

    def watched(self) -> Iterable[bytes]:
        """The directories watched now (for diagnostics and tests)."""
        return list(self._paths.values())
