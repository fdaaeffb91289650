"""The store on disk: scan rules, findings, duplicates, naming, the stat cache, the fast parser.

No threads and no watcher here (tests/integration/test_watch.py has those). Real files in
`tmp_path`; the fast path is checked against the full parser on generated texts and on the
ZPL corpus, and incremental updates against full rescans on random edit sequences.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import zmq.auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvecert import store
from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.errors import AmbiguousMatch, FileExists, InvalidKey, StoreError
from curvecert.formats import z85, zmtp
from curvecert.store import fastparse

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "zpl"


def cert(name: str, **meta: str) -> Certificate:
    """A fresh keypair with a `name` (and more metadata)."""
    return Certificate.new(name=name, **meta)


def put(path: Path, c: Certificate) -> Path:
    """Write `c`'s public file at `path` (creating parents)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(certfile.dump(c, secret=False))
    return path


def trusted(snap: store.Snapshot) -> dict[str, bytes]:
    """{relative path: key} of the trusted entries."""
    return {e.relpath: e.public_key for e in snap}


def codes(snap: store.Snapshot) -> dict[str, str]:
    """{file name: finding code}."""
    return {os.path.relpath(f.path, snap.directory): f.code for f in snap.findings}


# --- what is read and what is skipped ---------------------------------------------------------

def test_reads_czmq_and_pyzmq_layouts_recursively_and_skips_the_rest(tmp_path: Path) -> None:
    czmq_named = put(tmp_path / "alice", cert("alice"))           # CZMQ: any name
    pyzmq_named = put(tmp_path / "bob.key", cert("bob"))          # pyzmq: *.key
    nested = put(tmp_path / "team" / "ops" / "carol.cert", cert("carol"))
    skipped = {
        "alice_secret", "bob.key_secret", ".hidden.key", ".git/x.key", "..data/y.key",
        "dave.key~", ".dave.key.swp", "dave.swp", "dave.swo", "dave.tmp", "#dave.key#",
        "team/.cache/z.key",
    }
    for rel in skipped:
        put(tmp_path / rel, cert(rel))
    snap = store.scan(tmp_path)
    assert snap.healthy and snap.problem is None
    assert sorted(trusted(snap)) == ["alice", "bob.key", "team/ops/carol.cert"]
    assert snap.findings == ()
    assert snap.lookup(Certificate.load(czmq_named).public_key) is not None
    assert snap.lookup(Certificate.load(pyzmq_named).public_key).file == str(pyzmq_named)
    assert snap.lookup(Certificate.load(nested).public_key).relpath == "team/ops/carol.cert"


