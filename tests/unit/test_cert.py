"""Keys and the immutable `Certificate` value (no files, no sockets)."""

from __future__ import annotations

import pytest

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import CertificateError, CurvecertError, InvalidKey
from curvecert.formats import z85

# zmq_curve(7) test key pairs (SPECS.md §2).
CLIENT_PUBLIC = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
CLIENT_SECRET = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
SERVER_PUBLIC = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
SERVER_SECRET = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"


@pytest.mark.parametrize(("secret", "public"), [(CLIENT_SECRET, CLIENT_PUBLIC),
                                                (SERVER_SECRET, SERVER_PUBLIC)])
def test_secret_derives_to_the_zmq_curve_public_key(secret: str, public: str) -> None:
    assert z85.encode(keys.derive_public(z85.decode(secret))) == public
    cert = Certificate.from_secret(secret)
    assert cert.public_txt == public
    assert cert.secret_txt == secret


def test_fingerprint_is_ssh_style_sha256_of_the_raw_key() -> None:
    # base64(sha256(BB88471D...C518)) without '=' padding, computed independently
    cert = Certificate.from_public(CLIENT_PUBLIC)
    assert cert.fingerprint == "SHA256:67OvTdmc7/Nun5C12z5FDkr9NWhEMfqfDsnuWvXD6MM"
    assert keys.fingerprint(cert.public_key) == cert.fingerprint


def test_keypair_is_fresh_and_consistent() -> None:
    pub, sec = keys.keypair()
    pub2, _ = keys.keypair()
    assert len(pub) == len(sec) == 32
    assert pub != pub2
    assert keys.derive_public(sec) == pub


def test_new_certificate() -> None:
    cert = Certificate.new({"name": "Alice"}, created_by="test", email="a@b")
    assert cert.has_secret
    assert keys.derive_public(cert.secret_key or b"") == cert.public_key
    assert list(cert.meta.items()) == [("name", "Alice"), ("created-by", "test"),
                                       ("email", "a@b")]


def test_a_mismatched_pair_cannot_exist() -> None:
    with pytest.raises(CertificateError, match="does not belong"):
        Certificate(z85.decode(SERVER_PUBLIC), z85.decode(CLIENT_SECRET))


def test_public_only_certificate_has_no_secret_at_all() -> None:
    cert = Certificate.from_public(SERVER_PUBLIC, {"name": "server"})
    assert cert.secret_key is None and cert.secret_txt is None and not cert.has_secret
    with pytest.raises(CertificateError, match="public-only"):
        cert.apply(object())
    full = Certificate.from_secret(SERVER_SECRET)
    assert full.public_only().secret_key is None
    assert full.public_only() == full  # equality is by public key


@pytest.mark.parametrize(("public", "secret"), [(b"\x00" * 31, None),
                                                (b"\x00" * 32, b"\x00" * 33)])
def test_key_lengths_are_checked(public: bytes, secret: bytes | None) -> None:
    with pytest.raises(CertificateError, match="32 bytes"):
        Certificate(public, secret)


def test_immutable_value() -> None:
    cert = Certificate.from_secret(CLIENT_SECRET, [("b", "2"), ("a", "1"), ("b", "dup")])
    with pytest.raises(AttributeError):
        cert.meta = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        cert.meta["a"] = "x"  # type: ignore[index]
    assert list(cert.meta.items()) == [("b", "2"), ("a", "1")]  # order kept, first wins
    assert cert.with_meta({"c": "3"}).meta == {"c": "3"}
    assert cert.meta == {"b": "2", "a": "1"}


def test_equality_and_hash_use_the_public_key() -> None:
    a = Certificate.from_public(CLIENT_PUBLIC, {"x": "1"})
    b = Certificate.from_secret(CLIENT_SECRET, {"y": "2"})
    c = Certificate.from_public(SERVER_PUBLIC)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a != "not a certificate"


def test_repr_never_shows_the_secret() -> None:
    cert = Certificate.from_secret(CLIENT_SECRET)
    assert CLIENT_SECRET not in repr(cert)
    assert CLIENT_PUBLIC in repr(cert)


@pytest.mark.parametrize("meta", [[("", "v")], [("n", 1)], [(1, "v")]])
def test_bad_metadata_types(meta: list[tuple[object, object]]) -> None:
    with pytest.raises(CertificateError):
        Certificate.from_public(CLIENT_PUBLIC, meta)  # type: ignore[arg-type]


def test_decode_key_forms() -> None:
    raw = z85.decode(CLIENT_PUBLIC)
    assert keys.decode_key(raw) == raw
    assert keys.decode_key(CLIENT_PUBLIC) == raw
    assert keys.decode_key(f"  {CLIENT_PUBLIC}\n") == raw
    assert keys.decode_key(CLIENT_PUBLIC.encode()) == raw


@pytest.mark.parametrize(("text", "reason"), [
    ("short", "40 Z85 characters, got 5"), ("~" * 40, "not a Z85 character"),
    ("%nSc1" * 8, "overflows"), (b"\xff" * 40, "not Z85 text"), (b"x" * 31, "got 31")])
def test_decode_key_errors(text: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidKey, match=reason) as info:
        keys.decode_key(text, what="server key")
    assert isinstance(info.value, CurvecertError)


def test_keys_equal() -> None:
    assert keys.keys_equal(b"a" * 32, b"a" * 32)
    assert not keys.keys_equal(b"a" * 32, b"b" * 32)


def test_any_z85_secret_is_usable() -> None:
    # X25519 clamps internally: any 40-character Z85 text is a valid secret key.
    cert = Certificate.from_secret("x" * 40)
    assert cert.has_secret and len(cert.public_key) == 32
