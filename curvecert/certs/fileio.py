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

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_MODE", "PUBLIC_DIR_MODE", "PUBLIC_MODE",
           "abandon_write", "atomic_write", "commit_write", "ensure_directory", "file_kind",
           "fsync_dir", "prepare_write", "read_bytes"]

#: Secret certificates and password files: owner read/write only.
PRIVATE_MODE = 0o600
#: Public certificates, as CZMQ writes them under the usual umask.
PUBLIC_MODE = 0o644
#: Directories curvecert creates for stores (readable by the daemon's user, written by owner).
PUBLIC_DIR_MODE = 0o755
#: Directories curvecert creates for secrets (certificate pairs, password files, runtime).
PRIVATE_DIR_MODE = 0o700


def ensure_directory(path: str | os.PathLike[str], *, mode: int) -> None:
    """Create `path` and its missing parents with exactly `mode`, whatever the umask.

    `os.mkdir(p, mode)` can only lose bits to the umask, never gain any, so no directory
    is more open than `mode` even for a moment; a `chmod` then restores bits the umask
    took. Existing directories are left as they are. Raises `OperationalError`.
    """
    path = os.path.abspath(os.fspath(path))
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            if os.path.isdir(d):
                continue  # created meanwhile by someone else: leave its mode alone
            raise OperationalError(f"{d}: exists and is not a directory") from None
        except OSError as exc:
            raise OperationalError(f"{d}: cannot create directory: "
                                   f"{exc.strerror or exc}") from exc
        try:
            os.chmod(d, mode)
        except OSError as exc:
            raise OperationalError(f"{d}: cannot set mode {mode:04o}: "
                                   f"{exc.strerror or exc}") from exc


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


def keep_old(path: str | os.PathLike[str]) -> str | None:
    """A hidden second name for the file at `path` before it is replaced, or None if absent.

    The copy is a hard link (`.NAME.<random>.old.tmp`, the same bytes, mode and owner, no
    data copied), or, where the file system has no hard links, a byte copy with the same
    mode. `restore_old` puts it back after a failed replacement; `drop_old` removes it.
    Raises `OperationalError` when no copy can be made: then nothing may be replaced.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return None
    directory, base = os.path.split(os.path.abspath(path))
    keep = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.old.tmp")
    try:
        os.link(path, keep, follow_symlinks=False)
        return keep
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK):
            raise OperationalError(f"{path}: cannot keep the old file: "
                                   f"{exc.strerror or exc}") from exc
    try:
        st = os.lstat(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise OperationalError(f"{path}: cannot keep the old file: {exc.strerror or exc}") \
            from exc
    tmp = prepare_write(keep, data, mode=stat.S_IMODE(st.st_mode))
    os.replace(tmp, keep)
    return keep


def restore_old(keep: str | None, path: str | os.PathLike[str]) -> bool:
    """Put `keep_old`'s copy back at `path` (or, for None, remove what is at `path`).

    Used to undo the first half of a two-file replacement. Returns True when `path` is
    as it was; never raises.
    """
    try:
        if keep is None:
            os.unlink(path)
        else:
            os.replace(keep, path)
    except OSError:
        return False
    return True


def drop_old(keep: str | None) -> None:
    """Remove `keep_old`'s copy once the replacement stands (never raises)."""
    if keep is not None:
        _unlink_quietly(keep)


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


#: `st_mode` file types named in "not a regular file" errors.
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What an `st_mode` is, in words: `a FIFO`, `a directory`, ... (`a regular file`)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bytes(path: str | os.PathLike[str], *, limit: int = 1 << 20,
               what: str = "a certificate") -> bytes:
    """Read a small regular file whole: never blocks on a FIFO or a device, size-capped.

    The file is opened with `O_NONBLOCK` (opening a FIFO with no writer returns at once
    instead of waiting for one) and checked with `fstat` on the open descriptor before a
    byte is read, so what is checked is what is read. A symbolic link the caller named is
    followed (Kubernetes mounts secrets through links); what it points at must be a
    regular file. Raises `OperationalError` naming `path`: cannot open, not a regular file
    (directory, FIFO, socket, device), or more than `limit` bytes (then "not `what`").
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        try:  # a socket cannot be opened at all (ENXIO): say what it is
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise OperationalError(f"{path}: is {file_kind(mode)}, not a regular file") \
                from exc
        raise OperationalError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OperationalError(f"{path}: is {file_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise OperationalError(f"{path}: larger than {limit} bytes; not {what}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise OperationalError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise OperationalError(f"{path}: larger than {limit} bytes; not {what}")
    return data
