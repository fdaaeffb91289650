"""`Certificate`: a CURVE keypair (the secret optional) plus ordered metadata.

A certificate is an immutable value. A public-only certificate has `secret_key is None`
(CZMQ stores forty `0` characters instead, and then says a public certificate differs
from its own secret one). A certificate with a secret key is only ever built when the
secret derives to the public key, so a mismatched pair cannot exist in memory.
Equality and hashing use the public key alone, compared in constant time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from curvecert.certs import certfile, keys
from curvecert.errors import CertificateError
from curvecert.formats import z85

__all__ = ["Certificate"]

MetaInput = Mapping[str, str] | Iterable[tuple[str, str]] | None


def _freeze_meta(meta: MetaInput) -> Mapping[str, str]:
    items = meta.items() if isinstance(meta, Mapping) else (meta or ())
    out: dict[str, str] = {}
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise CertificateError(f"metadata names and values must be text: {name!r}")
        if not name:
            raise CertificateError("metadata name may not be empty")
        out.setdefault(name, value)  # CZMQ: the first of duplicate names wins
    return MappingProxyType(out)


class Certificate:
    """A CURVE certificate: `public_key` (32 bytes), optional `secret_key`, and `meta`."""

    __slots__ = ("_meta", "_public", "_secret")

    _public: bytes
    _secret: bytes | None
    _meta: Mapping[str, str]

    def __init__(self, public_key: bytes, secret_key: bytes | None = None,
                 meta: MetaInput = None, *, check: bool = True):
        """Build from raw 32-byte keys; a secret must derive to the public key."""
        if len(public_key) != keys.KEY_LEN:
            raise CertificateError(f"public key must be 32 bytes, got {len(public_key)}")
        if secret_key is not None:
            if len(secret_key) != keys.KEY_LEN:
                raise CertificateError(f"secret key must be 32 bytes, got {len(secret_key)}")
            if check and not keys.keys_equal(keys.derive_public(secret_key), public_key):
                raise CertificateError("the secret key does not belong to the public key")
        object.__setattr__(self, "_public", bytes(public_key))
        object.__setattr__(self, "_secret", bytes(secret_key) if secret_key else None)
        object.__setattr__(self, "_meta", _freeze_meta(meta))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Certificate is immutable")

    # --- constructors -------------------------------------------------------------------

    @classmethod
    def new(cls, meta: MetaInput = None, **named: str) -> Certificate:
        """A fresh keypair with metadata; keyword names use `_` for `-` (`created_by=`)."""
        public, secret = keys.keypair()
        items = list(meta.items() if isinstance(meta, Mapping) else (meta or ()))
        items += [(k.replace("_", "-"), v) for k, v in named.items()]
        return cls(public, secret, items, check=False)

    @classmethod
    def from_secret(cls, secret_key: bytes | str, meta: MetaInput = None) -> Certificate:
        """A certificate from a secret key (raw or Z85); the public key is derived."""
        secret = keys.decode_key(secret_key, what="secret key")
        return cls(keys.derive_public(secret), secret, meta, check=False)

    @classmethod
    def from_public(cls, public_key: bytes | str, meta: MetaInput = None) -> Certificate:
        """A public-only certificate from a raw or Z85 public key."""
        return cls(keys.decode_key(public_key, what="public key"), None, meta)

    @classmethod
    def parse(cls, data: str | bytes, *,
              path: str | os.PathLike[str] | None = None) -> Certificate:
        """A certificate from ZPL text (CZMQ or pyzmq layout); see `certfile.parse_values`.

        Raises `ZplError` or `CertificateError`, naming `path` and the line.
        """
        public, secret, meta = certfile.parse_values(data, path=path)
        return cls(public, secret, meta, check=False)  # parse_values checked the pair

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Certificate:
        """Load exactly the file at `path` (CZMQ or pyzmq layout); never its `_secret` sibling."""
        public, secret, meta = certfile.load_values(path)
        return cls(public, secret, meta, check=False)

    # --- values -------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key."""
        return self._public

    @property
    def secret_key(self) -> bytes | None:
        """The 32-byte secret key, or None for a public-only certificate."""
        return self._secret

    @property
    def public_txt(self) -> str:
        """The public key as 40 Z85 characters."""
        return z85.encode(self._public)

    @property
    def secret_txt(self) -> str | None:
        """The secret key as Z85 text: only for callers that really mean to reveal it."""
        return z85.encode(self._secret) if self._secret is not None else None

    @property
    def has_secret(self) -> bool:
        """True when this certificate holds a secret key."""
        return self._secret is not None

    @property
    def meta(self) -> Mapping[str, str]:
        """Metadata in file order (read-only)."""
        return self._meta

    @property
    def fingerprint(self) -> str:
        """`SHA256:<base64>` of the public key, as ssh-keygen prints fingerprints."""
        return keys.fingerprint(self._public)

    def public_only(self) -> Certificate:
        """The same certificate without its secret key."""
        return Certificate(self._public, None, self._meta)

    def with_meta(self, meta: MetaInput) -> Certificate:
        """A copy with the metadata replaced."""
        return Certificate(self._public, self._secret, meta, check=False)

    # --- files --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        """Write `path` (public) and, with a secret, `path_secret` (mode 0600)."""
        certfile.save(self, path, force=force)

    def save_public(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        """Write only the public file at `path`."""
        certfile.save_public(self, path, force=force)

    def save_secret(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        """Write only the secret file at `path` (mode 0600 from the first byte)."""
        certfile.save_secret(self, path, force=force)

    # --- sockets ------------------------------------------------------------------------

    def apply(self, socket: Any) -> None:
        """Set this certificate's keys on a pyzmq socket (`CURVE_PUBLICKEY`/`SECRETKEY`)."""
        if self._secret is None:
            raise CertificateError("a public-only certificate cannot be applied to a socket")
        socket.curve_publickey = self._public
        socket.curve_secretkey = self._secret

    def apply_server(self, socket: Any) -> None:
        """Make `socket` a CURVE server with this certificate's keys."""
        self.apply(socket)
        socket.curve_server = True

    def apply_client(self, socket: Any, server: Certificate | bytes | str) -> None:
        """Make `socket` a CURVE client with these keys that expects `server`'s public key."""
        self.apply(socket)
        if isinstance(server, Certificate):
            socket.curve_serverkey = server.public_key
        else:
            socket.curve_serverkey = keys.decode_key(server, what="server key")

    # --- comparison ---------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Certificate):
            return NotImplemented
        return keys.keys_equal(self._public, other._public)

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        kind = "secret" if self._secret is not None else "public"
        return f"<Certificate {kind} {self.public_txt} {dict(self._meta)!r}>"
