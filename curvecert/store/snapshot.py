"""The certificate store on disk: a directory of public certificates, scanned into a snapshot.

Ironhouse trusts exactly the public keys found in one directory. This module reads that
directory into an immutable `Snapshot` {32-byte public key -> `Entry`} and changes it
(`add_certificate`, `remove`). It has no threads and no watcher (that is `curvecert.store.watch`),
so everything here is plain, testable code.

What is read (CZMQ's and pyzmq's stores, both):

- every regular file in the directory and its sub-directories, whatever its name (CZMQ),
  which includes pyzmq's `*.key`; symbolic links to files are followed (Kubernetes mounts
  are made of them), symbolic links to directories are not (loops; watchers cannot see
  into them);
- skipped: names starting with `.` (dot-files and dot-directories, so Kubernetes'
  `..data` and `..<timestamp>` are never read twice), `*_secret` (CZMQ and pyzmq secret
  files), and editor or tool temporaries `*~`, `*.swp`, `*.swo`, `*.swx`, `*.tmp`, `#*#`.

What is trusted: a file that parses as a certificate (the full ZPL grammar, `curvecert.formats.zpl`)
with a valid public key and no secret key. Anything else becomes a `StoreFinding`, is
logged once, is never trusted, and never stops the scan: a file that does not parse, a
file holding a secret key, a file that cannot be read, a file over 1 MiB, an unreadable
sub-directory, and a second file with a public key already present.

Duplicate rule: among files with the same public key, the one whose relative path sorts
first (byte-wise, `/` as the separator, e.g. `a.key` < `a/b.key` < `b.key`) is trusted
and supplies the metadata; every other one is a `duplicate-key` finding. When the winner
goes away, the next one in that order takes over. (CZMQ aborts the process on a
duplicate; pyzmq does not notice, since it keeps keys only.)

Fail-closed rule: when the store directory itself cannot be listed (missing, not a
directory, no permission, I/O error), the snapshot trusts nothing, `healthy` is False and
`problem` says why; it is logged at ERROR once per new problem. A later successful scan
restores it. An unreadable sub-directory costs only the keys below it (a finding).

Memory: at 100k certificates an entry costs about 350 bytes. A trusted file is kept as one
`bytes` record (stat signature, relative path, metadata already encoded as the ZMTP
property blob a ZAP reply carries) in a dict keyed by the raw public key, plus one slot in
a list of keys sorted by path (used to find a file's key when an event names its path).
`Entry` objects are built on demand by `lookup` and iteration. The stat signature
`(inode, size, mtime_ns, ctime_ns)` lets a rescan parse again only files that changed.

Speed: the files curvecert, CZMQ and pyzmq write have one exact layout; a single regular
expression recognises it and yields the same result as the full parser (proved by tests).
Any other text goes through `curvecert.certs.certfile.parse`.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import PUBLIC_MODE, atomic_write
from curvecert.errors import (
    AmbiguousMatch,
    CertificateError,
    CurvecertError,
    FileExists,
    InvalidKey,
    OperationalError,
    StoreError,
    ZplSyntaxError,
)
from curvecert.formats import z85, zmtp

__all__ = [
    "MAX_FILE_SIZE",
    "Entry",
    "ScanCancelled",
    "Scanner",
    "Snapshot",
    "StoreFinding",
    "add_certificate",
    "default_directory",
    "is_ignored_name",
    "parse_public",
    "remove",
    "resolve",
    "scan",
    "store_filename",
]

_logger = logging.getLogger(__name__)

#: A certificate file is a few hundred bytes; anything over this is refused unread.
MAX_FILE_SIZE = 1 << 20
#: CZMQ 4.2 zauth copies metadata into a fixed 512-byte buffer (CZMQ.md, zauth): warn above.
CZMQ_METADATA_LIMIT = 512

Severity = Literal["error", "warning"]

# O_NONBLOCK: a FIFO swapped in between readdir and open must not hang the scan.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_SKIP_SUFFIXES = (b"_secret", b"~", b".swp", b".swo", b".swx", b".tmp")
# record = ino, size, mtime_ns, ctime_ns (the stat signature), len(rel) | rel | metadata blob
_HDR = struct.Struct("<QQQQH")
_SIG_LEN = 32
_HDR_LEN = _HDR.size
_M64 = (1 << 64) - 1
_U16 = struct.Struct("<H").pack
_SIG = struct.Struct("<QQQQ").pack
_PROGRESS_EVERY = 256


# --- findings -----------------------------------------------------------------------------

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


# --- names --------------------------------------------------------------------------------

def is_ignored_name(name: str | bytes) -> bool:
    """True for a directory entry the store skips: dot-names, `*_secret`, editor temporaries."""
    b = os.fsencode(name)
    return (not b or b[0] == 0x2E or b.endswith(_SKIP_SUFFIXES)
            or (len(b) > 1 and b[0] == 0x23 and b[-1] == 0x23))


def store_filename(public_key: bytes) -> str:
    """The file name `add_certificate` uses: the key in lower-case hex plus `.key`.

    Unique per key, safe on every file system (no `/`, no leading `.`, case-insensitive
    safe), and ending in `.key` so pyzmq's `load_certificates` reads the store too.
    """
    if len(public_key) != keys.KEY_LEN:
        raise InvalidKey(f"a public key is {keys.KEY_LEN} bytes, got {len(public_key)}")
    return public_key.hex() + ".key"


def default_directory(env: Mapping[str, str] | None = None) -> str:
    """`$CURVECERT_STORE`, else `$XDG_CONFIG_HOME/curvecert/store` (`~/.config/...`)."""
    env = os.environ if env is None else env
    explicit = env.get("CURVECERT_STORE", "")
    if explicit:
        return explicit
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "curvecert", "store")


# --- parsing ------------------------------------------------------------------------------

# The exact layout written by curvecert, CZMQ (zcert_save) and pyzmq (public *.key):
# comment and blank lines, `metadata`, items `    name = "value"`, `curve`, the key, EOF.
# Anything this does not match exactly goes to the full parser.
# (`.` is "anything but a newline" and runs much faster than a negated class; NUL,
# which the full parser refuses anywhere, is excluded by a separate `in` test.)
_FAST = re.compile(
    r'(?:#.*\n|\n)*'
    r'metadata\n'
    r'((?:    [A-Za-z0-9$\-_@.&+]+ = "[^"\n]*"\n)*)'
    r'curve\n'
    r'    public-key = "([0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})"\n\Z')
_ITEM = re.compile(r'    ([^ ]+) = "([^"\n]*)"\n')
_Z85_VALUES = bytes.maketrans(z85.ALPHABET.encode("ascii"), bytes(range(85)))
_WORDS = struct.Struct(">8I")


def _z85_key(text: str) -> bytes | None:
    """Decode 40 Z85 characters (already known to be in the alphabet); None on overflow."""
    v = text.encode("ascii").translate(_Z85_VALUES)
    try:
        return _WORDS.pack(
            (((v[0] * 85 + v[1]) * 85 + v[2]) * 85 + v[3]) * 85 + v[4],
            (((v[5] * 85 + v[6]) * 85 + v[7]) * 85 + v[8]) * 85 + v[9],
            (((v[10] * 85 + v[11]) * 85 + v[12]) * 85 + v[13]) * 85 + v[14],
            (((v[15] * 85 + v[16]) * 85 + v[17]) * 85 + v[18]) * 85 + v[19],
            (((v[20] * 85 + v[21]) * 85 + v[22]) * 85 + v[23]) * 85 + v[24],
            (((v[25] * 85 + v[26]) * 85 + v[27]) * 85 + v[28]) * 85 + v[29],
            (((v[30] * 85 + v[31]) * 85 + v[32]) * 85 + v[33]) * 85 + v[34],
            (((v[35] * 85 + v[36]) * 85 + v[37]) * 85 + v[38]) * 85 + v[39])
    except struct.error:  # a group above 2**32 - 1: let the full parser explain it
        return None


def _fast_parse(text: str) -> tuple[bytes, list[tuple[str, str]]] | None:
    """The public key and metadata of a text in the standard layout, or None."""
    if "\x00" in text:
        return None
    m = _FAST.match(text)
    if m is None:
        return None
    key = _z85_key(m.group(2))
    if key is None:
        return None
    items = _ITEM.findall(m.group(1))
    if len(items) > 1 and len(dict(items)) != len(items):
        seen: dict[str, str] = {}
        for name, value in items:
            seen.setdefault(name, value)  # CZMQ: the first of duplicate names wins
        items = list(seen.items())
    return key, items


def parse_public(data: bytes, *, path: str | os.PathLike[str] | None = None
                 ) -> tuple[bytes, list[tuple[str, str]]]:
    """Parse certificate bytes for the store: `(public_key, metadata items)`.

    Raises `CertificateError` or `ZplSyntaxError` for a file that does not parse, and
    `CertificateError` with reason "holds a secret key" for a secret certificate. The
    result equals `Certificate.parse`'s `(public_key, list(meta.items()))`.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        fast = _fast_parse(text)
        if fast is not None:
            return fast
    cert = Certificate.parse(data, path=path)
    if cert.has_secret:
        raise CertificateError(_SECRET_REASON, path=path)
    return cert.public_key, list(cert.meta.items())


