"""CURVE key values: generation, derivation, fingerprints, constant-time comparison.

Keys are 32 raw bytes everywhere inside curvecert; Z85 text (40 characters) exists only at
the edges (files, the CLI, ZAP User-Id). Generation and derivation use libzmq through pyzmq,
so a libzmq built without CURVE fails here with a clear `OperationalError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from curvecert.errors import InvalidKey, OperationalError
from curvecert.formats import z85

__all__ = [
    "KEY_LEN",
    "decode_key",
    "derive_public",
    "fingerprint",
    "keypair",
    "keys_equal",
    "weak_public_key",
]

#: RFC 26: CURVE keys are 32 octets.
KEY_LEN = 32

# Curve25519 u-coordinates of small order (and their non-canonical encodings p-1, p, p+1),
# as libsodium's X25519 refuses them: with any secret the shared point is zero, so a
# handshake with such a "public key" proves nothing. Bit 255 is ignored by X25519, so
# the top bit is masked before comparing. All zero is also CZMQ's "no key" value.
_P = 2**255 - 19
_SMALL_ORDER = frozenset(u.to_bytes(32, "little") for u in (
    0, 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _P - 1, _P, _P + 1))


def decode_key(text: str | bytes, *, what: str = "key") -> bytes:
    """Decode a 40-character Z85 key (or pass 32 raw bytes through) to 32 bytes."""
    if isinstance(text, (bytes, bytearray)) and len(text) == KEY_LEN:
        return bytes(text)
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidKey(f"{what} is not Z85 text") from None
    text = text.strip()
    if len(text) != z85.KEY_TEXT_LEN:
        raise InvalidKey(f"{what} must be 40 Z85 characters, got {len(text)}")
    try:
        return z85.decode(text)
    except InvalidKey as exc:
        raise InvalidKey(f"{what}: {exc}") from None


def keypair() -> tuple[bytes, bytes]:
    """A fresh `(public, secret)` pair of 32-byte keys from libzmq (libsodium)."""
    import zmq

    try:
        pub, sec = zmq.curve_keypair()
    except zmq.ZMQError as exc:  # ENOTSUP: libzmq built without CURVE (pyzmq #567)
        raise OperationalError(f"libzmq cannot make CURVE keys: {exc}") from exc
    return z85.decode(pub), z85.decode(sec)


def derive_public(secret: bytes) -> bytes:
    """The public key that belongs to a 32-byte secret key (X25519 base-point multiply)."""
    import zmq

    if len(secret) != KEY_LEN:
        raise InvalidKey(f"a secret key is {KEY_LEN} bytes, got {len(secret)}")
    try:
        return z85.decode(zmq.curve_public(z85.encode(secret).encode("ascii")))
    except zmq.ZMQError as exc:
        raise OperationalError(f"libzmq cannot derive a CURVE public key: {exc}") from exc


def fingerprint(public: bytes) -> str:
    """`SHA256:` + unpadded base64 of SHA-256 over the 32 raw key bytes (ssh-keygen style)."""
    digest = hashlib.sha256(public).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def keys_equal(a: bytes, b: bytes) -> bool:
    """Compare two keys in constant time."""
    return hmac.compare_digest(a, b)


def weak_public_key(key: bytes) -> str | None:
    """Why the 32-byte `key` is no usable Curve25519 public key, or None when it is fine.

    Refused: all zero (CZMQ's "no key" value, what it loads from an undecodable key) and
    the other small-order points libsodium's X25519 rejects (a client "owning" one needs
    no secret key at all).
    """
    if len(key) != KEY_LEN:
        return f"a public key is {KEY_LEN} bytes, not {len(key)}"
    if key[31] & 0x80:
        key = key[:31] + bytes((key[31] & 0x7F,))
    if key not in _SMALL_ORDER:
        return None
    if not any(key):
        return "all zero bytes, CZMQ's \"no key\" value; no real keypair has it"
    return "a Curve25519 point of small order; it proves nothing in a CURVE handshake"
