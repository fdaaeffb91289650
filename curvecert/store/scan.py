"""Scanning a store directory into snapshots, in full or only where something changed.

`Scanner` walks the tree with the rules of `curvecert.store.files` and builds a
`curvecert.store.snapshot.Snapshot`. It has no threads and no watcher (that is
`curvecert.store.watch`), so everything here is plain, testable code. A file's stat
signature lets a rescan parse again only files that changed, and `apply(paths)` re-reads
only the paths a watcher named.

Findings are logged once each (WARNING for errors, INFO for warnings) and never stop the
scan. When the store directory itself cannot be listed (missing, not a directory, no
permission, I/O error), the snapshot trusts nothing and the problem is logged at ERROR
once; a later successful scan restores it. An unreadable sub-directory costs only the
keys below it (a finding).
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable
from operator import itemgetter

from curvecert.errors import StoreError
from curvecert.store.files import (
    SKIP_SUFFIXES,
    FileReader,
    is_ignored_name,
    make_finding,
    sig_of,
)
from curvecert.store.snapshot import (
    SIG_LEN,
    Scanned,
    Snapshot,
    State,
    StoreFinding,
    rel_of,
)

__all__ = ["ScanCancelled", "Scanner", "scan"]

_logger = logging.getLogger(__name__)

_PROGRESS_EVERY = 256


class ScanCancelled(StoreError):
    """A scan was stopped by its `cancel` callback (the watcher is shutting down)."""


class _Builder:
    """Builds a state from files arriving in any order (the first by sorted path wins).

    Streaming, rather than collecting and sorting the scanned files, keeps a full scan from
    leaving a list of per-file tuples behind (fewer transient objects: a lower RSS).
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = State({}, [], {}, {})

    def append(self, item: Scanned) -> None:
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
        current_rel = rel_of(current)
        if rel < current_rel:  # the newcomer sorts first: it wins, the old one is a duplicate
            st.others[current_rel] = (None, key, current, st.notes.pop(current_rel, ()))
            st.by_key[key] = record
            if problems:
                st.notes[rel] = problems
        else:
            st.others[rel] = (None, key, record, problems)

    def finish(self) -> State:
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
        self._reader = FileReader(self._dir_b)

    @property
    def parsed(self) -> int:
        """Files parsed so far (tests use it to prove the stat cache works)."""
        return self._reader.parsed

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

    def _index(self, state: State, prefix: bytes) -> dict[bytes, Scanned]:
        """What the last snapshot knew about files at or below `prefix`, by relative path."""
        out: dict[bytes, Scanned] = {}
        sub = prefix + b"/"
        if prefix == b"":
            for key, record in state.by_key.items():
                rel = rel_of(record)
                out[rel] = (rel, record[:SIG_LEN], key, record, state.notes.get(rel, ()))
        else:
            for key in self._range(state, prefix):
                record = state.by_key[key]
                rel = rel_of(record)
                out[rel] = (rel, record[:SIG_LEN], key, record, state.notes.get(rel, ()))
        for rel, (sig, okey, orecord, problems) in state.others.items():
            if prefix == b"" or rel == prefix or rel.startswith(sub):
                if orecord is not None:
                    sig = orecord[:SIG_LEN]
                out[rel] = (rel, sig, okey, orecord, problems)
        return out

    @staticmethod
    def _range(state: State, prefix: bytes) -> list[bytes]:
        """Winner keys whose path is `prefix` or below it (a contiguous run of `order`)."""
        order, rk = state.order, state.relkey
        lo = bisect.bisect_left(order, prefix, key=rk)
        hi = lo
        if hi < len(order) and rk(order[hi]) == prefix:
            hi += 1
        a = bisect.bisect_left(order, prefix + b"/", lo=hi, key=rk)
        b = bisect.bisect_left(order, prefix + b"0", lo=a, key=rk)  # '0' follows '/'
        return order[lo:hi] + order[a:b]

    def _walk(self, top: bytes, cache: dict[bytes, Scanned], out: list[Scanned] | _Builder,
              progress: Callable[[int], None] | None, cancel: Callable[[], bool] | None,
              *, root: bool = False) -> None:
        """Scan `top` (relative; b"" = the store) into `out`, using `cache` by signature."""
        dir_b = self._dir_b
        stack = [top]
        count = 0
        read = self._reader.read
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
                out.append((rel_dir, None, None, None, (make_finding(
                    dir_b, rel_dir, "unreadable-directory",
                    f"cannot list this directory: {exc.strerror or exc}; no key below "
                    "it is trusted"),)))
                continue
            with it:
                for entry in it:
                    name = entry.name
                    if (name[0] == 0x2E or name.endswith(SKIP_SUFFIXES)
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
                            if st is not None and sig_of(st) == prev[1]:
                                out.append(prev)
                                continue
                    result = read(entry.path, rel)
                    if result is not None:
                        out.append(result)
        if progress is not None:
            progress(count)

    def _examine(self, rel: bytes, cache: dict[bytes, Scanned], out: list[Scanned],
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
                if sig_of(os.stat(path)) == prev[1]:
                    out.append(prev)
                    return
            except OSError:
                pass
        result = self._reader.read(path, rel)
        if result is not None:
            out.append(result)

    def _apply(self, prefixes: list[bytes], cancel: Callable[[], bool] | None) -> Snapshot:
        base = self._snapshot._state
        state = base.copy()
        old: dict[bytes, Scanned] = {}
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
        fresh: list[Scanned] = []
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
                    rel = rel_of(record)
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

    def _findings(self, state: State) -> tuple[StoreFinding, ...]:
        out: list[StoreFinding] = []
        d = self._dir_b
        for rel, (_sig, key, record, problems) in state.others.items():
            if key is not None and record is not None:
                winner = state.by_key.get(key)
                first = os.fsdecode(rel_of(winner)) if winner is not None else "?"
                out.append(make_finding(d, rel, "duplicate-key",
                                    f"same public key as {first}, which is the file trusted "
                                    "(the first by sorted path); this one is ignored"))
            out.extend(problems)
        for problems in state.notes.values():
            out.extend(problems)
        out.sort(key=lambda f: (f.path, f.line or 0, f.code))
        return tuple(out)

    def _publish(self, state: State) -> Snapshot:
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
