"""The store's certificate parser: bytes -> (public key, metadata), metadata -> ZMTP blob.

The files curvecert, CZMQ (`zcert_save`) and pyzmq (`create_certificates`) write all have
one exact layout. `fast_parse` recognises that layout with a single regular expression and
decodes the key without the general Z85 codec; whatever it does not match exactly goes to
the full ZPL parser (`curvecert.certs.cert.Certificate.parse`), and both give the same result
(proved by tests). `encode_meta` turns metadata items into the ZMTP property blob a ZAP
200 reply carries, agreeing with `curvecert.formats.zmtp.encode_lenient` byte for byte.
"""

from __future__ import annotations

import os
import re
import struct

from curvecert.certs.cert import Certificate
from curvecert.errors import CertificateError
from curvecert.formats import z85, zmtp

__all__ = ["SECRET_REASON", "encode_meta", "fast_parse", "parse_public"]

# The exact layout written by curvecert, CZMQ (zcert_save) and pyzmq (public *.key):
# comment and blank lines, `metadata`, items `    name = "value"`, `curve`, the key, EOF.
# Anything this does not match exactly goes to the full parser.
# (`.` is "anything but a newline" and runs much faster than a negated class; NUL,
# which the full parser refuses anywhere, is excluded by a separate `in` test.)
_FAST = re.compile(
    r'(?:#.*\n|\n)*'
    r'metadata\n'
    r'((?:    [A-Za-z0-9$\-_@.&+]+ = "[^"\n]*"\n)*)'
    r'curve\n'
    r'    public-key = "([0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})"\n\Z')
_ITEM = re.compile(r'    ([^ ]+) = "([^"\n]*)"\n')
_Z85_VALUES = bytes.maketrans(z85.ALPHABET.encode("ascii"), bytes(range(85)))
_WORDS = struct.Struct(">8I")


def _z85_key(text: str) -> bytes | None:
    """Decode 40 Z85 characters (already known to be in the alphabet); None on overflow."""
    v = text.encode("ascii").translate(_Z85_VALUES)
    try:
        return _WORDS.pack(
            (((v[0] * 85 + v[1]) * 85 + v[2]) * 85 + v[3]) * 85 + v[4],
            (((v[5] * 85 + v[6]) * 85 + v[7]) * 85 + v[8]) * 85 + v[9],
            (((v[10] * 85 + v[11]) * 85 + v[12]) * 85 + v[13]) * 85 + v[14],
            (((v[15] * 85 + v[16]) * 85 + v[17]) * 85 + v[18]) * 85 + v[19],
            (((v[20] * 85 + v[21]) * 85 + v[22]) * 85 + v[23]) * 85 + v[24],
            (((v[25] * 85 + v[26]) * 85 + v[27]) * 85 + v[28]) * 85 + v[29],
            (((v[30] * 85 + v[31]) * 85 + v[32]) * 85 + v[33]) * 85 + v[34],
            (((v[35] * 85 + v[36]) * 85 + v[37]) * 85 + v[38]) * 85 + v[39])
    except struct.error:  # a group above 2**32 - 1: let the full parser explain it
        return None


def fast_parse(text: str) -> tuple[bytes, list[tuple[str, str]]] | None:
    """The public key and metadata of a text in the standard layout, or None."""
    if "\x00" in text:
        return None
    m = _FAST.match(text)
    if m is None:
        return None
    key = _z85_key(m.group(2))
    if key is None:
        return None
    items = _ITEM.findall(m.group(1))
    if len(items) > 1 and len(dict(items)) != len(items):
        seen: dict[str, str] = {}
        for name, value in items:
            seen.setdefault(name, value)  # CZMQ: the first of duplicate names wins
        items = list(seen.items())
    return key, items


def parse_public(data: bytes, *, path: str | os.PathLike[str] | None = None
                 ) -> tuple[bytes, list[tuple[str, str]]]:
    """Parse certificate bytes for the store: `(public_key, metadata items)`.

    Raises `CertificateError` or `ZplSyntaxError` for a file that does not parse, and
    `CertificateError` with reason "holds a secret key" for a secret certificate. The
    result equals `Certificate.parse`'s `(public_key, list(meta.items()))`.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        fast = fast_parse(text)
        if fast is not None:
            return fast
    cert = Certificate.parse(data, path=path)
    if cert.has_secret:
        raise CertificateError(SECRET_REASON, path=path)
    return cert.public_key, list(cert.meta.items())


SECRET_REASON = "holds a secret key (a store holds public certificates only)"  # noqa: S105
_U32 = struct.Struct(">I").pack
# ZPL names that are already legal ZMTP names, with their encoded prefix (len + name).
_LEGAL_PREFIX: dict[str, bytes] = {}
# A value of at most this many characters is at most zmtp.MAX_VALUE bytes in UTF-8.
_SAFE_VALUE_CHARS = zmtp.MAX_VALUE // 4


def encode_meta(items: list[tuple[str, str]]) -> tuple[bytes, list[str]]:
    """`zmtp.encode_lenient(items)` for items with distinct names, faster when names repeat.

    The quick loop handles the usual case (names already legal, small values); anything
    else is handed to `zmtp.encode_lenient` itself, so both always agree.
    """
    parts: list[bytes] = []
    get = _LEGAL_PREFIX.get
    u32 = _U32
    for name, value in items:
        prefix = get(name)
        if prefix is None or len(value) > _SAFE_VALUE_CHARS:
            return _encode_slow(items)
        raw = value.encode("utf-8", "surrogatepass")  # as encode_lenient does
        parts.append(prefix)
        parts.append(u32(len(raw)))
        parts.append(raw)
    blob = b"".join(parts)
    if len(blob) > zmtp.MAX_METADATA:
        return _encode_slow(items)
    return blob, []


def _encode_slow(items: list[tuple[str, str]]) -> tuple[bytes, list[str]]:
    for name, _value in items:
        if name not in _LEGAL_PREFIX and len(_LEGAL_PREFIX) < 4096 \
                and zmtp.legal_name(name) == name:
            _LEGAL_PREFIX[name] = bytes((len(name),)) + name.encode("ascii")
    return zmtp.encode_lenient(items)
