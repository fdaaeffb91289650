"""The store's data model: an immutable `Snapshot` {32-byte public key -> `Entry`}.

Ironhouse trusts exactly the public keys found in one directory. A `Snapshot` is what a
scan of that directory found (`curvecert.store.scan`): the trusted certificates, the
findings about every other file, and whether the directory could be read at all. It never
changes once built; a reload builds a new one. Lookups are one dict access, no disk.

Duplicate rule: among files with the same public key, the one whose relative path sorts
first (byte-wise, `/` as the separator, e.g. `a.key` < `a/b.key` < `b.key`) is trusted
and supplies the metadata; every other one is a `duplicate-key` finding. When the winner
goes away, the next one in that order takes over. (CZMQ aborts the process on a
duplicate; pyzmq does not notice, since it keeps keys only.)

Fail-closed rule: when the store directory itself cannot be listed, the snapshot trusts
nothing, `healthy` is False and `problem` says why.

Memory: at 100k certificates an entry costs about 350 bytes. A trusted file is kept as one
`bytes` record (stat signature, relative path, metadata already encoded as the ZMTP
property blob a ZAP reply carries) in a dict keyed by the raw public key, plus one slot in
a list of keys sorted by path (used to find a file's key when an event names its path).
`Entry` objects are built on demand by `lookup` and iteration. The stat signature
`(inode, size, mtime_ns, ctime_ns)` lets a rescan parse again only files that changed.

`State`, `Other`, `Scanned`, `rel_of`, `meta_of` and `make_record` are shared with the
scanner (same package); they are not part of the public API.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from curvecert.certs import keys
from curvecert.errors import InvalidKey
from curvecert.formats import z85, zmtp

__all__ = ["Entry", "Severity", "Snapshot", "StoreFinding"]

Severity = Literal["error", "warning"]

# record = ino, size, mtime_ns, ctime_ns (the stat signature), len(rel) | rel | metadata blob
_HDR = struct.Struct("<QQQQH")
SIG_LEN = 32
HDR_LEN = _HDR.size
_U16 = struct.Struct("<H").pack


@dataclass(frozen=True, slots=True)
class StoreFinding:
    """A problem with one file (or directory) of the store; `line` is None when not known.

    `severity` is "error" when the file is not trusted because of it, "warning" when the
    file is trusted but something about it deserves attention (dropped metadata). The
    fields match `curvecert.certs.verify.Finding` (which lives a layer above this module).
    """

    path: str
    line: int | None
    code: str
    message: str
    severity: Severity = "error"

    @property
    def location(self) -> str:
        """`path:line`, or just `path`."""
        return f"{self.path}:{self.line}" if self.line else self.path

    def to_dict(self) -> dict[str, object]:
        """The finding as a plain dict (for JSON)."""
        return {"path": self.path, "line": self.line, "severity": self.severity,
                "code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"



# --- records, entries and snapshots -------------------------------------------------------

def make_record(sig: bytes, rel: bytes, blob: bytes) -> bytes:
    """One trusted file as a record: stat signature, relative path, ZMTP metadata blob."""
    return b"".join((sig, _U16(len(rel)), rel, blob))


def rel_of(record: bytes) -> bytes:
    n = record[SIG_LEN] | (record[SIG_LEN + 1] << 8)
    return record[HDR_LEN:HDR_LEN + n]


def meta_of(record: bytes) -> bytes:
    n = record[SIG_LEN] | (record[SIG_LEN + 1] << 8)
    return record[HDR_LEN + n:]


class Entry:
    """A trusted certificate of a snapshot: its key, its file, its ZAP metadata."""

    __slots__ = ("_directory", "_record", "public_key")

    public_key: bytes

    def __init__(self, public_key: bytes, record: bytes, directory: bytes):
        """Wrap a snapshot record (built by `Snapshot`, not by callers)."""
        self.public_key = public_key
        self._record = record
        self._directory = directory

    @property
    def relpath(self) -> str:
        """The file's path relative to the store directory."""
        return os.fsdecode(rel_of(self._record))

    @property
    def file(self) -> str:
        """The file's path (the store directory joined with `relpath`)."""
        return os.fsdecode(os.path.join(self._directory, rel_of(self._record)))

    @property
    def metadata(self) -> bytes:
        """The metadata as ZMTP properties: exactly the blob a ZAP 200 reply carries."""
        return meta_of(self._record)

    @property
    def meta(self) -> dict[str, str]:
        """The metadata as ZAP sends it (names mapped to legal ZMTP names), decoded."""
        return {name: value.decode("utf-8", "surrogatepass")
                for name, value in zmtp.decode(meta_of(self._record))}

    @property
    def public_txt(self) -> str:
        """The public key as 40 Z85 characters (the ZAP User-Id)."""
        return z85.encode(self.public_key)

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` of the public key."""
        return keys.fingerprint(self.public_key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self.public_key == other.public_key and self._record == other._record

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"<Entry {self.public_txt} {self.relpath!r}>"


# others[rel] = (sig, key, record, problems): a file that is not the trusted one for a key.
# key/record are None for a bad file (problems then holds its error finding), set for a
# duplicate (problems holds its warnings, if any).
Other = tuple[bytes | None, bytes | None, bytes | None, tuple[StoreFinding, ...]]
# A freshly scanned file: (rel, sig, key, record, problems), same conventions; sig may be
# None for a readable certificate (its record starts with it).
Scanned = tuple[bytes, bytes | None, bytes | None, bytes | None, tuple[StoreFinding, ...]]


class State:
    """The mutable structures behind a snapshot (frozen once a Snapshot owns them)."""

    __slots__ = ("by_key", "notes", "order", "others")

    def __init__(self, by_key: dict[bytes, bytes], order: list[bytes],
                 others: dict[bytes, Other], notes: dict[bytes, tuple[StoreFinding, ...]]):
        self.by_key = by_key        # winner key -> record
        self.order = order          # winner keys, sorted by relative path
        self.others = others        # rel -> Other (bad files, duplicates, bad directories)
        self.notes = notes          # rel -> warnings of a winner

    def copy(self) -> State:
        return State(self.by_key.copy(), self.order.copy(), self.others.copy(),
                      self.notes.copy())

    def relkey(self, key: bytes) -> bytes:
        return rel_of(self.by_key[key])

    def remove_winner(self, key: bytes) -> bytes:
        record = self.by_key[key]
        rel = rel_of(record)
        i = bisect.bisect_left(self.order, rel, key=self.relkey)
        if i < len(self.order) and self.order[i] == key:
            del self.order[i]
        else:  # cannot happen while the invariants hold; stay correct anyway
            self.order.remove(key)
        del self.by_key[key]
        self.notes.pop(rel, None)
        return record

    def add_winner(self, key: bytes, record: bytes, *, sort_later: bool = False) -> None:
        self.by_key[key] = record
        if sort_later:
            self.order.append(key)
        else:
            i = bisect.bisect_left(self.order, rel_of(record), key=self.relkey)
            self.order.insert(i, key)


class Snapshot:
    """An immutable view of the store: {public key -> Entry}, findings, and health.

    Lookups are one dict access and never touch the disk. Iteration yields entries in
    path order. `healthy` is False when the directory could not be read; such a
    snapshot is empty and `problem` says why (fail closed).
    """

    __slots__ = ("_by_key", "_dir_b", "_state", "directory", "findings", "generation",
                 "healthy", "problem")

    directory: str
    generation: int
    findings: tuple[StoreFinding, ...]
    healthy: bool
    problem: str | None

    def __init__(self, directory: str, state: State, *, generation: int,
                 findings: tuple[StoreFinding, ...] = (), problem: str | None = None):
        """Built by `Scanner`; callers get snapshots from `scan` or a `CertStore`."""
        self.directory = directory
        self._dir_b = os.fsencode(directory)
        self._state = state
        self._by_key = state.by_key
        self.generation = generation
        self.findings = findings
        self.problem = problem
        self.healthy = problem is None

    @classmethod
    def empty(cls, directory: str = "", *, problem: str | None = None,
              generation: int = 0) -> Snapshot:
        """A snapshot that trusts nothing (before the first scan, or when unreadable)."""
        return cls(directory, State({}, [], {}, {}), generation=generation, problem=problem)

    def lookup(self, key: bytes | str) -> Entry | None:
        """The entry for a 32-byte public key (or its Z85 text), or None. No disk access."""
        try:
            record = self._by_key.get(key)  # type: ignore[arg-type]
        except TypeError:  # bytearray, memoryview: not hashable
            key = bytes(key)  # type: ignore[arg-type]
            record = self._by_key.get(key)
        if record is None:
            if len(key) != z85.KEY_TEXT_LEN:
                return None
            try:
                key = keys.decode_key(key, what="public key")
            except InvalidKey:
                return None
            record = self._by_key.get(key)
            if record is None:
                return None
        if type(key) is not bytes:  # a memoryview is hashable and matches: keep a copy
            key = bytes(key)  # type: ignore[arg-type]
        return Entry(key, record, self._dir_b)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Entry]:
        by_key, d = self._by_key, self._dir_b
        for key in self._state.order:
            yield Entry(key, by_key[key], d)

    def keys(self) -> Iterator[bytes]:
        """The trusted public keys, in path order."""
        return iter(self._state.order)

    def entry_for_path(self, relpath: str) -> Entry | None:
        """The trusted entry read from `relpath` (relative to the store), or None."""
        rel = os.fsencode(relpath)
        st = self._state
        i = bisect.bisect_left(st.order, rel, key=st.relkey)
        if i < len(st.order) and st.relkey(st.order[i]) == rel:
            key = st.order[i]
            return Entry(key, st.by_key[key], self._dir_b)
        return None

    def files(self) -> Iterator[tuple[str, bytes | None, Entry | None]]:
        """Every file the scan saw: `(relpath, key or None, entry if trusted else None)`."""
        for entry in self:
            yield entry.relpath, entry.public_key, entry
        for rel, (_sig, key, record, problems) in self._state.others.items():
            if record is not None:
                yield os.fsdecode(rel), key, None
            elif not (problems and problems[0].code == "unreadable-directory"):
                yield os.fsdecode(rel), None, None

    def candidates(self) -> Iterator[tuple[str, bytes, dict[str, str], bool]]:
        """Every readable certificate: `(relpath, key, meta, trusted)`, duplicates included."""
        for entry in self:
            yield entry.relpath, entry.public_key, entry.meta, True
        for rel, (_sig, key, record, _p) in self._state.others.items():
            if key is not None and record is not None:
                meta = {n: v.decode("utf-8", "surrogatepass")
                        for n, v in zmtp.decode(meta_of(record))}
                yield os.fsdecode(rel), key, meta, False

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else f"UNHEALTHY ({self.problem})"
        return (f"<Snapshot {self.directory!r} gen={self.generation} {len(self)} keys "
                f"{len(self.findings)} findings {state}>")