def test_symlinked_files_are_followed_but_not_symlinked_directories(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    target = put(outside / "real.key", cert("linked"))
    loop_dir = put(outside / "dir" / "in-dir.key", cert("in-dir")).parent
    st_dir = tmp_path / "store"
    st_dir.mkdir()
    (st_dir / "link.key").symlink_to(target)
    (st_dir / "dirlink").symlink_to(loop_dir, target_is_directory=True)
    (st_dir / "loop").symlink_to(st_dir, target_is_directory=True)
    (st_dir / "dangling.key").symlink_to(tmp_path / "nowhere")
    snap = store.scan(st_dir)
    assert sorted(trusted(snap)) == ["link.key"]
    assert snap.findings == ()


def test_a_fifo_is_neither_opened_nor_trusted(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.key")  # opening it for reading would block a naive scanner
    put(tmp_path / "ok.key", cert("ok"))
    snap = store.scan(tmp_path)
    assert sorted(trusted(snap)) == ["ok.key"]


def test_is_ignored_name() -> None:
    for name in (".x", "..data", "a_secret", "a.key_secret", "a~", "a.swp", "a.tmp", "#a#"):
        assert store.is_ignored_name(name), name
    for name in ("a", "a.key", "secret", "a_secrets", "#", "a#", "tmp", "key.tmp.key"):
        assert not store.is_ignored_name(name), name


# --- findings -----------------------------------------------------------------------------

def test_bad_files_become_findings_and_never_stop_the_scan(tmp_path: Path) -> None:
    good = cert("good")
    put(tmp_path / "good.key", good)
    (tmp_path / "syntax.key").write_text("metadata\n  name = \"x\"\n")
    (tmp_path / "nokey.key").write_text("metadata\ncurve\n")
    (tmp_path / "shortkey.key").write_text('curve\n    public-key = "abc"\n')
    (tmp_path / "binary.key").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "huge.key").write_bytes(b"#" * (store.MAX_FILE_SIZE + 1))
    holder = cert("holder")
    (tmp_path / "holder.key").write_text(certfile.dump(holder, secret=True))
    snap = store.scan(tmp_path)
    assert trusted(snap) == {"good.key": good.public_key}
    assert snap.lookup(holder.public_key) is None  # a secret certificate is never trusted
    assert codes(snap) == {
        "syntax.key": "unparsable", "nokey.key": "invalid-certificate",
        "shortkey.key": "invalid-certificate", "binary.key": "unparsable",
        "huge.key": "too-large", "holder.key": "secret-key",
    }
    syntax = next(f for f in snap.findings if f.path.endswith("syntax.key"))
    assert syntax.line == 2 and syntax.severity == "error"
    assert str(syntax).startswith(f"{tmp_path / 'syntax.key'}:2: error: ")
    assert all(f.severity == "error" for f in snap.findings)


def test_metadata_zap_cannot_carry_is_a_warning_and_the_file_stays_trusted(
        tmp_path: Path) -> None:
    c = Certificate.new([("name", "x"), ("User-Id", "spoof"), ("note", "n" * 600)])
    put(tmp_path / "x.key", c)
    snap = store.scan(tmp_path)
    entry = snap.lookup(c.public_key)
    assert entry is not None
    assert entry.meta == {"name": "x", "note": "n" * 600}
    assert {f.code: f.severity for f in snap.findings} == {
        "metadata-dropped": "warning", "czmq-metadata-overflow": "warning"}


@pytest.mark.parametrize("order", [("b", "a/x", "a.key"), ("a.key", "a/x", "b")])
def test_duplicates_first_sorted_path_wins_whatever_the_creation_order(
        tmp_path: Path, order: tuple[str, ...]) -> None:
    c = cert("dup")
    for rel in order:
        put(tmp_path / rel, c)
    snap = store.scan(tmp_path)
    entry = snap.lookup(c.public_key)
    assert entry is not None and entry.relpath == "a.key"  # '.' (0x2e) < '/' (0x2f) < 'b'
    assert codes(snap) == {"a/x": "duplicate-key", "b": "duplicate-key"}
    assert all("a.key" in f.message for f in snap.findings)
    assert len(snap) == 1


def test_duplicate_takes_over_when_the_winner_goes(tmp_path: Path) -> None:
    c = cert("dup")
    put(tmp_path / "a.key", c)
    put(tmp_path / "b.key", c)
    scanner = store.Scanner(tmp_path)
    assert scanner.scan().lookup(c.public_key).relpath == "a.key"
    (tmp_path / "a.key").unlink()
    snap = scanner.apply(["a.key"])
    assert snap.lookup(c.public_key).relpath == "b.key"
    assert snap.findings == ()


# --- fail closed ------------------------------------------------------------------------

def test_missing_directory_trusts_nothing_and_says_why(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "store"
    c = cert("c")
    put(d / "c.key", c)
    scanner = store.Scanner(d)
    assert scanner.scan().lookup(c.public_key) is not None
    shutil.rmtree(d)
    with caplog.at_level("ERROR", logger="curvecert.store.scan"):
        snap = scanner.scan()
    assert not snap.healthy and len(snap) == 0 and snap.lookup(c.public_key) is None
    assert snap.problem is not None and "No such file" in snap.problem
    assert any(r.levelname == "ERROR" and "trusting NO key" in r.message
               for r in caplog.records)
    d.mkdir()
    put(d / "c.key", c)
    back = scanner.scan()
    assert back.healthy and back.lookup(c.public_key) is not None


def test_a_file_where_the_directory_should_be_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a directory")
    snap = store.scan(tmp_path / "store")
    assert not snap.healthy and len(snap) == 0 and "not a directory" in (snap.problem or "")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories anyway")
def test_unreadable_subdirectory_costs_only_its_own_keys(tmp_path: Path) -> None:
    top, below = cert("top"), cert("below")
    put(tmp_path / "top.key", top)
    sub = put(tmp_path / "sub" / "below.key", below).parent
    sub.chmod(0)
    try:
        snap = store.scan(tmp_path)
    finally:
        sub.chmod(0o755)
    assert snap.healthy and trusted(snap) == {"top.key": top.public_key}
    assert codes(snap) == {"sub": "unreadable-directory"}


# --- entries and lookups ------------------------------------------------------------------

def test_entry_carries_exactly_the_zap_metadata_blob(tmp_path: Path) -> None:
    c = Certificate.new([("name", "Alice Example"), ("email", "alice@example.org"),
                         ("x@y", "mapped name"), ("unicode", "héllo ✓")])
    path = put(tmp_path / "alice", c)
    snap = store.scan(tmp_path)
    for key in (c.public_key, c.public_txt, c.public_txt.encode(), bytearray(c.public_key),
                memoryview(c.public_key)):
        entry = snap.lookup(key)
        assert entry is not None and entry.public_key == c.public_key
    entry = snap.lookup(c.public_key)
    assert entry.metadata == zmtp.encode_lenient(c.meta)[0]
    assert entry.meta == {"name": "Alice Example", "email": "alice@example.org",
                          "x_y": "mapped name", "unicode": "héllo ✓"}
    assert entry.file == str(path) and entry.relpath == "alice"
    assert entry.public_txt == c.public_txt and entry.fingerprint == c.fingerprint
    assert c.public_key in snap and len(snap) == 1
    assert snap.lookup(bytes(32)) is None and snap.lookup("nonsense") is None
    assert snap.lookup("0" * 40) is None and snap.entry_for_path("alice") == entry
    assert snap.entry_for_path("nope") is None


# --- naming and adding --------------------------------------------------------------------

def test_store_filename_is_hex_dot_key() -> None:
    key = bytes(range(32))
    name = store.store_filename(key)
    assert name == key.hex() + ".key" and len(name) == 68
    assert "/" not in name and not name.startswith(".") and name == name.lower()
    with pytest.raises(InvalidKey):
        store.store_filename(b"short")


def test_add_certificate_writes_only_the_public_part(tmp_path: Path) -> None:
    d = tmp_path / "new" / "store"  # created on demand
    c = cert("alice", email="a@example.org")
    path = store.add_certificate(d, c)
    assert os.path.basename(path) == store.store_filename(c.public_key)
    text = Path(path).read_text()
    assert "secret-key" not in text and c.secret_txt not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    loaded = Certificate.load(path)
    assert not loaded.has_secret and dict(loaded.meta) == {"name": "alice",
                                                           "email": "a@example.org"}
    # pyzmq reads the store too (it loads *.key only)
    assert zmq.auth.load_certificates(str(d)) == {c.public_txt.encode(): True}
    # the same certificate again: nothing rewritten
    before = os.stat(path)
    assert store.add_certificate(d, c) == path
    assert os.stat(path).st_ino == before.st_ino
    # same key, different metadata: refused, then replaced with force
    changed = c.with_meta({"name": "alice2"})
    with pytest.raises(FileExists):
        store.add_certificate(d, changed)
    assert dict(Certificate.load(path).meta)["name"] == "alice"
    store.add_certificate(d, changed, force=True)
    assert dict(Certificate.load(path).meta) == {"name": "alice2"}


def test_default_directory() -> None:
    assert store.default_directory({"CURVECERT_STORE": "/srv/s"}) == "/srv/s"
    assert store.default_directory({"XDG_CONFIG_HOME": "/cfg"}) == "/cfg/curvecert/store"
    home = os.path.expanduser("~")
    assert store.default_directory({"XDG_CONFIG_HOME": "relative"}) == \
        os.path.join(home, ".config", "curvecert", "store")
    assert store.default_directory({}) == os.path.join(home, ".config", "curvecert", "store")


# --- removing -----------------------------------------------------------------------------

@pytest.fixture
def three(tmp_path: Path) -> tuple[Path, dict[str, Certificate]]:
    d = tmp_path / "store"
    cs = {"alice": cert("alice"), "bob1": cert("bob"), "bob2": cert("bob")}
    for c in cs.values():
        store.add_certificate(d, c)
    return d, cs


def _files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_remove_by_key_fingerprint_name_and_path(three: tuple[Path, dict[str, Certificate]],
                                                 tmp_path: Path) -> None:
    d, cs = three
    name_of = {k: store.store_filename(c.public_key) for k, c in cs.items()}
    assert store.remove(d, cs["alice"].fingerprint) == [str(d / name_of["alice"])]
    assert store.remove(d, cs["bob1"].public_txt) == [str(d / name_of["bob1"])]
    assert _files(d) == {name_of["bob2"]}
    store.add_certificate(d, cs["alice"])
    assert store.remove(d, "alice") == [str(d / name_of["alice"])]          # by name
    store.add_certificate(d, cs["alice"])
    assert store.remove(d, name_of["alice"]) == [str(d / name_of["alice"])]  # store path
    store.add_certificate(d, cs["alice"])
    mine = put(tmp_path / "elsewhere" / "alice-cert", cs["alice"])           # cert elsewhere
    assert store.remove(d, str(mine)) == [str(d / name_of["alice"])]
    assert _files(d) == {name_of["bob2"]}


def test_ambiguous_remove_lists_candidates_and_removes_nothing(
        three: tuple[Path, dict[str, Certificate]]) -> None:
    d, cs = three
    before = _files(d)
    with pytest.raises(AmbiguousMatch) as info:
        store.remove(d, ["alice", "bob"])  # the second is ambiguous: not even alice goes
    assert _files(d) == before
    assert info.value.selector == "bob" and len(info.value.candidates) == 2
    assert {cs["bob1"].public_txt in c or cs["bob2"].public_txt in c
            for c in info.value.candidates} == {True}
    with pytest.raises(StoreError, match="nothing in the store matches"):
        store.remove(d, "carol")
    with pytest.raises(StoreError):
        store.remove(d, Certificate.new().public_txt)
    assert _files(d) == before


def test_remove_by_key_removes_duplicates_too(tmp_path: Path) -> None:
    c = cert("dup")
    put(tmp_path / "a.key", c)
    put(tmp_path / "sub" / "b.key", c)
    removed = store.remove(tmp_path, c.public_txt)
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == ["a.key", "sub/b.key"]
    assert store.scan(tmp_path).lookup(c.public_key) is None


def test_remove_a_broken_file_by_path(tmp_path: Path) -> None:
    (tmp_path / "broken.key").write_text("nonsense\n")
    assert store.remove(tmp_path, "broken.key") == [str(tmp_path / "broken.key")]
    assert not (tmp_path / "broken.key").exists()


def test_remove_from_an_unreadable_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot read"):
        store.remove(tmp_path / "missing", "x")


# --- the stat cache -----------------------------------------------------------------------

def test_rescan_parses_only_changed_files(tmp_path: Path) -> None:
    cs = [cert(f"c{i}") for i in range(20)]
    for i, c in enumerate(cs):
        put(tmp_path / f"c{i:02d}.key", c)
    scanner = store.Scanner(tmp_path)
    scanner.scan()
    assert scanner.parsed == 20
    scanner.scan()
    assert scanner.parsed == 20  # nothing changed: nothing parsed
    # CZMQ's blind spot: same size, old mtime restored (cp -p / rsync -t). ctime still moves.
    victim = tmp_path / "c05.key"
    old = os.stat(victim)
    replacement = cert("c5")  # same metadata length: same file size
    victim.write_text(certfile.dump(replacement, secret=False))
    os.utime(victim, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(victim).st_size == old.st_size
    snap = scanner.scan()
    assert scanner.parsed == 21
    assert snap.lookup(cs[5].public_key) is None
    assert snap.lookup(replacement.public_key).relpath == "c05.key"
    # an atomic rename (new inode) is a change too
    newer = cert("c6")
    tmp = tmp_path / ".c06.key.tmp"
    put(tmp, newer)
    os.replace(tmp, tmp_path / "c06.key")
    snap = scanner.scan()
    assert scanner.parsed == 22 and snap.lookup(newer.public_key) is not None
    assert snap.lookup(cs[6].public_key) is None


def test_apply_reads_only_the_named_paths(tmp_path: Path) -> None:
    for i in range(10):
        put(tmp_path / f"c{i}.key", cert(f"c{i}"))
    scanner = store.Scanner(tmp_path)
    scanner.scan()
    new = put(tmp_path / "sub" / "new.key", cert("new"))
    snap = scanner.apply([str(new.parent)])  # a created directory: its sub-tree is read
    assert scanner.parsed == 11 and "sub/new.key" in trusted(snap)
    snap = scanner.apply(["c3.key", "c3.key", str(tmp_path / "nope.key")])
    assert scanner.parsed == 11  # c3 unchanged (stat cache), nope.key absent
    assert snap.generation == 3 and len(snap) == 11


# --- incremental == full ------------------------------------------------------------------

_POOL = [Certificate.new(name=f"k{i}") for i in range(4)]
_PATHS = ["a.key", "b", "a/x.key", "a/y", "a/b/z.key", "c.key", "a.key.d/w"]
_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(_PATHS), st.integers(0, len(_POOL) - 1)),
    st.tuples(st.just("bad"), st.sampled_from(_PATHS), st.just(0)),
    st.tuples(st.just("rm"), st.sampled_from([*_PATHS, "a", "a/b", "a.key.d"]), st.just(0)),
    st.tuples(st.just("mv"), st.sampled_from([*_PATHS, "a"]), st.sampled_from(range(7))),
)


def _do(root: Path, op: tuple[str, str, int]) -> list[str]:
    kind, rel, n = op
    path = root / rel
    if kind in ("put", "bad"):
        if path.is_dir():
            shutil.rmtree(path)
        parent = path.parent
        while parent != root and not parent.is_dir():
            if parent.exists():
                parent.unlink()
            parent = parent.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(certfile.dump(_POOL[n], secret=False) if kind == "put" else "junk =\n")
        return [rel]
    if kind == "rm":
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return [rel]
    dest_rel = f"moved{n}"
    if path.exists():
        dest = root / dest_rel
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(path, dest)
    return [rel, dest_rel]


def _view(snap: store.Snapshot) -> tuple[object, ...]:
    return (sorted((e.relpath, e.public_key, e.metadata) for e in snap),
            [(f.path, f.code, f.message) for f in snap.findings])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=12))
