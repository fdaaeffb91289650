"""Bulk `store add` / `store export` through the real CLI, kill -9 during an import, FIFOs,
and a revocation during a burst of garbage files (issues 11 §6, 12, 16).

- Import from a directory, a tar archive (file and stdin), JSON lines (file and stdin):
  every key trusted; export as tar and JSON lines reads back into an identical store.
- `--json` output of add/remove/export validates against curvecert/schemas/.
- `kill -9` at spread delays during a 2,000-key import: every file a scan reads is a whole
  certificate; whatever is left over is a hidden temporary the scan ignores.
- A FIFO given to `store add`: a one-line error, exit 3, well within the bound.
- A watched store with garbage files: a key removed while another process creates
  thousands of files is refused (bounded wait on the published snapshots, no timing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from curvecert import store
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.store.watch import CertStore
from tests.conftest import CliResult, wait_until

Run = Callable[..., CliResult]
SCHEMAS = Path(__file__).resolve().parents[2] / "curvecert" / "schemas"


def schema(name: str) -> dict[str, object]:
    return json.loads((SCHEMAS / name).read_text())  # type: ignore[no-any-return]


def keyset(d: Path) -> set[bytes]:
    snap = store.scan(d, log_findings=False)
    assert snap.findings == (), snap.findings
    return set(snap.keys())


@pytest.fixture
def certs() -> list[Certificate]:
    return [Certificate.new(name=f"client-{i}", team="blue") for i in range(30)]


@pytest.fixture
def source(tmp_path: Path, certs: list[Certificate]) -> Path:
    """The certificates as a pyzmq-style directory: public .key and .key_secret files."""
    d = tmp_path / "source"
    d.mkdir()
    for i, c in enumerate(certs):
        c.save(d / f"c{i}.key")
    return d


def test_import_directory_tar_jsonl_and_stdin(run_cli: Run, tmp_path: Path, source: Path,
                                              certs: list[Certificate]) -> None:
    want = {c.public_key for c in certs}
    r = run_cli("store", "--store", str(tmp_path / "s1"), "add", str(source), "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    jsonschema.validate(out, schema("store-add.json"))
    assert {i["state"] for i in out["items"]} == {"added"} and len(out["items"]) == 30
    assert keyset(tmp_path / "s1") == want

    tar = tmp_path / "e.tar"
    r = run_cli("store", "--store", str(tmp_path / "s1"), "export", "-o", str(tar), "--json")
    assert r.code == 0, r.err
    jsonschema.validate(json.loads(r.out), schema("store-export.json"))
    with tarfile.open(tar) as archive:
        assert len(archive.getnames()) == 30
    r = run_cli("store", "--store", str(tmp_path / "s2"), "add", str(tar))
    assert r.code == 0, r.err
    assert keyset(tmp_path / "s2") == want
    r = run_cli("store", "--store", str(tmp_path / "s3"), "add", "-", input=tar.read_bytes())
    assert r.code == 0, r.err
    assert keyset(tmp_path / "s3") == want

    r = run_cli("store", "--store", str(tmp_path / "s1"), "export", "--format", "jsonl")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 30
    for line in lines:
        jsonschema.validate(json.loads(line), schema("store-export-line.json"))
    (tmp_path / "keys.jsonl").write_text(r.out)
    r = run_cli("store", "--store", str(tmp_path / "s4"), "add", str(tmp_path / "keys.jsonl"))
    assert r.code == 0, r.err
    assert keyset(tmp_path / "s4") == want
    r = run_cli("store", "--store", str(tmp_path / "s5"), "add", "-", input=r"" + "\n".join(lines))
    assert r.code == 0, r.err
    assert keyset(tmp_path / "s5") == want
    # metadata survived every hop
    for d in ("s2", "s4", "s5"):
        entry = store.scan(tmp_path / d, log_findings=False).lookup(certs[3].public_key)
        assert entry is not None and entry.meta == {"name": "client-3", "team": "blue"}

    # again: nothing to write, everything unchanged
    r = run_cli("store", "--store", str(tmp_path / "s4"), "add", str(tar), "--json")
    assert {i["state"] for i in json.loads(r.out)["items"]} == {"unchanged"}

    r = run_cli("store", "--store", str(tmp_path / "s4"), "remove", "client-3", "--json")
    assert r.code == 0, r.err
    removed = json.loads(r.out)
    jsonschema.validate(removed, schema("store-remove.json"))
    assert len(removed["items"]) == 1
    assert certs[3].public_key not in keyset(tmp_path / "s4")


def test_bad_jsonl_line_names_the_line_and_writes_nothing(run_cli: Run, tmp_path: Path) -> None:
    good = Certificate.new()
    text = json.dumps({"public_key": good.public_txt, "metadata": {}}) + "\n{\"public_key\": 5}\n"
    (tmp_path / "k.jsonl").write_text(text)
    r = run_cli("store", "--store", str(tmp_path / "s"), "add", str(tmp_path / "k.jsonl"))
    assert r.code == 3
    assert r.err.count("\n") == 1 and "k.jsonl:2" in r.err
    assert not (tmp_path / "s").exists()


def test_fifo_given_to_store_add_is_an_error_not_a_hang(run_cli: Run, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_cli("store", "--store", str(tmp_path / "s"), "add", str(fifo), timeout=20)
    assert r.code == 3
    assert r.err.startswith("curvecert: error:") and r.err.count("\n") == 1
    assert "FIFO" in r.err


@pytest.mark.slow
def test_kill9_during_bulk_import_never_leaves_a_partial_certificate(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    lines = [json.dumps({"public_key": Certificate.new().public_txt,
                         "metadata": {"name": f"k{i}"}}) for i in range(2000)]
    src = tmp_path / "keys.jsonl"
    src.write_text("\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "curvecert", "store", "--store", "", "add", str(src)]
    kills = 0
    for n in range(8):
        target = tmp_path / f"k{n}"
        argv[5] = str(target)
        proc = subprocess.Popen(argv, env=cli_env(None), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # kill at a different point each time: after 1, 250, 500, ... temporaries, or
        # during the renames (a file count reached)
        want = 1 + 250 * n

        def progressed(target: Path = target, want: int = want,
                       proc: subprocess.Popen[bytes] = proc) -> bool:
            try:
                return len(os.listdir(target)) >= want or proc.poll() is not None
            except OSError:
                return proc.poll() is not None

        wait_until(progressed, timeout=120, message="the import to progress")
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        if not target.exists():
            continue
        snap = store.scan(target, log_findings=False)
        assert snap.findings == (), snap.findings[:3]  # no partial file is ever read
        for entry in snap:
            assert Certificate.parse(Path(entry.file).read_bytes()).public_key == entry.public_key
        for p in target.iterdir():
            assert p.name.endswith(".key") or (p.name.startswith(".") and
                                               p.name.endswith(".tmp")), p.name
    assert kills >= 3, "the imports all ended before the kill"
    # and a complete import afterwards trusts every key
    r = subprocess.run(argv, env=cli_env(None), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(keyset(target)) == 2000


def test_revocation_during_a_garbage_burst_takes_effect(tmp_path: Path) -> None:
    d = tmp_path / "store"
    d.mkdir()
    for i in range(3000):
        (d / f"junk-{i:05d}").write_text("not a certificate\n")
    keep, revoke = Certificate.new(), Certificate.new()
    for c in (keep, revoke):
        (d / store.store_filename(c.public_key)).write_text(certfile.dump(c, secret=False))
    burst = ("import os, sys\nd = sys.argv[1]\nprint('go', flush=True)\n"
             "for i in range(8000):\n"
             "    with open(os.path.join(d, f'burst-{i:05d}'), 'w') as f: f.write('x\\n')\n")
    with CertStore(d, rescan_interval=None) as live:
        assert revoke.public_key in live and len(live.findings) == 3000
        child = subprocess.Popen([sys.executable, "-c", burst, str(d)], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout is not None
            child.stdout.readline()
            os.unlink(d / store.store_filename(revoke.public_key))
            assert live.wait_for(lambda s: s.lookup(revoke.public_key) is None, 20)
            assert keep.public_key in live.snapshot
        finally:
            child.wait(60)
        assert live.wait_for(lambda s: len(s.findings) == 11000, 30)
        assert keep.public_key in live and revoke.public_key not in live
