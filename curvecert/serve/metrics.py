"""Prometheus metrics for `serve-auth` and for embedded authenticators and forwarders.

Why a custom collector: the ZAP loop is the hot path; it only bumps plain counters
(`curvecert.auth.stats.DecisionStats`, the forwarder's and gateway's own counters), and
`CurvecertCollector.collect` turns them into metric families when Prometheus scrapes. Store
gauges read the live snapshots at that moment, so they are never stale.

Embedding:

```python
registry = prometheus_client.CollectorRegistry()
curvecert.serve.metrics.register(auth, registry)        # Authenticator / AsyncioAuthenticator
curvecert.serve.metrics.register(forwarder, registry)   # ZapForwarder
```

Every metric, its labels and example alert rules: docs/metrics.md.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from curvecert.auth.policy import Policy
from curvecert.auth.stats import LATENCY_BUCKETS, DecisionStats
from curvecert.errors import ConfigError, OperationalError
from curvecert.serve.policyview import is_etcd_store, policy_stores

__all__ = ["CurvecertCollector", "Sources", "parse_listen", "register", "serve_http"]


@dataclass
class Sources:
    """Where a collector reads from; every field is optional.

    `reloads()` returns `{"ok": n, "error": n, "last_time": epoch s, "last_duration": s}`;
    `forwarder()` a `ForwarderStats`-like object; `gateway()` `{"relayed_front": n,
    "relayed_back": n, "dropped_revoked": n}`.
    """

    stats: DecisionStats | list[DecisionStats] | None = None
    policy: Callable[[], Policy | None] | None = None
    reloads: Callable[[], Mapping[str, float]] | None = None
    forwarder: Callable[[], Any] | None = None
    gateway: Callable[[], Mapping[str, int]] | None = None


class CurvecertCollector(Collector):
    """Builds every `curvecert_*` family from `Sources` at scrape time."""

    def __init__(self, sources: Sources):
        """Read from `sources` on each `collect()`."""
        self.sources = sources

    def describe(self) -> list[Metric]:
        """Nothing up front (families depend on what is configured); avoids a collect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families, read now."""
        src = self.sources
        if src.stats is not None:
            yield from _decision_families(src.stats if isinstance(src.stats, list)
                                          else [src.stats])
        policy = src.policy() if src.policy is not None else None
        if policy is not None:
            yield from _store_families(policy)
        if src.reloads is not None:
            yield from _reload_families(src.reloads())
        if src.forwarder is not None:
            yield from _forwarder_families(src.forwarder())
        gateway = src.gateway() if src.gateway is not None else None
        if gateway:
            yield from _gateway_families(gateway)


def _decision_families(all_stats: list[DecisionStats]) -> Iterator[Metric]:
    decisions = CounterMetricFamily("curvecert_decisions", "ZAP decisions since start.",
                                    labels=["mechanism", "status", "domain"])
    merged: collections.Counter[tuple[str, str, str]] = collections.Counter()
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    total_sum = 0.0
    for stats in all_stats:
        merged.update(dict(stats.decisions))
        counts = [a + b for a, b in zip(counts, list(stats.buckets), strict=True)]
        total_sum += stats.latency_sum
    for (mech, status, domain), n in sorted(merged.items()):
        decisions.add_metric([mech, status, domain], n)
    yield decisions
    buckets, acc = [], 0
    for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
        acc += n
        buckets.append((repr(bound), acc))
    buckets.append(("+Inf", acc + counts[-1]))
    yield HistogramMetricFamily("curvecert_decision_duration_seconds",
                                "Time from a ZAP request to its reply.", buckets=buckets,
                                sum_value=total_sum)
    yield CounterMetricFamily("curvecert_provider_timeouts",
                              "Provider calls answered 500 at their deadline.",
                              value=sum(s.provider_timeouts for s in all_stats))
    yield CounterMetricFamily("curvecert_provider_errors",
                              "Providers, key lookups or password checks that failed (500).",
                              value=sum(s.provider_errors for s in all_stats))
    yield GaugeMetricFamily("curvecert_start_time_seconds",
                            "When counting started (seconds since the epoch).",
                            value=min(s.started for s in all_stats))


#: Per-store series: (variable, family class, name, help). Every one is labelled by ZAP
#: domain and store; the etcd ones are yielded only when an etcd store exists (issue 17).
_STORE_SERIES = (
    ("certs", GaugeMetricFamily, "curvecert_store_certificates",
     "Certificates the live snapshot trusts."),
    ("findings", GaugeMetricFamily, "curvecert_store_findings",
     "Files of the store with a finding (not trusted, or warned)."),
    ("healthy", GaugeMetricFamily, "curvecert_store_healthy",
     "1 when the store (directory or etcd prefix) could be read, else 0 (trusts nothing)."),
    ("generation", GaugeMetricFamily, "curvecert_store_generation",
     "Snapshot generation (goes up on every reload)."),
    ("expiry", GaugeMetricFamily, "curvecert_store_next_expiry_timestamp_seconds",
     "Earliest not-after still to come among the trusted certificates (absent when none "
     "has one)."),
)
_ETCD_SERIES = (
    ("revision", GaugeMetricFamily, "curvecert_store_revision",
     "etcd revision the live snapshot reflects (etcd stores)."),
    ("lag", GaugeMetricFamily, "curvecert_store_lag_seconds",
     "Seconds since etcd last confirmed the snapshot current (etcd stores; absent until the "
     "first confirmation)."),
    ("staleness", GaugeMetricFamily, "curvecert_store_staleness_seconds",
     "Staleness bound: past this lag the store trusts nothing (etcd stores)."),
    ("connected", GaugeMetricFamily, "curvecert_store_connected",
     "1 while the etcd watch is established, else 0 (etcd stores)."),
    ("reconnects", CounterMetricFamily, "curvecert_store_reconnects",
     "etcd watch streams lost and re-established (etcd stores)."),
    ("full_reads", CounterMetricFamily, "curvecert_store_full_reads",
     "Complete reads of the etcd prefix: start, compaction, recovery (etcd stores)."),
)


def _store_families(policy: Policy) -> Iterator[Metric]:
    fam: dict[str, Any] = {key: cls(name, text, labels=["domain", "store"])
                           for key, cls, name, text in (*_STORE_SERIES, *_ETCD_SERIES)}
    any_etcd = False
    for domain, store in policy_stores(policy):
        snap = store.snapshot
        labels = [domain, store.directory]
        fam["certs"].add_metric(labels, len(snap))
        fam["findings"].add_metric(labels, len(snap.findings))
        fam["healthy"].add_metric(labels, 1 if snap.healthy else 0)
        fam["generation"].add_metric(labels, snap.generation)
        soonest = getattr(snap, "next_expiry", None)  # issue 16: certs.validity
        if soonest is not None:
            fam["expiry"].add_metric(labels, soonest)
        if is_etcd_store(store):
            any_etcd = True
            fam["revision"].add_metric(labels, store.revision)
            seconds = store.lag  # read once: it moves with the clock
            if seconds is not None:  # unknown: no sample rather than NaN
                fam["lag"].add_metric(labels, seconds)
            fam["staleness"].add_metric(labels, store.staleness)
            fam["connected"].add_metric(labels, 1 if store.connected else 0)
            fam["reconnects"].add_metric(labels, store.reconnects)
            fam["full_reads"].add_metric(labels, store.full_reads)
    yield from (fam[key] for key, *_ in _STORE_SERIES)
    if any_etcd:
        yield from (fam[key] for key, *_ in _ETCD_SERIES)


def _reload_families(info: Mapping[str, float]) -> Iterator[Metric]:
    reloads = CounterMetricFamily("curvecert_reloads", "Configuration reloads (SIGHUP).",
                                  labels=["result"])
    reloads.add_metric(["ok"], info.get("ok", 0))
    reloads.add_metric(["error"], info.get("error", 0))
    yield reloads
    yield GaugeMetricFamily("curvecert_reload_duration_seconds",
                            "How long the last configuration load took.",
                            value=info.get("last_duration", 0.0))
    yield GaugeMetricFamily("curvecert_last_reload_timestamp_seconds",
                            "When the policy in force was loaded (seconds since the epoch).",
                            value=info.get("last_time", 0.0))


def _forwarder_families(stats: Any) -> Iterator[Metric]:
    for name, attr, text in (
            ("curvecert_forwarder_requests", "forwarded", "ZAP requests relayed to the daemon."),
            ("curvecert_forwarder_replies", "answered", "Daemon replies relayed to libzmq."),
            ("curvecert_forwarder_timeouts", "timed_out",
             "Requests denied because the daemon did not answer in time."),
            ("curvecert_forwarder_unreachable", "unreachable",
             "Requests denied at once because the daemon's queue was full."),
            ("curvecert_forwarder_late_replies", "late",
             "Daemon replies that came after their deadline (dropped)."),
            ("curvecert_forwarder_malformed", "malformed",
             "Requests without an envelope or bad replies from the daemon.")):
        yield CounterMetricFamily(name, text, value=getattr(stats, attr, 0))


def _gateway_families(info: Mapping[str, int]) -> Iterator[Metric]:
    relayed = CounterMetricFamily("curvecert_gateway_messages_relayed",
                                  "Messages relayed by the gateway.", labels=["direction"])
    relayed.add_metric(["front_to_back"], info.get("relayed_front", 0))
    relayed.add_metric(["back_to_front"], info.get("relayed_back", 0))
    yield relayed
    dropped = CounterMetricFamily("curvecert_gateway_messages_dropped",
                                  "Front messages dropped by the gateway.", labels=["reason"])
    dropped.add_metric(["revoked"], info.get("dropped_revoked", 0))
    yield dropped


def register(target: Any, registry: CollectorRegistry) -> CurvecertCollector:
    """Register the metrics of an embedded `Authenticator`/`AsyncioAuthenticator` (its
    decisions and the stores of its policy) or of a `ZapForwarder` on `registry`.

    An authenticator starts counting from this call (its `metrics` is set to a new
    `DecisionStats` unless it has one). Raises `ConfigError` for anything else.
    """
    if hasattr(target, "set_policy") and hasattr(target, "policy"):
        if getattr(target, "metrics", None) is None:
            target.metrics = DecisionStats()
        sources = Sources(stats=target.metrics, policy=lambda: target.policy)
    elif hasattr(target, "stats") and hasattr(target, "endpoint"):
        sources = Sources(forwarder=lambda: target.stats() if callable(target.stats)
                          else target.stats)
    else:
        raise ConfigError(f"cannot export metrics of {type(target).__name__}: expected an "
                          "authenticator or a ZapForwarder")
    collector = CurvecertCollector(sources)
    registry.register(collector)
    return collector


def parse_listen(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT`, or just `PORT` for 127.0.0.1) -> `(host, port)`.

    A host that is not a loopback address is refused (`ConfigError`) unless
    `allow_remote`: the metrics name domains, store paths and counts, which is
    reconnaissance material, and `/metrics` has no authentication.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--metrics {text!r}: expected HOST:PORT")
    if not allow_remote:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConfigError(f"--metrics {text!r}: {host} is not a loopback address; add "
                              "--metrics-allow-remote to serve metrics beyond this host")
    return host, int(port_text)


def serve_http(host: str, port: int, registry: CollectorRegistry) -> tuple[Any, str]:
    """Serve `/metrics` of `registry` on a daemon thread; `(server, "host:port")`.

    Raises `OperationalError` if the address cannot be bound. Stop with
    `server.shutdown(); server.server_close()`.
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OperationalError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") \
            from exc
    bound_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return server, f"{shown}:{bound_port}"

