"""etcd key/values → the store's `Snapshot`: the same parser, records and rules as files.

Each key under the prefix is one would-be certificate file, named by its last segment
(`<64 hex digits>`): the value goes through the very function that parses a store file
(`curvecert.store.files.parse_data`: the full ZPL grammar, CZMQ's layout fast path, the
same findings), and a trusted one becomes the same compact record a scanned file does, so
lookups, memory per key, `resolve`, `store list` and `store check` behave identically for
both backends. The record's 32-byte signature holds `(mod_revision, value length,
create_revision, version)` instead of a file's stat signature.

Extra rules for etcd (each breach is a finding, and the key is not trusted):
- the key's name must be the lower-case hex of the public key in its value
  (`key-mismatch`: a value copied under another key's name is refused, fail closed);
- nothing but `PREFIX/<hex>` is read (`unexpected-key` for deeper or other names).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from curvecert.formats import z85
from curvecert.store.etcdclient import KeyValue
from curvecert.store.files import MAX_FILE_SIZE, parse_data
from curvecert.store.snapshot import Snapshot
from curvecert.store.state import Scanned, State, make_finding

__all__ = ["KeySpace"]

_NAME = re.compile(rb"[0-9a-f]{64}\Z")
_SIG = struct.Struct("<QQQQ").pack
_M64 = (1 << 64) - 1


def _sig(kv: KeyValue) -> bytes:
    return _SIG(kv.mod_revision & _M64, len(kv.value), kv.create_revision & _M64,
                kv.version & _M64)


class KeySpace:
    """The parsed content of one etcd prefix, changed key by key, published as snapshots.

    Not thread-safe: one writer (the store's watch thread, or a one-shot reader).
    `state` is replaced (copy-on-write) by `apply`, so published snapshots never change.
    """

    def __init__(self, where: str, key_prefix: bytes):
        """`where` names the store in snapshots and findings (the URL, no secrets)."""
        self.where = where
        self._where_b = where.encode("utf-8")
        self.key_prefix = key_prefix
        self.state = State()
        self.generation = 0

    def _read(self, kv: KeyValue) -> Scanned:
        """`(rel, sig, key or None, record or None, problems)` for one key/value."""
        rel = kv.key[len(self.key_prefix):]
        sig = _sig(kv)
        if not _NAME.match(rel):
            return rel, sig, None, None, (make_finding(
                self._where_b, rel, "unexpected-key",
                "not PREFIX/<64 lower-case hex digits of the public key>; not read"),)
        if len(kv.value) > MAX_FILE_SIZE:
            return rel, sig, None, None, (make_finding(
                self._where_b, rel, "too-large",
                f"{len(kv.value)} bytes (limit {MAX_FILE_SIZE})"),)
        scanned = parse_data(self._where_b, rel, sig, kv.value)
        key = scanned[2]
        if key is not None and key.hex().encode("ascii") != rel:
            return rel, sig, None, None, (make_finding(
                self._where_b, rel, "key-mismatch",
                f"holds the certificate of {z85.encode(key)}, whose key is {key.hex()}; "
                "not trusted"),)
        return scanned

    def load(self, kvs: Iterable[KeyValue]) -> None:
        """Replace everything with `kvs` (a full read of the prefix, sorted by key)."""
        state = State()
        for kv in kvs:
            rel, sig, key, record, problems = self._read(kv)
            if key is None or record is None:
                state.put_other(rel, (sig, None, None, problems))
                continue
            state.by_key[key] = record
            state.order.append(key)
            if problems:
                state.notes[rel] = problems
        state.order.sort(key=state.relkey)  # etcd sorts keys; hex order = path order
        state.rebuild_bloom()
        self.state = state

    def apply(self, changes: Iterable[tuple[bool, KeyValue]]) -> bool:
        """Apply `(deleted, kv)` changes in order (copy-on-write); True if anything changed."""
        state: State | None = None
        for deleted, kv in changes:
            if state is None:
                state = self.state.copy()
            rel = kv.key[len(self.key_prefix):]
            state.pop_other(rel)
            if _NAME.match(rel):
                old_key = bytes.fromhex(rel.decode("ascii"))
                if old_key in state.by_key:
                    state.remove_winner(old_key)
            if deleted:
                continue
            rel, sig, key, record, problems = self._read(kv)
            if key is None or record is None:
                state.put_other(rel, (sig, None, None, problems))
                continue
            state.add_winner(key, record)
            if problems:
                state.notes[rel] = problems
        if state is None:
            return False
        self.state = state
        return True

    def snapshot(self) -> Snapshot:
        """A new immutable snapshot of the current state (the generation goes up by one)."""
        self.generation += 1
        return Snapshot(self.where, self.state, generation=self.generation)

    def unhealthy(self, problem: str) -> Snapshot:
        """An empty snapshot that trusts nothing (fail closed); the state is kept."""
        self.generation += 1
        return Snapshot.empty(self.where, problem=problem, generation=self.generation)
