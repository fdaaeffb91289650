"""CURVE key sources a policy consults: the `KeyLookup` protocol, `StaticKeys`, `KeyChain`
and the deliberately named `UnsafeAllowAny` (Stonehouse).

`curvecert.CertStore` is the usual `KeyLookup`; the ones here are in-memory. Lookups must be
fast and must not block on I/O: the authenticator answers one request at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError
from curvecert.formats import zmtp

__all__ = ["KeyChain", "KeyEntry", "KeyLookup", "StaticKeys", "UnsafeAllowAny"]


@runtime_checkable
class KeyEntry(Protocol):
    """What a key lookup returns for a known key: the ZAP metadata blob to send back."""

    @property
    def metadata(self) -> bytes:
        """ZMTP-encoded metadata (may be empty)."""


@runtime_checkable
class KeyLookup(Protocol):
    """A CURVE key source: `lookup(32-byte key)` → an entry, or None for an unknown key.

    `curvecert.CertStore` implements it; so does `StaticKeys`. Lookups must be fast and
    must not block on I/O: the authenticator answers one request at a time.
    """

    def lookup(self, key: bytes, /) -> KeyEntry | None:
        """The entry for `key`, or None."""



class UnsafeAllowAny:
    """Stonehouse: accept ANY CURVE client key. Encrypted, but nobody is authenticated.

    Set per domain, on purpose, with this deliberately alarming name; the authenticator
    logs a warning whenever a policy containing it is installed.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "UnsafeAllowAny()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnsafeAllowAny)

    def __hash__(self) -> int:
        return hash(UnsafeAllowAny)


@dataclass(frozen=True, slots=True)
class _Entry:
    metadata: bytes


class StaticKeys:
    """An in-memory, immutable `KeyLookup`: `{32-byte key: entry}`.

    Build it from certificates (their metadata becomes ZAP metadata, names mapped to legal
    ZMTP names and sizes bounded by `curvecert.formats.zmtp.encode_lenient`) or from bare keys.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[bytes, KeyEntry] | None = None) -> None:
        """Copy `entries`; every key must be 32 bytes."""
        table = dict(entries or {})
        for key in table:
            if len(key) != 32:
                raise ConfigError(f"CURVE keys are 32 bytes, got {len(key)}")
        self._entries: Mapping[bytes, KeyEntry] = table

    @classmethod
    def from_certificates(cls, certs: Iterable[Certificate]) -> StaticKeys:
        """Keys and metadata of `certs` (the first of duplicate keys wins)."""
        table: dict[bytes, KeyEntry] = {}
        for cert in certs:
            blob, _dropped = zmtp.encode_lenient(cert.meta)
            table.setdefault(cert.public_key, _Entry(blob))
        return cls(table)

    @classmethod
    def from_keys(cls, keys: Iterable[bytes | str]) -> StaticKeys:
        """Bare keys (raw or Z85), no metadata."""
        from curvecert.certs.keys import decode_key

        empty = _Entry(b"")
        return cls({decode_key(k, what="client key"): empty for k in keys})

    def lookup(self, key: bytes, /) -> KeyEntry | None:
        """The entry for `key`, or None."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<StaticKeys {len(self._entries)} keys>"


class KeyChain:
    """Several key lookups as one (e.g. two store directories): the first hit wins."""

    __slots__ = ("lookups",)

    def __init__(self, lookups: Iterable[KeyLookup]) -> None:
        """Keep `lookups` in order; each must have a `lookup` method."""
        self.lookups = tuple(lookups)
        for item in self.lookups:
            if not isinstance(item, KeyLookup):
                raise ConfigError(f"{item!r} is not a key lookup (no lookup method)")

    def lookup(self, key: bytes, /) -> KeyEntry | None:
        """The first entry any lookup has for `key`, or None."""
        for item in self.lookups:
            entry = item.lookup(key)
            if entry is not None:
                return entry
        return None

    def __repr__(self) -> str:
        return f"<KeyChain {list(self.lookups)!r}>"

