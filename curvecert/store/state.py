"""The indexed, mutable structures behind a snapshot, and the findings they hold.

A trusted file is one `bytes` record: its stat signature `(inode, size, mtime_ns,
ctime_ns)`, its path relative to the store, and its metadata already encoded as the ZMTP
property blob a ZAP reply carries (`make_record`, `rel_of`, `meta_of`). A `State` holds
the records by public key, the keys in path order, and every file that is not trusted
(`others`), indexed so that a change to one path costs O(log n), never a pass over every
finding (issue 11 §6). `Builder` fills a `State` from a full scan. A `Snapshot`
(`curvecert.store.snapshot`) owns a `State` and never changes it again; the scanner
copies the state to make the next one. None of this is public API except `StoreFinding`.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = ["DIRECTORY_CODES", "HDR_LEN", "SIG_LEN", "Builder", "Other", "Scanned",
           "Severity", "State", "StoreFinding", "duplicate_finding", "make_finding",
           "make_record", "meta_of", "rel_of"]

Severity = Literal["error", "warning"]

# record = ino, size, mtime_ns, ctime_ns (the stat signature), len(rel) | rel | metadata blob
_HDR = struct.Struct("<QQQQH")
_BLOOM_MIN = 1 << 15  # bits; grown to 16 bits per trusted file (about 5% false positives)
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



#: Finding codes about a directory (not a file) of the store.
DIRECTORY_CODES = frozenset({"unreadable-directory", "writable-directory",
                             "writable-parent"})


def make_finding(dir_b: bytes, rel: bytes, code: str, message: str, *,
                 line: int | None = None, severity: Severity = "error") -> StoreFinding:
    """A finding about `rel` (relative to the store directory `dir_b`; b"" is the store)."""
    path = os.path.join(dir_b, rel) if rel else dir_b
    return StoreFinding(os.fsdecode(path), line or None, code, message, severity)


def duplicate_finding(dir_b: bytes, rel: bytes, winner: bytes | None) -> StoreFinding:
    """The `duplicate-key` finding of `rel`, whose key is trusted from `winner`."""
    first = os.fsdecode(winner) if winner is not None else "?"
    return make_finding(dir_b, rel, "duplicate-key",
                        f"same public key as {first}, which is the file trusted (the first "
                        "by sorted path); this one is ignored")


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


# others[rel] = (sig, key, record, problems): a file that is not the trusted one for a key.
# key/record are None for a bad file (problems then holds its error finding), set for a
# duplicate (problems holds its warnings, if any).
Other = tuple[bytes | None, bytes | None, bytes | None, tuple[StoreFinding, ...]]
# A freshly scanned file: (rel, sig, key, record, problems), same conventions; sig may be
# None for a readable certificate (its record starts with it).
Scanned = tuple[bytes, bytes | None, bytes | None, bytes | None, tuple[StoreFinding, ...]]


class State:
    """The mutable structures behind a snapshot (frozen once a Snapshot owns them).

    Every structure is indexed so that a change to one path costs O(log n), never a pass
    over every finding: `dupkeys` finds a key's duplicates, `dirs` says which paths were
    directories (only those can have files below them in `others`), `links` which files
    were read through a symbolic link (a change to what they point at is no event on them).
    """

    __slots__ = ("bloom", "by_key", "dirs", "dupkeys", "links", "notes", "order", "others")

    def __init__(self, by_key: dict[bytes, bytes] | None = None,
                 order: list[bytes] | None = None, others: dict[bytes, Other] | None = None,
                 notes: dict[bytes, tuple[StoreFinding, ...]] | None = None,
                 dupkeys: dict[bytes, tuple[bytes, ...]] | None = None,
                 dirs: set[bytes] | None = None, bloom: bytearray | None = None,
                 links: set[bytes] | None = None):
        self.by_key = {} if by_key is None else by_key  # winner key -> record
        self.order = [] if order is None else order     # winner keys, sorted by rel. path
        self.others = {} if others is None else others  # rel -> Other (bad, dup, dirs)
        self.notes = {} if notes is None else notes     # rel -> warnings of a winner
        self.dupkeys = {} if dupkeys is None else dupkeys  # key -> rels of its duplicates
        self.dirs = set() if dirs is None else dirs     # rels of sub-directories seen
        self.links = set() if links is None else links  # rels of symbolic links seen
        # A Bloom filter of the paths trusted keys were read from (and their directories):
        # `may_trust` answers "certainly not" in ~0.3 µs, so a watcher can tell a possible
        # revocation from the thousands of other events of a burst without a bisection.
        # Bits are only ever set (a removal leaves a false positive, checked exactly).
        self.bloom = bytearray(_BLOOM_MIN // 8) if bloom is None else bloom

    def copy(self) -> State:
        return State(self.by_key.copy(), self.order.copy(), self.others.copy(),
                     self.notes.copy(), self.dupkeys.copy(), self.dirs.copy(),
                     self.bloom.copy(), self.links.copy())

    def rebuild_bloom(self) -> None:
        """Size the Bloom filter for the trusted files (16 bits each) and fill it."""
        bits = _BLOOM_MIN
        while bits < 16 * len(self.by_key):
            bits *= 2
        self.bloom = bytearray(bits // 8)
        for record in self.by_key.values():
            self.mark_trusted(rel_of(record))

    def mark_trusted(self, rel: bytes) -> None:
        """Add `rel` and the directories above it to the Bloom filter."""
        bloom = self.bloom
        mask = len(bloom) * 8 - 1
        while rel:
            h = hash(rel)
            a, b = h & mask, (h >> 24) & mask
            bloom[a >> 3] |= 1 << (a & 7)
            bloom[b >> 3] |= 1 << (b & 7)
            rel = rel.rpartition(b"/")[0]

    def may_trust(self, rel: bytes) -> bool:
        """False when no trusted key is read from `rel` or below it; True: maybe."""
        bloom = self.bloom
        mask = len(bloom) * 8 - 1
        h = hash(rel)
        a, b = h & mask, (h >> 24) & mask
        return bool(bloom[a >> 3] & (1 << (a & 7)) and bloom[b >> 3] & (1 << (b & 7)))

    def put_other(self, rel: bytes, other: Other) -> None:
        """Record a file that is not trusted (or a duplicate), keeping `dupkeys` right."""
        if rel in self.others:
            self.pop_other(rel)
        self.others[rel] = other
        key = other[1]
        if key is not None:
            self.dupkeys[key] = (*self.dupkeys.get(key, ()), rel)

    def pop_other(self, rel: bytes) -> Other | None:
        """Forget `rel` from `others` (and `dupkeys`); return what it was."""
        other = self.others.pop(rel, None)
        if other is not None and other[1] is not None:
            key = other[1]
            rels = tuple(r for r in self.dupkeys.get(key, ()) if r != rel)
            if rels:
                self.dupkeys[key] = rels
            else:
                self.dupkeys.pop(key, None)
        return other
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
        if len(self.by_key) > len(self.bloom):  # under 8 bits per file: grow
            self.rebuild_bloom()
        else:
            self.mark_trusted(rel_of(record))
        if sort_later:
            self.order.append(key)
        else:
            i = bisect.bisect_left(self.order, rel_of(record), key=self.relkey)
            self.order.insert(i, key)

    def index(self, prefix: bytes) -> dict[bytes, Scanned]:
        """What a state knew about files at or below `prefix`, by relative path.

        O(files below `prefix`) plus, only when `prefix` was a directory, one pass over
        `others` (a file event never costs a pass over the findings).
        """
        out: dict[bytes, Scanned] = {}
        keys = self.by_key if prefix == b"" else self.range(prefix)
        for key in keys:
            record = self.by_key[key]
            rel = rel_of(record)
            out[rel] = (rel, record[:SIG_LEN], key, record, self.notes.get(rel, ()))
        if prefix == b"" or prefix in self.dirs:
            sub = prefix + b"/"
            items = [(r, o) for r, o in self.others.items()
                     if prefix == b"" or r == prefix or r.startswith(sub)]
        else:
            other = self.others.get(prefix)
            items = [(prefix, other)] if other is not None else []
        for rel, (sig, okey, orecord, problems) in items:
            if orecord is not None:
                sig = orecord[:SIG_LEN]
            out[rel] = (rel, sig, okey, orecord, problems)
        return out

    def range(self, prefix: bytes) -> list[bytes]:
        """Winner keys whose path is `prefix` or below it (a contiguous run of `order`)."""
        order, rk = self.order, self.relkey
        lo = bisect.bisect_left(order, prefix, key=rk)
        hi = lo
        if hi < len(order) and rk(order[hi]) == prefix:
            hi += 1
        a = bisect.bisect_left(order, prefix + b"/", lo=hi, key=rk)
        b = bisect.bisect_left(order, prefix + b"0", lo=a, key=rk)  # '0' follows '/'
        return order[lo:hi] + order[a:b]


class Builder:
    """Builds a state from files arriving in any order (the first by sorted path wins).

    Streaming, rather than collecting and sorting the scanned files, keeps a full scan from
    leaving a list of per-file tuples behind (fewer transient objects: a lower RSS).
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = State()

    def append(self, item: Scanned) -> None:
        rel, sig, key, record, problems = item
        st = self.state
        if key is None or record is None:
            st.put_other(rel, (sig, None, None, problems))
            return
        current = st.by_key.get(key)
        if current is None:
            st.by_key[key] = record
            st.order.append(key)
            if problems:
                st.notes[rel] = problems
            return
        current_rel = rel_of(current)
        if rel < current_rel:  # the newcomer sorts first: it wins, the old one is a duplicate
            st.put_other(current_rel, (None, key, current, st.notes.pop(current_rel, ())))
            st.by_key[key] = record
            if problems:
                st.notes[rel] = problems
        else:
            st.put_other(rel, (None, key, record, problems))

    def finish(self) -> State:
        self.state.order.sort(key=self.state.relkey)
        self.state.rebuild_bloom()
        return self.state
