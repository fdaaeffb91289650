"""etcd key/values → the store's `Snapshot`: the same parser, records and rules as files.

Each key under the prefix is one would-be certificate file, named by its last segment
(`<64 hex digits>`): the value is parsed exactly like a store file
(`curvecert.store.snapshot.parse_public`: the full ZPL grammar, CZMQ's layout fast path),
and a trusted one becomes the same compact record a scanned file does, so lookups, memory
per key, `resolve`, `store list` and `store check` behave identically for both backends.
The record's 32-byte signature holds `(mod_revision, value length, create_revision,
version)` instead of a file's stat signature.

Extra rules for etcd (each breach is a finding, and the key is not trusted):
- the key's name must be the lower-case hex of the public key in its value
  (`key-mismatch`: a value copied under another key's name is refused, fail closed);
- nothing but `PREFIX/<hex>` is read (`unexpected-key` for deeper or other names).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from curvecert.errors import CertificateError, CurvecertError, ZplSyntaxError
from curvecert.formats import z85
from curvecert.store.etcdclient import KeyValue
from curvecert.store.snapshot import (
    _SECRET_REASON,
    CZMQ_METADATA_LIMIT,
    MAX_FILE_SIZE,
    Snapshot,
    StoreFinding,
    _encode_meta,
    _State,
    parse_public,
)

__all__ = ["KeySpace"]

_NAME = re.compile(rb"[0-9a-f]{64}\Z")
_SIG = struct.Struct("<QQQQ").pack
_U16 = struct.Struct("<H").pack
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
        self.key_prefix = key_prefix
        self.state = _State({}, [], {}, {})
        self.generation = 0

    # --- one key ------------------------------------------------------------------------

    def _path(self, rel: bytes) -> str:
        return f"{self.where}/{rel.decode('ascii', 'backslashreplace')}"

    def _finding(self, rel: bytes, code: str, message: str, *, line: int | None = None,
                 severity: str = "error") -> StoreFinding:
        return StoreFinding(self._path(rel), line or None, code, message,
                            "warning" if severity == "warning" else "error")

    def _read(self, kv: KeyValue
              ) -> tuple[bytes, bytes | None, bytes | None, tuple[StoreFinding, ...]]:
        """`(rel, key or None, record or None, problems)` for one key/value."""
        rel = kv.key[len(self.key_prefix):]
        if not _NAME.match(rel):
            return rel, None, None, (self._finding(
                rel, "unexpected-key", "not PREFIX/<64 lower-case hex digits of the public "
                "key>; not read"),)
        if len(kv.value) > MAX_FILE_SIZE:
            return rel, None, None, (self._finding(
                rel, "too-large", f"{len(kv.value)} bytes (limit {MAX_FILE_SIZE})"),)
        try:
            key, items = parse_public(kv.value, path=self._path(rel))
        except ZplSyntaxError as exc:
            return rel, None, None, (self._finding(rel, "unparsable", exc.reason,
                                                   line=exc.line),)
        except CertificateError as exc:
            code = "secret-key" if exc.reason == _SECRET_REASON else "invalid-certificate"
            return rel, None, None, (self._finding(rel, code, exc.reason, line=exc.line),)
        except CurvecertError as exc:
            return rel, None, None, (self._finding(rel, "invalid-certificate", str(exc)),)
        if key.hex().encode("ascii") != rel:
            return rel, None, None, (self._finding(
                rel, "key-mismatch", f"holds the certificate of {z85.encode(key)}, whose key "
                f"is {key.hex()}; not trusted"),)
        blob, dropped = _encode_meta(items) if items else (b"", [])
        problems: tuple[StoreFinding, ...] = ()
        if dropped:
            problems = (self._finding(
                rel, "metadata-dropped", "metadata not sent in ZAP replies (reserved, "
                f"duplicate after mapping to a ZMTP name, or too large): {', '.join(dropped)}",
                severity="warning"),)
        if len(blob) > CZMQ_METADATA_LIMIT:
            problems += (self._finding(
                rel, "czmq-metadata-overflow", f"metadata encodes to {len(blob)} bytes; "
                f"CZMQ's zauth corrupts its heap above {CZMQ_METADATA_LIMIT}",
                severity="warning"),)
        record = b"".join((_sig(kv), _U16(len(rel)), rel, blob))
        return rel, key, record, problems

    # --- many keys ----------------------------------------------------------------------

    def load(self, kvs: Iterable[KeyValue]) -> None:
        """Replace everything with `kvs` (a full read of the prefix, sorted by key)."""
        state = _State({}, [], {}, {})
        for kv in kvs:
            rel, key, record, problems = self._read(kv)
            if key is None or record is None:
                state.others[rel] = (None, None, None, problems)
                continue
            state.by_key[key] = record
            state.order.append(key)  # etcd returns keys sorted: hex order = path order
            if problems:
                state.notes[rel] = problems
        state.order.sort(key=state.relkey)
        self.state = state

    def apply(self, changes: Iterable[tuple[bool, KeyValue]]) -> bool:
        """Apply `(deleted, kv)` changes in order (copy-on-write); True if anything changed."""
        state: _State | None = None
        for deleted, kv in changes:
            if state is None:
                state = self.state.copy()
            rel = kv.key[len(self.key_prefix):]
            state.others.pop(rel, None)
            if _NAME.match(rel):
                old_key = bytes.fromhex(rel.decode("ascii"))
                if old_key in state.by_key:
                    state.remove_winner(old_key)
            if deleted:
                continue
            rel, key, record, problems = self._read(kv)
            if key is None or record is None:
                state.others[rel] = (None, None, None, problems)
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
        state = self.state
        findings: list[StoreFinding] = []
        for other in state.others.values():
            findings.extend(other[3])
        for problems in state.notes.values():
            findings.extend(problems)
        findings.sort(key=lambda f: (f.path, f.line or 0, f.code))
        return Snapshot(self.where, state, generation=self.generation,
                        findings=tuple(findings))

    def unhealthy(self, problem: str) -> Snapshot:
        """An empty snapshot that trusts nothing (fail closed); the state is kept."""
        self.generation += 1
        return Snapshot.empty(self.where, problem=problem, generation=self.generation)
