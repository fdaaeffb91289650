"""The store's inotify reader: the decoder, the recursive watch table, overflow, shutdown.

Real directories and the real kernel queue. The decoder is checked against a simple model
with hypothesis. The overflow tests overflow the kernel's queue for real by holding the
consumer (the one callback) while files are created, then check that the loss is reported
and that a revocation lost in it still takes effect.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.store import inotify
from curvecert.store.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_Q_OVERFLOW,
    Batch,
    InotifyReader,
    fold,
)
from curvecert.store.watch import CertStore

pytestmark = pytest.mark.skipif(not inotify.available(), reason="Linux inotify only")

WAIT = 10.0
#: More events than the kernel's default queue (16,384) holds: each file is >= 2 events.
FLOOD = 9000


# --- the decoder -----------------------------------------------------------------------------

def record(wd: int, mask: int, name: bytes) -> bytes:
    """One record as the kernel writes it: the name NUL-padded to a multiple of 16."""
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


_names = st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\0", b"x"))
_masks = st.sampled_from([IN_CREATE, IN_DELETE, IN_CLOSE_WRITE, IN_MOVED_FROM,
                          IN_CREATE | IN_ISDIR, IN_IGNORED, IN_Q_OVERFLOW,
                          inotify.IN_DELETE_SELF, inotify.IN_ATTRIB])


@given(st.lists(st.tuples(st.integers(-1, 5), _masks, _names), max_size=60))
def test_fold_matches_a_record_by_record_model(records: list[tuple[int, int, bytes]]) -> None:
    buf = b"".join(record(wd, mask, name) for wd, mask, name in records)
    per_dir, special = fold(buf)
    want: dict[int, dict[bytes, int]] = {}
    want_special = []
    for wd, mask, name in records:
        if mask & (IN_IGNORED | IN_Q_OVERFLOW | inotify.IN_DELETE_SELF):
            want_special.append((wd, mask))
        else:
            names = want.setdefault(wd, {})
            names[name] = names.get(name, 0) | mask
    assert per_dir == want
    assert special == want_special


@given(st.binary(max_size=600))
def test_fold_never_raises_on_any_bytes(buf: bytes) -> None:
    per_dir, special = fold(buf)
    assert all(isinstance(n, bytes) for names in per_dir.values() for n in names)
    assert len(special) <= len(buf) // 16


# --- the live reader -------------------------------------------------------------------------

class Collector:
    """The reader's callback: keeps every batch, lets a test wait for a condition."""

    def __init__(self) -> None:
        self.paths: dict[bytes, int] = {}
        self.root_events = 0
        self.overflows = 0
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()

    def deliver(self, batch: Batch) -> None:
        self.gate.wait(WAIT)
        with self.cond:
            for path, mask in batch[0].items():
                self.paths[path] = self.paths.get(path, 0) | mask
            self.root_events += batch[1]
            self.cond.notify_all()

    def overflow(self) -> None:
        with self.cond:
            self.overflows += 1
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, WAIT)

    def saw(self, path: Path) -> Callable[[], bool]:
        return lambda: os.fsencode(path) in self.paths


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[tuple[InotifyReader, Collector, Path]]:
    root = tmp_path / "store"
    root.mkdir()
    sink = Collector()
    r = InotifyReader(str(root), sink.deliver, sink.overflow)
    r.start()
    yield r, sink, root
    sink.gate.set()
    r.stop()
    r.join(WAIT)
    assert not r.is_alive()


def test_files_are_reported_with_their_events(reader: tuple[InotifyReader, Collector, Path],
                                              ) -> None:
    _r, sink, root = reader
    (root / "a.key").write_text("x")
    assert sink.wait(sink.saw(root / "a.key"))
    (root / "a.key").unlink()
    assert sink.wait(lambda: bool(sink.paths[os.fsencode(root / "a.key")] & IN_DELETE))
    assert sink.paths[os.fsencode(root / "a.key")] & (IN_CREATE | IN_CLOSE_WRITE)


def test_new_and_moved_in_directories_are_watched(reader: tuple[InotifyReader, Collector,
                                                                Path], tmp_path: Path) -> None:
    r, sink, root = reader
    (root / "sub").mkdir()
    assert sink.wait(sink.saw(root / "sub"))
    (root / "sub" / "x.key").write_text("x")
    assert sink.wait(sink.saw(root / "sub" / "x.key"))
    # a whole tree moved in: its deepest directory is watched too
    outside = tmp_path / "outside" / "a" / "b"
    outside.mkdir(parents=True)
    os.rename(tmp_path / "outside", root / "tree")
    assert sink.wait(sink.saw(root / "tree"))
    (root / "tree" / "a" / "b" / "y.key").write_text("y")
    assert sink.wait(sink.saw(root / "tree" / "a" / "b" / "y.key"))
    assert os.fsencode(root / "tree" / "a" / "b") in r.watched()


def test_directories_moved_out_or_removed_are_forgotten(
        reader: tuple[InotifyReader, Collector, Path], tmp_path: Path) -> None:
    r, sink, root = reader
    (root / "gone").mkdir()
    (root / "away").mkdir()
    assert sink.wait(lambda: os.fsencode(root / "away") in r.watched()
                     and os.fsencode(root / "gone") in r.watched())
    os.rename(root / "away", tmp_path / "away")
    (root / "gone").rmdir()
    # a change in the moved-out directory, then a marker; the queue is ordered, so once
    # the marker is seen the other change would have been reported before it
    (tmp_path / "away" / "z.key").write_text("z")
    (root / "marker").write_text("m")
    assert sink.wait(sink.saw(root / "marker"))
    assert not any(p.endswith(b"z.key") for p in sink.paths)
    assert sink.wait(lambda: not any(p.endswith((b"/gone", b"/away")) for p in r.watched()))


