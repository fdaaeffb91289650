"""The live store with REAL watchdog observers on temporary directories.

Every kind of change a store sees in the field: files created, rewritten in place,
deleted, moved in and out, replaced by atomic rename, Kubernetes' `..data` swap done the
way kubelet's atomic writer does it, sub-directories, the directory deleted and re-created,
bursts, forced polling and the inotify-limit fallback. Tests wait on the store's own
reload notifications (`wait_for` / `wait_for_generation`), never on sleeps. The periodic
safety-net rescan is off (`rescan_interval=None`), so only events can make them pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from curvecert import store
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.errors import StoreError
from curvecert.store.snapshot import Snapshot
from curvecert.store.watch import CertStore

# watchdog's recursive inotify watch can race itself when nested directories appear quickly
# and warns "Callback with id ... already exists ... It will be Overwritten" (harmless: the
# watch stays in place; FIELD-NOTES B2 saw the same warning).
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

WAIT = 10.0  # generous bound for a loaded 2-core machine; tests normally finish in ms

MODES = [pytest.param(False, id="inotify"), pytest.param(True, id="polling")]


def make(name: str = "c") -> Certificate:
    return Certificate.new(name=name)


def write(path: Path, c: Certificate) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(certfile.dump(c, secret=False))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "store"
    d.mkdir()
    return d


@pytest.fixture
def open_store() -> Iterator[Callable[..., CertStore]]:
    started: list[CertStore] = []

    def opener(directory: Path, **kw: object) -> CertStore:
        kw.setdefault("debounce", 0.02)
        kw.setdefault("rescan_interval", None)
        kw.setdefault("poll_interval", 0.05)
        s = CertStore(directory, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s.start()

    yield opener
    for s in started:
        s.stop()
    for s in started:
        assert s._thread is None or not s._thread.is_alive()
        assert s._dirwatch.observer is None


def trusted(s: CertStore, c: Certificate) -> Callable[[Snapshot], bool]:
    return lambda snap: snap.lookup(c.public_key) is not None


def denied(s: CertStore, c: Certificate) -> Callable[[Snapshot], bool]:
    return lambda snap: snap.lookup(c.public_key) is None


# --- basic changes, inotify and polling ---------------------------------------------------

@pytest.mark.parametrize("poll", MODES)
def test_create_modify_delete(root: Path, open_store: Callable[..., CertStore],
                              poll: bool) -> None:
    a = make("a")
    write(root / "a.key", a)
    s = open_store(root, poll=poll)
    assert s.polling is poll and s.healthy
    assert s.lookup(a.public_key) is not None and s.generation == 1
    b = make("b")
    write(root / "b", b)  # CZMQ-style name
    assert s.wait_for(trusted(s, b), WAIT)
    # rewrite in place with another key (same size): old denied, new trusted
    a2 = make("a")
    with open(root / "a.key", "r+") as fh:
        fh.write(certfile.dump(a2, secret=False))
    assert s.wait_for(lambda snap: snap.lookup(a2.public_key) is not None
                      and snap.lookup(a.public_key) is None, WAIT)
    (root / "b").unlink()
    assert s.wait_for(denied(s, b), WAIT)
    assert s.lookup(a2.public_key).meta == {"name": "a"}


@pytest.mark.parametrize("poll", MODES)
def test_moves_in_out_and_within(root: Path, tmp_path: Path,
                                 open_store: Callable[..., CertStore], poll: bool) -> None:
    s = open_store(root, poll=poll)
    c = make("mover")
    outside = write(tmp_path / "outside.key", c)
    os.rename(outside, root / "in.key")
    assert s.wait_for(trusted(s, c), WAIT)
    os.rename(root / "in.key", root / "renamed.key")
    assert s.wait_for(lambda snap: (e := snap.lookup(c.public_key)) is not None
                      and e.relpath == "renamed.key", WAIT)
    os.rename(root / "renamed.key", root / ".hidden.key")  # a dot-file is not trusted
    assert s.wait_for(denied(s, c), WAIT)
    os.rename(root / ".hidden.key", root / "back.key")
    assert s.wait_for(trusted(s, c), WAIT)
    os.rename(root / "back.key", tmp_path / "gone.key")  # moved out of the store
    assert s.wait_for(denied(s, c), WAIT)


@pytest.mark.parametrize("poll", MODES)
def test_atomic_rename_writers(root: Path, open_store: Callable[..., CertStore],
                               poll: bool) -> None:
    old = make("svc")
    write(root / "svc.key", old)
    s = open_store(root, poll=poll)
    new = make("svc")
    # editors / consul-template / Vault Agent: write a temporary file, rename over the target
    tmp = write(root / ".svc.key.tmp1234", new)
    os.replace(tmp, root / "svc.key")
    assert s.wait_for(lambda snap: snap.lookup(new.public_key) is not None
                      and snap.lookup(old.public_key) is None, WAIT)
    # and curvecert's own writer (fileio.atomic_write, through add_certificate)
    added = make("added")
    store.add_certificate(root, added)
    assert s.wait_for(trusted(s, added), WAIT)
    assert s.findings == ()


@pytest.mark.parametrize("poll", MODES)
def test_kubernetes_data_symlink_swap(root: Path, open_store: Callable[..., CertStore],
                                      poll: bool) -> None:
    """Kubelet's AtomicWriter: payload in ..<ts>/, ..data -> ..<ts>, name -> ..data/name."""
    alice, bob = make("alice"), make("bob")

    def payload(ts: str, certs: dict[str, Certificate]) -> None:
        for name, c in certs.items():
            write(root / ts / name, c)

    def swap(ts: str) -> None:
        os.symlink(ts, root / "..data_tmp")
        os.rename(root / "..data_tmp", root / "..data")

    payload("..2026_11_26_10_00_00.000000001", {"alice.key": alice, "bob.key": bob})
    swap("..2026_11_26_10_00_00.000000001")
    for name in ("alice.key", "bob.key"):
        os.symlink(f"..data/{name}", root / name)
    s = open_store(root, poll=poll)
    assert s.lookup(alice.public_key) is not None and s.lookup(bob.public_key) is not None
    assert len(s) == 2 and s.findings == ()  # the ..<ts> copies are never read twice
    # update: alice's key changes (same visible name), bob removed, carol added
    alice2, carol = make("alice"), make("carol")
    payload("..2026_11_26_10_05_00.000000002", {"alice.key": alice2, "carol.key": carol})
    swap("..2026_11_26_10_05_00.000000002")
    os.symlink("..data/carol.key", root / "carol.key")          # new user-visible paths
    (root / "bob.key").unlink()                                  # old ones removed
    shutil.rmtree(root / "..2026_11_26_10_00_00.000000001")      # old payload removed
    assert s.wait_for(lambda snap: snap.lookup(alice2.public_key) is not None
                      and snap.lookup(carol.public_key) is not None
                      and snap.lookup(alice.public_key) is None
                      and snap.lookup(bob.public_key) is None, WAIT)
    assert len(s) == 2 and s.findings == ()


