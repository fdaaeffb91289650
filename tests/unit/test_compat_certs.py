"""`curvecert.compat.certs`: pyzmq's return shapes, curvecert's file handling.

Each documented difference from pyzmq is pinned here: secret files 0600 whatever the
umask, metadata in both files, strict reading, per-file error isolation in
`load_certificates`, no line injection through metadata, pyzmq-compatible exception types.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.compat import create_certificates, load_certificate, load_certificates
from curvecert.compat.certs import CertificateFileError
from curvecert.errors import CurvecertError
from curvecert.formats import z85


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: pyzmq's secret file would be world-readable (0666) under it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_returns_pyzmq_paths_and_modes(tmp_path: Path, open_umask: None) -> None:
    public, secret = create_certificates(tmp_path, "server")
    assert (public, secret) == (str(tmp_path / "server.key"),
                                str(tmp_path / "server.key_secret"))
    assert _mode(secret) == 0o600  # pyzmq: whatever the umask allows (here 0666)
    assert _mode(public) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["server.key", "server.key_secret"]  # no temps


def test_metadata_is_written_to_both_files(tmp_path: Path) -> None:
    public, secret = create_certificates(tmp_path, "alice",
                                         {"name": "Alice", b"email": b"a@example.org"})
    want = {"name": "Alice", "email": "a@example.org"}
    assert dict(Certificate.load(public).meta) == want  # pyzmq: empty in the public file
    assert dict(Certificate.load(secret).meta) == want
    assert '    name = "Alice"\n' in Path(public).read_text()  # quoted, as CZMQ writes


def test_load_certificate_shapes(tmp_path: Path) -> None:
    public, secret = create_certificates(tmp_path, "client")
    pub, sec = load_certificate(secret)
    assert isinstance(pub, bytes) and isinstance(sec, bytes)
    assert len(pub) == len(sec) == 40
    assert keys.derive_public(z85.decode(sec)) == z85.decode(pub)
    assert load_certificate(public) == (pub, None)
    assert zmq.curve_public(sec) == pub


def test_files_are_interchangeable_with_pyzmq(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    _public, secret = create_certificates(ours, "a", {"name": "A"})
    assert zmq.auth.load_certificate(secret) == load_certificate(secret)
    _tpublic, tsecret = zmq.auth.create_certificates(str(theirs), "b")
    assert load_certificate(tsecret) == zmq.auth.load_certificate(tsecret)
    assert load_certificates(ours) == zmq.auth.load_certificates(str(ours))
    assert load_certificates(theirs) == zmq.auth.load_certificates(str(theirs))


def test_create_replaces_existing_files_as_pyzmq_does(tmp_path: Path) -> None:
    create_certificates(tmp_path, "x")
    first = load_certificate(tmp_path / "x.key_secret")
    os.chmod(tmp_path / "x.key_secret", 0o644)
    create_certificates(tmp_path, "x")
    second = load_certificate(tmp_path / "x.key_secret")
    assert first != second
    assert load_certificate(tmp_path / "x.key") == (second[0], None)
    assert _mode(tmp_path / "x.key_secret") == 0o600  # also when replacing


@pytest.mark.parametrize("metadata", [
    {"note": "line\n    public-key = \"0000000000000000000000000000000000000000\""},
    {"bad name": "x"},
    {"": "x"},
])
def test_metadata_that_would_break_the_file_is_refused(tmp_path: Path,
                                                      metadata: dict[str, str]) -> None:
    with pytest.raises(ValueError) as info:
        create_certificates(tmp_path, "m", metadata)
    assert isinstance(info.value, CurvecertError)
    assert os.listdir(tmp_path) == []  # nothing written


def test_missing_paths_raise_oserror(tmp_path: Path) -> None:
    for call in (lambda: create_certificates(tmp_path / "absent", "x"),
                 lambda: load_certificate(tmp_path / "absent.key"),
                 lambda: load_certificates(tmp_path / "absent")):
        with pytest.raises(OSError) as info:
            call()
        assert isinstance(info.value, CertificateFileError)
        assert isinstance(info.value, CurvecertError)


def test_strict_reading(tmp_path: Path) -> None:
    """pyzmq's line scan returns b"abc" as a key, and reads a public-key line anywhere."""
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    assert zmq.auth.load_certificate(str(short)) == (b"abc", None)
    with pytest.raises(ValueError, match="40 Z85 characters"):
        load_certificate(short)
    misplaced = tmp_path / "misplaced.key"
    key = z85.encode(keys.keypair()[0])
    misplaced.write_text(f'metadata\n    public-key = "{key}"\ncurve\n')
    assert zmq.auth.load_certificate(str(misplaced))[0] == key.encode()
    with pytest.raises(ValueError, match="no curve/public-key"):
        load_certificate(misplaced)


def test_load_certificates_skips_bad_files(tmp_path: Path) -> None:
    good_pub, _secret = create_certificates(tmp_path, "good")
    (tmp_path / "broken.key").write_text("metadata\ncurve\n")  # no public key
    with pytest.raises(ValueError):  # pyzmq: one bad file aborts the whole load...
        zmq.auth.load_certificates(str(tmp_path))
    # ...curvecert skips (and logs) it, and ignores the secret file
    assert load_certificates(tmp_path) == {load_certificate(good_pub)[0]: True}


def test_load_certificates_reads_the_store_layout(tmp_path: Path) -> None:
    """Sub-directories and non-.key names count (as for configure_curve's watched store);
    dot-files and *_secret files never do."""
    sub = tmp_path / "team"
    sub.mkdir()
    a, _ = create_certificates(sub, "a")
    b, _ = create_certificates(tmp_path, "b")
    os.rename(b, tmp_path / "b.cert")
    (tmp_path / ".hidden.key").write_text(Path(a).read_text())
    found = load_certificates(tmp_path)
    assert found == {load_certificate(a)[0]: True, load_certificate(tmp_path / "b.cert")[0]: True}
    assert zmq.auth.load_certificates(str(tmp_path)) == {}  # pyzmq: top-level *.key only