def test_a_symlinked_directory_is_not_followed(
        reader: tuple[InotifyReader, Collector, Path], tmp_path: Path) -> None:
    r, sink, root = reader
    target = tmp_path / "elsewhere"
    target.mkdir()
    (root / "link").symlink_to(target)
    assert sink.wait(sink.saw(root / "link"))
    assert os.fsencode(root / "link") not in r.watched()


def test_a_real_queue_overflow_is_reported(reader: tuple[InotifyReader, Collector, Path],
                                           ) -> None:
    _r, sink, root = reader
    sink.gate.clear()  # the consumer stalls; the kernel keeps queueing, then drops
    (root / "first").write_text("1")
    for i in range(FLOOD):
        (root / f"junk-{i}").write_text("j")
    sink.gate.set()
    assert sink.wait(lambda: sink.overflows >= 1)


def test_the_root_going_away_is_a_root_event(reader: tuple[InotifyReader, Collector, Path],
                                             tmp_path: Path) -> None:
    _r, sink, root = reader
    os.rename(root, tmp_path / "moved")
    assert sink.wait(lambda: sink.root_events >= 1)


def test_stop_closes_every_descriptor(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    sink = Collector()
    for _ in range(20):
        r = InotifyReader(str(tmp_path), sink.deliver, sink.overflow)
        r.start()
        r.stop()
        r.join(WAIT)
        assert not r.is_alive()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_missing_directory_raises_and_leaks_nothing(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    r = InotifyReader(str(tmp_path / "nope"), lambda b: None, lambda: None)
    with pytest.raises(FileNotFoundError):
        r.start()
    assert set(os.listdir("/proc/self/fd")) <= before


# --- the store on top of it ------------------------------------------------------------------

def _trusted_store(tmp_path: Path) -> tuple[Path, Certificate, Path]:
    root = tmp_path / "store"
    root.mkdir()
    c = Certificate.new(name="revoked")
    path = root / "revoked.key"
    path.write_text(certfile.dump(c, secret=False))
    return root, c, path


def test_a_revocation_lost_in_an_overflow_still_takes_effect(tmp_path: Path) -> None:
    """The deletion happens while the kernel queue is full, so its event is dropped."""
    root, c, path = _trusted_store(tmp_path)
    gate = threading.Event()
    s = CertStore(root, debounce=0.01, rescan_interval=None)
    forward = s._dirwatch._callback

    def stalled(batch: Batch) -> None:
        gate.wait(WAIT)
        forward(batch)

    s._dirwatch._callback = stalled
    with s:
        assert s.lookup(c.public_key) is not None
        (root / "first").write_text("1")
        for i in range(FLOOD):
            (root / f"junk-{i}").write_text("j")
        path.unlink()  # the queue is full by now: this event is lost
        gate.set()
        assert s.wait_for(lambda snap: snap.lookup(c.public_key) is None, WAIT)


def test_a_reader_that_dies_is_replaced(tmp_path: Path) -> None:
    root, c, path = _trusted_store(tmp_path)
    s = CertStore(root, debounce=0.01, rescan_interval=None)
    forward = s._dirwatch._callback
    calls = []

    def faulty(batch: Batch) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("injected fault in the consumer")
        forward(batch)

    s._dirwatch._callback = faulty
    with s:
        first = s._dirwatch.observer
        (root / "trigger").write_text("t")  # kills the first reader
        assert s.wait_for(lambda snap: s._dirwatch.observer is not first
                          and s._dirwatch.alive(), WAIT)
        path.unlink()
        assert s.wait_for(lambda snap: snap.lookup(c.public_key) is None, WAIT)
    shutil.rmtree(root)


def test_a_directory_that_cannot_be_watched_switches_to_polling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of inotify watches (ENOSPC, `fs.inotify.max_user_watches`) for a new
    sub-directory: nobody would see a revocation there, so the reader gives up and the
    store starts again, falling back to polling. The limit is injected: exhausting the
    real one (192k watches here) would take the whole machine's."""
    root, _c, _path = _trusted_store(tmp_path)
    add = InotifyReader._add

    def limited(self: InotifyReader, path: bytes, *, root: bool = False) -> int:
        if path.endswith(b"/deep"):
            raise OSError(errno.ENOSPC, "inotify_add_watch: No space left on device")
        return add(self, path, root=root)

    monkeypatch.setattr(InotifyReader, "_add", limited)
    c = Certificate.new(name="deep")
    with CertStore(root, debounce=0.01, rescan_interval=None, poll_interval=0.05) as s:
        assert not s.polling
        (root / "deep").mkdir()
        assert s.wait_for(lambda snap: s.polling, WAIT)
        (root / "deep" / "c.key").write_text(certfile.dump(c, secret=False))
        assert s.wait_for(lambda snap: snap.lookup(c.public_key) is not None, WAIT)
        (root / "deep" / "c.key").unlink()
        assert s.wait_for(lambda snap: snap.lookup(c.public_key) is None, WAIT)


def test_polling_drops_a_file_that_lived_shorter_than_one_poll(tmp_path: Path) -> None:
    """Polling keeps one view of the directory (the store's own rescans). A file read by
    an explicit reload and removed before the next poll must still be dropped; with
    watchdog's poller, which kept a second view, it never was."""
    root, _c, _path = _trusted_store(tmp_path)
    c = Certificate.new(name="brief")
    with CertStore(root, poll=True, poll_interval=0.5, rescan_interval=None) as s:
        (root / "brief.key").write_text(certfile.dump(c, secret=False))
        assert s.reload().lookup(c.public_key) is not None
        (root / "brief.key").unlink()
        assert s.wait_for(lambda snap: snap.lookup(c.public_key) is None, WAIT)