def test_kubernetes_swap_alone_triggers_a_rescan(root: Path,
                                                 open_store: Callable[..., CertStore]) -> None:
    """Only the ..data swap changes what a visible name points to: inotify names no file."""
    old, new = make("k"), make("k")
    write(root / "..ts1" / "k.key", old)
    os.symlink("..ts1", root / "..data")
    os.symlink("..data/k.key", root / "k.key")
    s = open_store(root, poll=False)
    assert s.lookup(old.public_key) is not None
    write(root / "..ts2" / "k.key", new)
    os.symlink("..ts2", root / "..data_tmp")
    os.rename(root / "..data_tmp", root / "..data")
    assert s.wait_for(lambda snap: snap.lookup(new.public_key) is not None
                      and snap.lookup(old.public_key) is None, WAIT)


# --- sub-directories and the directory itself ----------------------------------------------

def test_a_change_to_what_a_symlink_points_at(root: Path,
                                             open_store: Callable[..., CertStore]) -> None:
    """`enabled/` holds symbolic links into `available/` (the sites-enabled pattern): the
    events name the target, never the link, and the link read the old key."""
    a, b = make("a"), make("b")
    write(root / "available" / "a.key", a)
    (root / "enabled").mkdir()
    (root / "enabled" / "a.key").symlink_to("../available/a.key")
    s = open_store(root)
    assert s.lookup(a.public_key).relpath == "available/a.key"
    write(root / "available" / "a.key", b)  # rewritten in place: a revoked, b trusted
    assert s.wait_for(lambda snap: snap.lookup(a.public_key) is None
                      and snap.lookup(b.public_key) is not None, WAIT)
    (root / "available" / "a.key").unlink()  # the link now dangles
    assert s.wait_for(denied(s, b), WAIT)
    write(root / "available" / "a.key", a)  # and points at a file again: read, a duplicate
    assert s.wait_for(lambda snap: ("enabled/a.key", a.public_key, None) in snap.files(),
                      WAIT)


