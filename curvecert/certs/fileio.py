"""Atomic, permission-exact file writes.

Every file curvecert writes goes through `atomic_write`: the bytes go to a temporary file in
the target directory, created with the final mode by `os.open(..., 0o600)` (so a secret is
never readable by others, not even for a moment, and the process umask is never touched),
flushed with fsync, then moved into place. Without `overwrite` the move is `os.link`, which
fails if the target appeared meanwhile, so nothing is ever replaced by accident; with it,
`os.replace` swaps the file in one step and readers see the old or the new bytes, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

from curvecert.errors import FileExists, OperationalError

__all__ = ["PRIVATE_MODE", "PUBLIC_MODE", "abandon_write", "atomic_write", "commit_write",
           "fsync_dir", "prepare_write", "read_bytes"]

#: Secret certificates and password files: owner read/write only.
PRIVATE_MODE = 0o600
#: Public certificates, as CZMQ writes them under the usual umask.
PUBLIC_MODE = 0o644


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry change (a rename or link) to disk, where the OS allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int,
                 overwrite: bool = False) -> None:
    """Write `data` to `path` with exactly `mode`, atomically; refuse to replace unless told.

    Raises `FileExists` when `path` exists and `overwrite` is false, and `OperationalError`
    for any I/O failure (a full disk, a read-only directory); the old file is then intact.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not overwrite and os.path.lexists(path):
        raise FileExists(path)
    tmp = prepare_write(path, data, mode=mode)
    commit_write(tmp, path, overwrite=overwrite)
    fsync_dir(directory)


def prepare_write(path: str | os.PathLike[str], data: bytes, *, mode: int) -> str:
    """The first half of `atomic_write`: `data` in a hidden temporary next to `path`.

    The temporary (`.NAME.<random>.tmp`, which the store scan skips) has exactly `mode`
    from its first byte and is flushed with fsync; its path is returned for
    `commit_write` (or `abandon_write`). Writing several files this way before moving
    any of them into place means a full disk fails before anything is replaced.
    Raises `OperationalError`; nothing is left behind then.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     mode)
    except OSError as exc:
        raise OperationalError(f"{path}: cannot write: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away; set exactly `mode`
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OperationalError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return tmp


def commit_write(tmp: str, path: str | os.PathLike[str], *, overwrite: bool) -> None:
    """The second half of `atomic_write`: move `tmp` to `path` in one step.

    With `overwrite`, `os.replace`; without, a no-clobber link that raises `FileExists`
    if `path` appeared meanwhile. On any failure `tmp` is removed and the old `path` is
    untouched. The caller flushes the directory (`fsync_dir`) afterwards.
    """
    path = os.fspath(path)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    except FileExists:
        _unlink_quietly(tmp)
        raise
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OperationalError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def abandon_write(tmp: str) -> None:
    """Remove a temporary from `prepare_write` that will not be committed (never raises)."""
    _unlink_quietly(tmp)


def _link_no_clobber(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExists(path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: check, then rename (a small race remains).
        if os.path.lexists(path):
            raise FileExists(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def read_bytes(path: str | os.PathLike[str], *, limit: int = 1 << 20) -> bytes:
    """Read a small file whole, with a clear `OperationalError` (and a size cap)."""
    path = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as fh:
            kind = os.fstat(fd).st_mode
            if not stat.S_ISREG(kind):
                what = ("a directory" if stat.S_ISDIR(kind) else
                        "a FIFO" if stat.S_ISFIFO(kind) else "not a regular file")
                raise OperationalError(f"{path}: is {what}, not a certificate file"
                                       if what != "not a regular file" else f"{path}: {what}")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise OperationalError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise OperationalError(f"{path}: larger than {limit} bytes; not a certificate")
    return data