def test_incremental_apply_equals_full_rescan(tmp_path_factory: pytest.TempPathFactory,
                                              ops: list[tuple[str, str, int]]) -> None:
    root = tmp_path_factory.mktemp("inc")
    scanner = store.Scanner(root)
    scanner.scan()
    for op in ops:
        changed = _do(root, op)
        incremental = scanner.apply(changed)
        assert _view(incremental) == _view(store.scan(root)), op
        # and the structures behind it stay consistent: path order, lookups, path lookups
        assert [e.relpath for e in incremental] == sorted(
            (e.relpath for e in incremental), key=os.fsencode)
        for e in incremental:
            assert incremental.lookup(e.public_key) == e
            assert incremental.entry_for_path(e.relpath) == e


# --- the fast parser equals the full one ----------------------------------------------------

def _full(text: str | bytes) -> tuple[bytes, list[tuple[str, str]]] | None:
    try:
        c = Certificate.parse(text)
    except Exception:
        return None
    return (c.public_key, list(c.meta.items())) if not c.has_secret else None


def _check_fast(text: str) -> None:
    fast = fastparse.fast_parse(text)
    if fast is not None:
        assert fast == _full(text), text
    # and what the store uses (fast path or fallback) always equals the full parser
    try:
        got: object = store.parse_public(text.encode("utf-8", "surrogatepass"))
    except Exception:
        got = None
    assert got == _full(text.encode("utf-8", "surrogatepass")), text


