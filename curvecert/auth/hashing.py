"""Password hashes for PLAIN entries: parsing `$scrypt$...` values, checking a password
against one, and making new ones (`hash_password`).

Format (written by `curvecert passwd add`): `$scrypt$n=N,r=R,p=P$<salt>$<hash>`, standard
base64 without padding, 16-byte salt, 32-byte `hashlib.scrypt` output. CZMQ cannot read
these: use plaintext entries for a file zauth must share. A value that starts with
`$scrypt$` is always a hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "HASH_PREFIX",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "Scrypt",
    "hash_password",
    "parse_hash",
]

#: scrypt cost used for new entries: the interactive-login parameters from the scrypt paper
#: (about 16 MiB of memory and ~40 ms per check on our 2-core machine).
SCRYPT_N = 16384
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_LEN = 16
_HASH_LEN = 32
HASH_PREFIX = "$scrypt$"
_PARAMS = re.compile(r"n=(\d+),r=(\d+),p=(\d+)\Z")


@dataclass(frozen=True, slots=True)
class Scrypt:
    """A parsed scrypt entry; `matches(password)` compares in constant time."""

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


def parse_hash(value: str) -> Scrypt:
    """Parse a `$scrypt$...` value; `ValueError` (never quoting it) when malformed."""
    parts = value[len(HASH_PREFIX):].split("$")
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
    return Scrypt(n, r, p, salt, digest)


def hash_password(password: str | bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """A new `$scrypt$...` entry value for `password` (random 16-byte salt)."""
    raw = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(_SALT_LEN)
    digest = hashlib.scrypt(raw, salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p),
                            dklen=_HASH_LEN)
    return f"{HASH_PREFIX}n={n},r={r},p={p}${_b64encode(salt)}${_b64encode(digest)}"

