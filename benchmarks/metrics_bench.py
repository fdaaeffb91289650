"""What Prometheus metrics cost the ZAP hot path: decisions/s with and without `metrics`.

One `Authenticator` with a 1,000-certificate watched store answers CURVE requests sent
over `inproc://zeromq.zap.01` by a DEALER in this process, lock-step (one in flight) and
pipelined (64 in flight), and (`remote`) pipelined from another process through a C proxy,
the way libzmq's I/O threads deliver requests without holding the GIL. Rounds alternate
`metrics=None` and `metrics=DecisionStats()` (what
`curvecert.serve.metrics.register` installs) on the same authenticator, so both see the
same machine state; a scrape of the collector is timed too. Ratios of the best and of the
median rounds are reported, and the added work per decision (`DecisionStats.record`) is
timed on its own, which is steadier than a difference of two rates on a shared machine.

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
from curvecert.auth.decision import Decision  # noqa: E402
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


_CLIENT = """
import sys, time, zmq
ep, n, window, nkeys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keys = [bytes.fromhex(sys.stdin.readline().strip()) for _ in range(nkeys)]
ctx = zmq.Context(); sock = ctx.socket(zmq.DEALER); sock.connect(ep)
def req(k): return [b"", b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", k]
for line in sys.stdin:
    sent = recvd = 0
    t0 = time.perf_counter()
    while recvd < n:
        while sent < n and sent - recvd < window:
            sock.send_multipart(req(keys[sent % nkeys])); sent += 1
        sock.recv_multipart(); recvd += 1
    print(n / (time.perf_counter() - t0), flush=True)
"""


class RemoteClient:
    """Requests from another process, relayed to `inproc://zeromq.zap.01` by a C proxy
    (no GIL), as libzmq's own I/O threads deliver them: only the authenticator's thread
    runs Python in this process, so the rates measure it and not a GIL contest."""

    def __init__(self, ctx: zmq.Context[Any], tmp: str, keys: list[bytes], n: int,
                 window: int):
        import subprocess
        import threading

        endpoint = f"ipc://{tmp}/bench.sock"
        front = ctx.socket(zmq.ROUTER)
        front.bind(endpoint)
        back = ctx.socket(zmq.DEALER)
        back.connect("inproc://zeromq.zap.01")
        self.sockets = (front, back)
        self.thread = threading.Thread(target=self._proxy, daemon=True)
        self.thread.start()
        self.proc = subprocess.Popen([sys.executable, "-c", _CLIENT, endpoint, str(n),
                                      str(window), str(len(keys))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(k.hex() + "\n" for k in keys))
        self.proc.stdin.flush()

    def _proxy(self) -> None:
        try:
            zmq.proxy(*self.sockets)
        except zmq.ZMQError:
            pass

    def run(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n, reps = (5000, 5) if args.quick else (20000, 9)
    with tempfile.TemporaryDirectory() as tmp:
        certs = [Certificate.new(name=f"c{i}") for i in range(1000)]
        for c in certs:
            store.add_certificate(Path(tmp) / "store", c)
        keys = [c.public_key for c in certs[::10]]
        ctx: zmq.Context[Any] = zmq.Context()
        cs = CertStore(Path(tmp) / "store").start()
        auth = Authenticator(ctx, Policy({"*": DomainPolicy(curve=cs)}),
                             log_decisions=False).start()
        registry = prometheus_client.CollectorRegistry()
        metrics.register(auth, registry)
        stats = auth.metrics
        sock = ctx.socket(zmq.DEALER)
        sock.connect("inproc://zeromq.zap.01")
        remote = RemoteClient(ctx, tmp, keys, n, 64)
        rates: dict[str, list[float]] = {}
        for i in range(reps):
            pairs = [("off", None), ("on", stats)]
            for label, value in pairs if i % 2 else pairs[::-1]:
                auth.metrics = value
                for mode, window in (("lockstep", 1), ("pipelined", 64)):
                    rates.setdefault(f"{mode}/{label}", []).append(run(sock, keys, n, window))
                rates.setdefault(f"remote/{label}", []).append(remote.run())
        remote.close()
        auth.metrics = stats
        t0 = time.perf_counter()
        for _ in range(20):
            text = prometheus_client.generate_latest(registry)
        scrape_ms = (time.perf_counter() - t0) / 20 * 1000
        sock.close(linger=0)
        auth.stop()
        cs.stop()
        ctx.destroy(linger=0)
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    assert isinstance(stats, DecisionStats) and stats.total > 0
    # the added work itself, timed directly (steadier than a difference of two rates)
    decision = Decision("200", "OK", b"k" * 40, b"", "known key", "CURVE", "", "127.0.0.1")
    probe = DecisionStats()
    loops = 200_000
    t0 = time.perf_counter()
    for _ in range(loops):
        probe.record(decision, 0.00004)
    record_us = (time.perf_counter() - t0) / loops * 1e6
    result = {
        "python": platform.python_version(), "zmq": zmq.zmq_version(),
        "decisions_per_s_median": {k: round(v) for k, v in med.items()},
        "decisions_per_s_best": {k: round(v) for k, v in best.items()},
        "ratio_on_vs_off_best": {m: round(best[f"{m}/on"] / best[f"{m}/off"], 3)
                                 for m in ("lockstep", "pipelined", "remote")},
        "ratio_on_vs_off_median": {m: round(med[f"{m}/on"] / med[f"{m}/off"], 3)
                                   for m in ("lockstep", "pipelined", "remote")},
        "record_us_per_decision": round(record_us, 3),
        "record_share_of_a_pipelined_decision": round(record_us * best["pipelined/off"] / 1e6,
                                                      4),
        "scrape_ms": round(scrape_ms, 2), "scrape_bytes": len(text),
    }
    out = json.dumps(result, indent=2)
    print(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(out + "\n")


if __name__ == "__main__":
    main()