_SECRET_REASON = "holds a secret key (a store holds public certificates only)"  # noqa: S105
_U32 = struct.Struct(">I").pack
# ZPL names that are already legal ZMTP names, with their encoded prefix (len + name).
_LEGAL_PREFIX: dict[str, bytes] = {}
# A value of at most this many characters is at most zmtp.MAX_VALUE bytes in UTF-8.
_SAFE_VALUE_CHARS = zmtp.MAX_VALUE // 4


def _encode_meta(items: list[tuple[str, str]]) -> tuple[bytes, list[str]]:
    """`zmtp.encode_lenient(items)` for items with distinct names, faster when names repeat.

    The quick loop handles the usual case (names already legal, small values); anything
    else is handed to `zmtp.encode_lenient` itself, so both always agree.
    """
    parts: list[bytes] = []
    get = _LEGAL_PREFIX.get
    u32 = _U32
    for name, value in items:
        prefix = get(name)
        if prefix is None or len(value) > _SAFE_VALUE_CHARS:
            return _encode_meta_slow(items)
        raw = value.encode("utf-8", "surrogatepass")  # as encode_lenient does
        parts.append(prefix)
        parts.append(u32(len(raw)))
        parts.append(raw)
    blob = b"".join(parts)
    if len(blob) > zmtp.MAX_METADATA:
        return _encode_meta_slow(items)
    return blob, []


