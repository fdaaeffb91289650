"""ZMTP 3.0 property ("metadata") encoding, as ZAP replies (RFC 27) carry it.

`property = name-len(1) name value-len(4, big-endian) value`. Names are 1..255 characters
of `A-Z a-z 0-9 - _ . +` (RFC 23/37). Certificate metadata uses ZPL names, which may also
contain `$ @ & /`; `legal_name` maps those to `_` so a handler never emits a name libzmq's
peers would reject. `User-Id` and `Peer-Address` are dropped: libzmq ignores ZAP metadata
that collides with its own properties, so sending them would only mislead.

Every size is checked; nothing is written into a fixed buffer (CZMQ's zauth copies
metadata into 512 bytes without a bound and corrupts its heap beyond that).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping

from curvecert.errors import ZapError

__all__ = [
    "MAX_METADATA",
    "MAX_VALUE",
    "RESERVED",
    "decode",
    "encode",
    "encode_lenient",
    "legal_name",
]

#: Largest value curvecert puts in one property; bigger ones are dropped (logged by callers).
MAX_VALUE = 16 * 1024
#: Largest encoded metadata blob curvecert builds for one ZAP reply.
MAX_METADATA = 64 * 1024
#: Names libzmq sets itself and never takes from ZAP metadata (SPECS §3.6), lower-cased.
RESERVED = frozenset({"user-id", "peer-address", "socket-type", "identity", "routing-id"})

_ILLEGAL = re.compile(r"[^A-Za-z0-9\-_.+]")
_LEGAL = re.compile(r"[A-Za-z0-9\-_.+]{1,255}\Z")


def legal_name(name: str) -> str | None:
    """`name` made legal for ZMTP metadata, or None if it is empty, reserved or too long."""
    mapped = _ILLEGAL.sub("_", name)
    if not mapped or len(mapped.encode("ascii")) > 255 or mapped.lower() in RESERVED:
        return None
    return mapped


def encode(props: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]) -> bytes:
    """Encode properties strictly: an illegal name or an oversized value raises `ZapError`."""
    items = props.items() if isinstance(props, Mapping) else props
    out = bytearray()
    for name, value in items:
        if not _LEGAL.match(name):
            raise ZapError(f"{name!r} is not a legal ZMTP property name")
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(raw) > 0x7FFFFFFF:
            raise ZapError(f"value of {name!r} is too large")
        nb = name.encode("ascii")
        out += bytes((len(nb),)) + nb + struct.pack(">I", len(raw)) + raw
    return bytes(out)


def encode_lenient(props: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[bytes, list[str]]:
    """Encode what can be sent, mapping names with `legal_name`; returns `(blob, dropped)`.

    Dropped are names that are reserved, empty, duplicated after mapping, with a value over
    `MAX_VALUE` bytes, or that would push the blob over `MAX_METADATA` bytes.
    """
    items = props.items() if isinstance(props, Mapping) else props
    out = bytearray()
    seen: set[str] = set()
    dropped: list[str] = []
    for name, value in items:
        mapped = legal_name(name)
        raw = value.encode("utf-8", "surrogatepass")
        if mapped is None or mapped in seen or len(raw) > MAX_VALUE:
            dropped.append(name)
            continue
        nb = mapped.encode("ascii")
        chunk = bytes((len(nb),)) + nb + struct.pack(">I", len(raw)) + raw
        if len(out) + len(chunk) > MAX_METADATA:
            dropped.append(name)
            continue
        seen.add(mapped)
        out += chunk
    return bytes(out), dropped


def decode(blob: bytes) -> list[tuple[str, bytes]]:
    """Decode a metadata blob exactly (the whole blob must parse) into `(name, value)` pairs."""
    props: list[tuple[str, bytes]] = []
    i, n = 0, len(blob)
    while i < n:
        nlen = blob[i]
        i += 1
        if nlen == 0 or i + nlen + 4 > n:
            raise ZapError(f"metadata truncated at byte {i - 1}")
        name = blob[i:i + nlen]
        i += nlen
        (vlen,) = struct.unpack_from(">I", blob, i)
        i += 4
        if i + vlen > n:
            raise ZapError(f"metadata value of {name!r} truncated")
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            raise ZapError("metadata name is not ASCII") from None
        if not _LEGAL.match(text):
            raise ZapError(f"{text!r} is not a legal ZMTP property name")
        props.append((text, blob[i:i + vlen]))
        i += vlen
    return props
