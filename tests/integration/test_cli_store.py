"""`curvecert store add | remove | list | check` through the real CLI (subprocesses).

Exit codes (0 ok, 1 findings, 2 ambiguous, 3 operational/malformed input), what is
written (the public part only, named from the key), JSON shapes, the `--store` default,
and that CZMQ's zcertstore and pyzmq both accept a store the CLI wrote.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq.auth

from curvecert import store
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from tests.conftest import CliResult
from tests.czmq import require_czmq

Run = Callable[..., CliResult]


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Certificate]:
    """alice, bob1, bob2 (same name "bob"), saved as pairs under tmp/certs/."""
    out = {"alice": Certificate.new(name="alice", email="alice@example.org"),
           "bob1": Certificate.new(name="bob"), "bob2": Certificate.new(name="bob")}
    (tmp_path / "certs").mkdir()
    for key, c in out.items():
        c.save(tmp_path / "certs" / key)
    return out


def test_add_stores_only_the_public_part(run_cli: Run, tmp_path: Path,
                                         certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    src = tmp_path / "certs"
    r = run_cli("store", "--store", str(d), "add", str(src / "alice"), str(src / "bob1_secret"))
    assert r.code == 0, r.err
    names = {store.store_filename(certs[k].public_key) for k in ("alice", "bob1")}
    assert files(d) == names
    assert [Path(p).name for p in r.out.split()] == [
        store.store_filename(certs["alice"].public_key),
        store.store_filename(certs["bob1"].public_key)]
    assert "SECRET key" in r.err and "bob1_secret" in r.err  # warned about the secret file
    for name in names:
        text = (d / name).read_text()
        assert "secret-key" not in text
        assert not Certificate.load(d / name).has_secret
    assert certs["bob1"].secret_txt not in (d / store.store_filename(
        certs["bob1"].public_key)).read_text()
    # stdin, via the sub-command's own --store
    r = run_cli("store", "add", "--store", str(d), "-",
                input=(src / "bob2").read_bytes())
    assert r.code == 0, r.err
    assert store.store_filename(certs["bob2"].public_key) in files(d)


def test_add_refuses_unparsable_input_and_writes_nothing(run_cli: Run, tmp_path: Path,
                                                         certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    bad = tmp_path / "bad.key"
    bad.write_text("metadata\n  name = \"x\"\n")
    r = run_cli("store", "--store", str(d), "add", str(tmp_path / "certs" / "alice"), str(bad))
    assert r.code == 3
    assert "bad.key:2" in r.err and "Traceback" not in r.err
    assert files(d) == set()


def test_add_refuses_a_directory_whose_files_do_not_parse(run_cli: Run, tmp_path: Path,
                                                          certs: dict[str, Certificate]
                                                          ) -> None:
    """Finding B: a directory input is not a silent success when nothing in it parses."""
    d = tmp_path / "st"
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.key").write_text("garbage\n")
    os.mkfifo(src / "f.key")
    r = run_cli("store", "add", "--store", str(d), str(src))
    assert r.code == 3, (r.code, r.err)
    assert "Traceback" not in r.err and r.out == ""
    assert str(src / "f.key") in r.err  # the first bad file is named (a FIFO, never read)
    assert "1 more" in r.err
    assert not d.exists()
    # one good certificate next to a bad one: still nothing written
    (src / "f.key").unlink()
    (tmp_path / "certs" / "alice").rename(src / "alice")
    r = run_cli("store", "add", "--store", str(d), str(src))
    assert r.code == 3, (r.code, r.err)
    assert str(src / "x.key") in r.err and "Traceback" not in r.err
    assert not d.exists()
    # only good files: imported
    (src / "x.key").unlink()
    r = run_cli("store", "add", "--store", str(d), str(src))
    assert r.code == 0, r.err
    assert files(d) == {store.store_filename(certs["alice"].public_key)}


def test_add_refuses_an_empty_directory(run_cli: Run, tmp_path: Path) -> None:
    d = tmp_path / "st"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("ignored like in a store\n")
    r = run_cli("store", "add", "--store", str(d), str(empty))
    assert r.code == 3, (r.code, r.err)
    assert f"no certificates in {empty}" in r.err and "Traceback" not in r.err
    assert not d.exists()


def test_add_refuses_to_replace_a_different_file_without_force(
        run_cli: Run, tmp_path: Path, certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    alice = certs["alice"]
    assert run_cli("store", "--store", str(d), "add", str(tmp_path / "certs" / "alice")).code == 0
    renamed = tmp_path / "renamed"
    alice.with_meta({"name": "alice-renamed"}).save_public(renamed)
    r = run_cli("store", "--store", str(d), "add", str(renamed))
    assert r.code == 3 and "--force" in r.err
    target = d / store.store_filename(alice.public_key)
    assert dict(Certificate.load(target).meta)["name"] == "alice"
    # the same file again is fine (idempotent)
    again = run_cli("store", "--store", str(d), "add", str(tmp_path / "certs" / "alice"))
    assert again.code == 0 and "unchanged" in again.err
    r = run_cli("store", "--store", str(d), "add", "--force", str(renamed))
    assert r.code == 0 and "replaced" in r.err
    assert dict(Certificate.load(target).meta)["name"] == "alice-renamed"


def test_list_json_shape(run_cli: Run, tmp_path: Path, certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    for c in certs.values():
        store.add_certificate(d, c)
    (d / "broken").write_text("junk\n")  # a finding, not a listed certificate
    r = run_cli("store", "--store", str(d), "list", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert set(data) == {"items", "findings"} and len(data["items"]) == 3
    assert [f["path"] for f in data["findings"]] == [str(d / "broken")]
    by_key = {item["public_key"]: item for item in data["items"]}
    for c in certs.values():
        item = by_key[c.public_txt]
        assert set(item) >= {"public_key", "public_key_hex", "fingerprint", "path",
                             "metadata"}
        assert item["fingerprint"] == c.fingerprint
        assert item["path"] == str(d / store.store_filename(c.public_key))
        assert item["metadata"] == dict(c.meta)
    text = run_cli("store", "--store", str(d), "list")
    assert text.code == 0
    assert sorted(line.split()[0] for line in text.out.splitlines()) == sorted(by_key)
    assert "1 finding" in text.err


def test_remove_by_each_kind_of_selector(run_cli: Run, tmp_path: Path,
                                         certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    name_of = {k: store.store_filename(c.public_key) for k, c in certs.items()}

    def refill() -> None:
        for c in certs.values():
            store.add_certificate(d, c)

    refill()
    for selector, gone in [(certs["alice"].public_txt, "alice"),
                           (certs["bob1"].fingerprint, "bob1"),
                           (name_of["bob2"], "bob2"),
                           ("alice", "alice"),
                           (str(tmp_path / "certs" / "bob1"), "bob1")]:
        refill()
        r = run_cli("store", "--store", str(d), "remove", "--", selector, cwd=tmp_path)
        assert r.code == 0, (selector, r.err)
        assert r.out.split() == [str(d / name_of[gone])]
        assert files(d) == set(name_of.values()) - {name_of[gone]}
        assert f"removed 1 file from {d}" in r.err


def test_ambiguous_remove_exits_2_and_removes_nothing(run_cli: Run, tmp_path: Path,
                                                      certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    for c in certs.values():
        store.add_certificate(d, c)
    before = files(d)
    r = run_cli("store", "--store", str(d), "remove", "alice", "bob")
    assert r.code == 2
    assert certs["bob1"].public_txt in r.err and certs["bob2"].public_txt in r.err
    assert "nothing was removed" in r.err
    assert files(d) == before
    r = run_cli("store", "--store", str(d), "remove", "nobody")
    assert r.code == 3 and files(d) == before


def test_check_exit_codes_and_json(run_cli: Run, tmp_path: Path,
                                   certs: dict[str, Certificate]) -> None:
    d = tmp_path / "store"
    store.add_certificate(d, certs["alice"])
    r = run_cli("store", "--store", str(d), "check")
    assert r.code == 0 and r.out == "" and "no findings" in r.err
    (d / "bad").write_text('curve\n    public-key = "short"\n')
    # "zz-" sorts after every hex file name, so the stored file wins the duplicate rule.
    (d / "zz-copy.key").write_text(certfile.dump(certs["alice"], secret=False))
    (d / "secret").write_text(certfile.dump(certs["bob1"], secret=True))
    r = run_cli("store", "--store", str(d), "check", "--json")
    assert r.code == 1
    doc = json.loads(r.out)
    assert doc["ok"] is False and doc["path"] == str(d)
    found = doc["findings"]
    assert {(Path(f["path"]).name, f["code"], f["severity"]) for f in found} == {
        ("bad", "invalid-certificate", "error"), ("zz-copy.key", "duplicate-key", "error"),
        ("secret", "secret-key", "error")}
    assert all(set(f) == {"path", "line", "severity", "code", "message"} for f in found)
    human = run_cli("store", "--store", str(d), "check")
    assert human.code == 1 and len(human.out.splitlines()) == 3
    assert "3 finding(s)" in human.err


def test_unreadable_store_is_an_operational_error(run_cli: Run, tmp_path: Path) -> None:
    for cmd in (["list"], ["check"], ["remove", "x"]):
        r = run_cli("store", "--store", str(tmp_path / "missing"), *cmd)
        assert r.code == 3, cmd
        assert "cannot read the store directory" in r.err


def test_store_directory_defaults(run_cli: Run, tmp_path: Path,
                                  certs: dict[str, Certificate]) -> None:
    src = str(tmp_path / "certs" / "alice")
    r = run_cli("store", "add", src, env={"CURVECERT_STORE": str(tmp_path / "env-store")})
    assert r.code == 0 and files(tmp_path / "env-store")
    xdg = tmp_path / "xdg"
    r = run_cli("store", "add", src, env={"XDG_CONFIG_HOME": str(xdg)})
    assert r.code == 0 and files(xdg / "curvecert" / "store")
    # --store beats the environment
    r = run_cli("store", "--store", str(tmp_path / "flag"), "add", src,
                env={"CURVECERT_STORE": str(tmp_path / "env2")})
    assert r.code == 0 and files(tmp_path / "flag") and not (tmp_path / "env2").exists()


def test_a_store_written_by_the_cli_loads_in_czmq_and_pyzmq(
        run_cli: Run, tmp_path: Path, certs: dict[str, Certificate]) -> None:
    czmq = require_czmq()
    d = tmp_path / "store"
    src = tmp_path / "certs"
    r = run_cli("store", "--store", str(d), "add", str(src / "alice"), str(src / "bob1"))
    assert r.code == 0, r.err
    for key in ("alice", "bob1"):
        assert czmq.store_has(d, certs[key].public_txt)
    assert not czmq.store_has(d, certs["bob2"].public_txt)
    loaded = zmq.auth.load_certificates(str(d))
    assert loaded == {certs["alice"].public_txt.encode(): True,
                      certs["bob1"].public_txt.encode(): True}
    # and CZMQ's own metadata survives: zcert_load of a stored file
    stored = czmq.load_cert(d / store.store_filename(certs["alice"].public_key))
    assert stored is not None and stored.meta == dict(certs["alice"].meta)


def test_a_store_written_by_czmq_is_read(tmp_path: Path) -> None:
    czmq = require_czmq()
    d = tmp_path / "czmq-store"
    d.mkdir()
    made = czmq.make_cert(d / "alice", {"name": "Alice Example", "email": "a@example.org"})
    snap = store.scan(d)
    assert snap.findings == () and len(snap) == 1  # alice_secret is skipped
    entry = snap.lookup(made.public_txt)
    assert entry is not None and entry.meta == {"name": "Alice Example",
                                                "email": "a@example.org"}
    assert os.path.basename(entry.file) == "alice"


def test_on_a_terminal_a_progress_bar_and_a_table(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    """stdout and stderr on a pseudo-terminal: the spinner runs, the list is a table."""
    d = tmp_path / "store"
    c = Certificate.new(name="terminal-user")
    store.add_certificate(d, c)
    for i in range(600):  # enough files for the progress callback to fire
        (d / f"junk{i}").write_text("junk\n")
    env = cli_env(None)
    env.pop("NO_COLOR", None)  # with NO_COLOR, output is plain text even on a terminal
    env["COLUMNS"] = "250"  # wide enough for a 40-character key and a 68-character name
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "curvecert", "store", "--store", str(d),
                             "list"], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        code = proc.wait(30)
    text = out.decode(errors="replace")
    assert code == 0, text
    assert "scanning" in text  # the progress line (transient, on stderr)
    assert "public key (Z85)" in text and "terminal-user" in text and c.public_txt in text
    assert "600 finding(s)" in text


def test_directory_store_commands_never_need_the_etcd_client(tmp_path: Path) -> None:
    """A directory store works even where etcd3gw cannot be imported (it is loaded only
    for an etcd:// store): the README's first command once failed on exactly this."""
    Certificate.new(name="alice").save(tmp_path / "alice")
    code = ("import sys; sys.modules['etcd3gw'] = None\n"
            "from curvecert.cli import main\n"
            "main(sys.argv[1:])")
    for argv in (["store", "add", "--store", str(tmp_path / "st"), str(tmp_path / "alice")],
                 ["store", "list", "--json", "--store", str(tmp_path / "st")],
                 ["store", "check", "--store", str(tmp_path / "st")]):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "etcd3gw" not in proc.stderr
