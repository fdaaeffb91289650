"""PLAIN password files (Woodhouse): CZMQ's `user=password` lines plus scrypt-hashed entries.

Why a new reader instead of CZMQ's: zauth loads the file with `zhashx_load`, which keeps
the `\\r` of CRLF files inside passwords, skips malformed lines silently, notices changes
only when the mtime second changes and the file is over 5 s old, and compares in clear.
This module keeps the file format CZMQ reads (one `user=password` per line, `#` comments,
split at the first `=`, no trimming) and adds:

- hashed entries, written by `curvecert passwd add` (formats in `curvecert.auth.hashing`).
  CZMQ cannot read these: use plaintext entries for a file zauth must share;
- strict parsing: a non-blank, non-comment line without `=`, an empty user name, a user
  name with surrounding blanks (`admin = x` would mean user `"admin "` to CZMQ), a
  duplicate user or a bad hash raise `PasswordFileError` naming `path:line` — never the
  line's text, which may hold a password. CRLF line ends are accepted;
- constant-time checks and a bounded cache of successful hashed checks
  (`curvecert.auth.pwtable`);
- cheap watching: at most every `check_interval` seconds, one `os.stat`; the file is
  reloaded when (inode, size, mtime_ns, ctime_ns) changed. A reload that fails turns the
  file "unusable": every check is denied (fail closed) and the error is logged, until a
  later change loads cleanly.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

from curvecert.auth.hashing import DEFAULT_SCHEME, is_hash, new_entry, parse_hash
from curvecert.auth.pwtable import MAX_SHAPES, CheckResult, Entry, PasswordTable
from curvecert.certs.fileio import PRIVATE_MODE, atomic_write
from curvecert.errors import OperationalError, PasswordFileError

__all__ = [
    "MAX_FILE_SIZE",
    "PasswordFile",
    "parse",
    "read_regular",
    "validate_password",
    "validate_user",
]

_logger = logging.getLogger(__name__)

_MAX_LINE = 4096
# ZMTP PLAIN carries user name and password with one length octet each.
_MAX_FIELD = 255


def validate_user(user: str) -> str:
    """Return `user` if it can be stored in a password file, else raise `PasswordFileError`."""
    if not user:
        raise PasswordFileError("user name may not be empty")
    if "=" in user or "\n" in user or "\r" in user or "\0" in user:
        raise PasswordFileError("user name may not contain '=', a newline or NUL")
    if user != user.strip() or user.startswith("#"):
        raise PasswordFileError("user name may not start with '#' or with/end in blanks")
    if len(user.encode("utf-8")) > _MAX_FIELD:
        raise PasswordFileError(f"user name is longer than {_MAX_FIELD} bytes")
    return user


def validate_password(password: str) -> str:
    """Return `password` if PLAIN can carry it, else raise `PasswordFileError`."""
    if not password:
        raise PasswordFileError("password may not be empty")
    if "\n" in password or "\r" in password or "\0" in password:
        raise PasswordFileError("password may not contain a newline or NUL")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:  # surrogates: bytes a terminal could not decode
        raise PasswordFileError("password is not valid UTF-8 text") from None
    if size > _MAX_FIELD:
        raise PasswordFileError(f"password is longer than {_MAX_FIELD} bytes (PLAIN limit)")
    return password



def _decode_line(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > _MAX_LINE:
        raise ValueError(f"line longer than {_MAX_LINE} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def _is_comment(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def parse(data: bytes, *, path: str | os.PathLike[str] | None = None,
          cache_ttl: float = 60.0, cache_size: int = 1024) -> PasswordTable:
    """Parse password-file bytes into a `PasswordTable`; errors name `path:line` only."""
    where = os.fspath(path) if path is not None else "<passwords>"
    entries: dict[str, Entry] = {}
    shapes: set[tuple[object, ...]] = set()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = _decode_line(raw)
            if _is_comment(line):
                continue
            user, sep, value = line.partition("=")
            if not sep:
                raise ValueError("expected user=password")
            validate_user(user)
            if user in entries:
                raise ValueError(f"user {user!r} appears twice")
            if is_hash(value):
                entry = parse_hash(value)
                shapes.add(entry.shape)
                if len(shapes) > MAX_SHAPES:
                    raise ValueError(f"more than {MAX_SHAPES} different hash schemes or cost "
                                     "parameters in one file (re-add old entries to unify "
                                     "them)")
                entries[user] = entry
            else:
                entries[user] = value.encode("utf-8")
        except ValueError as exc:  # PasswordFileError and UnicodeDecodeError included
            raise PasswordFileError(f"{where}:{number}: {exc}") from None
    return PasswordTable(entries, cache_ttl=cache_ttl, cache_size=cache_size)


#: Password files larger than this are refused (a real one is a few KiB).
MAX_FILE_SIZE = 16 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: str, *, missing_ok: bool = False
                 ) -> tuple[os.stat_result, bytes] | None:
    """`(fstat, bytes)` of the regular file at `path` (a symlink to one is followed);
    None when it is missing and `missing_ok`.

    Never blocks: a FIFO, socket or device is refused before and after opening (opened
    with `O_NONBLOCK`, checked with `fstat`, so a file swapped for a FIFO in between
    cannot hang the reader). Raises `OperationalError` naming `path` (missing,
    unreadable, not a regular file, larger than `MAX_FILE_SIZE`).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise OperationalError(f"{path}: {_kind(st.st_mode)}, not a regular file; "
                                   "refusing to read it as a password file")
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise OperationalError(f"{path}: password file does not exist") from None
    except OSError as exc:
        raise OperationalError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OperationalError(f"{path}: {_kind(st.st_mode)}, not a regular file; "
                                   "refusing to read it as a password file")
        if st.st_size > MAX_FILE_SIZE:
            raise OperationalError(f"{path}: larger than {MAX_FILE_SIZE >> 20} MiB; refusing "
                                   "to read it as a password file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_SIZE:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_SIZE:
            raise OperationalError(f"{path}: larger than {MAX_FILE_SIZE >> 20} MiB; refusing "
                                   "to read it as a password file")
        return st, b"".join(chunks)
    except OSError as exc:
        raise OperationalError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


_Signature = tuple[int, int, int, int]


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PasswordFile:
    """A watched password file: `check(user, password)` always answers from a current table.

    The constructor loads the file and raises `PasswordFileError` (malformed) or
    `OperationalError` (unreadable; missing unless `missing_ok`, which gives an empty table).
    Later changes are picked up within `check_interval` seconds of the next check; a
    change that does not load makes every check fail closed until it is fixed.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0,
                 missing_ok: bool = False, cache_ttl: float = 60.0,
                 cache_size: int = 1024) -> None:
        """Load `path` now; see the class docstring for the watching rules."""
        self.path = os.fspath(path)
        self.check_interval = check_interval
        self._missing_ok = missing_ok
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._sig: _Signature | None = None
        self._table: PasswordTable | None = None
        self._error: str | None = None
        self.generation = 0
        self._load(raise_errors=True)

    def __repr__(self) -> str:
        state = "unusable" if self._table is None else f"{len(self._table.entries)} users"
        return f"<PasswordFile {self.path!r} {state}>"

    # --- loading ------------------------------------------------------------------------

    def _read(self) -> tuple[_Signature | None, bytes]:
        got = read_regular(self.path, missing_ok=self._missing_ok)
        if got is None:
            return None, b""
        st, data = got
        if st.st_mode & 0o077 and any(not _is_comment(line) and "=" in line
                                      and not is_hash(line.partition("=")[2])
                                      for line in data.decode("utf-8", "replace").splitlines()):
            _logger.warning("%s: holds plaintext passwords and is readable by group/others "
                            "(mode %o); chmod 600 it", self.path, st.st_mode & 0o777)
        return _signature(st), data

    def _load(self, *, raise_errors: bool) -> None:
        sig: _Signature | None = None
        try:
            sig, data = self._read()
            table = parse(data, path=self.path, cache_ttl=self._cache_ttl,
                          cache_size=self._cache_size)
        except (PasswordFileError, OperationalError) as exc:
            if raise_errors:
                raise
            self._table, self._error = None, str(exc)
            self._sig = sig if sig is not None else self._stat_signature()
            self.generation += 1
            _logger.error("password file reload failed, denying every PLAIN login until "
                          "it is fixed: %s", exc)
            return
        self._table, self._error, self._sig = table, None, sig
        self.generation += 1
        if not raise_errors:
            _logger.info("%s: reloaded, %d users", self.path, len(table.entries))

    def _stat_signature(self) -> _Signature | None:
        try:
            return _signature(os.stat(self.path))
        except OSError:
            return None

    def refresh(self, *, force: bool = False) -> bool:
        """Re-stat the file (at most every `check_interval` s) and reload it if it changed.

        Returns True when a reload happened. Called by `check`; call it with `force=True`
        after writing the file yourself.
        """
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        if not self._lock.acquire(blocking=force):
            return False  # another thread is already checking
        try:
            self._next_check = now + self.check_interval
            if not force and self._stat_signature() == self._sig:
                return False
            self._load(raise_errors=False)
            return True
        finally:
            self._lock.release()

    # --- queries ------------------------------------------------------------------------

    @property
    def error(self) -> str | None:
        """Why the file is unusable (every check denied), or None when it loaded."""
        return self._error

    def quick(self, user: str, password: bytes) -> CheckResult | None:
        """The answer when it needs no KDF (`PasswordTable.quick`; an unusable file is
        `UNAVAILABLE`), else None: then `check` runs the KDF."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        table = self._table
        if table is None:
            return CheckResult.UNAVAILABLE
        return table.quick(user, password)

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one PLAIN login against the current file contents."""
        if time.monotonic() >= self._next_check:  # inlined fast path of refresh()
            self.refresh()
        table = self._table
        if table is None:
            return CheckResult.UNAVAILABLE
        return table.check(user, password)

    def users(self) -> list[str]:
        """User names in file order (after a refresh)."""
        return self.table().users()

    def table(self) -> PasswordTable:
        """The current table (after a refresh); `PasswordFileError` when unusable."""
        self.refresh()
        table = self._table
        if table is None:
            raise PasswordFileError(self._error or f"{self.path}: unusable")
        return table

    # --- changes ------------------------------------------------------------------------

    def _lines(self) -> list[str]:
        """The file's lines as written, each still ending in `\r` where its line end was
        CRLF, so a rewrite keeps untouched lines byte for byte (a password may itself end
        in `\r`: `pw\r\r\n` in a CRLF file)."""
        got = read_regular(self.path, missing_ok=self._missing_ok)
        if got is None:
            return []
        data = got[1]
        parse(data, path=self.path)  # refuse to rewrite a file we cannot read back
        lines = data.decode("utf-8").split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        return lines

    def _write(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        atomic_write(self.path, data, mode=PRIVATE_MODE, overwrite=True)
        self.refresh(force=True)

    def add(self, user: str, password: str, *, force: bool = False,
            plaintext: bool = False, scheme: str = DEFAULT_SCHEME) -> None:
        """Add `user` with `password` hashed in `scheme` (`"argon2id"`, the default, or
        `"scrypt"`; `plaintext=True`: CZMQ-readable clear text); replacing an existing
        user needs `force`. Writes atomically, mode 0600, keeping every other line
        (comments, line ends) as it was.
        """
        validate_user(user)
        validate_password(password)
        if plaintext and is_hash(password):
            raise PasswordFileError("a clear-text password may not start with $scrypt$ or "
                                    "$argon2 (it would be read as a hash)")
        lines = self._lines()
        if not force and user in _users_of(lines):
            raise PasswordFileError(f"{self.path}: user {user!r} already exists "
                                    "(use --force to replace it)")
        entry = f"{user}={password if plaintext else new_entry(password, scheme)}"
        crlf = 2 * sum(raw.endswith("\r") for raw in lines) > len(lines)
        out: list[str] = []
        replaced = False
        for raw in lines:
            if _user_of(raw) == user:
                if not replaced:
                    out.append(entry + ("\r" if raw.endswith("\r") else ""))
                    replaced = True
                continue
            out.append(raw)
        if not replaced:
            out.append(entry + ("\r" if crlf else ""))
        self._write(out)

    def remove(self, user: str) -> None:
        """Remove `user`; raises `PasswordFileError` if it is not in the file."""
        lines = self._lines()
        out = [raw for raw in lines if _user_of(raw) != user]
        if len(out) == len(lines):
            raise PasswordFileError(f"{self.path}: no user {user!r}")
        self._write(out)


def _user_of(raw: str) -> str | None:
    """The user name an entry line (as written, maybe ending in `\r`) defines, or None."""
    line = raw[:-1] if raw.endswith("\r") else raw
    if _is_comment(line):
        return None
    name, sep, _ = line.partition("=")
    return name if sep else None


def _users_of(lines: list[str]) -> set[str]:
    return {u for u in map(_user_of, lines) if u is not None}