def test_a_symlink_into_a_dot_directory(root: Path,
                                        open_store: Callable[..., CertStore]) -> None:
    """Files below a dot-directory are never read themselves, so their events were dropped;
    a link pointing there still read them."""
    a = make("a")
    write(root / ".versions" / "a.key", a)
    (root / "a.key").symlink_to(".versions/a.key")
    s = open_store(root)
    assert s.lookup(a.public_key).relpath == "a.key"
    (root / ".versions" / "a.key").unlink()
    assert s.wait_for(denied(s, a), WAIT)
    write(root / ".versions" / "a.key", a)  # the dangling link is read again
    assert s.wait_for(trusted(s, a), WAIT)


def test_strict_modes_see_a_writable_directory_holding_a_symlink_on_the_way(
        tmp_path: Path, open_store: Callable[..., CertStore]) -> None:
    """`app/current -> ../releases/1`: whoever can write `app` can point `current` (and so
    the store) at a directory of their own; only the resolved path's parents were checked."""
    from tests.faults.support import unprivileged

    u = unprivileged()
    c, evil = make("release"), make("evil")
    write(tmp_path / "releases" / "1" / "certs" / "c.key", c)
    write(tmp_path / "mine" / "certs" / "e.key", evil)
    app = tmp_path / "app"
    app.mkdir()
    (app / "current").symlink_to("../releases/1")
    app.chmod(0o777)  # others can write it
    u.prepare(app, tmp_path / "mine" / "certs" / "e.key")
    s = open_store(app / "current" / "certs", strict_modes=True)
    assert not s.healthy and s.lookup(c.public_key) is None
    assert s.snapshot.problem is not None and s.snapshot.problem.startswith(f"{app}: ")
    # another user repoints the link at a store of their own: still nothing trusted
    code = ("import os, sys; os.symlink(sys.argv[1], sys.argv[2] + '/new'); "
            "os.rename(sys.argv[2] + '/new', sys.argv[2] + '/current')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "mine"), str(app)],
                   preexec_fn=u.preexec_fn, check=True, timeout=30)
    s._scanner.scan = counted = CountedScan(s._scanner.scan)  # type: ignore[method-assign]
    assert counted.wait(2)  # the second one began after the link was repointed
    mine = os.stat(tmp_path / "mine" / "certs")
    assert s._dirwatch.watched_id == (mine.st_dev, mine.st_ino)
    assert s.lookup(evil.public_key) is None and not s.healthy


@pytest.mark.parametrize("poll", MODES)
def test_subdirectories(root: Path, tmp_path: Path, open_store: Callable[..., CertStore],
                        poll: bool) -> None:
    s = open_store(root, poll=poll)
    a, b, c = make("a"), make("b"), make("c")
    write(root / "team" / "a.key", a)
    assert s.wait_for(trusted(s, a), WAIT)
    write(root / "team" / "deep" / "er" / "b.key", b)
    assert s.wait_for(trusted(s, b), WAIT)
    # a whole directory moved in
    write(tmp_path / "incoming" / "c.key", c)
    os.rename(tmp_path / "incoming", root / "incoming")
    assert s.wait_for(trusted(s, c), WAIT)
    # and moved out / deleted: everything below goes
    os.rename(root / "incoming", tmp_path / "away")
    assert s.wait_for(denied(s, c), WAIT)
    shutil.rmtree(root / "team")
    assert s.wait_for(lambda snap: len(snap) == 0, WAIT)