_clean_name = st.text(alphabet=st.sampled_from("abcXYZ019$-_@.&+"), min_size=1, max_size=8)
_name = st.text(alphabet=st.sampled_from("abcXYZ019$-_@.&+/ :#\"'\t"), min_size=0, max_size=8)
_clean_value = st.text(alphabet=st.sampled_from("ab #'=\\\té✓\x85"), max_size=10)
_value = st.text(alphabet=st.sampled_from("ab \t#\"'=\\\r\x00é✓\x85"), max_size=10)


@st.composite
def _documents(draw: st.DrawFn) -> str:
    """Documents in the standard layout, about half of them clean, the rest perturbed."""
    clean = draw(st.booleans())
    comment_pool = ["#   ****  Generated on 2026-11-26 13:42:29 by CZMQ  ****", "#", "",
                    "# \x85 \t é", "#\r"]
    if not clean:
        comment_pool += ["# x \x00", "  # indented", " ", "\ufeff#", "#\x00"]
    comments = draw(st.lists(st.sampled_from(comment_pool), max_size=4))
    items = draw(st.lists(st.tuples(_clean_name if clean else _name,
                                    _clean_value if clean else _value), max_size=4))
    good_key = st.builds(lambda: Certificate.new().public_txt)
    key = draw(good_key if clean else st.one_of(
        good_key, st.just("%nSc1" * 8), st.just("#" * 40),
        st.text(alphabet=st.sampled_from(z85.ALPHABET), min_size=39, max_size=41)))
    quote = '"' if clean else draw(st.sampled_from(['"', "'"]))
    tail = "\n" if clean else draw(st.sampled_from(
        ["\n", "", "\n\n", " \n", "\r\n", "\n    secret-key = \"x\"\n"]))
    sep = "\n" if clean else draw(st.sampled_from(["\n", "\r\n"]))
    lines = comments + ["metadata"] + [f'    {n} = "{v}"' for n, v in items]
    lines += ["curve", f"    public-key = {quote}{key}{quote}"]
    return sep.join(lines) + tail


