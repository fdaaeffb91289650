"""Issue 17: an etcd store's revision, lag and watch state in `status` and the metrics.

A stand-in with `EtcdStore`'s attributes (no cluster: tests/integration/test_etcd_store.py
runs the real thing); checks the status entry against the schema, the text rendering
(escaped), and the metric families (no lag sample while the lag is unknown).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.cli.ops import status_lines
from curvecert.serve.control import store_summary
from curvecert.serve.metrics import CurvecertCollector, Sources
from curvecert.store.snapshot import Entry, Snapshot

URL = "etcd://127.0.0.1:2379/fleet\x1b[31m"


class FakeEtcdStore:
    """What `status` and the collector read from an `EtcdStore`."""

    def __init__(self, lag: float | None) -> None:
        self.directory = URL
        self.snapshot = Snapshot.empty(URL, generation=3)
        self.revision = 42
        self.cluster_revision = 43
        self.lag = lag
        self.staleness = 30.0
        self.connected = lag is not None
        self.reconnects = 2
        self.full_reads = 1

    def lookup(self, key: bytes | str) -> Entry | None:
        return None


def _store_schema() -> dict[str, Any]:
    schema = json.loads((resources.files("curvecert") / "schemas" / "status.json")
                        .read_text())
    out: dict[str, Any] = schema["properties"]["domains"]["items"]["properties"]["stores"]
    out = out["items"]
    return {"$schema": schema["$schema"], **out}


def _scrape(store: Any) -> dict[str, Any]:
    policy = Policy({"*": DomainPolicy(curve=store)})
    registry = CollectorRegistry()
    registry.register(CurvecertCollector(Sources(policy=lambda: policy)))
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_status_entry_of_an_etcd_store() -> None:
    entry = store_summary(FakeEtcdStore(lag=0.25))
    jsonschema.Draft202012Validator(_store_schema()).validate(entry)
    assert {k: entry[k] for k in ("backend", "revision", "lag_seconds", "staleness_seconds",
                                  "connected", "reconnects", "full_reads")} == {
        "backend": "etcd", "revision": 42, "lag_seconds": 0.25, "staleness_seconds": 30.0,
        "connected": True, "reconnects": 2, "full_reads": 1}
    never = store_summary(FakeEtcdStore(lag=None))
    jsonschema.Draft202012Validator(_store_schema()).validate(never)
    assert never["lag_seconds"] is None and never["connected"] is False


def test_schema_requires_the_etcd_fields_only_for_etcd() -> None:
    validator = jsonschema.Draft202012Validator(_store_schema())
    base = {"path": "/d", "certificates": 0, "healthy": True, "problem": None,
            "generation": 1, "finding_count": 0}
    assert validator.is_valid(base)
    assert validator.is_valid({**base, "backend": "directory"})
    assert not validator.is_valid({**base, "backend": "etcd"})
    assert not validator.is_valid({**base, "backend": "zookeeper"})


def test_text_shows_the_etcd_line_escaped() -> None:
    entry = store_summary(FakeEtcdStore(lag=1.26))
    st = {"healthy": True, "pid": 1, "uptime": 1.0, "generation": 0,
          "domains": [{"name": "*", "mechanisms": ["CURVE"], "stores": [entry]}]}
    text = "\n".join(status_lines(st))
    assert "\x1b" not in text
    assert ("    etcd revision 42, lag 1.3 s (bound 30 s), watch connected, 2 reconnect(s), "
            "1 full read(s)") in text
    entry = {**store_summary(FakeEtcdStore(lag=None)), "revision": "4\x1b[2J2"}
    st["domains"][0]["stores"] = [entry]  # type: ignore[index]
    text = "\n".join(status_lines(st))
    assert "\x1b" not in text and "never confirmed" in text and "watch DISCONNECTED" in text


def test_top_shows_the_etcd_state_escaped() -> None:
    """`curvecert top`: the sync state in the plain text and in the live table."""
    from rich.console import Console

    from curvecert.cli.opstop import _plain, _rich

    entry = {**store_summary(FakeEtcdStore(lag=None)), "revision": "4\x1b[2J2"}
    plain_entry = store_summary(FakeEtcdStore(lag=0.5))
    st = {"healthy": True, "pid": 1, "uptime": 1.0, "generation": 0,
          "domains": [{"name": "*", "mechanisms": ["CURVE"], "stores": [plain_entry]}]}
    text = _plain(st, {}, {}, [])
    assert "\x1b" not in text
    assert "  etcd revision 42, lag 0.5 s (bound 30 s), watch connected" in text
    st["domains"][0]["stores"] = [entry]  # type: ignore[index]
    console = Console(width=200, record=True, color_system=None)
    console.print(_rich(st, {}, {}, []))
    shown = console.export_text()
    assert "\x1b" not in shown and "etcd" in shown
    assert "lag never confirmed, watch DOWN" in shown


def test_metrics_of_an_etcd_store() -> None:
    families = _scrape(FakeEtcdStore(lag=0.5))
    labels = {"domain": "*", "store": URL}

    def value(family: str, sample: str) -> float:
        found = [s for s in families[family].samples if s.name == sample]
        assert len(found) == 1 and found[0].labels == labels, found
        return float(found[0].value)

    assert value("curvecert_store_revision", "curvecert_store_revision") == 42
    assert value("curvecert_store_lag_seconds", "curvecert_store_lag_seconds") == 0.5
    assert value("curvecert_store_staleness_seconds",
                 "curvecert_store_staleness_seconds") == 30
    assert value("curvecert_store_connected", "curvecert_store_connected") == 1
    assert value("curvecert_store_reconnects", "curvecert_store_reconnects_total") == 2
    assert value("curvecert_store_full_reads", "curvecert_store_full_reads_total") == 1
    assert value("curvecert_store_healthy", "curvecert_store_healthy") == 1
    unknown = _scrape(FakeEtcdStore(lag=None))
    assert not unknown["curvecert_store_lag_seconds"].samples  # omitted, not NaN
    assert unknown["curvecert_store_revision"].samples[0].value == 42


def test_directory_store_has_no_etcd_fields(tmp_path: Any) -> None:
    from curvecert.store.watch import CertStore

    with CertStore(tmp_path) as certs:
        entry = store_summary(certs)
        families = _scrape(certs)
    assert entry["backend"] == "directory" and "revision" not in entry
    jsonschema.Draft202012Validator(_store_schema()).validate(entry)
    assert "curvecert_store_revision" not in families
    assert "curvecert_store_healthy" in families