def _encode_meta_slow(items: list[tuple[str, str]]) -> tuple[bytes, list[str]]:
    for name, _value in items:
        if name not in _LEGAL_PREFIX and len(_LEGAL_PREFIX) < 4096 \
                and zmtp.legal_name(name) == name:
            _LEGAL_PREFIX[name] = bytes((len(name),)) + name.encode("ascii")
    return zmtp.encode_lenient(items)


# --- entries and snapshots ----------------------------------------------------------------

def _rel_of(record: bytes) -> bytes:
    n = record[_SIG_LEN] | (record[_SIG_LEN + 1] << 8)
    return record[_HDR_LEN:_HDR_LEN + n]


def _meta_of(record: bytes) -> bytes:
    n = record[_SIG_LEN] | (record[_SIG_LEN + 1] << 8)
    return record[_HDR_LEN + n:]


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
        return os.fsdecode(_rel_of(self._record))

    @property
    def file(self) -> str:
        """The file's path (the store directory joined with `relpath`)."""
        return os.fsdecode(os.path.join(self._directory, _rel_of(self._record)))

    @property
    def metadata(self) -> bytes:
        """The metadata as ZMTP properties: exactly the blob a ZAP 200 reply carries."""
        return _meta_of(self._record)

    @property
    def meta(self) -> dict[str, str]:
        """The metadata as ZAP sends it (names mapped to legal ZMTP names), decoded."""
        return {name: value.decode("utf-8", "surrogatepass")
                for name, value in zmtp.decode(_meta_of(self._record))}

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
_Other = tuple[bytes | None, bytes | None, bytes | None, tuple[StoreFinding, ...]]
# A freshly scanned file: (rel, sig, key, record, problems), same conventions; sig may be
# None for a readable certificate (its record starts with it).
_Scanned = tuple[bytes, bytes | None, bytes | None, bytes | None, tuple[StoreFinding, ...]]


class _State:
    """The mutable structures behind a snapshot (frozen once a Snapshot owns them)."""

    __slots__ = ("by_key", "notes", "order", "others")

    def __init__(self, by_key: dict[bytes, bytes], order: list[bytes],
                 others: dict[bytes, _Other], notes: dict[bytes, tuple[StoreFinding, ...]]):
        self.by_key = by_key        # winner key -> record
        self.order = order          # winner keys, sorted by relative path
        self.others = others        # rel -> _Other (bad files, duplicates, bad directories)
        self.notes = notes          # rel -> warnings of a winner

    def copy(self) -> _State:
        return _State(self.by_key.copy(), self.order.copy(), self.others.copy(),
                      self.notes.copy())

    def relkey(self, key: bytes) -> bytes:
        return _rel_of(self.by_key[key])

    def remove_winner(self, key: bytes) -> bytes:
        record = self.by_key[key]
        rel = _rel_of(record)
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
            i = bisect.bisect_left(self.order, _rel_of(record), key=self.relkey)
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

    def __init__(self, directory: str, state: _State, *, generation: int,
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
        return cls(directory, _State({}, [], {}, {}), generation=generation, problem=problem)

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
                        for n, v in zmtp.decode(_meta_of(record))}
                yield os.fsdecode(rel), key, meta, False

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else f"UNHEALTHY ({self.problem})"
        return (f"<Snapshot {self.directory!r} gen={self.generation} {len(self)} keys "
                f"{len(self.findings)} findings {state}>")


# --- scanning -----------------------------------------------------------------------------

class ScanCancelled(StoreError):
    """A scan was stopped by its `cancel` callback (the watcher is shutting down)."""


