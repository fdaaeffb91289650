"""What Prometheus metrics cost the ZAP hot path: decisions/s with and without `metrics`.

One `Authenticator` with a 1,000-certificate watched store answers CURVE requests sent
over `inproc://zeromq.zap.01` by a DEALER, lock-step (one in flight) and pipelined (64 in
flight). Rounds alternate `metrics=None` and `metrics=DecisionStats()` (what
`curvecert.serve.metrics.register` installs) on the same authenticator, so both see the
same machine state; a scrape of the collector is timed too. Rates are medians; read the
ratio.

Usage: python benchmarks/metrics_bench.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import prometheus_client
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curvecert import store  # noqa: E402
from curvecert.auth.authenticator import Authenticator  # noqa: E402
from curvecert.auth.policy import DomainPolicy, Policy  # noqa: E402
from curvecert.auth.stats import DecisionStats  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.serve import metrics  # noqa: E402
from curvecert.store.watch import CertStore  # noqa: E402


def request(key: bytes) -> list[bytes]:
    return [b"", b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", key]


def run(sock: zmq.Socket[Any], keys: list[bytes], n: int, window: int) -> float:
    sent = recvd = 0
    t0 = time.perf_counter()
    while recvd < n:
        while sent < n and sent - recvd < window:
            sock.send_multipart(request(keys[sent % len(keys)]))
            sent += 1
        reply = sock.recv_multipart()
        if reply[3] != b"200":
            raise SystemExit(f"unexpected reply {reply!r}")
        recvd += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n, reps = (5000, 5) if args.quick else (20000, 9)
    with tempfile.TemporaryDirectory() as tmp:
        certs = [Certificate.new(name=f"c{i}") for i in range(1000)]
        for c in certs:
            store.add_certificate(Path(tmp), c)
        keys = [c.public_key for c in certs[::10]]
        ctx: zmq.Context[Any] = zmq.Context()
        cs = CertStore(tmp).start()
        auth = Authenticator(ctx, Policy({"*": DomainPolicy(curve=cs)}),
                             log_decisions=False).start()
        registry = prometheus_client.CollectorRegistry()
        metrics.register(auth, registry)
        stats = auth.metrics
        sock = ctx.socket(zmq.DEALER)
        sock.connect("inproc://zeromq.zap.01")
        rates: dict[str, list[float]] = {}
        for _ in range(reps):
            for label, value in (("off", None), ("on", stats)):
                auth.metrics = value
                for mode, window in (("lockstep", 1), ("pipelined", 64)):
                    rates.setdefault(f"{mode}/{label}", []).append(run(sock, keys, n, window))
        auth.metrics = stats
        t0 = time.perf_counter()
        for _ in range(20):
            text = prometheus_client.generate_latest(registry)
        scrape_ms = (time.perf_counter() - t0) / 20 * 1000
        sock.close(linger=0)
        auth.stop()
        cs.stop()
        ctx.term()
    med = {k: statistics.median(v) for k, v in rates.items()}
    assert isinstance(stats, DecisionStats) and stats.total > 0
    result = {
        "python": platform.python_version(), "zmq": zmq.zmq_version(),
        "decisions_per_s": {k: round(v) for k, v in med.items()},
        "ratio_on_vs_off": {m: round(med[f"{m}/on"] / med[f"{m}/off"], 3)
                            for m in ("lockstep", "pipelined")},
        "scrape_ms": round(scrape_ms, 2), "scrape_bytes": len(text),
    }
    out = json.dumps(result, indent=2)
    print(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(out + "\n")


if __name__ == "__main__":
    main()
