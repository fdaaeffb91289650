"""The in-memory side of PLAIN passwords: `CheckResult`, `PasswordTable` (entries plus a
bounded cache of successful hashed checks) and `StaticPasswords`.

Checks compare in constant time (`hmac.compare_digest`) for both kinds of entry. scrypt
at n=16384 costs ~40 ms, so without a cache one thread verifies ~25 PLAIN logins per
second. The cache maps (user, HMAC-SHA256(process-random key, password)) to an expiry
time (`cache_ttl`, default 60 s, at most `cache_size` entries). It lives in the table, so
a reload (a changed or removed password) drops it at once. Trade-off: for `cache_ttl`
seconds a process memory dump holds a fast keyed digest of recently used passwords (the
key sits in the same memory), which is weaker than scrypt; set `cache_ttl=0` to disable
it. Failed checks are never cached: each pays the KDF, which also slows guessing.
Unknown users are checked against a dummy hash when the table has hashed entries, so
response time does not reveal which user names exist.
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

from curvecert.auth.hashing import HASH_PREFIX, Scrypt, parse_hash
from curvecert.errors import PasswordFileError

__all__ = ["CheckResult", "PasswordTable", "StaticPasswords"]


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


@dataclass
class PasswordTable:
    """An immutable-by-convention table `user -> entry` plus its private success cache.

    Entries are plaintext password bytes or parsed scrypt hashes. Build one with `parse`
    or `PasswordTable.from_mapping`; `check` is thread-safe.
    """

    entries: Mapping[str, bytes | Scrypt]
    cache_ttl: float = 60.0
    cache_size: int = 1024
    _cache: dict[tuple[str, bytes], float] = field(default_factory=dict, repr=False)
    _cache_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dummy: Scrypt | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        hashed = next((e for e in self.entries.values() if isinstance(e, Scrypt)), None)
        if hashed is not None:
            # Same cost as a real entry, unknown password: unknown users take as long.
            self._dummy = Scrypt(hashed.n, hashed.r, hashed.p, secrets.token_bytes(16),
                                  secrets.token_bytes(len(hashed.digest)))

    @classmethod
    def from_mapping(cls, passwords: Mapping[str, str | bytes], *, cache_ttl: float = 60.0,
                     cache_size: int = 1024) -> PasswordTable:
        """A table from `{user: password}`; values starting with `$scrypt$` are hashes."""
        entries: dict[str, bytes | Scrypt] = {}
        for user, value in passwords.items():
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            if text.startswith(HASH_PREFIX):
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

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one login in constant time per entry kind; never raises for bad input."""
        entry = self.entries.get(user)
        if entry is None:
            if self._dummy is not None:
                self._dummy.matches(password)
            return _UNKNOWN
        if not isinstance(entry, Scrypt):  # plaintext bytes
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
