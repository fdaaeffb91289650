"""Certificate files: CZMQ's layout byte for byte, modes, refusal to overwrite, reading.

These tests use real files in `tmp_path` (the file layer is what they test); CZMQ and
pyzmq themselves are driven in tests/integration.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvecert.certs import certfile, fileio
from curvecert.certs.cert import Certificate
from curvecert.errors import (
    CertificateError,
    CurvecertError,
    FileExists,
    OperationalError,
    ZplSyntaxError,
)

SERVER_PUBLIC = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
SERVER_SECRET = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
CLIENT_PUBLIC = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
STAMP = time.mktime((2026, 11, 26, 13, 42, 29, 0, 0, -1))

META = {"name": "Alice Example", "email": "alice@example.org", "organization": "ACME Widgets"}


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    """Run with a permissive umask (0), restoring the old one afterwards."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_dump_is_czmq_layout_byte_for_byte() -> None:
    cert = Certificate.from_secret(SERVER_SECRET, META)
    public = certfile.dump(cert, secret=False, generated=STAMP)
    assert public == (
        "#   ****  Generated on 2026-11-26 13:42:29 by curvecert  ****\n"
        "#   ZeroMQ CURVE Public Certificate\n"
        "#   Exchange securely, or use a secure mechanism to verify the contents\n"
        "#   of this file after exchange. Store public certificates in your home\n"
        "#   directory, in the .curve subdirectory.\n"
        "\n"
        "metadata\n"
        '    name = "Alice Example"\n'
        '    email = "alice@example.org"\n'
        '    organization = "ACME Widgets"\n'
        "curve\n"
        f'    public-key = "{SERVER_PUBLIC}"\n')
    secret = certfile.dump(cert, secret=True, generated=STAMP)
    assert secret == (
        "#   ****  Generated on 2026-11-26 13:42:29 by curvecert  ****\n"
        "#   ZeroMQ CURVE **Secret** Certificate\n"
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
        "\n"
        "metadata\n"
        '    name = "Alice Example"\n'
        '    email = "alice@example.org"\n'
        '    organization = "ACME Widgets"\n'
        "curve\n"
        f'    public-key = "{SERVER_PUBLIC}"\n'
        f'    secret-key = "{SERVER_SECRET}"\n')


def test_empty_metadata_section_is_still_written() -> None:
    text = certfile.dump(Certificate.from_public(SERVER_PUBLIC), secret=False)
    assert "\nmetadata\ncurve\n" in text


def test_public_only_certificate_has_no_secret_file_text() -> None:
    with pytest.raises(CertificateError, match="no secret key"):
        certfile.dump(Certificate.from_public(SERVER_PUBLIC), secret=True)


def test_quote_kinds() -> None:
    cert = Certificate.from_public(SERVER_PUBLIC, {"say": 'say "hi"', "its": "it's"})
    text = certfile.dump(cert, secret=False)
    assert "    say = 'say \"hi\"'\n" in text
    assert '    its = "it\'s"\n' in text
    assert Certificate.parse(text).meta == cert.meta


@pytest.mark.parametrize("meta", [{"both": "it's \"x\""}, {"nl": "a\nb"}, {"bad name": "x"},
                                  {"nämé": "x"}])
