"""Certificate files: CZMQ's `NAME` / `NAME_secret` pair (and pyzmq's `NAME.key`).

The layout is CZMQ 4.2's byte for byte (header comments, a blank line, a `metadata`
section, a `curve` section, 4-space indent, double-quoted values, LF), with three
deliberate differences, all documented in docs/format.md:

- the metadata is written to both files (pyzmq writes it to the secret file only);
- a value containing `"` is single-quoted, and a value or name CZMQ could not read back is
  refused (CZMQ writes such files, then cannot load them);
- the secret file is 0600 from its first byte and after every `--force` rewrite
  (CZMQ keeps an existing file's mode; pyzmq follows the umask).

Reading accepts any ZPL CZMQ accepts. `curve/public-key` must be exactly 40 valid Z85
characters (no surrounding spaces: CZMQ refuses those too);
a `secret-key`, when present, must be valid and derive to the public key. CZMQ's
"no secret" sentinel (forty `0` characters) means no secret.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from curvecert.certs import keys
from curvecert.certs.fileio import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    abandon_write,
    atomic_write,
    commit_write,
    drop_old,
    fsync_dir,
    keep_old,
    prepare_write,
    read_bytes,
    restore_old,
)
from curvecert.errors import CertificateError, FileExists, InvalidKey, OperationalError, ZplError
from curvecert.formats import z85, zpl

__all__ = [
    "SECRET_SUFFIX",
    "CertValues",
    "KeyPairLike",
    "dump",
    "load_values",
    "parse_values",
    "save",
    "save_public",
    "save_secret",
    "secret_path",
]

SECRET_SUFFIX = "_secret"  # noqa: S105 - a file name suffix, not a secret
# CZMQ zcert.c: zcert_new of a public-only cert keeps 40 '0' characters as the secret.
_CZMQ_NO_SECRET = "0" * 40
_PUBLIC_BANNER = (
    "   ZeroMQ CURVE Public Certificate",
    "   Exchange securely, or use a secure mechanism to verify the contents",
    "   of this file after exchange. Store public certificates in your home",
    "   directory, in the .curve subdirectory.",
)
_SECRET_BANNER = (
    "   ZeroMQ CURVE **Secret** Certificate",
    "   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.",
)


class KeyPairLike(Protocol):
    """What the writers need of a certificate (`Certificate` has it): plain values only."""

    @property
    def public_key(self) -> bytes: ...  # 32 bytes
    @property
    def secret_key(self) -> bytes | None: ...  # 32 bytes, or None for public-only
    @property
    def meta(self) -> Mapping[str, str]: ...  # in file order


class CertValues(NamedTuple):
    """What a certificate file holds, checked: `Certificate.parse` builds on this."""

    public_key: bytes  # 32 bytes
    secret_key: bytes | None  # 32 bytes, derives to public_key; None when absent
    meta: list[tuple[str, str]]  # in file order, duplicates kept (the first one wins later)


def secret_path(path: str | os.PathLike[str]) -> str:
    """The secret file that goes with public file `path` (`alice` → `alice_secret`)."""
    return os.fspath(path) + SECRET_SUFFIX


def dump(cert: KeyPairLike, *, secret: bool, generated: float | None = None) -> str:
    """The ZPL text of the public (or, with `secret`, the secret) file of `cert`.

    Raises `CertificateError` if the metadata cannot be written so that CZMQ reads it back.
    """
    if secret and cert.secret_key is None:
        raise CertificateError("this certificate has no secret key to write")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(generated))
    comments = [f"   ****  Generated on {stamp} by curvecert  ****"]
    comments += _SECRET_BANNER if secret else _PUBLIC_BANNER
    metadata = zpl.Node("metadata")
    for name, value in cert.meta.items():
        metadata.add(name, value)
    curve = zpl.Node("curve")
    curve.add("public-key", z85.encode(cert.public_key))
    if secret and cert.secret_key is not None:
        curve.add("secret-key", z85.encode(cert.secret_key))
    try:
        return zpl.emit([metadata, curve], comments=comments)
    except ZplError as exc:
        raise CertificateError(f"metadata cannot be written: {exc}") from None


def _file_key(node: zpl.Node, what: str, path: str | os.PathLike[str] | None) -> bytes:
    """A key value from a file: exactly 40 Z85 characters, as CZMQ requires (no trimming).

    Errors say what is wrong and where (line, columns), never which characters: the
    value may be a secret key (docs/security.md, "Secrets in messages").
    """
    where = f"{what} ({node.columns})" if node.columns else what
    if len(node.value) != z85.KEY_TEXT_LEN:
        raise CertificateError(f"{where} must be exactly 40 Z85 characters, got "
                               f"{len(node.value)}", path=path, line=node.line)
    try:
        return keys.decode_key(node.value, what=where)
    except InvalidKey as exc:
        raise CertificateError(str(exc), path=path, line=node.line) from None


def parse_values(data: str | bytes, *,
                 path: str | os.PathLike[str] | None = None) -> CertValues:
    """The checked keys and metadata of ZPL text; errors carry `path` and the line number.

    Raises `ZplError` (syntax) or `CertificateError` (a missing or invalid key, a secret
    that does not derive to the public key).
    """
    root = zpl.parse(data, path=path)
    curve = root.child("curve")
    pub_node = curve.child("public-key") if curve is not None else None
    if pub_node is None:
        raise CertificateError("no curve/public-key entry", path=path)
    public = _file_key(pub_node, "public-key", path)
    secret: bytes | None = None
    sec_node = curve.child("secret-key") if curve is not None else None
    if sec_node is not None and sec_node.value not in ("", _CZMQ_NO_SECRET):
        secret = _file_key(sec_node, "secret-key", path)
        if not keys.keys_equal(keys.derive_public(secret), public):
            raise CertificateError("secret-key does not belong to public-key", path=path,
                                   line=sec_node.line)
    meta_node = root.child("metadata")
    meta: list[tuple[str, str]] = []
    if meta_node is not None:
        meta = [(c.name, c.value) for c in meta_node.children]
    return CertValues(public, secret, meta)


def load_values(path: str | os.PathLike[str]) -> CertValues:
    """`parse_values` of exactly the file at `path`, never its `_secret` sibling."""
    return parse_values(read_bytes(path), path=path)


def save_public(cert: KeyPairLike, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write the public file (0644)."""
    atomic_write(path, dump(cert, secret=False).encode("utf-8"), mode=PUBLIC_MODE,
                 overwrite=force)


