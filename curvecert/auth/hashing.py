"""Password hashes for PLAIN entries: parsing, capping, checking and making them.

Two formats, both standard base64 without padding:

- `$argon2id$v=19$m=M,t=T,p=P$<salt>$<hash>`: the PHC string argon2-cffi writes. New
  entries (`curvecert passwd add`) use argon2id with `ARGON2_T`/`ARGON2_M`/`ARGON2_P`
  (OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane), a 16-byte salt and a 32-byte
  hash. argon2id is memory-hard like scrypt, and its cost parameters are independent.
- `$scrypt$n=N,r=R,p=P$<salt>$<hash>`: what curvecert wrote before (16-byte salt,
  32-byte `hashlib.scrypt` output); still read and checked.

A value starting with `$scrypt$` or `$argon2` is always a hash. CZMQ reads neither: use
clear-text entries for a file zauth must share.

Caps, checked when a file is loaded (an entry above them is refused with `path:line`):
they bound what one login can cost (each check runs on a server thread, and unknown
users pay the same as known ones), and every entry that loads can really be checked
(`hashlib.scrypt` refuses a `maxmem` of 2 GiB or more, so `r=32` with a large `n` used to
load and then fail every check):

| scheme | parameter | allowed |
| --- | --- | --- |
| scrypt | n | a power of 2, 2..65536 |
| scrypt | r | 1..16 |
| scrypt | p | 1..4 |
| scrypt | n·r·p | at most 524288 (4x the default's work, 64 MiB at p=1) |
| argon2id | m (KiB) | 8·p..65536 (64 MiB) |
| argon2id | t | 1..4 |
| argon2id | p | 1..4 |
| both | salt | 8..64 bytes |
| both | hash | 16..64 bytes |
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ARGON2_M",
    "ARGON2_MAX_M",
    "ARGON2_MAX_P",
    "ARGON2_MAX_T",
    "ARGON2_P",
    "ARGON2_PREFIX",
    "ARGON2_T",
    "DEFAULT_SCHEME",
    "HASH_PREFIX",
    "SCHEMES",
    "SCRYPT_MAX_N",
    "SCRYPT_MAX_P",
    "SCRYPT_MAX_R",
    "SCRYPT_MAX_WORK",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "Argon2id",
    "Scrypt",
    "Verifier",
    "hash_argon2id",
    "hash_password",
    "is_hash",
    "new_entry",
    "parse_hash",
]

#: scrypt cost of the entries curvecert used to write: the interactive-login parameters
#: from the scrypt paper (16 MiB of memory, ~40-120 ms per check on a 2-core machine).
SCRYPT_N = 16384
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_N = 1 << 16
SCRYPT_MAX_R = 16
SCRYPT_MAX_P = 4
SCRYPT_MAX_WORK = 1 << 19
#: argon2id cost of new entries (OWASP password storage cheat sheet: m=19 MiB, t=2, p=1).
ARGON2_T = 2
ARGON2_M = 19456
ARGON2_P = 1
ARGON2_MAX_T = 4
ARGON2_MAX_M = 65536
ARGON2_MAX_P = 4
_ARGON2_VERSION = 19
_SALT_LEN = 16
_HASH_LEN = 32
#: Prefix of scrypt entries (kept under its old name).
HASH_PREFIX = "$scrypt$"
ARGON2_PREFIX = "$argon2id$"
#: Schemes `new_entry` writes; the first is the default of `curvecert passwd add`.
SCHEMES = ("argon2id", "scrypt")
DEFAULT_SCHEME = SCHEMES[0]
_SCRYPT_PARAMS = re.compile(r"n=(\d{1,8}),r=(\d{1,3}),p=(\d{1,3})\Z")
_ARGON2_PARAMS = re.compile(r"m=(\d{1,8}),t=(\d{1,3}),p=(\d{1,3})\Z")


class Verifier(Protocol):
    """A parsed hash: `matches(password)` in constant time for equal-length digests;
    `shape` names the scheme and every cost parameter (entries of one shape cost the
    same to check); `dummy()` is an entry of the same shape no password matches."""

    @property
    def shape(self) -> tuple[object, ...]:
        """(scheme, cost parameters..., hash length)."""

    def matches(self, password: bytes) -> bool:
        """True when `password` hashes to this entry."""

    def dummy(self) -> Verifier:
        """A random entry of the same shape."""


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + (1 << 20)


@dataclass(frozen=True, slots=True)
class Scrypt:
    """A parsed scrypt entry."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @property
    def shape(self) -> tuple[object, ...]:
        """("scrypt", n, r, p, hash length)."""
        return ("scrypt", self.n, self.r, self.p, len(self.digest))

    def matches(self, password: bytes) -> bool:
        """Run scrypt on `password` and compare (`hmac.compare_digest`)."""
        got = hashlib.scrypt(password, salt=self.salt, n=self.n, r=self.r, p=self.p,
                             maxmem=_maxmem(self.n, self.r, self.p), dklen=len(self.digest))
        return hmac.compare_digest(got, self.digest)

    def dummy(self) -> Scrypt:
        """Same cost, random salt and hash."""
        return Scrypt(self.n, self.r, self.p, secrets.token_bytes(len(self.salt)),
                      secrets.token_bytes(len(self.digest)))


