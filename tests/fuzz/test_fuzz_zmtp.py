"""Fuzz target: ZMTP metadata (`curvecert.formats.zmtp`), the blob a ZAP 200 reply carries.

- `decode` takes any bytes: a list of properties or `ZapError`, never another exception;
  a blob it accepts re-encodes to exactly the same bytes;
- `encode_lenient` (what the store and `StaticKeys` use for certificate metadata) takes
  any names and values: the blob always decodes, stays within `MAX_METADATA`, holds only
  legal, distinct, unreserved names, and every input item is either encoded or reported
  as dropped;
- `encode` (strict) either raises `ZapError` or writes a blob that decodes to its input.
"""

from __future__ import annotations

import struct

from hypothesis import example, given
from hypothesis import strategies as st

from curvecert.errors import ZapError
from curvecert.formats import zmtp
from tests.fuzz.conftest import FUZZ, scaled

_prop = st.tuples(st.binary(min_size=0, max_size=12), st.binary(max_size=12))


def _blob(props: list[tuple[bytes, bytes]], lie: int) -> bytes:
    out = b""
    for name, value in props:
        size = max(0, len(value) + lie) & 0xFFFFFFFF  # `lie` makes the length field wrong
        out += bytes((len(name),)) + name + struct.pack(">I", size) + value
    return out


blobs = st.one_of(
    st.binary(max_size=80),
    st.builds(_blob, st.lists(_prop, max_size=4), st.sampled_from([0, 0, 0, 1, -1, 1 << 31])))
names = st.one_of(st.sampled_from(["name", "User-Id", "user-id", "x@y", "a/b", "", "é",
                                   "Identity", "Peer-Address", "x_y", "n" * 256]),
                  st.text(max_size=10))
values = st.one_of(st.text(max_size=20), st.just("v" * (zmtp.MAX_VALUE + 1)),
                   st.just("\ud800"), st.just("x" * 20000))


@FUZZ
@given(blobs)
@example(b"\x04name\x00\x00\x00\x01x")
@example(b"\x00")
@example(b"\x01a\xff\xff\xff\xff")
def test_decode_any_bytes(blob: bytes) -> None:
    try:
        props = zmtp.decode(blob)
    except ZapError:
        return
    assert zmtp.encode(props) == blob


@FUZZ
@given(st.lists(st.tuples(names, values), max_size=8))
@example([("x@y", "1"), ("x_y", "2"), ("User-Id", "3")])
@example([("n", "x" * 16000)] * 5)
def test_encode_lenient_any_metadata(items: list[tuple[str, str]]) -> None:
    blob, dropped = zmtp.encode_lenient(items)
    assert len(blob) <= zmtp.MAX_METADATA
    props = zmtp.decode(blob)
    seen = [name for name, _v in props]
    assert len(set(seen)) == len(seen)
    assert not {n.lower() for n in seen} & zmtp.RESERVED
    assert len(props) + len(dropped) == len(items)


@scaled(0.5)
@given(st.lists(st.tuples(names, st.one_of(st.text(max_size=10), st.binary(max_size=10))),
                max_size=5))
def test_encode_strict(items: list[tuple[str, str | bytes]]) -> None:
    try:
        blob = zmtp.encode(items)
    except (ZapError, UnicodeEncodeError):
        return
    decoded = zmtp.decode(blob)
    assert [(n, v) for n, v in decoded] == [
        (n, v.encode("utf-8") if isinstance(v, str) else v) for n, v in items]
