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
]

#: RFC 26: CURVE keys are 32 octets.
KEY_LEN = 32


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
