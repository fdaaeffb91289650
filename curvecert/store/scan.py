"""Scanning a store directory into snapshots, in full or only where something changed.

`Scanner` walks the tree with the rules of `curvecert.store.files` and builds a
`curvecert.store.snapshot.Snapshot`. It has no threads and no watcher (that is
`curvecert.store.watch`), so everything here is plain, testable code. A file's stat
signature lets a rescan parse again only files that changed, and `apply(paths)` re-reads
only the paths a watcher named.

Findings are logged once each, when they appear (WARNING for errors and for anything
others can write, INFO for other warnings), and never stop the scan. When the store
directory itself cannot be listed (missing, not a directory, no permission, I/O error),
the snapshot trusts nothing and the problem is logged at ERROR once; a later successful
scan restores it. An unreadable sub-directory costs only the keys below it (a finding).

Modes (sshd's StrictModes, issue 11 §5): a store directory, sub-directory or file that
group or others can write, or a parent directory of the store they can write (without the
sticky bit), is a finding. By default it is a warning and everything is trusted as
before; with `strict=True` it is an error: a writable file or anything below a writable
sub-directory is not trusted, and a writable store directory or parent makes the whole
snapshot unhealthy (nothing trusted).

Cost: a change to k paths costs O(k log n) to apply and publish, whatever the number of
findings (they are listed only when someone asks for `Snapshot.findings`).
"""

from __future__ import annotations

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
    directory_finding,
    is_ignored_name,
    parent_findings,
    sig_of,
)
from curvecert.store.snapshot import Snapshot
from curvecert.store.state import (
    Builder,
    Scanned,
    State,
    StoreFinding,
    duplicate_finding,
    make_finding,
    rel_of,
)

__all__ = ["ScanCancelled", "Scanner", "scan"]

_logger = logging.getLogger(__name__)

_PROGRESS_EVERY = 256


class ScanCancelled(StoreError):
    """A scan was stopped by its `cancel` callback (the watcher is shutting down)."""


#: Findings logged at WARNING even as warnings: others can change what is trusted.
_ALERT_CODES = frozenset({"writable-file", "writable-directory", "writable-parent"})
#: New findings logged one by one per snapshot; more are counted in one line (a burst of
#: 20,000 bad files must not cost 20,000 log lines before a revocation is applied).
_LOG_LIMIT = 50