def test_unwritable_metadata_writes_nothing(tmp_path: Path, meta: dict[str, str]) -> None:
    cert = Certificate.from_secret(SERVER_SECRET, meta)
    with pytest.raises(CertificateError, match="metadata cannot be written"):
        cert.save(tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_save_modes_regardless_of_umask(tmp_path: Path, umask: None) -> None:
    cert = Certificate.from_secret(SERVER_SECRET, META)
    cert.save(tmp_path / "server")
    assert mode(tmp_path / "server") == 0o644
    assert mode(tmp_path / "server_secret") == 0o600
    os.umask(0o077)
    cert.save(tmp_path / "other")
    assert mode(tmp_path / "other") == 0o644
    assert mode(tmp_path / "other_secret") == 0o600


def test_round_trip_both_files(tmp_path: Path) -> None:
    cert = Certificate.from_secret(SERVER_SECRET, META)
    cert.save(tmp_path / "server")
    pub = Certificate.load(tmp_path / "server")
    sec = Certificate.load(tmp_path / "server_secret")
    assert not pub.has_secret  # the _secret sibling is never picked up
    assert sec.secret_txt == SERVER_SECRET
    assert pub.meta == sec.meta == META
    assert list(pub.meta) == list(META)  # order kept
    assert pub == sec == cert


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    first = Certificate.from_secret(SERVER_SECRET)
    first.save(tmp_path / "c")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExists, match="use --force"):
        Certificate.new().save(tmp_path / "c")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_refuses_when_only_the_secret_exists(tmp_path: Path) -> None:
    (tmp_path / "c_secret").write_text("old")
    with pytest.raises(FileExists):
        Certificate.new().save(tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_secret"]
    assert (tmp_path / "c_secret").read_text() == "old"


def test_force_replaces_atomically_and_fixes_the_secret_mode(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("old public")
    (tmp_path / "c_secret").write_text("old secret")
    os.chmod(tmp_path / "c_secret", 0o644)
    old_inode = os.stat(tmp_path / "c_secret").st_ino
    cert = Certificate.new({"v": "2"})
    cert.save(tmp_path / "c", force=True)
    assert mode(tmp_path / "c_secret") == 0o600
    assert mode(tmp_path / "c") == 0o644
    assert os.stat(tmp_path / "c_secret").st_ino != old_inode  # renamed in, not rewritten
    assert Certificate.load(tmp_path / "c_secret").secret_key == cert.secret_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c_secret"]  # no temp files


def test_save_public_and_secret_separately(tmp_path: Path) -> None:
    cert = Certificate.from_secret(SERVER_SECRET, {"n": "1"})
    cert.save_public(tmp_path / "p")
    cert.save_secret(tmp_path / "s")
    assert mode(tmp_path / "p") == 0o644 and mode(tmp_path / "s") == 0o600
    assert not Certificate.load(tmp_path / "p").has_secret
    assert Certificate.load(tmp_path / "s").has_secret
    with pytest.raises(FileExists):
        cert.save_secret(tmp_path / "s")
    public_only = Certificate.from_public(SERVER_PUBLIC)
    public_only.save(tmp_path / "only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only", "p", "s"]


def test_secret_path() -> None:
    assert certfile.secret_path("a/b") == "a/b_secret"
    assert certfile.secret_path(Path("x.key")) == "x.key_secret"


# --- reading ----------------------------------------------------------------------------

PYZMQ_SECRET = f"""#   ****  Generated on 2024-01-01 12:00:00.123456 by pyzmq  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
    name = Alice Example
    note = unquoted # comment
curve
    public-key = "{SERVER_PUBLIC}"
    secret-key = "{SERVER_SECRET}"
"""


def test_reads_pyzmq_layout() -> None:
    cert = Certificate.parse(PYZMQ_SECRET)
    assert cert.secret_txt == SERVER_SECRET
    assert cert.meta == {"name": "Alice Example", "note": "unquoted"}


def test_czmq_no_secret_sentinel_and_empty_secret_mean_public_only() -> None:
    for value in ("0" * 40, ""):
        cert = Certificate.parse(f'curve\n    public-key = "{SERVER_PUBLIC}"\n'
                              f'    secret-key = "{value}"\n')
        assert not cert.has_secret


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("metadata\n", None, "no curve/public-key"),
    ("curve\n    secret-key = \"x\"\n", None, "no curve/public-key"),
    ('curve\n    public-key = "short"\n', 2, "exactly 40"),
    (f'curve\n    public-key = " {SERVER_PUBLIC} "\n', 2, "characters, got 42"),
    ('curve\n    public-key = "' + "~" * 40 + '"\n', 2, "not a Z85 character"),
    ('curve\n    public-key = "' + "%nSc1" * 8 + '"\n', 2, "overflows"),
    (f'curve\n    public-key = "{SERVER_PUBLIC}"\n    secret-key = "abc"\n', 3, "exactly 40"),
    (f'\ncurve\n    public-key = "{CLIENT_PUBLIC}"\n    secret-key = "{SERVER_SECRET}"\n',
     4, "does not belong"),
    ("curve\n    public-key = " + "0" * 39 + "#\n", 2, "got 39"),  # unquoted: '#' cuts
])
def test_bad_certificates_name_path_and_line(text: str, line: int | None, reason: str) -> None:
    with pytest.raises(CertificateError, match=reason) as info:
        Certificate.parse(text, path="f")
    assert info.value.line == line
    assert str(info.value).startswith(f"f:{line}: " if line else "f: ")


def test_first_duplicate_wins_like_czmq() -> None:
    text = (f'metadata\n    n = "1"\n    n = "2"\ncurve\n    public-key = "{SERVER_PUBLIC}"\n'
            f'    public-key = "{CLIENT_PUBLIC}"\ncurve\n    public-key = "{CLIENT_PUBLIC}"\n')
    cert = Certificate.parse(text)
    assert cert.public_txt == SERVER_PUBLIC
    assert cert.meta == {"n": "1"}


def test_nested_metadata_is_ignored() -> None:
    cert = Certificate.parse(f'metadata\n    a = "1"\n        deep = "x"\n'
                          f'curve\n    public-key = "{SERVER_PUBLIC}"\n')
    assert cert.meta == {"a": "1"}


def test_syntax_error_carries_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"metadata\n  x = 1\n")
    with pytest.raises(ZplSyntaxError) as info:
        Certificate.load(path)
    assert (info.value.path, info.value.line) == (str(path), 2)


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(OperationalError, match="cannot read"):
        Certificate.load(tmp_path / "nope")
    big = tmp_path / "big"
    big.write_bytes(b"#" * (1 << 20) + b"\n#")
    with pytest.raises(OperationalError, match="larger than"):
        Certificate.load(big)


def test_atomic_write_leaves_no_temp_file_when_refusing(tmp_path: Path) -> None:
    target = tmp_path / "t"
    fileio.atomic_write(target, b"one", mode=0o600)
    with pytest.raises(FileExists):
        fileio.atomic_write(target, b"two", mode=0o600)
    assert target.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
    with pytest.raises(OperationalError, match="cannot write"):
        fileio.atomic_write(tmp_path / "missing-dir" / "x", b"", mode=0o600)


# --- fuzz: the loader raises only curvecert's own errors --------------------------------

VALID = certfile.dump(Certificate.from_secret(SERVER_SECRET, META), secret=True).encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid secret file with a few random byte edits (reaches the key and meta checks)."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(list(b" \t\n\r\"'#=\x00\xff~0aZ%")) | st.integers(0, 255))
        if action == "replace" and pos < len(data):
            data[pos] = byte
        elif action == "insert":
            data.insert(pos, byte)
        elif pos < len(data):
            del data[pos]
    return bytes(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), mutated()))
def test_any_bytes_load_or_raise_our_error(data: bytes) -> None:
    try:
        cert = Certificate.parse(data, path="fuzz")
    except CurvecertError:
        return
    assert len(cert.public_key) == 32
    if cert.secret_key is not None:
        assert cert.public_key == Certificate.from_secret(cert.secret_key).public_key


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), mutated()))
def test_any_file_loads_or_raises_our_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    try:
        Certificate.load(path)
    except CurvecertError:
        pass
