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

The structures behind a snapshot (records, `State`) are in `curvecert.store.state`.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator

from curvecert.certs import keys
from curvecert.certs.validity import Validity, from_zmtp
from curvecert.errors import InvalidKey
from curvecert.formats import z85, zmtp
from curvecert.store.state import (
    DIRECTORY_CODES,
    Severity,
    State,
    StoreFinding,
    duplicate_finding,
    meta_of,
    rel_of,
)

__all__ = ["Entry", "Severity", "Snapshot", "StoreFinding"]


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
    def validity(self) -> Validity | None:
        """The certificate's `not-before`/`not-after` period, or None without dates."""
        return from_zmtp(meta_of(self._record))

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


class Snapshot:
    """An immutable view of the store: {public key -> Entry}, findings, and health.

    Lookups are one dict access and never touch the disk. Iteration yields entries in
    path order. `healthy` is False when the directory could not be read; such a
    snapshot is empty and `problem` says why (fail closed).
    """

    __slots__ = ("_by_key", "_dir_b", "_expiries", "_findings", "_state", "directory",
                 "generation", "healthy", "problem")

    directory: str
    generation: int
    healthy: bool
    problem: str | None

    def __init__(self, directory: str, state: State, *, generation: int,
                 problem: str | None = None):
        """Built by `Scanner`; callers get snapshots from `scan` or a `CertStore`."""
        self.directory = directory
        self._dir_b = os.fsencode(directory)
        self._state = state
        self._by_key = state.by_key
        self._findings: tuple[StoreFinding, ...] | None = None
        self.generation = generation
        self.problem = problem
        self.healthy = problem is None
        self._expiries: list[float] | None = None

    @property
    def next_expiry(self) -> float | None:
        """The earliest `not-after` (seconds since the epoch) still in the future among the
        trusted certificates, or None. Computed once per snapshot (an O(N) pass; the ZAP
        path never needs it: each decision compares its own entry with the clock)."""
        return self.next_expiry_after(time.time())

    def next_expiry_after(self, now: float) -> float | None:
        """The earliest `not-after` later than `now`, or None."""
        if self._expiries is None:
            found = []
            for record in self._by_key.values():
                blob = meta_of(record)
                if b"not-" in blob:
                    period = from_zmtp(blob)
                    if period is not None and period.not_after is not None:
                        found.append(period.not_after)
            self._expiries = sorted(found)
        i = bisect.bisect_right(self._expiries, now)
        return self._expiries[i] if i < len(self._expiries) else None

    @property
    def findings(self) -> tuple[StoreFinding, ...]:
        """Every problem found, sorted by path, line and code.

        Built on first use (O(findings)), so that publishing a snapshot after a change
        costs O(changed paths) however many bad files the store holds (issue 11 §6).
        """
        found = self._findings
        if found is None:
            out: list[StoreFinding] = []
            d, st = self._dir_b, self._state
            for rel, (_sig, key, record, problems) in st.others.items():
                if key is not None and record is not None:
                    winner = st.by_key.get(key)
                    out.append(duplicate_finding(d, rel, rel_of(winner) if winner else None))
                out.extend(problems)
            for problems in st.notes.values():
                out.extend(problems)
            out.sort(key=lambda f: (f.path, f.line or 0, f.code))
            found = self._findings = tuple(out)
        return found

    @classmethod
    def empty(cls, directory: str = "", *, problem: str | None = None,
              generation: int = 0) -> Snapshot:
        """A snapshot that trusts nothing (before the first scan, or when unreadable)."""
        return cls(directory, State(), generation=generation, problem=problem)

    @property
    def reads_links(self) -> bool:
        """True when a file of the store is a symbolic link: a change to an ignored name
        (a dot-directory, say) may then change what is trusted."""
        return bool(self._state.links)

    def same_as(self, other: Snapshot) -> bool:
        """True when `other` trusts and reports exactly what this snapshot does (the
        generation aside): a rescan that changed nothing need not be published."""
        a, b = self._state, other._state
        return (self.problem == other.problem and a.by_key == b.by_key
                and a.others == b.others and a.notes == b.notes and a.dirs == b.dirs
                and a.links == b.links)

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

    def trusts_at(self, relpath: str | bytes) -> bool:
        """True when a trusted key is read from `relpath` (relative to the store) or from
        a file below it: a change there may be a revocation. O(log n), no disk."""
        rel = relpath if isinstance(relpath, bytes) else os.fsencode(relpath)
        return self._state.may_trust(rel) and bool(self._state.range(rel))

    def files(self) -> Iterator[tuple[str, bytes | None, Entry | None]]:
        """Every file the scan saw: `(relpath, key or None, entry if trusted else None)`."""
        for entry in self:
            yield entry.relpath, entry.public_key, entry
        for rel, (_sig, key, record, problems) in self._state.others.items():
            if record is not None:
                yield os.fsdecode(rel), key, None
            elif not (problems and problems[0].code in DIRECTORY_CODES):
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