class Scanner:
    """Reads one store directory into snapshots; remembers the last one as a stat cache.

    `scan()` walks the whole tree and parses only files whose stat signature changed;
    `apply(paths)` re-examines only the named paths (files or whole sub-directories).
    Not thread-safe: one thread at a time (the watcher's reload thread, or the caller).
    """

    def __init__(self, directory: str | os.PathLike[str], *, log_findings: bool = True,
                 strict: bool = False):
        """Prepare to scan `directory` (nothing is read until `scan`).

        With `log_findings` (the default) each new finding is logged once and an
        unreadable directory at ERROR; a caller that reports findings itself (the CLI)
        turns this off. `strict`: refuse what group/others can write (module docstring).
        """
        self.directory = os.path.abspath(os.fspath(directory))
        self.strict = strict
        self._log = log_findings
        self._dir_b = os.fsencode(self.directory)
        self._generation = 0
        self._snapshot = Snapshot.empty(self.directory, problem="not scanned yet")
        self._reader = FileReader(self._dir_b, strict=strict)
        self._new: list[StoreFinding] = []  # findings to log at the next publication
        self._dirs: set[bytes] = set()      # where `_walk` records the directories it saw
        self._links: set[bytes] = set()     # ... and the symbolic links

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
        cache = old._state.index(b"") if old.healthy else {}
        self._new = []
        try:
            top = os.stat(self._dir_b)
            if not stat.S_ISDIR(top.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            found = directory_finding(self._dir_b, b"", top.st_mode, strict=self.strict)
            root = ([found] if found else []) + parent_findings(self.directory,
                                                                strict=self.strict)
            if self.strict and root:
                return self._publish_unhealthy(f"{root[0].path}: {root[0].message}")
            builder = Builder()
            self._dirs, self._links = builder.state.dirs, builder.state.links
            if root:
                self._fresh((b"", None, None, None, tuple(root)), cache)
                builder.state.put_other(b"", (None, None, None, tuple(root)))
            self._walk(b"", False, cache, builder, progress, cancel, root=True)
        except ScanCancelled:
            raise
        except OSError as exc:
            return self._publish_unhealthy(f"{self.directory}: cannot read the store "
                                           f"directory: {exc.strerror or exc}")
        del cache
        return self._publish(builder.finish(), old._state)

    def apply(self, paths: Iterable[str | bytes | os.PathLike[str]], *,
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
        # a file read through a symbolic link changes with what it points at (another
        # path, maybe below a dot-directory), which is no event on the link: look again
        rels |= self._snapshot._state.links
        # drop paths inside another named path: walking the parent covers them
        pruned = [rel for rel in sorted(rels) if not self._below_any(rel, rels)]
        if not pruned:
            return self._snapshot
        try:
            return self._apply(pruned, cancel)
        except OSError as exc:  # the directory vanished under us
            _logger.debug("incremental update failed (%s); rescanning", exc)
            return self.scan(cancel=cancel)

    def keep(self, snap: Snapshot) -> None:
        """Make `snap`, the snapshot before the last scan, current again: that scan found
        nothing new (`Snapshot.same_as`), so it does not count as a new generation."""
        self._snapshot, self._generation = snap, snap.generation

    # -- internals

    @staticmethod
    def _below_any(rel: bytes, rels: set[bytes]) -> bool:
        parent = os.path.dirname(rel)
        while parent:
            if parent in rels:
                return True
            parent = os.path.dirname(parent)
        return False

    def _relative(self, p: str | bytes | os.PathLike[str]) -> bytes | None:
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

    def _fresh(self, item: Scanned, cache: dict[bytes, Scanned]) -> None:
        """Note the findings of a freshly read path that the last snapshot did not have."""
        if self._log and item[4]:
            prev = cache.get(item[0])
            before = prev[4] if prev is not None else ()
            self._new.extend(f for f in item[4] if f not in before)

    def _demote(self, item: Scanned) -> Scanned:
        """Strict modes: a certificate below a writable directory is not trusted."""
        if item[2] is None:
            return item
        return (item[0], None, None, None, (make_finding(
            self._dir_b, item[0], "in-writable-directory",
            "below a directory group/others can write; not trusted (strict modes)"),))

    def _walk(self, top: bytes, exposed: bool, cache: dict[bytes, Scanned],
              out: list[Scanned] | Builder, progress: Callable[[int], None] | None,
              cancel: Callable[[], bool] | None, *, root: bool = False) -> None:
        """Scan `top` (relative; b"" = the store) into `out`, using `cache` by signature.

        `exposed`: `top` is or lies below a directory group/others can write.
        """
        dir_b, strict, dirs, links = self._dir_b, self.strict, self._dirs, self._links
        stack = [(top, exposed)]
        count = 0
        read, special = self._reader.read, self._reader.special
        while stack:
            rel_dir, exposed = stack.pop()
            path_dir = os.path.join(dir_b, rel_dir) if rel_dir else dir_b
            prefix = rel_dir + b"/" if rel_dir else b""
            if rel_dir:
                dirs.add(rel_dir)
            try:
                it = os.scandir(path_dir)
            except OSError as exc:
                if root and rel_dir == top:
                    raise
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # vanished between listing and reading: nothing to trust
                item: Scanned = (rel_dir, None, None, None, (make_finding(
                    dir_b, rel_dir, "unreadable-directory",
                    f"cannot list this directory: {exc.strerror or exc}; no key below "
                    "it is trusted"),))
                self._fresh(item, cache)
                out.append(item)
                continue
            with it:
                for entry in it:
                    name = entry.name
                    if (name[0] == 0x2E or name.endswith(SKIP_SUFFIXES)
                            or (name[0] == 0x23 and name[-1] == 0x23 and len(name) > 1)):
                        continue
                    rel = prefix + name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            mode = entry.stat(follow_symlinks=False).st_mode
                            found = directory_finding(dir_b, rel, mode, strict=strict)
                            if found is not None:
                                item = (rel, None, None, None, (found,))
                                self._fresh(item, cache)
                                out.append(item)
                            stack.append((rel, exposed or found is not None))
                            continue
                        regular = entry.is_file()
                        if entry.is_symlink():
                            links.add(rel)
                    except OSError:
                        continue
                    count += 1
                    if count % _PROGRESS_EVERY == 0:
                        if cancel is not None and cancel():
                            raise ScanCancelled("scan cancelled")
                        if progress is not None:
                            progress(count)
                    result: Scanned | None = None
                    if cache:
                        prev = cache.get(rel)
                        if prev is not None and prev[1] is not None:
                            try:
                                st = entry.stat()
                            except OSError:
                                st = None
                            if st is not None and sig_of(st) == prev[1]:
                                result = prev
                    if result is None:
                        result = read(entry.path, rel) if regular else special(entry.path, rel)
                        if result is None:
                            continue
                        self._fresh(result, cache)
                    out.append(self._demote(result) if exposed and strict else result)
        if progress is not None:
            progress(count)

    def _examine(self, rel: bytes, cache: dict[bytes, Scanned], out: list[Scanned],
                 cancel: Callable[[], bool] | None) -> None:
        """Scan one named path: a file, a whole sub-directory, or nothing if it is gone."""
        dir_b = self._dir_b
        exposed = False
        parent = os.path.dirname(rel)
        while parent:  # below a symlinked directory or a file: a full scan would not look
            try:
                mode = os.lstat(os.path.join(dir_b, parent)).st_mode
            except OSError:
                return
            if not stat.S_ISDIR(mode):
                return
            exposed = exposed or bool(mode & 0o022)
            self._dirs.add(parent)
            parent = os.path.dirname(parent)
        path = os.path.join(dir_b, rel)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(st.st_mode):
            self._links.add(rel)
        if stat.S_ISDIR(st.st_mode):
            found = directory_finding(dir_b, rel, st.st_mode, strict=self.strict)
            if found is not None:
                item: Scanned = (rel, None, None, None, (found,))
                self._fresh(item, cache)
                out.append(item)
            self._walk(rel, exposed or found is not None, cache, out, None, cancel)
            return
        result: Scanned | None = None
        prev = cache.get(rel)
        if prev is not None and prev[1] is not None:
            try:
                if sig_of(os.stat(path)) == prev[1]:
                    result = prev
            except OSError:
                pass
        if result is None:
            regular = stat.S_ISREG(st.st_mode)
            result = self._reader.read(path, rel) if regular else self._reader.special(path, rel)
            if result is None:
                return
            self._fresh(result, cache)
        out.append(self._demote(result) if exposed and self.strict else result)

    def _apply(self, prefixes: list[bytes], cancel: Callable[[], bool] | None) -> Snapshot:
        base = self._snapshot._state
        state = base.copy()
        self._new = []
        old: dict[bytes, Scanned] = {}
        touched: set[bytes] = set()
        # 1. detach everything known at or below each prefix
        for p in prefixes:
            known = state.index(p)
            old.update(known)
            for rel, (_r, _sig, key, record, _pr) in known.items():
                if key is not None:
                    touched.add(key)
                    if state.by_key.get(key) is record:
                        state.remove_winner(key)
                state.pop_other(rel)
                state.notes.pop(rel, None)
            if p in state.dirs:
                sub = p + b"/"
                state.dirs = {d for d in state.dirs if d != p and not d.startswith(sub)}
        # 2. read what is there now (every link is at or below a prefix: seen again)
        fresh: list[Scanned] = []
        state.links.clear()
        self._dirs, self._links = state.dirs, state.links
        for p in prefixes:
            self._examine(p, old, fresh, cancel)
        # 3. re-decide every touched key: fresh files, surviving duplicates, current winner
        cands: dict[bytes, list[tuple[bytes, bytes, tuple[StoreFinding, ...]]]] = {}
        for rel, sig, key, record, problems in fresh:
            if key is None or record is None:
                state.put_other(rel, (sig, None, None, problems))
                continue
            touched.add(key)
            cands.setdefault(key, []).append((rel, record, problems))
        for key in touched:
            dups = state.dupkeys.get(key, ())
            for rel in dups:
                _sig, _k, dup, problems = state.others[rel]
                if dup is not None:
                    cands.setdefault(key, []).append((rel, dup, problems))
            for rel in dups:
                state.pop_other(rel)
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
                state.put_other(rel, (None, key, record, problems))
        if many:
            state.order.sort(key=state.relkey)
        return self._publish(state, base)

    def _publish(self, state: State, before: State) -> Snapshot:
        self._generation += 1
        was = self._snapshot
        snap = Snapshot(self.directory, state, generation=self._generation)
        if self._log:
            if not was.healthy and was.generation:
                _logger.warning("certificate store %s is readable again: %d keys trusted",
                                self.directory, len(snap))
            old_dups = {r for rels in before.dupkeys.values() for r in rels}
            for key, rels in state.dupkeys.items():
                for rel in rels:
                    if rel not in old_dups:
                        winner = state.by_key.get(key)
                        self._new.append(duplicate_finding(
                            self._dir_b, rel, rel_of(winner) if winner else None))
            for f in self._new[:_LOG_LIMIT]:
                alert = f.severity == "error" or f.code in _ALERT_CODES
                (_logger.warning if alert else _logger.info)("%s", f)
            if len(self._new) > _LOG_LIMIT:
                _logger.warning("%s: %d more new findings not logged one by one; run "
                                "`curvecert store check` to list them", self.directory,
                                len(self._new) - _LOG_LIMIT)
        self._new = []
        self._snapshot = snap
        return snap

    def _publish_unhealthy(self, problem: str) -> Snapshot:
        was = self._snapshot
        if was.problem != problem and self._log:
            _logger.error("%s; trusting NO key from it until that is fixed", problem)
        self._generation += 1
        self._new = []
        self._snapshot = Snapshot.empty(self.directory, problem=problem,
                                        generation=self._generation)
        return self._snapshot


def scan(directory: str | os.PathLike[str], *,
         progress: Callable[[int], None] | None = None,
         log_findings: bool = True, strict: bool = False) -> Snapshot:
    """Read a store directory once into a snapshot (see the module docstring for the rules).

    `progress(n)` is called with the number of files seen so far, every few hundred files.
    `strict`: refuse files and directories group/others can write (sshd's StrictModes).
    """
    return Scanner(directory, log_findings=log_findings, strict=strict).scan(
        progress=progress)