def _sig_of(st: os.stat_result) -> bytes:
    try:
        return _SIG(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except struct.error:  # a time before 1970 or after 2554: keep the low 64 bits
        return _SIG(st.st_ino & _M64, st.st_size & _M64, st.st_mtime_ns & _M64,
                    st.st_ctime_ns & _M64)


def _finding(dir_b: bytes, rel: bytes, code: str, message: str, *, line: int | None = None,
             severity: Severity = "error") -> StoreFinding:
    return StoreFinding(os.fsdecode(os.path.join(dir_b, rel)), line or None, code, message,
                        severity)


class _Builder:
    """Builds a state from files arriving in any order (the first by sorted path wins).

    Streaming, rather than collecting and sorting the scanned files, keeps a full scan from
    leaving a list of per-file tuples behind (fewer transient objects: a lower RSS).
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = _State({}, [], {}, {})

    def append(self, item: _Scanned) -> None:
        rel, sig, key, record, problems = item
        st = self.state
        if key is None or record is None:
            st.others[rel] = (sig, None, None, problems)
            return
        current = st.by_key.get(key)
        if current is None:
            st.by_key[key] = record
            st.order.append(key)
            if problems:
                st.notes[rel] = problems
            return
        current_rel = _rel_of(current)
        if rel < current_rel:  # the newcomer sorts first: it wins, the old one is a duplicate
            st.others[current_rel] = (None, key, current, st.notes.pop(current_rel, ()))
            st.by_key[key] = record
            if problems:
                st.notes[rel] = problems
        else:
            st.others[rel] = (None, key, record, problems)

    def finish(self) -> _State:
        self.state.order.sort(key=self.state.relkey)
        return self.state


class Scanner:
    """Reads one store directory into snapshots; remembers the last one as a stat cache.

    `scan()` walks the whole tree and parses only files whose stat signature changed;
    `apply(paths)` re-examines only the named paths (files or whole sub-directories).
    Not thread-safe: one thread at a time (the watcher's reload thread, or the caller).
    """

    def __init__(self, directory: str | os.PathLike[str], *, log_findings: bool = True):
        """Prepare to scan `directory` (nothing is read until `scan`).

        With `log_findings` (the default) each new finding is logged once (WARNING for
        errors, INFO for warnings) and an unreadable directory at ERROR; a caller that
        reports findings itself (the CLI) turns this off.
        """
        self.directory = os.path.abspath(os.fspath(directory))
        self._log = log_findings
        self._dir_b = os.fsencode(self.directory)
        self._generation = 0
        self._snapshot = Snapshot.empty(self.directory, problem="not scanned yet")
        self._logged: set[StoreFinding] = set()
        self.parsed = 0  #: files parsed so far (tests use it to prove the stat cache works)

    @property
    def snapshot(self) -> Snapshot:
        """The last snapshot produced (an empty, unhealthy one before the first scan)."""
        return self._snapshot

    # -- public operations

    def scan(self, *, progress: Callable[[int], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> Snapshot:
        """Rescan the whole directory (re-parsing only changed files); return the snapshot."""
        old = self._snapshot
        cache = self._index(old._state, b"") if old.healthy else {}
        try:
            top = os.stat(self._dir_b)
            if not stat.S_ISDIR(top.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            builder = _Builder()
            self._walk(b"", cache, builder, progress, cancel, root=True)
        except ScanCancelled:
            raise
        except OSError as exc:
            return self._publish_unhealthy(f"{self.directory}: cannot read the store "
                                           f"directory: {exc.strerror or exc}")
        del cache
        return self._publish(builder.finish())

    def apply(self, paths: Iterable[str | os.PathLike[str]], *,
              cancel: Callable[[], bool] | None = None) -> Snapshot:
        """Re-examine only `paths` (absolute, or relative to the store): files or sub-trees.

        A path that is gone drops what was read from it (and everything below it); a path
        that exists is read (a directory: its whole sub-tree). Falls back to `scan()` when
        the last snapshot is unhealthy or a path is the store directory itself.
        """
        rels: set[bytes] = set()
        for p in paths:
            rel = self._relative(p)
            if rel is None or rel == b"":
                return self.scan(cancel=cancel)
            if any(is_ignored_name(part) for part in rel.split(b"/")):
                continue
            rels.add(rel)
        if not self._snapshot.healthy:
            return self.scan(cancel=cancel)
        # drop paths inside another named path: walking the parent covers them
        tops = sorted(rels)
        pruned: list[bytes] = []
        for rel in tops:
            if pruned and rel.startswith(pruned[-1] + b"/"):
                continue
            pruned.append(rel)
        if not pruned:
            return self._snapshot
        try:
            return self._apply(pruned, cancel)
        except OSError as exc:  # the directory vanished under us
            _logger.debug("incremental update failed (%s); rescanning", exc)
            return self.scan(cancel=cancel)

    # -- internals

    def _relative(self, p: str | os.PathLike[str]) -> bytes | None:
        b = os.fsencode(p)
        if not os.path.isabs(b):
            b = os.path.join(self._dir_b, b)
        b = os.path.normpath(b)
        if b == self._dir_b:
            return b""
        prefix = self._dir_b.rstrip(b"/") + b"/"
        if not b.startswith(prefix):
            return None
        return b[len(prefix):]

    def _index(self, state: _State, prefix: bytes) -> dict[bytes, _Scanned]:
        """What the last snapshot knew about files at or below `prefix`, by relative path."""
        out: dict[bytes, _Scanned] = {}
        sub = prefix + b"/"
        if prefix == b"":
            for key, record in state.by_key.items():
                rel = _rel_of(record)
                out[rel] = (rel, record[:_SIG_LEN], key, record, state.notes.get(rel, ()))
        else:
            for key in self._range(state, prefix):
                record = state.by_key[key]
                rel = _rel_of(record)
                out[rel] = (rel, record[:_SIG_LEN], key, record, state.notes.get(rel, ()))
        for rel, (sig, okey, orecord, problems) in state.others.items():
            if prefix == b"" or rel == prefix or rel.startswith(sub):
                if orecord is not None:
                    sig = orecord[:_SIG_LEN]
                out[rel] = (rel, sig, okey, orecord, problems)
        return out

    @staticmethod
    def _range(state: _State, prefix: bytes) -> list[bytes]:
        """Winner keys whose path is `prefix` or below it (a contiguous run of `order`)."""
        order, rk = state.order, state.relkey
        lo = bisect.bisect_left(order, prefix, key=rk)
        hi = lo
        if hi < len(order) and rk(order[hi]) == prefix:
            hi += 1
        a = bisect.bisect_left(order, prefix + b"/", lo=hi, key=rk)
        b = bisect.bisect_left(order, prefix + b"0", lo=a, key=rk)  # '0' follows '/'
        return order[lo:hi] + order[a:b]

    def _walk(self, top: bytes, cache: dict[bytes, _Scanned], out: list[_Scanned] | _Builder,
              progress: Callable[[int], None] | None, cancel: Callable[[], bool] | None,
              *, root: bool = False) -> None:
        """Scan `top` (relative; b"" = the store) into `out`, using `cache` by signature."""
        dir_b = self._dir_b
        stack = [top]
        count = 0
        read = self._read
        while stack:
            rel_dir = stack.pop()
            path_dir = os.path.join(dir_b, rel_dir) if rel_dir else dir_b
            prefix = rel_dir + b"/" if rel_dir else b""
            try:
                it = os.scandir(path_dir)
            except OSError as exc:
                if root and rel_dir == top:
                    raise
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # vanished between listing and reading: nothing to trust
                out.append((rel_dir, None, None, None, (_finding(
                    dir_b, rel_dir, "unreadable-directory",
                    f"cannot list this directory: {exc.strerror or exc}; no key below "
                    "it is trusted"),)))
                continue
            with it:
                for entry in it:
                    name = entry.name
                    if (name[0] == 0x2E or name.endswith(_SKIP_SUFFIXES)
                            or (name[0] == 0x23 and name[-1] == 0x23 and len(name) > 1)):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(prefix + name)
                            continue
                    except OSError:
                        continue
                    rel = prefix + name
                    count += 1
                    if count % _PROGRESS_EVERY == 0:
                        if cancel is not None and cancel():
                            raise ScanCancelled("scan cancelled")
                        if progress is not None:
                            progress(count)
                    if cache:
                        prev = cache.get(rel)
                        if prev is not None and prev[1] is not None:
                            try:
                                st = entry.stat()
                            except OSError:
                                st = None
                            if st is not None and _sig_of(st) == prev[1]:
                                out.append(prev)
                                continue
                    result = read(entry.path, rel)
                    if result is not None:
                        out.append(result)
        if progress is not None:
            progress(count)

    def _examine(self, rel: bytes, cache: dict[bytes, _Scanned], out: list[_Scanned],
                 cancel: Callable[[], bool] | None) -> None:
        """Scan one named path: a file, a whole sub-directory, or nothing if it is gone."""
        dir_b = self._dir_b
        parent = os.path.dirname(rel)
        while parent:  # below a symlinked directory or a file: a full scan would not look
            try:
                if not stat.S_ISDIR(os.lstat(os.path.join(dir_b, parent)).st_mode):
                    return
            except OSError:
                return
            parent = os.path.dirname(parent)
        path = os.path.join(dir_b, rel)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            self._walk(rel, cache, out, None, cancel)
            return
        prev = cache.get(rel)
        if prev is not None and prev[1] is not None:
            try:
                if _sig_of(os.stat(path)) == prev[1]:
                    out.append(prev)
                    return
            except OSError:
                pass
        result = self._read(path, rel)
        if result is not None:
            out.append(result)

    def _read(self, path: bytes, rel: bytes) -> _Scanned | None:
        """Open, stat, read and parse one file; None if it is not a regular file (any more)."""
        dir_b = self._dir_b
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None  # vanished, or a dangling/looping link: nothing to trust
            return (rel, None, None, None, (_finding(
                dir_b, rel, "unreadable", f"cannot open: {exc.strerror or exc}"),))
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000:  # not S_ISREG (inlined: hot loop)
                if stat.S_ISDIR(st.st_mode):
                    _logger.debug("%s: symbolic link to a directory; not followed",
                                  os.fsdecode(path))
                return None
            sig = _sig_of(st)
            if st.st_size > MAX_FILE_SIZE:
                return (rel, sig, None, None, (_finding(
                    dir_b, rel, "too-large",
                    f"{st.st_size} bytes; a certificate is far smaller "
                    f"(limit {MAX_FILE_SIZE})"),))
            # Ask for the size fstat gave (+1 to see growth): a 1 MiB request would make
            # every read allocate and free a 1 MiB buffer, which costs more than the parse.
            data = os.read(fd, st.st_size + 1)
            if len(data) > st.st_size:  # growing under us: read the rest, still capped
                chunks = [data]
                size = len(data)
                while size <= MAX_FILE_SIZE:
                    more = os.read(fd, 65536)
                    if not more:
                        break
                    chunks.append(more)
                    size += len(more)
                data = b"".join(chunks)
                if size > MAX_FILE_SIZE:
                    return (rel, sig, None, None, (_finding(
                        dir_b, rel, "too-large", f"larger than {MAX_FILE_SIZE} bytes"),))
        except OSError as exc:
            return (rel, None, None, None, (_finding(
                dir_b, rel, "unreadable", f"cannot read: {exc.strerror or exc}"),))
        finally:
            os.close(fd)
        self.parsed += 1
        fast = None
        try:
            fast = _fast_parse(data.decode("utf-8"))
        except UnicodeDecodeError:
            pass
        try:
            if fast is None:
                fast = parse_public(data, path=os.fsdecode(os.path.join(dir_b, rel)))
            key, items = fast
        except ZplSyntaxError as exc:
            return (rel, sig, None, None, (_finding(
                dir_b, rel, "unparsable", exc.reason, line=exc.line),))
        except CertificateError as exc:
            code = "secret-key" if exc.reason == _SECRET_REASON else "invalid-certificate"
            return (rel, sig, None, None, (_finding(
                dir_b, rel, code, exc.reason, line=exc.line),))
        except CurvecertError as exc:  # any other parser complaint: still only a finding
            return (rel, sig, None, None, (_finding(dir_b, rel, "invalid-certificate",
                                                    str(exc)),))
        blob, dropped = _encode_meta(items) if items else (b"", [])
        problems: tuple[StoreFinding, ...] = ()
        if dropped:
            problems = (_finding(
                dir_b, rel, "metadata-dropped",
                "metadata not sent in ZAP replies (reserved, duplicate after mapping to a "
                f"ZMTP name, or too large): {', '.join(dropped)}", severity="warning"),)
        if len(blob) > CZMQ_METADATA_LIMIT:
            problems += (_finding(
                dir_b, rel, "czmq-metadata-overflow",
                f"metadata encodes to {len(blob)} bytes; CZMQ's zauth corrupts its heap above "
                f"{CZMQ_METADATA_LIMIT} (fine for curvecert)", severity="warning"),)
        record = b"".join((sig, _U16(len(rel)), rel, blob))
        # sig None: it is the record's first bytes (no second object kept during a scan)
        return (rel, None, key, record, problems)

    def _apply(self, prefixes: list[bytes], cancel: Callable[[], bool] | None) -> Snapshot:
        base = self._snapshot._state
        state = base.copy()
        old: dict[bytes, _Scanned] = {}
        touched: set[bytes] = set()
        # 1. detach everything known at or below each prefix
        for p in prefixes:
            known = self._index(state, p)
            old.update(known)
            for rel, (_r, _sig, key, record, _pr) in known.items():
                if key is not None:
                    touched.add(key)
                    if state.by_key.get(key) is record:
                        state.remove_winner(key)
                state.others.pop(rel, None)
                state.notes.pop(rel, None)
        # 2. read what is there now
        fresh: list[_Scanned] = []
        for p in prefixes:
            self._examine(p, old, fresh, cancel)
        # 3. re-decide every touched key: fresh files, surviving duplicates, current winner
        cands: dict[bytes, list[tuple[bytes, bytes, tuple[StoreFinding, ...]]]] = {}
        for rel, sig, key, record, problems in fresh:
            if key is None or record is None:
                state.others[rel] = (sig, None, None, problems)
                continue
            touched.add(key)
            cands.setdefault(key, []).append((rel, record, problems))
        if touched:
            for rel, (_sig, key, record, problems) in list(state.others.items()):
                if key is not None and record is not None and key in touched:
                    cands.setdefault(key, []).append((rel, record, problems))
                    del state.others[rel]
            for key in touched:
                record = state.by_key.get(key)
                if record is not None:
                    rel = _rel_of(record)
                    cands.setdefault(key, []).append((rel, record, state.notes.get(rel, ())))
                    state.remove_winner(key)
        many = len(cands) > 64
        for key, items in cands.items():
            items.sort(key=itemgetter(0))
            rel, record, problems = items[0]
            state.add_winner(key, record, sort_later=many)
            if problems:
                state.notes[rel] = problems
            for rel, record, problems in items[1:]:
                state.others[rel] = (None, key, record, problems)
        if many:
            state.order.sort(key=state.relkey)
        return self._publish(state)

    def _findings(self, state: _State) -> tuple[StoreFinding, ...]:
        out: list[StoreFinding] = []
        d = self._dir_b
        for rel, (_sig, key, record, problems) in state.others.items():
            if key is not None and record is not None:
                winner = state.by_key.get(key)
                first = os.fsdecode(_rel_of(winner)) if winner is not None else "?"
                out.append(_finding(d, rel, "duplicate-key",
                                    f"same public key as {first}, which is the file trusted "
                                    "(the first by sorted path); this one is ignored"))
            out.extend(problems)
        for problems in state.notes.values():
            out.extend(problems)
        out.sort(key=lambda f: (f.path, f.line or 0, f.code))
        return tuple(out)

    def _publish(self, state: _State) -> Snapshot:
        findings = self._findings(state)
        self._generation += 1
        was = self._snapshot
        snap = Snapshot(self.directory, state, generation=self._generation, findings=findings)
        if not was.healthy and was.generation and self._log:
            _logger.warning("certificate store %s is readable again: %d keys trusted",
                            self.directory, len(snap))
        if self._log:
            for f in findings:
                if f not in self._logged:
                    (_logger.warning if f.severity == "error" else _logger.info)("%s", f)
            self._logged = set(findings)
        self._snapshot = snap
        return snap

    def _publish_unhealthy(self, problem: str) -> Snapshot:
        was = self._snapshot
        if was.problem != problem and self._log:
            _logger.error("%s; trusting NO key from it until it can be read", problem)
        self._generation += 1
        self._logged = set()
        self._snapshot = Snapshot.empty(self.directory, problem=problem,
                                        generation=self._generation)
        return self._snapshot


def scan(directory: str | os.PathLike[str], *,
         progress: Callable[[int], None] | None = None,
         log_findings: bool = True) -> Snapshot:
    """Read a store directory once into a snapshot (see the module docstring for the rules).

    `progress(n)` is called with the number of files seen so far, every few hundred files.
    """
    return Scanner(directory, log_findings=log_findings).scan(progress=progress)


# --- changing the store -------------------------------------------------------------------

def add_certificate(store_dir: str | os.PathLike[str], cert: Certificate, *,
                    force: bool = False) -> str:
    """Write the PUBLIC part of `cert` into the store as `<hex key>.key`; return its path.

    The secret key is never written. The directory is created if needed. If the file
    exists with the same key and metadata nothing is written; if it differs it is replaced
    only with `force` (else `FileExists`). Raises `CertificateError` for metadata that
    cannot be written so that CZMQ reads it back.
    """
    directory = os.fspath(store_dir)
    path = os.path.join(directory, store_filename(cert.public_key))
    public = cert.public_only()
    data = certfile.dump(public, secret=False).encode("utf-8")
    if os.path.lexists(path):
        try:
            existing = Certificate.load(path)
        except CurvecertError:
            existing = None
        if (existing is not None and not existing.has_secret
                and existing.public_key == public.public_key
                and list(existing.meta.items()) == list(public.meta.items())):
            _logger.info("%s: already in the store, unchanged", path)
            return path
        if not force:
            raise FileExists(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OperationalError(f"{directory}: cannot create the store directory: "
                               f"{exc.strerror or exc}") from exc
    atomic_write(path, data, mode=PUBLIC_MODE, overwrite=force)
    _logger.info("%s: stored public certificate %s", path, public.public_txt)
    return path


def _describe(rel: str, key: bytes | None, meta: Mapping[str, str] | None) -> str:
    if key is None:
        return f"{rel} (not a trusted certificate)"
    name = (meta or {}).get("name")
    extra = f"  name={name!r}" if name is not None else ""
    return f"{z85.encode(key)}  {keys.fingerprint(key)}  {rel}{extra}"


def resolve(snapshot: Snapshot, selector: str, *,
            cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """The store files (paths relative to the store) that removing `selector` deletes.

    `selector` is, in this order: a Z85 public key or a fingerprint `SHA256:...` (every
    file carrying that key, duplicates included, so the key really stops being trusted);
    otherwise any of a path to a file in the store (relative to the store or to `cwd`, or
    absolute: that file), a path to a certificate file elsewhere (every store file with
    its key), and a metadata `name` (every store file with that certificate's key).
    Raises `AmbiguousMatch` when these designate more than one certificate, `StoreError`
    when they designate none. Nothing is changed here.
    """
    if not snapshot.healthy:
        raise StoreError(snapshot.problem or "the store cannot be read")
    certs: dict[bytes, list[tuple[str, dict[str, str]]]] = {}
    for rel, key, meta, _trusted in snapshot.candidates():
        certs.setdefault(key, []).append((rel, meta))
    files: dict[str, bytes | None] = {rel: key for rel, key, _e in snapshot.files()}

    def files_of(key: bytes) -> list[str]:
        return sorted(rel for rel, _m in certs.get(key, []))

    if z85.is_key_text(selector):
        key = z85.decode(selector)
        if key not in certs:
            raise StoreError(f"no certificate in the store has the public key {selector}")
        return files_of(key)
    if selector.startswith("SHA256:"):
        for key in certs:
            if keys.fingerprint(key) == selector:
                return files_of(key)
        raise StoreError(f"no certificate in the store has the fingerprint {selector}")

    units: dict[str, tuple[str, set[str]]] = {}  # identity -> (description, files)

    def add(ident: str, desc: str, rels: Iterable[str]) -> None:
        old = units.get(ident)
        units[ident] = (old[0] if old else desc, (old[1] if old else set()) | set(rels))

    notes: list[str] = []
    directory = snapshot.directory
    base = os.fspath(cwd) if cwd is not None else os.getcwd()
    seen: set[str] = set()
    for candidate in (os.path.join(directory, selector), os.path.join(base, selector)):
        full = os.path.normpath(os.path.abspath(candidate))
        if full in seen or not os.path.lexists(full):
            continue
        seen.add(full)
        rel = os.path.relpath(full, directory)
        if rel != os.curdir and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            if rel in files:
                file_key = files[rel]
                if file_key is None:
                    add(f"file:{rel}", _describe(rel, None, None), [rel])
                else:
                    meta = next((m for r, m in certs[file_key] if r == rel), {})
                    add(f"key:{file_key.hex()}", _describe(rel, file_key, meta), [rel])
            else:
                notes.append(f"{full} is not a certificate file the store reads")
            continue
        if not os.path.isfile(full):
            continue
        try:
            cert = Certificate.load(full)
        except CurvecertError as exc:
            notes.append(f"{full} is not a certificate file ({exc})")
            continue
        if cert.public_key in certs:
            add(f"key:{cert.public_key.hex()}",
                _describe(files_of(cert.public_key)[0], cert.public_key, cert.meta),
                files_of(cert.public_key))
        else:
            notes.append(f"the certificate in {full} ({cert.public_txt}) is not in the store")
    for key, items in certs.items():
        for rel, meta in items:
            if meta.get("name") == selector:
                add(f"key:{key.hex()}", _describe(rel, key, meta), files_of(key))
    if not units:
        why = "; ".join(notes) if notes else "not a key, fingerprint, store file or name"
        raise StoreError(f"nothing in the store matches {selector!r}: {why}")
    if len(units) > 1:
        raise AmbiguousMatch(selector, sorted(desc for desc, _f in units.values()))
    return sorted(next(iter(units.values()))[1])


def remove(store_dir: str | os.PathLike[str], selectors: Iterable[str] | str, *,
           snapshot: Snapshot | None = None,
           cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Delete the store files that `selectors` designate; return their paths.

    Every selector is resolved first (see `resolve`); if any is ambiguous or matches
    nothing, the error is raised and NOTHING is removed.
    """
    if isinstance(selectors, str):
        selectors = [selectors]
    snap = snapshot if snapshot is not None else scan(store_dir)
    targets: list[str] = []
    for sel in selectors:
        for rel in resolve(snap, sel, cwd=cwd):
            if rel not in targets:
                targets.append(rel)
    removed: list[str] = []
    for rel in targets:
        path = os.path.join(snap.directory, rel)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OperationalError(f"{path}: cannot remove: {exc.strerror or exc}; removed so "
                                   f"far: {', '.join(removed) or 'nothing'}") from exc
        _logger.info("%s: removed from the store", path)
        removed.append(path)
    return removed

