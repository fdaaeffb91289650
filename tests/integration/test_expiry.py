"""Expiry end to end: a certificate written by `curvecert new --not-after` in a watched
store is admitted, then refused (400, "expired") once its time passes, with no change
to the store; CZMQ and pyzmq read the file it was written to."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.auth

from curvecert.auth.authenticator import Authenticator
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.certs import validity
from curvecert.certs.cert import Certificate
from curvecert.formats.zap import ZAP_ENDPOINT
from curvecert.store.watch import CertStore
from tests.conftest import CliResult
from tests.czmq import require_czmq

Ctx = zmq.Context[zmq.Socket[bytes]]


def _ask(sock: zmq.Socket[bytes], key: bytes) -> tuple[bytes, bytes]:
    sock.send_multipart([b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", key])
    reply = sock.recv_multipart()
    return reply[2], reply[3]


def test_admitted_then_refused_at_expiry_without_touching_the_store(
        tmp_path: Path, ctx: Ctx) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    not_after = math.floor(time.time()) + 2  # between one and two seconds from now
    stamp = validity.format_time(not_after)
    cert = Certificate.new(validity.with_validity([("name", "alice")], not_after=not_after))
    cert.save_public(store_dir / "alice")

    with CertStore(store_dir) as store:
        assert store.lookup(cert.public_key) is not None
        generation = store.generation
        auth = Authenticator(ctx, Policy({"*": DomainPolicy(curve=store)}),
                             log_decisions=False)
        with auth:
            req = ctx.socket(zmq.REQ)
            req.linger, req.rcvtimeo = 0, 5000
            req.connect(ZAP_ENDPOINT)
            try:
                status, _ = _ask(req, cert.public_key)
                assert time.time() < not_after
                assert status == b"200"
                # Poll (bounded by one second past expiry) until the answer changes.
                deadline = not_after + 1.0
                while True:
                    asked_at = time.time()
                    status, text = _ask(req, cert.public_key)
                    if status != b"200":
                        break
                    assert asked_at < deadline, "still admitted a second after expiry"
                assert time.time() >= not_after, "refused before its not-after time"
                assert status == b"400"
                assert text == f"Certificate expired at {stamp}".encode()
            finally:
                req.close(linger=0)
        assert store.generation == generation  # no reload, no store change


def test_czmq_and_pyzmq_read_a_certificate_with_dates(tmp_path: Path,
                                                     run_cli: Callable[..., CliResult]) -> None:
    result = run_cli("new", str(tmp_path / "svc"), "--not-before", "2026-01-01T00:00:00Z",
                     "--not-after", "2027-03-01T00:00:00Z", "--name", "svc", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["not_after"] == "2027-03-01T00:00:00Z"
    cert = Certificate.load(tmp_path / "svc_secret")
    public, secret = zmq.auth.load_certificate(os.fspath(tmp_path / "svc_secret"))
    assert public == cert.public_txt.encode() and secret == (cert.secret_txt or "").encode()
    czmq = require_czmq()
    loaded = czmq.load_cert(tmp_path / "svc")
    assert loaded is not None
    assert loaded.public_txt == cert.public_txt
    assert loaded.meta["not-before"] == "2026-01-01T00:00:00Z"
    assert loaded.meta["not-after"] == "2027-03-01T00:00:00Z"
    assert loaded.meta["name"] == "svc"


@pytest.mark.parametrize("when, code", [(-3600, "expired"), (3600, "expires-soon")])
def test_verify_reports_validity(tmp_path: Path, run_cli: Callable[..., CliResult],
                                 when: int, code: str) -> None:
    stamp = validity.format_time(time.time() + when)
    run_cli("new", str(tmp_path / "c"), "--not-after", stamp)
    result = run_cli("verify", "--json", "--warn-within", "2h", str(tmp_path / "c"))
    assert result.code == 1
    findings = json.loads(result.out)["findings"]
    assert [f["code"] for f in findings] == [code]
    assert findings[0]["line"] == 8 and findings[0]["path"] == str(tmp_path / "c")


def test_store_list_and_check_show_validity(tmp_path: Path, run_cli: Callable[..., CliResult]
                                            ) -> None:
    from curvecert import store

    clients = tmp_path / "clients"
    clients.mkdir()
    old = Certificate.new(validity.with_validity([("name", "old")], not_after=time.time() - 5))
    soon = Certificate.new(validity.with_validity([("name", "soon")],
                                                  not_after=time.time() + 3600))
    for c in (old, soon, Certificate.new(name="undated")):
        store.add_certificate(clients, c)
    listed = run_cli("store", "list", "--json", "--store", str(clients))
    assert listed.code == 0, listed.err
    data = json.loads(listed.out)
    rows = {r["metadata"]["name"]: r for r in (data["items"] if "items" in data else data)}
    assert rows["undated"]["not_after"] is None
    assert validity.parse_time(rows["soon"]["not_after"]) == int(
        validity.from_meta(soon.meta).not_after)  # type: ignore[union-attr]
    plain = run_cli("store", "list", "--store", str(clients))
    assert "valid=EXPIRED_at_" in plain.out and "next expiry " in plain.err
    checked = run_cli("store", "check", "--json", "--store", str(clients))
    assert checked.code == 1
    data = json.loads(checked.out)
    findings = data["findings"] if isinstance(data, dict) else data
    assert sorted(f["code"] for f in findings) == ["expired", "expires-soon"]


def test_next_expiry_is_a_metric(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from curvecert import store
    from curvecert.serve.metrics import CurvecertCollector, Sources

    when = float(math.floor(time.time()) + 86400)
    store.add_certificate(tmp_path, Certificate.new(
        validity.with_validity([("name", "a")], not_after=when)))
    store.add_certificate(tmp_path, Certificate.new([("name", "b")]))
    with CertStore(tmp_path) as certs:
        policy = Policy({"*": DomainPolicy(curve=certs)})
        registry = CollectorRegistry()
        registry.register(CurvecertCollector(Sources(policy=lambda: policy)))
        text = generate_latest(registry).decode()
        from curvecert.serve.control import store_summary

        assert store_summary(certs)["next_expiry"] == validity.format_time(when)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sample = families["curvecert_store_next_expiry_timestamp_seconds"].samples[0]
    assert sample.value == when and sample.labels["store"] == str(tmp_path)