@settings(max_examples=300, deadline=None)
@given(_documents())
def test_fast_parser_equals_full_parser_on_generated_documents(text: str) -> None:
    _check_fast(text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9$\-_@.&+]{1,12}", fullmatch=True),
                          st.text(max_size=20).filter(lambda v: '"' not in v
                                                      and "\n" not in v and "\r" not in v
                                                      and "\x00" not in v)), max_size=6))
def test_fast_parser_handles_every_writable_certificate(items: list[tuple[str, str]]) -> None:
    c = Certificate.from_public(Certificate.new().public_key, items)
    text = certfile.dump(c, secret=False)
    assert fastparse.fast_parse(text) == (c.public_key, list(c.meta.items()))
    _check_fast(text)


def test_fast_parser_takes_the_real_writers_outputs(tmp_path: Path) -> None:
    # pyzmq's public *.key: empty metadata section
    pub, _sec = zmq.auth.create_certificates(str(tmp_path), "p", {"name": "ignored"})
    text = Path(pub).read_text()
    assert fastparse.fast_parse(text) is not None
    _check_fast(text)
    # CZMQ's layout, verbatim from its docs
    czmq = ('#   ****  Generated on 2026-11-26 13:42:29 by CZMQ  ****\n'
            '#   ZeroMQ CURVE Public Certificate\n'
            '#   Exchange securely, or use a secure mechanism to verify the contents\n'
            '#   of this file after exchange. Store public certificates in your home\n'
            '#   directory, in the .curve subdirectory.\n\n'
            'metadata\n    name = "Alice Example"\n    email = "alice@example.org"\n'
            '    organization = "ACME Widgets"\ncurve\n'
            '    public-key = ")#bT{=8RHi)XQ[hG[*:ML*dRb3d5XTVO+7t481]f"\n')
    assert fastparse.fast_parse(czmq) is not None
    _check_fast(czmq)


