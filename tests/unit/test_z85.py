"""Z85 (RFC 32): the RFC vector, zmq_curve(7) keys, strictness, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zmq.utils import z85 as pyzmq_z85

from curvecert.errors import CurvecertError, InvalidKey
from curvecert.formats import z85

# zmq_curve(7) test key pairs (SPECS.md §2): hex <-> Z85.
CURVE_VECTORS = [
    ("BB88471D65E2659B30C55A5321CEBB5AAB2B70A398645C26DCA2B2FCB43FC518",
     "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"),
    ("7BB864B489AFA3671FBE69101F94B38972F24816DFB01B51656B3FEC8DFD0888",
     "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"),
    ("54FCBA24E93249969316FB617C872BB0C1D1FF14800427C594CBFACF1BC2D652",
     "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
    ("8E0BDD697628B91D8F245587EE95C5B04D48963F79259877B49CD9063AEAD3B7",
     "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"),
]


def test_rfc32_vector() -> None:
    raw = bytes.fromhex("864FD26FB559F75B")
    assert z85.encode(raw) == "HelloWorld"
    assert z85.decode("HelloWorld") == raw
    assert z85.decode(b"HelloWorld") == raw


@pytest.mark.parametrize(("hexkey", "text"), CURVE_VECTORS)
def test_zmq_curve_vectors(hexkey: str, text: str) -> None:
    assert z85.encode(bytes.fromhex(hexkey)) == text
    assert z85.decode(text) == bytes.fromhex(hexkey)
    assert z85.is_key_text(text)


def test_alphabet_is_the_rfc_one() -> None:
    assert len(z85.ALPHABET) == 85 == len(set(z85.ALPHABET))
    for c in " \"',;\\_`|~":
        assert c not in z85.ALPHABET


def test_largest_group_decodes_and_the_next_overflows() -> None:
    assert z85.decode("%nSc0") == b"\xff\xff\xff\xff"
    assert z85.encode(b"\xff\xff\xff\xff") == "%nSc0"


@pytest.mark.parametrize("text", ["%nSc1", "#####", "00000#####", "%nSc1" * 8])
def test_overflow_is_rejected(text: str) -> None:
    with pytest.raises(InvalidKey, match="overflows"):
        z85.decode(text)


@pytest.mark.parametrize("text", ["Hell", "HelloWorl", "HelloWorld1", "a"])
def test_text_length_must_be_a_multiple_of_5(text: str) -> None:
    with pytest.raises(InvalidKey, match="multiple of 5"):
        z85.decode(text)


@pytest.mark.parametrize("data", [b"a", b"abc", b"abcde", b"\x00" * 31])
def test_binary_length_must_be_a_multiple_of_4(data: bytes) -> None:
    with pytest.raises(InvalidKey, match="multiple of 4"):
        z85.encode(data)


@pytest.mark.parametrize(("text", "position"), [("Hell~World", 5), ("~ello", 1),
                                                ("Hello Worl", 6), ('Hell"', 5),
                                                ("Hello\\orld", 6)])
def test_characters_outside_the_alphabet_name_their_position(text: str, position: int) -> None:
    with pytest.raises(InvalidKey, match=f"position {position}"):
        z85.decode(text)


def test_non_ascii_is_rejected_as_our_own_error() -> None:
    with pytest.raises(InvalidKey):
        z85.decode("Hellö")
    with pytest.raises(InvalidKey):
        z85.decode(b"Hell\xff")


def test_empty_round_trips() -> None:
    assert z85.encode(b"") == ""
    assert z85.decode("") == b""


@pytest.mark.parametrize("text", ["", "a" * 39, "a" * 41, "~" * 40, "%nSc1" * 8,
                                  "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hI "])
def test_is_key_text_rejects(text: str) -> None:
    assert not z85.is_key_text(text)


@settings(max_examples=200)
@given(st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 4]))
def test_round_trip_bytes(data: bytes) -> None:
    text = z85.encode(data)
    assert len(text) == len(data) // 4 * 5
    assert z85.decode(text) == data
    # the same text pyzmq's independent implementation produces
    assert text == pyzmq_z85.encode(data).decode("ascii")


@settings(max_examples=200)
@given(st.text(alphabet=z85.ALPHABET, max_size=40).map(lambda t: t[: len(t) - len(t) % 5]))
def test_round_trip_text_or_overflow(text: str) -> None:
    try:
        data = z85.decode(text)
    except InvalidKey as exc:
        assert "overflows" in str(exc)
        return
    assert z85.encode(data) == text


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=45), st.binary(max_size=45)))
def test_any_input_decodes_or_raises_our_error(text: str | bytes) -> None:
    try:
        z85.decode(text)
    except CurvecertError:
        pass