@pytest.mark.parametrize("poll", MODES)
def test_directory_deleted_and_recreated(root: Path, open_store: Callable[..., CertStore],
                                         poll: bool) -> None:
    old = make("old")
    write(root / "old.key", old)
    s = open_store(root, poll=poll)
    assert s.lookup(old.public_key) is not None
    shutil.rmtree(root)
    # fail closed: nothing trusted, and the snapshot says why
    assert s.wait_for(lambda snap: not snap.healthy, WAIT)
    assert s.lookup(old.public_key) is None and len(s) == 0
    assert "cannot read the store directory" in (s.problem or "")
    root.mkdir()
    new = make("new")
    write(root / "new.key", new)
    assert s.wait_for(lambda snap: snap.healthy and snap.lookup(new.public_key) is not None,
                      WAIT)
    # and the new directory is really watched again
    newer = make("newer")
    write(root / "newer.key", newer)
    assert s.wait_for(trusted(s, newer), WAIT)
    assert s.lookup(old.public_key) is None


def test_directory_replaced_by_rename(root: Path, tmp_path: Path,
                                      open_store: Callable[..., CertStore]) -> None:
    old, new = make("old"), make("new")
    write(root / "k.key", old)
    s = open_store(root)
    staged = tmp_path / "staged"
    write(staged / "k.key", new)
    os.rename(root, tmp_path / "previous")
    os.rename(staged, root)  # e.g. `mv store.new store` deployments
    assert s.wait_for(lambda snap: snap.lookup(new.public_key) is not None
                      and snap.lookup(old.public_key) is None, WAIT)
    newer = make("newer")
    write(root / "newer.key", newer)
    assert s.wait_for(trusted(s, newer), WAIT)


def test_start_on_a_missing_directory_then_it_appears(tmp_path: Path,
                                                      open_store: Callable[..., CertStore]
                                                      ) -> None:
    d = tmp_path / "later"
    s = open_store(d)
    assert not s.healthy and len(s) == 0
    c = make("c")
    staged = tmp_path / "staged"
    write(staged / "c.key", c)
    os.rename(staged, d)
    assert s.wait_for(lambda snap: snap.healthy and snap.lookup(c.public_key) is not None,
                      WAIT)


# --- bursts -------------------------------------------------------------------------------

@pytest.mark.parametrize("poll", MODES)
def test_burst_of_500_files_is_coalesced(root: Path, open_store: Callable[..., CertStore],
                                         poll: bool) -> None:
    s = open_store(root, poll=poll, debounce=0.2)
    certs = [make(f"b{i}") for i in range(500)]
    g0 = s.generation
    for i, c in enumerate(certs):
        write(root / f"b{i:03d}.key", c)
    assert s.wait_for(lambda snap: len(snap) == 500, WAIT)
    reloads = s.generation - g0
    assert 1 <= reloads <= 10, reloads  # one or a few, not one per file
    assert all(s.lookup(c.public_key) is not None for c in certs)
    for i in range(0, 500, 2):
        (root / f"b{i:03d}.key").unlink()
    assert s.wait_for(lambda snap: len(snap) == 250, WAIT)
    assert all((s.lookup(c.public_key) is None) == (i % 2 == 0) for i, c in enumerate(certs))


# --- lifecycle, callbacks, fallbacks --------------------------------------------------------

def test_generation_reload_and_callbacks(root: Path) -> None:
    seen: list[int] = []
    s = CertStore(root, watch=False, on_reload=lambda snap: seen.append(snap.generation))
    with s:
        assert s.generation == 1 and seen == [1]
        c = make("c")
        write(root / "c.key", c)
        assert s.lookup(c.public_key) is None  # not watching: nothing changes by itself
        snap = s.reload()
        assert snap.generation == 2 and s.wait_for_generation(2, 0)
        assert s.lookup(c.public_key) is not None and seen == [1, 2]
        assert not s.wait_for_generation(3, 0.01)
        assert s.snapshot is snap and c.public_key in s and len(s) == 1
    assert s._thread is None


def test_a_failing_callback_does_not_stop_reloads(root: Path,
                                                  open_store: Callable[..., CertStore]) -> None:
    def broken(snap: Snapshot) -> None:
        raise RuntimeError("boom")

    s = open_store(root, on_reload=broken)
    c = make("c")
    write(root / "c.key", c)
    assert s.wait_for(trusted(s, c), WAIT)


