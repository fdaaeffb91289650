"""The etcd store against a real three-member etcd cluster (tests/etcdcluster.py).

- `curvecert store add/remove/list/check/sync` as real processes on an etcd prefix;
- two `serve-auth` daemons (real processes) and one embedded authenticator on the same
  prefix: a key added through the CLI is admitted by all three, a removed one refused by
  all three (real CURVE handshakes, verdicts from libzmq's monitor);
- values are CZMQ-format files: exported to a directory, CZMQ and pyzmq read them.

Each test uses its own prefix; waits are bounded (generations, retried handshakes).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zmq
import zmq.auth

from curvecert import store as store_mod
from curvecert.auth.authenticator import Authenticator
from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder
from curvecert.store.backend import StoreBackend, open_store
from curvecert.store.etcd import EtcdStore
from curvecert.store.etcdclient import EtcdClient
from curvecert.store.etcdops import EtcdWriter, certificate_value
from curvecert.store.etcdurl import EtcdOptions, parse_url
from curvecert.store.watch import CertStore
from tests.conftest import wait_until
from tests.etcdcluster import EtcdCluster
from tests.promtool import promtool
from tests.serveproc import ServeAuth, Server, handshake, retry_until

SCHEMA = Path(__file__).resolve().parents[2] / "curvecert" / "schemas" / "store-sync.json"
STATUS_SCHEMA = SCHEMA.with_name("status.json")


@pytest.fixture
def url(etcd_cluster: EtcdCluster) -> str:
    return etcd_cluster.url(f"t/{uuid.uuid4().hex[:12]}")


def _put_raw(url: str, name: str, value: bytes) -> None:
    u = parse_url(url)
    EtcdClient(u).txn([], [{"request_put": {
        "key": base64.b64encode(u.key_prefix + name.encode()).decode(),
        "value": base64.b64encode(value).decode()}}])


def test_backends_share_one_contract(tmp_path: Path, url: str) -> None:
    backends: list[StoreBackend] = [CertStore(tmp_path), EtcdStore(url)]
    for b in backends:
        assert isinstance(b, StoreBackend)
    store = open_store(url, etcd=EtcdOptions(staleness=5))
    try:
        assert isinstance(store, EtcdStore) and store.healthy and len(store.snapshot) == 0
        assert store.revision > 0 and store.lag is not None
    finally:
        store.stop()


def test_live_store_follows_puts_and_deletes(url: str) -> None:
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    writer = EtcdWriter(parse_url(url))
    assert writer.add(alice) == "added"
    with EtcdStore(url) as store:
        entry = store.lookup(alice.public_key)
        assert entry is not None and entry.meta == {"name": "alice"}
        assert entry.file == f"{url}/{alice.public_key.hex()}"
        gen = store.generation
        writer.add(bob)
        assert store.wait_for(lambda s: bob.public_key in s, 10)
        assert store.generation > gen
        writer.remove([alice.public_key])
        assert store.wait_for(lambda s: alice.public_key not in s, 10)
        assert store.lookup(alice.public_txt) is None and store.healthy


def test_bad_values_are_findings_never_trusted(url: str) -> None:
    alice, mallory = Certificate.new(name="alice"), Certificate.new(name="mallory")
    _put_raw(url, alice.public_key.hex(), certificate_value(mallory))   # wrong key name
    _put_raw(url, "notes/readme", b"hello")                              # not a cert key
    _put_raw(url, mallory.public_key.hex(), b"metadata\n  broken")        # unparsable
    with EtcdStore(url) as store:
        assert len(store) == 0
        codes = sorted(f.code for f in store.findings)
        assert codes == ["key-mismatch", "unexpected-key", "unparsable"]
        assert store.lookup(mallory.public_key) is None


def test_cli_add_list_check_remove(url: str, tmp_path: Path, run_cli: Callable[..., Any]
                                   ) -> None:
    alice = Certificate.new(name="alice")
    alice.save(tmp_path / "alice")
    r = run_cli("store", "--store", url, "add", str(tmp_path / "alice"))
    assert r.code == 0, r.err
    assert r.out.strip() == f"{url}/{alice.public_key.hex()}"
    r = run_cli("store", "--store", url, "add", str(tmp_path / "alice"))
    assert r.code == 0 and "unchanged" in r.err
    changed = Certificate(alice.public_key, meta={"name": "alice", "role": "admin"})
    changed.save(tmp_path / "alice2")
    r = run_cli("store", "--store", url, "add", str(tmp_path / "alice2"))
    assert r.code == 3 and "curvecert: error:" in r.err and alice.public_key.hex() in r.err
    r = run_cli("store", "--store", url, "add", "--force", str(tmp_path / "alice2"))
    assert r.code == 0 and "replaced" in r.err
    r = run_cli("store", "list", "--json", "--store", url)
    assert r.code == 0, r.err
    [item] = json.loads(r.out)["items"]  # {items, findings} (docs/json.md)
    assert item["public_key"] == alice.public_txt and item["metadata"]["role"] == "admin"
    assert run_cli("store", "check", "--store", url).code == 0
    _put_raw(url, "zz", b"junk")
    assert run_cli("store", "check", "--store", url).code == 1
    r = run_cli("store", "--store", url, "remove", "alice")
    assert r.code == 0, r.err
    assert "removed 1 etcd key from etcd://" in r.err
    assert EtcdWriter(parse_url(url)).certificates() == {}
    r = run_cli("store", "--store", url, "remove", "alice")
    assert r.code == 3


def test_cli_unreachable_etcd_is_operational(run_cli: Callable[..., Any]) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run_cli("store", "list", "--store", f"etcd://127.0.0.1:{port}/x")
    assert r.code == 3 and r.err.startswith("curvecert: error: ") and "Traceback" not in r.err


def test_sync_both_ways_and_czmq_reads_the_export(url: str, tmp_path: Path,
                                                  run_cli: Callable[..., Any]) -> None:
    src = tmp_path / "src"
    certs = [Certificate.new(name=f"c{i}", team="blue") for i in range(3)]
    for c in certs:
        store_mod.add_certificate(src, c)
    r = run_cli("store", "sync", "--json", "--dry-run", str(src), url)
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    jsonschema.validate(plan, json.loads(SCHEMA.read_text()))
    assert plan["counts"]["add"] == 3 and plan["dry_run"]
    assert EtcdWriter(parse_url(url)).certificates() == {}
    assert run_cli("store", "sync", str(src), url).code == 0
    assert set(EtcdWriter(parse_url(url)).certificates()) == {c.public_key for c in certs}
    out = tmp_path / "out"
    r = run_cli("store", "sync", "--json", url, str(out))
    assert r.code == 0 and json.loads(r.out)["counts"]["add"] == 3
    for c in certs:  # byte for byte: file -> etcd value -> file
        name = store_mod.store_filename(c.public_key)
        assert (out / name).read_bytes() == (src / name).read_bytes()
    keys = zmq.auth.load_certificates(str(out))
    assert set(keys) == {c.public_txt.encode() for c in certs}
    EtcdWriter(parse_url(url)).remove([certs[0].public_key])
    r = run_cli("store", "sync", "--delete", "--json", url, str(out))
    counts = json.loads(r.out)["counts"]
    assert counts == {"add": 0, "update": 0, "delete": 1, "unchanged": 2}
    assert len(store_mod.scan(out)) == 2


def test_czmq_reads_values(url: str, tmp_path: Path, czmq: Any) -> None:
    alice = Certificate.new(name="alice", email="a@example.org")
    EtcdWriter(parse_url(url)).add(alice)
    [kv] = EtcdClient(parse_url(url)).range_prefix(parse_url(url).key_prefix)[1]
    (tmp_path / "alice").write_bytes(kv.value)
    loaded = czmq.load_cert(str(tmp_path / "alice"))
    assert loaded.public_txt == alice.public_txt
    assert loaded.meta == {"name": "alice", "email": "a@example.org"}


@pytest.fixture
def czmq() -> Any:
    from tests.czmq import require_czmq

    return require_czmq()


# --- a fleet: two daemons and one embedded authenticator on one prefix ----------------------

@pytest.fixture
def fleet(url: str, tmp_path: Path, cli_env: Callable[..., dict[str, str]]
          ) -> Iterator[list[Callable[[Certificate], int]]]:
    """Three verdict functions (client cert -> status): daemon 1, daemon 2, embedded."""
    server_cert = Certificate.new(name="server")
    daemons: list[ServeAuth] = []
    contexts: list[zmq.Context[Any]] = []
    closers: list[Callable[[], None]] = []
    verdicts: list[Callable[[Certificate], int]] = []
    try:
        for i in range(2):
            ep = f"ipc://{tmp_path}/zap{i}.sock"
            daemons.append(ServeAuth(["--store", url, "--zap-endpoint", ep], cli_env(None)))
            ctx: zmq.Context[Any] = zmq.Context()
            contexts.append(ctx)
            fwd = ZapForwarder(ctx, ep).start()
            srv = Server(ctx, server_cert)
            closers += [srv.close, fwd.stop]
            verdicts.append(lambda c, s=srv: handshake(s, c).status)
        ctx = zmq.Context()
        contexts.append(ctx)
        auth = Authenticator(ctx, log_decisions=False)
        auth.start()
        auth.configure_curve(store=url)
        srv = Server(ctx, server_cert)
        closers += [srv.close, auth.stop]
        verdicts.append(lambda c, s=srv: handshake(s, c).status)
        yield verdicts
    finally:
        for close in closers:
            close()
        for d in daemons:
            d.close()
        for ctx in contexts:
            ctx.destroy(linger=0)


def test_fleet_admits_and_refuses_together(url: str, tmp_path: Path, fleet: Any,
                                           run_cli: Callable[..., Any]) -> None:
    alice = Certificate.new(name="alice")
    alice.save(tmp_path / "alice")
    for verdict in fleet:
        assert verdict(alice) == 400
    assert run_cli("store", "--store", url, "add", str(tmp_path / "alice")).code == 0
    for verdict in fleet:
        retry_until(lambda v=verdict: _outcome(v(alice)), lambda o: o.status == 200)
    assert run_cli("store", "--store", url, "remove", alice.public_txt).code == 0
    for verdict in fleet:
        retry_until(lambda v=verdict: _outcome(v(alice)), lambda o: o.status == 400)


def _outcome(status: int) -> Any:
    from tests.serveproc import Outcome

    return Outcome(status)


# --- status and metrics of a daemon on an etcd store (issue 17) ------------------------------

def test_status_and_metrics_show_revision_and_lag(url: str, tmp_path: Path,
                                                  run_cli: Callable[..., Any],
                                                  cli_env: Callable[..., dict[str, str]]
                                                  ) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    schema = json.loads(STATUS_SCHEMA.read_text())
    control = f"ipc://{tmp_path}/run/control.sock"
    with ServeAuth(["--store", url, "--zap-endpoint", f"ipc://{tmp_path}/run/zap.sock",
                    "--metrics", "127.0.0.1:0"], cli_env(None)) as daemon:
        line = daemon.wait_stderr(r"metrics http://")
        metrics_url = re.search(r"metrics (http://\S+)", line).group(1)  # type: ignore[union-attr]

        def status() -> dict[str, Any]:
            r = run_cli("status", "--json", "--endpoint", control)
            assert r.code == 0, r.err
            out: dict[str, Any] = json.loads(r.out)
            jsonschema.Draft202012Validator(schema).validate(out)
            [entry] = out["domains"][0]["stores"]
            assert isinstance(entry, dict)
            return entry

        def scrape() -> dict[str, Any]:
            with urllib.request.urlopen(metrics_url, timeout=10) as resp:
                scraped.append(resp.read().decode())
            return {f.name: f for f in text_string_to_metric_families(scraped[-1])}

        scraped: list[str] = []

        before = status()
        assert (before["backend"], before["path"], before["certificates"]) == ("etcd", url, 0)
        assert before["revision"] > 0 and before["full_reads"] >= 1
        assert before["staleness_seconds"] > 0 and before["reconnects"] >= 0
        assert before["lag_seconds"] is None or before["lag_seconds"] >= 0

        def confirmed() -> bool:
            now = status()
            return bool(now["connected"]) and now["lag_seconds"] is not None

        wait_until(confirmed, interval=0.1, message="watch connected and confirmed")

        alice = Certificate.new(name="alice")
        alice.save(tmp_path / "alice")
        assert run_cli("store", "--store", url, "add", str(tmp_path / "alice")).code == 0
        wait_until(lambda: status()["certificates"] == 1, interval=0.1,
                   message="the added key in status")
        after = status()
        assert after["revision"] > before["revision"] and after["backend"] == "etcd"
        assert after["lag_seconds"] is not None and \
            after["lag_seconds"] <= after["staleness_seconds"]

        families = scrape()
        [revision] = families["curvecert_store_revision"].samples
        assert revision.labels == {"domain": "*", "store": url}
        assert revision.value >= after["revision"]
        [lag] = families["curvecert_store_lag_seconds"].samples
        assert 0 <= lag.value <= after["staleness_seconds"]
        [healthy] = families["curvecert_store_healthy"].samples
        assert healthy.value == 1 and healthy.labels["store"] == url
        for name, sample in (("curvecert_store_reconnects", "curvecert_store_reconnects_total"),
                             ("curvecert_store_full_reads", "curvecert_store_full_reads_total")):
            [found] = families[name].samples
            assert found.name == sample and found.value >= 0

        text = run_cli("status", "--endpoint", control)
        assert text.code == 0, text.err
        assert re.search(r"^    etcd revision \d+, lag [0-9.]+ s \(bound [0-9.]+ s\), watch "
                         r"(connected|DISCONNECTED), \d+ reconnect\(s\), \d+ full read\(s\)$",
                         text.out, re.MULTILINE), text.out
        top = run_cli("top", "--once", "--endpoint", control)
        assert top.code == 0, top.err
        assert re.search(r"^  etcd revision \d+, ", top.out, re.MULTILINE), top.out
    promtool("check", "metrics", stdin=scraped[-1])  # last: it skips without promtool
