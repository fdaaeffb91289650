"""ZMTP 3.0 metadata (the ZAP reply's metadata frame): the libzmq vector, strictness, fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.errors import CurvecertError, ZapError
from curvecert.formats import zmtp

# libzmq tests/test_metadata.cpp: one property Hello=World.
VECTOR = b"\x05Hello\x00\x00\x00\x05World"


def test_libzmq_vector() -> None:
    assert zmtp.encode({"Hello": "World"}) == VECTOR
    assert zmtp.encode([("Hello", b"World")]) == VECTOR
    assert zmtp.decode(VECTOR) == [("Hello", b"World")]


def test_order_empty_values_and_utf8() -> None:
    blob = zmtp.encode([("b", ""), ("a", "ünï")])
    assert blob == b"\x01b\x00\x00\x00\x00\x01a\x00\x00\x00\x05" + "ünï".encode()
    assert zmtp.decode(blob) == [("b", b""), ("a", "ünï".encode())]
    assert zmtp.encode({}) == b"" and zmtp.decode(b"") == []


@pytest.mark.parametrize("name", ["", "a b", "a/b", "a@b", "$x", "ü", "n" * 256])
def test_strict_encode_rejects_illegal_names(name: str) -> None:
    with pytest.raises(ZapError):
        zmtp.encode({name: "v"})


def test_255_character_name_is_the_maximum() -> None:
    name = "n" * 255
    blob = zmtp.encode({name: "v"})
    assert blob[0] == 255
    assert zmtp.decode(blob) == [(name, b"v")]


@pytest.mark.parametrize(("name", "legal"), [
    ("name", "name"), ("created@host", "created_host"), ("a/b&c$d", "a_b_c_d"),
    ("User-Id", None), ("user-id", None), ("Peer-Address", None), ("Socket-Type", None),
    ("Identity", None), ("Routing-Id", None), ("", None), ("n" * 256, None)])
def test_legal_name(name: str, legal: str | None) -> None:
    assert zmtp.legal_name(name) == legal


def test_lenient_encode_maps_and_drops() -> None:
    blob, dropped = zmtp.encode_lenient([
        ("name", "Alice"), ("org@unit", "x"), ("User-Id", "forged"), ("org_unit", "dup"),
        ("big", "v" * (zmtp.MAX_VALUE + 1)), ("ok", "")])
    assert zmtp.decode(blob) == [("name", b"Alice"), ("org_unit", b"x"), ("ok", b"")]
    assert dropped == ["User-Id", "org_unit", "big"]


def test_lenient_encode_caps_the_total() -> None:
    value = "v" * (zmtp.MAX_VALUE - 100)
    items = [(f"k{i}", value) for i in range(6)]
    blob, dropped = zmtp.encode_lenient(items)
    assert len(blob) <= zmtp.MAX_METADATA
    assert len(zmtp.decode(blob)) + len(dropped) == 6 and dropped


@pytest.mark.parametrize(("blob", "reason"), [
    (b"\x00", "truncated"), (b"\x05Hel", "truncated"), (b"\x05Hello\x00\x00", "truncated"),
    (b"\x05Hello\x00\x00\x00\x06World", "truncated"), (b"\x03a b\x00\x00\x00\x00", "legal"),
    (b"\x02\xc3\xbc\x00\x00\x00\x00", "ASCII"), (VECTOR + b"\x01", "truncated")])
def test_decode_is_exact(blob: bytes, reason: str) -> None:
    with pytest.raises(ZapError, match=reason):
        zmtp.decode(blob)


names = st.from_regex(r"[A-Za-z0-9\-_.+]{1,20}", fullmatch=True)


@settings(max_examples=200)
@given(st.lists(st.tuples(names, st.binary(max_size=40)), max_size=6))
def test_round_trip(props: list[tuple[str, bytes]]) -> None:
    blob = zmtp.encode(props)
    assert len(blob) == sum(5 + len(n) + len(v) for n, v in props)
    assert zmtp.decode(blob) == props


@settings(max_examples=200)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=6))
def test_lenient_output_always_decodes(props: list[tuple[str, str]]) -> None:
    blob, dropped = zmtp.encode_lenient(props)
    decoded = zmtp.decode(blob)
    assert len(decoded) + len(dropped) == len(props)
    assert all(zmtp.legal_name(n) == n for n, _ in decoded)


@settings(max_examples=200)
@given(st.binary(max_size=60))
def test_any_bytes_decode_or_raise_our_error(blob: bytes) -> None:
    try:
        props = zmtp.decode(blob)
    except CurvecertError:
        return
    rebuilt = b"".join(bytes((len(n),)) + n.encode() + struct.pack(">I", len(v)) + v
                       for n, v in props)
    assert rebuilt == blob
