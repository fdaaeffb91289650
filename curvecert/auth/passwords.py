"""PLAIN password files (Woodhouse): CZMQ's `user=password` lines plus scrypt-hashed entries.

Why a new reader instead of CZMQ's: zauth loads the file with `zhashx_load`, which keeps
the `\\r` of CRLF files inside passwords, skips malformed lines silently, notices changes
only when the mtime second changes and the file is over 5 s old, and compares in clear.
This module keeps the file format CZMQ reads (one `user=password` per line, `#` comments,
split at the first `=`, no trimming) and adds:

- hashed entries, written by `curvecert passwd add`:
  `user=$scrypt$n=16384,r=8,p=1$<salt>$<hash>` (standard base64 without padding, 16-byte
  salt, 32-byte `hashlib.scrypt` output). CZMQ cannot read these: use plaintext entries
  for a file zauth must share. A value that starts with `$scrypt$` is always a hash;
- strict parsing: a non-blank, non-comment line without `=`, an empty user name, a user
  name with surrounding blanks (`admin = x` would mean user `"admin "` to CZMQ), a
  duplicate user or a bad hash raise `PasswordFileError` naming `path:line` — never the
  line's text, which may hold a password. CRLF line ends are accepted;
- constant-time comparison (`hmac.compare_digest`) for both kinds of entry;
- cheap watching: at most every `check_interval` seconds, one `os.stat`; the file is
  reloaded when (inode, size, mtime_ns, ctime_ns) changed. A reload that fails turns the
  file "unusable": every check is denied (fail closed) and the error is logged, until a
  later change loads cleanly;
- a bounded cache of successful hashed checks. scrypt at n=16384 costs ~40 ms, so without
  it one authenticator thread verifies ~25 PLAIN logins per second. The cache maps
  (user, HMAC-SHA256(process-random key, password)) to an expiry time (`cache_ttl`, default
  60 s, at most `cache_size` entries). It lives in the loaded table, so a reload (a changed
  or removed password) drops it at once. Trade-off: for `cache_ttl` seconds a process
  memory dump holds a fast keyed digest of recently used passwords (the key sits in the
  same memory), which is weaker than scrypt; set `cache_ttl=0` to disable it. Failed
  checks are never cached: each pays the KDF, which also slows guessing. Unknown users
  are checked against a dummy hash when the file has hashed entries, so response time
  does not reveal which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from curvecert.certs.fileio import PRIVATE_MODE, atomic_write
from curvecert.errors import OperationalError, PasswordFileError

__all__ = [
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "CheckResult",
    "PasswordFile",
    "PasswordTable",
    "StaticPasswords",
    "hash_password",
    "parse",
    "validate_password",
    "validate_user",
]

_logger = logging.getLogger(__name__)

#: scrypt cost used for new entries: the interactive-login parameters from the scrypt paper
#: (about 16 MiB of memory and ~40 ms per check on our 2-core machine).
SCRYPT_N = 16384
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_LEN = 16
_HASH_LEN = 32
_PREFIX = "$scrypt$"
_PARAMS = re.compile(r"n=(\d+),r=(\d+),p=(\d+)\Z")
_MAX_LINE = 4096
# ZMTP PLAIN carries user name and password with one length octet each.
_MAX_FIELD = 255


class CheckResult(enum.Enum):
    """Outcome of a password check; `reason` is safe to log (it never holds a secret)."""

    OK = "ok"
    UNKNOWN_USER = "unknown user"
    BAD_PASSWORD = "wrong password"  # noqa: S105 - a reason, not a password
    UNAVAILABLE = "password file unusable"

    @property
    def reason(self) -> str:
        """A short, loggable explanation."""
        return self.value


# Enum member lookups cost ~0.1 us each; the per-login path uses these names.
_OK, _BAD, _UNKNOWN = CheckResult.OK, CheckResult.BAD_PASSWORD, CheckResult.UNKNOWN_USER


@dataclass(frozen=True, slots=True)
class _Scrypt:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, password: bytes) -> bool:
        got = hashlib.scrypt(password, salt=self.salt, n=self.n, r=self.r, p=self.p,
                             maxmem=_maxmem(self.n, self.r, self.p), dklen=len(self.digest))
        return hmac.compare_digest(got, self.digest)


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + (1 << 20)


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _parse_hash(value: str) -> _Scrypt:
    parts = value[len(_PREFIX):].split("$")
    if len(parts) != 3:
        raise ValueError("a hashed entry is $scrypt$n=N,r=R,p=P$SALT$HASH")
    m = _PARAMS.match(parts[0])
    if not m:
        raise ValueError("scrypt parameters must be n=N,r=R,p=P")
    n, r, p = (int(x) for x in m.groups())
    if n < 2 or n > (1 << 20) or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range (n a power of 2 up to 2^20, "
                         "r 1..32, p 1..16)")
    try:
        salt, digest = _b64decode(parts[1]), _b64decode(parts[2])
    except (binascii.Error, ValueError):
        raise ValueError("salt and hash must be base64") from None
    if len(salt) < 8 or not 16 <= len(digest) <= 64:
        raise ValueError("salt must be at least 8 bytes and the hash 16..64 bytes")
    return _Scrypt(n, r, p, salt, digest)


def hash_password(password: str | bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """A new `$scrypt$...` entry value for `password` (random 16-byte salt)."""
    raw = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(_SALT_LEN)
    digest = hashlib.scrypt(raw, salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p),
                            dklen=_HASH_LEN)
    return f"{_PREFIX}n={n},r={r},p={p}${_b64encode(salt)}${_b64encode(digest)}"


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
    if len(password.encode("utf-8")) > _MAX_FIELD:
        raise PasswordFileError(f"password is longer than {_MAX_FIELD} bytes (PLAIN limit)")
    return password


@dataclass
class PasswordTable:
    """An immutable-by-convention table `user -> entry` plus its private success cache.

    Entries are plaintext password bytes or parsed scrypt hashes. Build one with `parse`
    or `PasswordTable.from_mapping`; `check` is thread-safe.
    """

    entries: Mapping[str, bytes | _Scrypt]
    cache_ttl: float = 60.0
    cache_size: int = 1024
    _cache: dict[tuple[str, bytes], float] = field(default_factory=dict, repr=False)
    _cache_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dummy: _Scrypt | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        hashed = next((e for e in self.entries.values() if isinstance(e, _Scrypt)), None)
        if hashed is not None:
            # Same cost as a real entry, unknown password: unknown users take as long.
            self._dummy = _Scrypt(hashed.n, hashed.r, hashed.p, secrets.token_bytes(16),
                                  secrets.token_bytes(len(hashed.digest)))

    @classmethod
    def from_mapping(cls, passwords: Mapping[str, str | bytes], *, cache_ttl: float = 60.0,
                     cache_size: int = 1024) -> PasswordTable:
        """A table from `{user: password}`; values starting with `$scrypt$` are hashes."""
        entries: dict[str, bytes | _Scrypt] = {}
        for user, value in passwords.items():
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            if text.startswith(_PREFIX):
                try:
                    entries[user] = _parse_hash(text)
                except ValueError as exc:
                    raise PasswordFileError(f"user {user!r}: {exc}") from None
            else:
                entries[user] = text.encode("utf-8")
        return cls(entries, cache_ttl=cache_ttl, cache_size=cache_size)

    def users(self) -> list[str]:
        """User names in file order."""
        return list(self.entries)

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one login in constant time per entry kind; never raises for bad input."""
        entry = self.entries.get(user)
        if entry is None:
            if self._dummy is not None:
                self._dummy.matches(password)
            return _UNKNOWN
        if not isinstance(entry, _Scrypt):  # plaintext bytes
            return _OK if hmac.compare_digest(entry, password) else _BAD
        if self.cache_ttl <= 0:
            return CheckResult.OK if entry.matches(password) else CheckResult.BAD_PASSWORD
        key = (user, hmac.new(self._cache_key, password, hashlib.sha256).digest())
        now = time.monotonic()
        expiry = self._cache.get(key)
        if expiry is not None and expiry > now:
            return CheckResult.OK
        if not entry.matches(password):
            return CheckResult.BAD_PASSWORD
        with self._lock:
            if len(self._cache) >= self.cache_size:
                # Drop expired entries first, then the oldest (dicts keep insertion order).
                for k in [k for k, t in self._cache.items() if t <= now]:
                    del self._cache[k]
                while len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]
            self._cache[key] = now + self.cache_ttl
        return CheckResult.OK


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
    entries: dict[str, bytes | _Scrypt] = {}
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
            entries[user] = _parse_hash(value) if value.startswith(_PREFIX) \
                else value.encode("utf-8")
        except ValueError as exc:  # PasswordFileError and UnicodeDecodeError included
            raise PasswordFileError(f"{where}:{number}: {exc}") from None
    return PasswordTable(entries, cache_ttl=cache_ttl, cache_size=cache_size)


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
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read(16 << 20)
        except FileNotFoundError:
            if self._missing_ok:
                return None, b""
            raise OperationalError(f"{self.path}: password file does not exist") from None
        except OSError as exc:
            raise OperationalError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        if st.st_mode & 0o077 and any(not _is_comment(line) and "=" in line
                                      and "=" + _PREFIX not in line
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
        self.refresh()
        table = self._table
        if table is None:
            raise PasswordFileError(self._error or f"{self.path}: unusable")
        return table.users()

    # --- changes ------------------------------------------------------------------------

    def _lines(self) -> list[str]:
        """The file's lines as written, each still ending in `\r` where its line end was
        CRLF, so a rewrite keeps untouched lines byte for byte (a password may itself end
        in `\r`: `pw\r\r\n` in a CRLF file)."""
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(16 << 20)
        except FileNotFoundError:
            if self._missing_ok:
                return []
            raise OperationalError(f"{self.path}: password file does not exist") from None
        except OSError as exc:
            raise OperationalError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
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
            plaintext: bool = False) -> None:
        """Add `user` with a scrypt-hashed `password` (`plaintext=True`: CZMQ-readable clear
        text); replacing an existing user needs `force`. Writes atomically, mode 0600,
        keeping every other line (comments, line ends) as it was.
        """
        validate_user(user)
        validate_password(password)
        if plaintext and password.startswith(_PREFIX):
            raise PasswordFileError(f"a clear-text password may not start with {_PREFIX!r} "
                                    "(it would be read as a hash)")
        lines = self._lines()
        if not force and user in _users_of(lines):
            raise PasswordFileError(f"{self.path}: user {user!r} already exists "
                                    "(use --force to replace it)")
        entry = f"{user}={password if plaintext else hash_password(password)}"
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


class StaticPasswords:
    """An in-memory password source (`{user: password}`), with the same `check` contract."""

    def __init__(self, passwords: Mapping[str, str | bytes]) -> None:
        """Copy `passwords` (values may be `$scrypt$` hashes) into a private table."""
        self._table = PasswordTable.from_mapping(dict(passwords))

    def __repr__(self) -> str:
        return f"<StaticPasswords {len(self._table.entries)} users>"

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one PLAIN login."""
        return self._table.check(user, password)

    def users(self) -> list[str]:
        """User names."""
        return self._table.users()