def test_findings_follow_the_files(root: Path, open_store: Callable[..., CertStore]) -> None:
    s = open_store(root)
    (root / "bad.key").write_text("garbage\n  x\n")
    assert s.wait_for(lambda snap: [f.code for f in snap.findings] == ["unparsable"], WAIT)
    (root / "bad.key").unlink()
    assert s.wait_for(lambda snap: snap.findings == (), WAIT)


def test_stop_joins_threads_and_is_idempotent(root: Path) -> None:
    before = {t for t in threading.enumerate()}
    s = CertStore(root, debounce=0.01).start()
    s.stop()
    s.stop()
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == [], left


def test_a_rescan_that_finds_nothing_new_is_not_published(
        root: Path, open_store: Callable[..., CertStore]) -> None:
    write(root / "c.key", make("c"))
    s = open_store(root, poll=True, poll_interval=0.01)
    g0 = s.generation
    c = make("d")
    write(root / "d.key", c)
    assert s.wait_for(trusted(s, c), WAIT)
    g1 = s.generation
    assert g1 > g0
    s._scanner.scan = counted = CountedScan(s._scanner.scan)  # type: ignore[method-assign]
    assert counted.wait(20)  # twenty polls later: still the same generation
    assert s.generation == g1


class CountedScan:
    """Wraps `Scanner.scan` to wait until it has run `n` times."""

    def __init__(self, scan: Callable[..., Snapshot]):
        self._scan = scan
        self._cond = threading.Condition()
        self.calls = 0

    def __call__(self, **kw: object) -> Snapshot:
        snap = self._scan(**kw)
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
        return snap

    def wait(self, n: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= n, WAIT)


def test_periodic_rescan_is_a_safety_net(root: Path,
                                         open_store: Callable[..., CertStore]) -> None:
    c = make("c")
    s = open_store(root, watch=True, poll=True, poll_interval=3600, rescan_interval=0.05)
    write(root / "c.key", c)  # the poller will not look for an hour; the rescan will
    assert s.wait_for(trusted(s, c), WAIT)


@pytest.mark.skipif(not hasattr(os, "setuid") or os.geteuid() != 0,
                    reason="needs root to run the child as a user of its own (nobody)")
def test_inotify_limit_falls_back_to_polling() -> None:
    """A child running as `nobody` uses up that user's inotify instances, for real (EMFILE).

    Only `nobody`'s limit is exhausted, and only for the child's lifetime, so nothing
    else on the machine is affected. Everything is imported before dropping privileges
    (the interpreter may live under a directory `nobody` cannot read).
    """
    d = Path(tempfile.mkdtemp(prefix="curvecert-watch-"))
    try:
        d.chmod(0o777)
        code = textwrap.dedent(f"""
            import ctypes, errno, logging, os, sys
            import watchdog.observers.inotify, watchdog.observers.polling
            from curvecert.store.watch import CertStore
            from curvecert.certs.cert import Certificate
            from curvecert.certs import certfile
            c = Certificate.new(name="x")
            text = certfile.dump(c, secret=False)
            os.setgid(65534); os.setuid(65534)
            libc = ctypes.CDLL(None, use_errno=True)
            fds = []
            while True:
                fd = libc.inotify_init1(0)
                if fd < 0:
                    assert ctypes.get_errno() == errno.EMFILE, ctypes.get_errno()
                    break
                fds.append(fd)
            logging.basicConfig(level=logging.WARNING)
            s = CertStore({str(d)!r}, debounce=0.01, poll_interval=0.05,
                          rescan_interval=None).start()
            try:
                assert s.polling, "expected the polling fallback"
                with open(os.path.join({str(d)!r}, "x.key"), "w") as fh:
                    fh.write(text)
                assert s.wait_for(lambda snap: snap.lookup(c.public_key) is not None, 10)
            finally:
                s.stop()
            print("OK", len(fds))
        """)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=60, cwd="/")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK")
    assert "falling back to polling" in proc.stderr and "max_user_instances" in proc.stderr


def test_invalid_settings_are_refused(root: Path) -> None:
    with pytest.raises(StoreError):
        CertStore(root, debounce=-1)
    with pytest.raises(StoreError):
        CertStore(root, rescan_interval=0)
