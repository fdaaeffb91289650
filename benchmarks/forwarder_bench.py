"""ZAP decisions per second: forwarder + `serve-auth` daemon (ipc) vs the embedded authenticator.

One run, interleaved repetitions, the same client code for every scenario:

- `embedded`: `curvecert.Authenticator` in this process answers `inproc://zeromq.zap.01`;
- `forwarder+daemon`: a `ZapForwarder` in this process relays over ipc to a real
  `curvecert serve-auth` process (JSON audit log on, written to /dev/null);
- `daemon-direct`: a DEALER talks to the daemon's ipc socket itself (no forwarder), to
  show where the time goes.

Clients: `lockstep` (REQ-style, one request at a time; rate and p50/p99 latency) and
`pipelined` (a DEALER keeping `--window` requests in flight). Each request is a CURVE
request with a key from a 1 000-certificate store, as libzmq sends it (request id `1`).
Rates are medians over repetitions; compare ratios, not absolute numbers (2 shared cores).

Usage: python benchmarks/forwarder_bench.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curvecert import store  # noqa: E402
from curvecert.auth.authenticator import Authenticator  # noqa: E402
from curvecert.auth.policy import DomainPolicy, Policy  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.serve.forwarder import ZapForwarder  # noqa: E402
from curvecert.serve.runtime import read_key  # noqa: E402
from curvecert.store.watch import CertStore  # noqa: E402

ZAP = "inproc://zeromq.zap.01"


def request(key: bytes) -> list[bytes]:
    return [b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", key]


def lockstep(sock: zmq.Socket[Any], keys: list[bytes], n: int, envelope: list[bytes]
             ) -> tuple[float, list[float]]:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        sock.send_multipart([*envelope, *request(keys[i % len(keys)])])
        reply = sock.recv_multipart()
        lat.append(time.perf_counter() - t)
        if reply[len(envelope) + 2] != b"200":
            raise SystemExit(f"unexpected reply {reply!r}")
    return n / (time.perf_counter() - t0), lat


def pipelined(sock: zmq.Socket[Any], keys: list[bytes], n: int, window: int,
              envelope: list[bytes]) -> float:
    sent = recvd = 0
    t0 = time.perf_counter()
    while recvd < n:
        while sent < n and sent - recvd < window:
            sock.send_multipart([*envelope, *request(keys[sent % len(keys)])])
            sent += 1
        reply = sock.recv_multipart()
        if reply[len(envelope) + 2] != b"200":
            raise SystemExit(f"unexpected reply {reply!r}")
        recvd += 1
    return n / (time.perf_counter() - t0)


def start_daemon(store_dir: str, endpoint: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "curvecert", "serve-auth", "--store",
                             store_dir, "--zap-endpoint", endpoint, "--log-format", "json",
                             "--log-stream", "stdout"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + 30
    while b"ready on" not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"serve-auth did not start: {buf.decode(errors='replace')}")
        if sel.select(0.5):
            buf += os.read(proc.stderr.fileno(), 4096)
    sel.close()
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    ap.add_argument("--requests", type=int, help="requests per repetition and client")
    ap.add_argument("--reps", type=int, help="interleaved repetitions")
    ap.add_argument("--window", type=int, default=64, help="pipelined requests in flight")
    ap.add_argument("--certs", type=int, default=1000, help="store size")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "forwarder.json"))
    args = ap.parse_args()
    n = args.requests or (3000 if args.quick else 20000)
    reps = args.reps or (3 if args.quick else 5)
    started = time.monotonic()

    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    env.pop("CURVECERT_STORE", None)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = os.path.join(tmp, "clients")
        os.mkdir(store_dir)
        certs = [Certificate.new(name=f"client-{i}") for i in range(args.certs)]
        for c in certs:
            store.add_certificate(store_dir, c)
        keys = [c.public_key for c in certs[:: max(1, len(certs) // 100)]]
        endpoint = f"ipc://{tmp}/zap.sock"
        daemon = start_daemon(store_dir, endpoint, env)

        # embedded: its own context and authenticator
        ctx_e: zmq.Context[Any] = zmq.Context()
        cert_store = CertStore(store_dir, watch=True).start()
        auth = Authenticator(ctx_e, Policy({"*": DomainPolicy(curve=cert_store)}),
                             log_decisions=False).start()
        # forwarder: another context, relaying to the daemon
        ctx_f: zmq.Context[Any] = zmq.Context()
        fwd = ZapForwarder(ctx_f, endpoint).start()
        ctx_d: zmq.Context[Any] = zmq.Context()

        def sockets(ctx: zmq.Context[Any], ep: str) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
            req = ctx.socket(zmq.REQ)
            dealer = ctx.socket(zmq.DEALER)
            for s in (req, dealer):
                s.linger = 0
                if ep.startswith("ipc://"):  # the daemon's ipc socket is CURVE (pinned key)
                    Certificate.new().apply_client(
                        s, read_key(ep[len("ipc://"):], {os.geteuid()}))
                s.connect(ep)
            return req, dealer

        scenarios = {
            "embedded": (sockets(ctx_e, ZAP), [b""]),
            "forwarder+daemon": (sockets(ctx_f, ZAP), [b""]),
            "daemon-direct": (sockets(ctx_d, endpoint), [b""]),
        }
        # warm up every path (connections, caches)
        for (req, dealer), env_frames in scenarios.values():
            lockstep(req, keys, 200, [])
            pipelined(dealer, keys, 200, args.window, env_frames)

        results: dict[str, dict[str, list[float]]] = {
            name: {"lockstep": [], "pipelined": [], "p50_us": [], "p99_us": []}
            for name in scenarios}
        for _ in range(reps):
            for name, ((req, dealer), env_frames) in scenarios.items():
                rate, lat = lockstep(req, keys, n, [])
                lat.sort()
                results[name]["lockstep"].append(rate)
                results[name]["p50_us"].append(lat[len(lat) // 2] * 1e6)
                results[name]["p99_us"].append(lat[int(len(lat) * 0.99)] * 1e6)
                results[name]["pipelined"].append(
                    pipelined(dealer, keys, n, args.window, env_frames))

        fstats = fwd.stats
        for (req, dealer), _ in scenarios.values():
            req.close(linger=0)
            dealer.close(linger=0)
        fwd.stop()
        auth.stop()
        cert_store.stop()
        for zctx in (ctx_e, ctx_f, ctx_d):
            zctx.term()
        daemon.terminate()
        daemon.wait(15)
        assert daemon.stderr is not None
        daemon.stderr.close()

    summary: dict[str, Any] = {}
    for name, r in results.items():
        summary[name] = {
            "lockstep_rate": round(statistics.median(r["lockstep"])),
            "lockstep_p50_us": round(statistics.median(r["p50_us"])),
            "lockstep_p99_us": round(statistics.median(r["p99_us"])),
            "pipelined_rate": round(statistics.median(r["pipelined"])),
            "lockstep_rates": [round(x) for x in r["lockstep"]],
            "pipelined_rates": [round(x) for x in r["pipelined"]],
        }
    emb, fw = summary["embedded"], summary["forwarder+daemon"]
    ratios = {
        "forwarder_vs_embedded_lockstep": round(fw["lockstep_rate"] / emb["lockstep_rate"], 2),
        "forwarder_vs_embedded_pipelined": round(fw["pipelined_rate"] / emb["pipelined_rate"],
                                                 2),
        "added_latency_p50_us": fw["lockstep_p50_us"] - emb["lockstep_p50_us"],
    }
    out = {
        "benchmark": "forwarder_bench",
        "mode": "quick" if args.quick else "full",
        "requests_per_rep": n, "reps": reps, "window": args.window, "store_certs": args.certs,
        "python": platform.python_version(), "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(), "cpus": os.cpu_count(),
        "results": summary, "ratios": ratios,
        "forwarder_counters": {"forwarded": fstats.forwarded, "answered": fstats.answered,
                               "timed_out": fstats.timed_out},
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'scenario':<18} {'lockstep/s':>10} {'p50 µs':>7} {'p99 µs':>7} "
          f"{'pipelined/s':>11}")
    for name, s in summary.items():
        print(f"{name:<18} {s['lockstep_rate']:>10} {s['lockstep_p50_us']:>7} "
              f"{s['lockstep_p99_us']:>7} {s['pipelined_rate']:>11}")
    print("ratios:", ", ".join(f"{k}={v}" for k, v in ratios.items()))
    print(f"wrote {args.json} ({out['elapsed_s']} s)")


if __name__ == "__main__":
    main()
