"""Fuzz target: certificate files (`Certificate.parse`, the store's `parse_public`, `verify`).

Properties, for any bytes and for mutations of real certificate files (curvecert's,
CZMQ's and pyzmq's layouts, public and secret):

- `Certificate.parse` returns a `Certificate` or raises a `CurvecertError`; never another
  exception. A certificate it returns is consistent (a secret derives to the public key)
  and survives `dump` then `parse` unchanged (or `dump` refuses its metadata);
- the store's fast reader `store.parse_public` agrees with `Certificate.parse` on every
  input: same key and metadata, the same refusal (a secret certificate is refused);
- `verify.check_text` (behind `curvecert verify`) reports findings and never raises;
- a CRLF copy of a valid file is the same certificate, and a truncated file is either
  refused or carries the same public key (and no other secret): a half-written file can
  never introduce a different key.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from curvecert import store
from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.certs.verify import check_text
from curvecert.errors import CertificateError, CurvecertError
from tests.fuzz.conftest import FUZZ
from tests.fuzz.strategies import mutated, mutations

_ALICE = Certificate.new([("name", "Alice Example"), ("email", "alice@example.org"),
                          ("x@y", 'say "hi"'), ("empty", "")])
_BOB = Certificate.new()
_PYZMQ_PUBLIC = (
    "#   ****  Generated on 2026-01-01 00:00:00.000000 by pyzmq  ****\n"
    "#   ZeroMQ CURVE Public Certificate\n\n"
    "metadata\n"
    "curve\n"
    f'    public-key = "{_BOB.public_txt}"\n').encode()
_PYZMQ_SECRET = (
    "#   ****  Generated on 2026-01-01 00:00:00.000000 by pyzmq  ****\n"
    "#   ZeroMQ CURVE **Secret** Certificate\n\n"
    "metadata\n"
    "    name = bob b\n"
    "curve\n"
    f'    public-key = "{_BOB.public_txt}"\n'
    f'    secret-key = "{_BOB.secret_txt}"\n').encode()
_CZMQ_NO_SECRET = (
    "metadata\ncurve\n"
    f'    public-key = "{_BOB.public_txt}"\n'
    f'    secret-key = "{"0" * 40}"\n').encode()
#: Valid certificate files, every layout curvecert reads.
SEEDS: tuple[bytes, ...] = (
    certfile.dump(_ALICE, secret=False).encode(),
    certfile.dump(_ALICE, secret=True).encode(),
    certfile.dump(_BOB, secret=False).encode(),
    _PYZMQ_PUBLIC, _PYZMQ_SECRET, _CZMQ_NO_SECRET,
)

any_cert_bytes = st.one_of(st.binary(max_size=400), mutated(SEEDS))


def _parse(data: bytes) -> Certificate | CurvecertError:
    try:
        return Certificate.parse(data, path="fuzz.cert")
    except CurvecertError as exc:
        return exc


@FUZZ
@given(any_cert_bytes)
@example(b"curve\n    public-key = \"" + b"\xff" * 40 + b"\"\n")
@example(b"curve\n    public-key = \"" + b"#" * 40 + b"\"\n")  # Z85 overflow
@example(b"curve\n    public-key = \"" + b"0" * 40 + b"\"\n    secret-key = \"" + b"0" * 40
         + b"\"\n")
@example(b"metadata\n    a = \"x\"\n    a = \"y\"\ncurve\n    public-key = \"" + b"0" * 40
         + b"\"\n")
def test_parse_any_bytes(data: bytes) -> None:
    got = _parse(data)
    if isinstance(got, CurvecertError):
        assert str(got).startswith("fuzz.cert")  # the file is always named
        return
    assert len(got.public_key) == 32
    if got.secret_key is not None:
        assert keys.keys_equal(keys.derive_public(got.secret_key), got.public_key)
    try:
        text = certfile.dump(got, secret=got.has_secret)
    except CertificateError:
        return  # metadata CZMQ could not read back (e.g. both quote kinds): refused
    again = Certificate.parse(text)
    assert (again.public_key, again.secret_key) == (got.public_key, got.secret_key)
    assert list(again.meta.items()) == list(got.meta.items())


@FUZZ
@given(any_cert_bytes)
@example(_CZMQ_NO_SECRET)
@example(_PYZMQ_SECRET)
def test_store_reader_agrees_with_certfile(data: bytes) -> None:
    full = _parse(data)
    try:
        fast: tuple[bytes, list[tuple[str, str]]] | CurvecertError = store.parse_public(data)
    except CurvecertError as exc:
        fast = exc
    if isinstance(full, CurvecertError):
        assert isinstance(fast, CurvecertError), "the store trusts a file certfile refuses"
    elif full.has_secret:
        assert isinstance(fast, CertificateError) and "secret" in fast.reason
    else:
        assert fast == (full.public_key, list(full.meta.items()))


@FUZZ
@given(any_cert_bytes, st.sampled_from(["fuzz", "fuzz_secret", "fuzz.key"]))
def test_verify_never_raises(data: bytes, name: str) -> None:
    findings, _facts = check_text(data, name)
    got = _parse(data)
    if isinstance(got, CurvecertError):
        assert any(f.severity == "error" for f in findings), "verify passes a file that fails"


@pytest.mark.parametrize("seed", SEEDS, ids=range(len(SEEDS)))
def test_crlf_copy_is_the_same_certificate(seed: bytes) -> None:
    plain = Certificate.parse(seed)
    crlf = Certificate.parse(seed.replace(b"\n", b"\r\n"))
    assert (crlf.public_key, crlf.secret_key, dict(crlf.meta)) == \
        (plain.public_key, plain.secret_key, dict(plain.meta))


@FUZZ
@given(st.sampled_from(SEEDS).flatmap(
    lambda seed: st.tuples(st.just(seed), st.integers(0, len(seed)))))
def test_truncated_file_never_names_another_key(case: tuple[bytes, int]) -> None:
    seed, cut = case
    whole = Certificate.parse(seed)
    part = _parse(seed[:cut])
    if isinstance(part, CurvecertError):
        return
    assert part.public_key == whole.public_key
    assert part.secret_key in (None, whole.secret_key)


@FUZZ
@given(st.sampled_from(SEEDS).flatmap(lambda seed: mutations(seed)))
def test_mutated_file_never_pairs_a_wrong_secret(data: bytes) -> None:
    got = _parse(data)
    if isinstance(got, Certificate) and got.secret_key is not None:
        assert keys.keys_equal(keys.derive_public(got.secret_key), got.public_key)