@pytest.mark.parametrize("path", sorted(CORPUS.rglob("*.zpl")), ids=lambda p: p.name)
def test_fast_parser_agrees_on_the_zpl_corpus(path: Path) -> None:
    data = path.read_bytes()
    try:
        store_result: object = store.parse_public(data)
    except Exception:
        store_result = None
    assert store_result == _full(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    fast = fastparse.fast_parse(text)
    assert fast is None or fast == _full(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_fast_key_decoder_equals_z85(key: bytes) -> None:
    assert fastparse._z85_key(z85.encode(key)) == key


def test_fast_key_decoder_refuses_overflow() -> None:
    assert fastparse._z85_key("%nSc1" * 8) is None
    assert fastparse._z85_key("#" * 40) is None


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=6))
def test_metadata_encoder_equals_encode_lenient(meta: dict[str, str]) -> None:
    items = list(meta.items())
    assert fastparse.encode_meta(items) == zmtp.encode_lenient(items)
    assert fastparse.encode_meta(items) == zmtp.encode_lenient(items)  # cached names too


def test_metadata_encoder_limits_equal_encode_lenient() -> None:
    items = [("big", "x" * (zmtp.MAX_VALUE + 1)), ("ok", "y")]
    assert fastparse.encode_meta(items) == zmtp.encode_lenient(items)
    many = [(f"n{i}", "v" * 4000) for i in range(20)]
    assert fastparse.encode_meta(many) == zmtp.encode_lenient(many)


def test_progress_callback_counts_files(tmp_path: Path) -> None:
    for i in range(600):
        (tmp_path / f"f{i}").write_text("x")
    seen: list[int] = []
    store.scan(tmp_path, progress=seen.append, log_findings=False)
    assert seen[-1] == 600 and seen == sorted(seen) and len(seen) >= 3


def test_cancel_stops_a_scan(tmp_path: Path) -> None:
    for i in range(600):
        (tmp_path / f"f{i}").write_text("x")
    scanner = store.Scanner(tmp_path, log_findings=False)
    with pytest.raises(store.ScanCancelled):
        scanner.scan(cancel=lambda: True)


def test_keys_helpers_agree(tmp_path: Path) -> None:
    c = cert("k")
    put(tmp_path / "k", c)
    snap = store.scan(tmp_path)
    assert list(snap.keys()) == [c.public_key]
    assert keys.fingerprint(c.public_key) == snap.lookup(c.public_key).fingerprint


