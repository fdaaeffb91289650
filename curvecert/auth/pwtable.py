"""The in-memory side of PLAIN passwords: `CheckResult`, `PasswordTable` (entries plus a
bounded cache of successful hashed checks) and `StaticPasswords`.

Checks compare in constant time, and cost the same for known and unknown users whatever
the mix of entries (`PasswordTable.check`). A KDF check costs tens of milliseconds, so
the table keeps a bounded cache of successful hashed checks: it maps (user,
HMAC-SHA256(process-random key, password)) to an expiry time (`cache_ttl`, default 60 s,
at most `cache_size` entries). It lives in the table, so a reload (a changed or removed
password) drops it at once. Trade-off: for `cache_ttl` seconds a process memory dump
holds a fast keyed digest of recently used passwords (the key sits in the same memory),
which is weaker than the KDF; set `cache_ttl=0` to disable it. Failed checks are never
cached: each pays the KDF, which also slows guessing.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from curvecert.auth.hashing import Verifier, is_hash, parse_hash
from curvecert.errors import PasswordFileError

__all__ = ["MAX_SHAPES", "CheckResult", "Entry", "PasswordTable", "StaticPasswords"]


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


#: At most this many entry shapes (scheme + cost parameters) in one table: every check
#: runs one KDF per shape (see `PasswordTable.check`), so this bounds a login's cost.
MAX_SHAPES = 4

Entry = bytes | Verifier


@dataclass
class PasswordTable:
    """An immutable-by-convention table `user -> entry` plus its private success cache.

    Entries are clear-text password bytes or parsed hashes (`curvecert.auth.hashing`).
    Build one with `parse` or `PasswordTable.from_mapping`; `check` is thread-safe.

    Every check costs the same whoever asks, known or unknown user, whatever the mix of
    entries: it compares one keyed digest (the user's clear-text entry or a dummy) and
    runs one KDF for each distinct hash shape in the table (the user's own entry for
    its shape, a dummy of the same cost for the others). A table of one shape (what
    `curvecert passwd add` writes) costs one KDF per check; a clear-text-only table
    none. Only a success-cache hit (a correct password used in the last `cache_ttl`
    seconds) is faster, which tells the caller nothing it did not know.
    """

    entries: Mapping[str, Entry]
    cache_ttl: float = 60.0
    cache_size: int = 1024
    _cache: dict[tuple[str, bytes], float] = field(default_factory=dict, repr=False)
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _clear: dict[str, bytes] = field(default_factory=dict, repr=False)
    _dummies: dict[tuple[object, ...], Verifier] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Clear-text entries are kept as HMAC digests too: comparing two 32-byte digests
        # takes the same time whatever the lengths of the password and the entry.
        for user, entry in self.entries.items():
            if isinstance(entry, bytes):
                self._clear[user] = self._mac(entry)
            elif entry.shape not in self._dummies:
                if len(self._dummies) >= MAX_SHAPES:
                    raise PasswordFileError(
                        f"user {user!r}: more than {MAX_SHAPES} different hash schemes or "
                        "cost parameters in one file (re-add old entries to unify them)")
                self._dummies[entry.shape] = entry.dummy()
        self._clear_dummy = secrets.token_bytes(32)

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    @classmethod
    def from_mapping(cls, passwords: Mapping[str, str | bytes], *, cache_ttl: float = 60.0,
                     cache_size: int = 1024) -> PasswordTable:
        """A table from `{user: password}`; values that are hashes (`is_hash`) are parsed
        (a bad one raises `PasswordFileError` naming the user)."""
        entries: dict[str, Entry] = {}
        for user, value in passwords.items():
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            if is_hash(text):
                try:
                    entries[user] = parse_hash(text)
                except ValueError as exc:
                    raise PasswordFileError(f"user {user!r}: {exc}") from None
            else:
                entries[user] = text.encode("utf-8")
        return cls(entries, cache_ttl=cache_ttl, cache_size=cache_size)

    def users(self) -> list[str]:
        """User names in file order."""
        return list(self.entries)

    def scheme_of(self, user: str) -> str | None:
        """`"clear"`, `"scrypt"` or `"argon2id"` for a known user, else None."""
        entry = self.entries.get(user)
        if entry is None:
            return None
        return "clear" if isinstance(entry, bytes) else str(entry.shape[0])

    @property
    def shapes(self) -> int:
        """Distinct hash shapes: the KDF runs one check costs (0: clear text only)."""
        return len(self._dummies)

    def quick(self, user: str, password: bytes) -> CheckResult | None:
        """The answer when it needs no KDF (a clear-text-only table, or a success-cache
        hit), else None: then call `check`, preferably off the request path."""
        if not self._dummies:
            return self.check(user, password)
        if self.cache_ttl > 0 and user in self.entries:
            expiry = self._cache.get((user, self._mac(password)))
            if expiry is not None and expiry > time.monotonic():
                return _OK
        return None

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one login; the cost does not depend on `user` (class docstring); never
        raises for bad input."""
        entry = self.entries.get(user)
        mac = self._mac(password)
        cache_key = (user, mac)
        if self.cache_ttl > 0 and entry is not None and not isinstance(entry, bytes):
            expiry = self._cache.get(cache_key)
            if expiry is not None and expiry > time.monotonic():
                return _OK
        clear_ok = hmac.compare_digest(mac, self._clear.get(user, self._clear_dummy))
        hashed_ok = False
        own = None if entry is None or isinstance(entry, bytes) else entry.shape
        for shape, dummy in self._dummies.items():
            if shape == own:
                hashed_ok = entry.matches(password)  # type: ignore[union-attr]
            else:
                dummy.matches(password)
        if entry is None:
            return _UNKNOWN
        if isinstance(entry, bytes):
            return _OK if clear_ok else _BAD
        if not hashed_ok:
            return _BAD
        if self.cache_ttl > 0:
            self._remember(cache_key)
        return _OK

    def _remember(self, key: tuple[str, bytes]) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._cache) >= self.cache_size:
                # Drop expired entries first, then the oldest (dicts keep insertion order).
                for k in [k for k, t in self._cache.items() if t <= now]:
                    del self._cache[k]
                while len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]
            self._cache[key] = now + self.cache_ttl


class StaticPasswords:
    """An in-memory password source (`{user: password}`), with the same `check` contract."""

    def __init__(self, passwords: Mapping[str, str | bytes]) -> None:
        """Copy `passwords` (values may be hashes, `curvecert.auth.hashing`) into a
        private table."""
        self._table = PasswordTable.from_mapping(dict(passwords))

    def __repr__(self) -> str:
        return f"<StaticPasswords {len(self._table.entries)} users>"

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one PLAIN login."""
        return self._table.check(user, password)

    def quick(self, user: str, password: bytes) -> CheckResult | None:
        """`PasswordTable.quick`: the answer when no KDF is needed, else None."""
        return self._table.quick(user, password)

    def users(self) -> list[str]:
        """User names."""
        return self._table.users()
