"""pyzmq's `zmq.auth.certs`: `create_certificates`, `load_certificate`, `load_certificates`.

Same names, arguments and return shapes as pyzmq; curvecert's file handling underneath:

- `create_certificates` writes `<name>.key` and `<name>.key_secret` as pyzmq does, but
  in curvecert's (CZMQ-exact) format, with the metadata in BOTH files (pyzmq writes it
  only to the secret file), the secret file created 0600 (pyzmq: whatever the umask
  gives, 0644 typically), both files written atomically, and metadata names and values
  checked so that no value can inject lines into the file;
- `load_certificate` reads with the strict parser (a 40-character Z85 key, CZMQ's ZPL
  rules) instead of pyzmq's lax line scan, and says what is wrong and where;
- `load_certificates` reads a directory with the store's rules (`curvecert.store.snapshot`), so it
  returns exactly the keys `configure_curve` trusts: a bad file is skipped and logged
  instead of aborting the whole load.

Errors keep pyzmq's types where callers catch them: a missing file or directory raises an
error that is both a `CurvecertError` and an `OSError`; a malformed file raises
`CertificateError` / `ZplSyntaxError`, both `ValueError`s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.errors import OperationalError
from curvecert.formats import z85
from curvecert.store.scan import scan

__all__ = ["CertificateFileError", "create_certificates", "load_certificate",
           "load_certificates"]


class CertificateFileError(OperationalError, OSError):
    """A certificate file or directory is missing or unreadable (an `OSError`, as pyzmq)."""


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def create_certificates(key_dir: str | os.PathLike[str], name: str,
                        metadata: Mapping[str | bytes, str | bytes] | None = None
                        ) -> tuple[str, str]:
    """Create a keypair and write `key_dir/name.key` and `key_dir/name.key_secret`.

    Returns `(public_file, secret_file)`. Existing files are replaced (as pyzmq does), each
    atomically. Raises `CertificateFileError` (an `OSError`) when `key_dir` is not a
    directory, `CertificateError` (a `ValueError`) for metadata that cannot be written.
    """
    if not os.path.isdir(key_dir):
        raise CertificateFileError(f"{os.fspath(key_dir)}: no such directory")
    meta = [(_text(k), _text(v)) for k, v in (metadata or {}).items()]
    cert = Certificate.new(meta)
    public_file = os.path.join(os.fspath(key_dir), f"{name}.key")
    certfile.save(cert, public_file, force=True)
    return public_file, certfile.secret_path(public_file)


def load_certificate(filename: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    """`(public_key, secret_key)` of a certificate file, as Z85 bytes (`secret_key` None
    for a public certificate). Exactly this file is read, never a `_secret` sibling.

    Raises `CertificateFileError` (an `OSError`) for a missing or unreadable file and
    `CertificateError`/`ZplSyntaxError` (`ValueError`s) for a malformed one.
    """
    if not os.path.exists(filename):
        raise CertificateFileError(f"Invalid certificate file: {os.fspath(filename)}")
    try:
        cert = Certificate.load(filename)
    except OperationalError as exc:
        if isinstance(exc, OSError):
            raise
        raise CertificateFileError(str(exc)) from exc
    secret = cert.secret_txt
    return cert.public_txt.encode("ascii"), secret.encode("ascii") if secret else None


def load_certificates(directory: str | os.PathLike[str] = ".") -> dict[bytes, bool]:
    """`{public_key_z85: True}` for every public certificate the store rules accept in
    `directory` (and below it). Bad files are skipped and logged, never fatal.

    Raises `CertificateFileError` (an `OSError`) when `directory` is not a directory.
    """
    if not os.path.isdir(directory):
        raise CertificateFileError(f"Invalid certificate directory: {os.fspath(directory)}")
    snapshot = scan(directory)
    return {z85.encode(key).encode("ascii"): True for key in snapshot.keys()}