def save_secret(cert: KeyPairLike, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write the secret file (0600 from its first byte, also when replacing)."""
    atomic_write(path, dump(cert, secret=True).encode("utf-8"), mode=PRIVATE_MODE,
                 overwrite=force)


def save(cert: KeyPairLike, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write `path` and, when `cert` has a secret, `path_secret`; both or neither.

    Without `force`, neither file is written if either exists. Both texts are built, and
    both written to hidden temporaries, before anything is moved into place: a metadata
    error or a full disk leaves the old files (or no files) exactly as they were. Then the
    secret is moved first and the public file second, so a public file never names a key
    whose secret was not saved. If the public file cannot be moved into place (a directory
    in the way, an immutable file), the secret is undone: with `force` the old secret file
    (kept under a hidden second name until then) is put back, so a failed rotation leaves
    the old pair intact; a first write leaves nothing. The error says which. (A kill
    between the two renames leaves the new secret beside the old public file and a
    hidden `.NAME_secret.*.old.tmp`; `curvecert verify` reports both.)

    Raises `FileExists` (without `force`), `CertificateError` (metadata), or
    `OperationalError` (I/O).
    """
    path = os.fspath(path)
    spath = secret_path(path)
    public_text = dump(cert, secret=False).encode("utf-8")
    secret_text = dump(cert, secret=True).encode("utf-8") if cert.secret_key is not None \
        else None
    if not force:
        for p in (path, spath) if secret_text is not None else (path,):
            if os.path.lexists(p):
                raise FileExists(p)
    secret_tmp = prepare_write(spath, secret_text, mode=PRIVATE_MODE) \
        if secret_text is not None else None
    try:
        public_tmp = prepare_write(path, public_text, mode=PUBLIC_MODE)
    except BaseException:
        if secret_tmp is not None:
            abandon_write(secret_tmp)
        raise
    old_secret: str | None = None
    if secret_tmp is not None:
        try:
            old_secret = keep_old(spath) if force else None
            commit_write(secret_tmp, spath, overwrite=force)
        except BaseException:
            abandon_write(secret_tmp)
            abandon_write(public_tmp)
            drop_old(old_secret)
            raise
    try:
        commit_write(public_tmp, path, overwrite=force)
    except Exception as exc:
        if secret_tmp is None:
            raise
        undone = restore_old(old_secret, spath)
        if old_secret is not None:
            outcome = ("the old pair was kept unchanged" if undone else
                       f"the old secret could not be put back: it is {old_secret}")
        else:
            outcome = "nothing was written" if undone else f"{spath} was left behind"
        if isinstance(exc, FileExists):
            raise
        raise OperationalError(f"{exc}; {outcome}") from exc
    drop_old(old_secret)
    fsync_dir(os.path.dirname(os.path.abspath(path)))

