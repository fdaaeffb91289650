"""Z85 (ZeroMQ RFC 32), strict.

The RFC defines no padding, so binary input must be a multiple of 4 bytes and text a
multiple of 5 characters. It does not mention overflow, but five base-85 digits can
express values above 2**32 - 1 (`%nSc1`, `#####`); libzmq rejects those and so do we.
Every failure raises `InvalidKey`, never `KeyError` or `struct.error` as pyzmq's codec does.
"""

from __future__ import annotations

import re
import struct

from curvecert.errors import InvalidKey

__all__ = ["ALPHABET", "KEY_TEXT_LEN", "decode", "encode", "is_key_text"]

# RFC 32: the 85 characters, value 0 first.
ALPHABET = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
#: A 32-byte CURVE key is 40 Z85 characters.
KEY_TEXT_LEN = 40

_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_MAX32 = 0xFFFFFFFF
_KEY_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}\Z")


def encode(data: bytes) -> str:
    """Encode `data` (a multiple of 4 bytes long) as Z85 text."""
    if len(data) % 4:
        raise InvalidKey(f"Z85 input must be a multiple of 4 bytes, got {len(data)}")
    out: list[str] = []
    alphabet = ALPHABET
    for (word,) in struct.iter_unpack(">I", data):
        d4, word = word % 85, word // 85
        d3, word = word % 85, word // 85
        d2, word = word % 85, word // 85
        d1, d0 = word % 85, word // 85
        out.append(alphabet[d0] + alphabet[d1] + alphabet[d2] + alphabet[d3] + alphabet[d4])
    return "".join(out)


def decode(text: str | bytes) -> bytes:
    """Decode Z85 `text` (a multiple of 5 characters long) to bytes, rejecting overflow."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidKey("Z85 text must be ASCII") from None
    if len(text) % 5:
        raise InvalidKey(f"Z85 text must be a multiple of 5 characters, got {len(text)}")
    value = _VALUE
    words: list[int] = []
    for i in range(0, len(text), 5):
        try:
            n = (((value[text[i]] * 85 + value[text[i + 1]]) * 85 + value[text[i + 2]]) * 85
                 + value[text[i + 3]]) * 85 + value[text[i + 4]]
        except KeyError:
            # Say where, never which character: the text may be a secret key.
            at = next(j for j in range(i, i + 5) if text[j] not in value)
            raise InvalidKey(f"the character at position {at + 1} is not a Z85 "
                             "character") from None
        if n > _MAX32:
            raise InvalidKey(f"the Z85 group at positions {i + 1}-{i + 5} overflows 32 bits")
        words.append(n)
    return struct.pack(f">{len(words)}I", *words)


def is_key_text(text: str) -> bool:
    """True if `text` is 40 Z85 characters that decode to a 32-byte key (no overflow)."""
    if not _KEY_RE.match(text):
        return False
    try:
        decode(text)
    except InvalidKey:
        return False
    return True