@dataclass(frozen=True, slots=True)
class Argon2id:
    """A parsed argon2id entry (version 19); `m` in KiB."""

    m: int
    t: int
    p: int
    salt: bytes
    digest: bytes

    @property
    def shape(self) -> tuple[object, ...]:
        """("argon2id", m, t, p, hash length)."""
        return ("argon2id", self.m, self.t, self.p, len(self.digest))

    def matches(self, password: bytes) -> bool:
        """Run argon2id on `password` and compare (`hmac.compare_digest`)."""
        from argon2.low_level import Type, hash_secret_raw

        got = hash_secret_raw(password, self.salt, time_cost=self.t, memory_cost=self.m,
                              parallelism=self.p, hash_len=len(self.digest), type=Type.ID,
                              version=_ARGON2_VERSION)
        return hmac.compare_digest(got, self.digest)

    def dummy(self) -> Argon2id:
        """Same cost, random salt and hash."""
        return Argon2id(self.m, self.t, self.p, secrets.token_bytes(len(self.salt)),
                        secrets.token_bytes(len(self.digest)))


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def is_hash(value: str) -> bool:
    """True when an entry value is a hash (`$scrypt$...` or `$argon2...`)."""
    return value.startswith(HASH_PREFIX) or value.startswith("$argon2")


def _salt_and_digest(salt_text: str, hash_text: str) -> tuple[bytes, bytes]:
    try:
        salt, digest = _b64decode(salt_text), _b64decode(hash_text)
    except (binascii.Error, ValueError):
        raise ValueError("salt and hash must be base64") from None
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise ValueError("the salt must be 8..64 bytes and the hash 16..64 bytes")
    return salt, digest


def _parse_scrypt(value: str) -> Scrypt:
    parts = value[len(HASH_PREFIX):].split("$")
    if len(parts) != 3:
        raise ValueError("a scrypt entry is $scrypt$n=N,r=R,p=P$SALT$HASH")
    m = _SCRYPT_PARAMS.match(parts[0])
    if not m:
        raise ValueError("scrypt parameters must be n=N,r=R,p=P")
    n, r, p = (int(x) for x in m.groups())
    if not 2 <= n <= SCRYPT_MAX_N or n & (n - 1) or not 1 <= r <= SCRYPT_MAX_R \
            or not 1 <= p <= SCRYPT_MAX_P or n * r * p > SCRYPT_MAX_WORK:
        raise ValueError(f"scrypt parameters above the caps (n a power of 2 up to "
                         f"{SCRYPT_MAX_N}, r up to {SCRYPT_MAX_R}, p up to {SCRYPT_MAX_P}, "
                         f"n*r*p up to {SCRYPT_MAX_WORK})")
    return Scrypt(n, r, p, *_salt_and_digest(parts[1], parts[2]))


def _parse_argon2(value: str) -> Argon2id:
    if not value.startswith(ARGON2_PREFIX):
        raise ValueError("only argon2id hashes are accepted ($argon2id$...)")
    parts = value[len(ARGON2_PREFIX):].split("$")
    if len(parts) != 4 or parts[0] != f"v={_ARGON2_VERSION}":
        raise ValueError("an argon2id entry is $argon2id$v=19$m=M,t=T,p=P$SALT$HASH")
    m = _ARGON2_PARAMS.match(parts[1])
    if not m:
        raise ValueError("argon2id parameters must be m=M,t=T,p=P")
    mem, t, p = (int(x) for x in m.groups())
    if not 1 <= p <= ARGON2_MAX_P or not 8 * p <= mem <= ARGON2_MAX_M \
            or not 1 <= t <= ARGON2_MAX_T:
        raise ValueError(f"argon2id parameters above the caps (m 8*p..{ARGON2_MAX_M} KiB, "
                         f"t 1..{ARGON2_MAX_T}, p 1..{ARGON2_MAX_P})")
    return Argon2id(mem, t, p, *_salt_and_digest(parts[2], parts[3]))


def parse_hash(value: str) -> Scrypt | Argon2id:
    """Parse a hash entry value; `ValueError` (never quoting it) when malformed or above
    the caps in the module docstring."""
    if value.startswith(HASH_PREFIX):
        return _parse_scrypt(value)
    if value.startswith("$argon2"):
        return _parse_argon2(value)
    raise ValueError("not a $scrypt$ or $argon2id$ hash")


def hash_password(password: str | bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """A new `$scrypt$...` entry value for `password` (random 16-byte salt)."""
    raw = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(_SALT_LEN)
    digest = hashlib.scrypt(raw, salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p),
                            dklen=_HASH_LEN)
    return f"{HASH_PREFIX}n={n},r={r},p={p}${_b64encode(salt)}${_b64encode(digest)}"


def hash_argon2id(password: str | bytes, *, t: int = ARGON2_T, m: int = ARGON2_M,
                  p: int = ARGON2_P) -> str:
    """A new `$argon2id$...` entry value for `password` (random 16-byte salt); `m` in KiB."""
    from argon2.low_level import Type, hash_secret_raw

    raw = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(_SALT_LEN)
    digest = hash_secret_raw(raw, salt, time_cost=t, memory_cost=m, parallelism=p,
                             hash_len=_HASH_LEN, type=Type.ID, version=_ARGON2_VERSION)
    return (f"{ARGON2_PREFIX}v={_ARGON2_VERSION}$m={m},t={t},p={p}$"
            f"{_b64encode(salt)}${_b64encode(digest)}")


def new_entry(password: str | bytes, scheme: str = DEFAULT_SCHEME) -> str:
    """A hash entry value for `password` in `scheme` (one of `SCHEMES`), default costs."""
    if scheme == "argon2id":
        return hash_argon2id(password)
    if scheme == "scrypt":
        return hash_password(password)
    raise ValueError(f"unknown hash scheme {scheme!r} (one of {', '.join(SCHEMES)})")
