"""`DecisionStats`: plain counters of ZAP decisions, read at scrape time by the metrics layer.

Why plain ints and not prometheus-client objects: the ZAP loop is the hot path, and a
prometheus `Counter.labels(...).inc()` takes a lock and a label lookup per call. Here one
decision costs a `Counter` increment and a bucket increment (no lock: each authenticator
has one answering thread, and a lost increment under free-threading would only skew a
metric). `curvecert.serve.metrics` turns these into Prometheus families when scraped.

Provider outcomes are told apart by the decision's reason as `curvecert.auth.policy` words
it: a timeout reads "... did not answer within Ns"; a provider, key lookup or password
check that raised reads "... failed: ...", and a provider answer of the wrong shape
"... returned ...".
"""

from __future__ import annotations

import bisect
import collections
import time

from curvecert.auth.decision import Decision

__all__ = ["LATENCY_BUCKETS", "MAX_DOMAINS", "DecisionStats"]

#: Histogram upper bounds in seconds (a cached CURVE decision takes ~10 µs, a provider up
#: to its timeout).
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Distinct domain labels kept; further domains count under `"(other)"`.
MAX_DOMAINS = 64


class DecisionStats:
    """Decisions by `(mechanism, status, domain)`, a latency histogram, provider failures."""

    def __init__(self) -> None:
        """All counters at zero; `started` is the wall-clock start (seconds since epoch)."""
        self.decisions: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.provider_timeouts = 0
        self.provider_errors = 0
        self.started = time.time()
        self._domains: set[str] = set()

    def record(self, decision: Decision, seconds: float) -> None:
        """Count one decision that took `seconds` from request to reply."""
        domain = decision.domain
        if domain not in self._domains:
            if len(self._domains) >= MAX_DOMAINS:
                domain = "(other)"
            else:
                self._domains.add(domain)
        self.decisions[decision.mechanism, decision.status, domain] += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        if decision.status == "500":
            reason = decision.reason
            if "did not answer within" in reason:
                self.provider_timeouts += 1
            elif " failed: " in reason or " returned " in reason:
                self.provider_errors += 1

    @property
    def total(self) -> int:
        """Decisions counted so far."""
        return sum(self.buckets)

    def by_mechanism(self) -> dict[str, dict[str, int]]:
        """`{mechanism: {status: n}}` (for the control channel's `status`)."""
        out: dict[str, dict[str, int]] = {}
        for (mech, status, _domain), n in list(self.decisions.items()):
            row = out.setdefault(mech, {})
            row[status] = row.get(status, 0) + n
        return out
