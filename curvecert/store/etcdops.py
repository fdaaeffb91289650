"""Changing an etcd store: add, remove and copy certificates with transactions.

Every write is an etcd transaction guarded by the revisions read just before, so two
administrators (or `store add` racing `store sync`) never overwrite each other silently:

- add: `create_revision == 0` (the key is absent) → put; a present key holding the same
  certificate is left alone; a different one is replaced only with `force`, and only if its
  `mod_revision` is still the one read (else `StoreError`: changed meanwhile, try again).
- remove: one transaction deleting every designated key, guarded by their `mod_revision`s
  (all or nothing).

The value written is exactly the public certificate file curvecert writes
(`certfile.dump(cert.public_only(), secret=False)`: CZMQ's ZPL layout, metadata included),
so `store sync etcd://... DIR` yields files CZMQ and pyzmq read.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from typing import Literal

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.errors import CurvecertError, FileExists, StoreError
from curvecert.store.etcdclient import EtcdClient, KeyValue
from curvecert.store.etcdsnap import KeySpace
from curvecert.store.etcdurl import EtcdOptions, EtcdUrl
from curvecert.store.snapshot import Snapshot

__all__ = ["EtcdWriter", "certificate_value", "same_certificate"]

_logger = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def certificate_value(cert: Certificate) -> bytes:
    """The bytes stored for `cert`: its public certificate file, as curvecert writes it."""
    return certfile.dump(cert.public_only(), secret=False).encode("utf-8")


class EtcdWriter:
    """Reads and transactional writes for one etcd store (the CLI's side of it)."""

    def __init__(self, url: EtcdUrl, options: EtcdOptions | None = None):
        """Prepare a client; nothing is sent yet."""
        self.url = url
        self.client = EtcdClient(url, options)

    def read(self) -> tuple[int, Snapshot, dict[bytes, KeyValue]]:
        """`(revision, snapshot, {public key: its KeyValue})` of the whole prefix, trusted
        keys only in the dict (same rules as the live store)."""
        revision, kvs = self.client.range_prefix(self.url.key_prefix)
        space = KeySpace(str(self.url), self.url.key_prefix)
        space.load(kvs)
        snap = space.snapshot()
        by_name = {kv.key: kv for kv in kvs}
        trusted = {key: by_name[self.url.key_for(key)] for key in snap.keys()}
        return revision, snap, trusted

    def certificates(self) -> dict[bytes, tuple[Certificate, bytes]]:
        """Every trusted certificate under the prefix: `{key: (certificate, value)}`."""
        _rev, _snap, trusted = self.read()
        return {key: (Certificate.parse(kv.value, path=f"{self.url}/{key.hex()}"), kv.value)
                for key, kv in trusted.items()}

    def would_replace(self, cert: Certificate) -> bool:
        """True when the key holds a different certificate (`add` needs `force`)."""
        _rev, current = self.client.get(self.url.key_for(cert.public_key))
        return current is not None and not _same(current.value, cert)

    def add(self, cert: Certificate, *, force: bool = False, value: bytes | None = None
            ) -> Literal["added", "unchanged", "replaced"]:
        """Store `cert`'s public part; return "added", "unchanged" or "replaced".

        `value` (default: `certificate_value(cert)`) is the file text to store, e.g. a
        public certificate file copied verbatim by `store sync`; it must parse to `cert`.
        Raises `FileExists` (naming the key) for a different certificate under the same
        key without `force`, `StoreError` when the key changed between read and write.
        """
        key = self.url.key_for(cert.public_key)
        value = certificate_value(cert) if value is None else value
        _rev, current = self.client.get(key)
        if current is not None:
            if _same(current.value, cert):
                return "unchanged"
            if not force:
                raise FileExists(f"{self.url}/{cert.public_key.hex()}")
            compare = {"key": _b64(key), "target": "MOD", "result": "EQUAL",
                       "mod_revision": current.mod_revision}
        else:
            compare = {"key": _b64(key), "target": "CREATE", "result": "EQUAL",
                       "create_revision": 0}
        ok, revision = self.client.txn(
            [compare], [{"request_put": {"key": _b64(key), "value": _b64(value)}}])
        if not ok:
            raise StoreError(f"{self.url}/{cert.public_key.hex()}: changed while being "
                             "written (another writer); nothing written, try again")
        _logger.info("%s/%s: stored %s at revision %d", self.url, cert.public_key.hex(),
                     cert.public_txt, revision)
        return "replaced" if current is not None else "added"

    def remove(self, keys: Iterable[bytes]) -> list[str]:
        """Delete the keys of these public keys in ONE transaction; return their names.

        Guarded by each key's `mod_revision` as read now: if any changed meanwhile nothing
        is deleted (`StoreError`). Keys already absent are skipped.
        """
        compare: list[dict[str, object]] = []
        success: list[dict[str, object]] = []
        names: list[str] = []
        for public_key in keys:
            key = self.url.key_for(public_key)
            _rev, current = self.client.get(key)
            if current is None:
                continue
            compare.append({"key": _b64(key), "target": "MOD", "result": "EQUAL",
                            "mod_revision": current.mod_revision})
            success.append({"request_delete_range": {"key": _b64(key)}})
            names.append(f"{self.url}/{public_key.hex()}")
        if not success:
            return []
        ok, _revision = self.client.txn(compare, success)
        if not ok:
            raise StoreError(f"{self.url}: a key changed while being removed (another "
                             "writer); nothing removed, try again")
        for name in names:
            _logger.info("%s: removed from the store", name)
        return names


def same_certificate(a: Certificate, b: Certificate) -> bool:
    """Same public key and same metadata (in order): what a store trusts and answers."""
    return a.public_key == b.public_key and list(a.meta.items()) == list(b.meta.items())


def _same(value: bytes, cert: Certificate) -> bool:
    try:
        stored = Certificate.parse(value)
    except CurvecertError:
        return False
    return not stored.has_secret and same_certificate(stored, cert)
