"""The etcd store against the directory store, side by side in one run (issue 17).

A real three-member etcd cluster on loopback (tests/etcdcluster.py) and a directory hold
the same N public certificates (three metadata fields each, curvecert's file layout; keys
`PREFIX/<hex>` and files `<hex>.key`). For each size (default 1k and 100k; `--quick`: 1k
and 10k):

- initial load: `EtcdStore.start()` (paginated range read + parse) vs `CertStore.start()`
  (directory scan), each in a fresh child process, interleaved, median of `--reps`: time,
  memory retained after the load (tracemalloc) and RSS growth (separate children);
- grant and revocation latency through three `serve-auth` daemons on the prefix: from just
  before the write (`EtcdWriter.add` / `.remove`, the transaction `store add/remove` runs)
  until EVERY daemon's answer to a ZAP request for that key has changed (each daemon
  polled over its ipc endpoint with lock-step REQ); p50/p99 over `--trials`;
- ZAP decisions/s (lock-step REQ, known CURVE key) of a daemon on the etcd prefix vs a
  daemon on the directory, interleaved repetitions, at the largest size.

Prints the figures with ratios and the goals, writes benchmarks/results/etcd.json.
Not a test: nothing is asserted. Usage: python benchmarks/etcd_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
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

from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.formats import z85  # noqa: E402
from curvecert.store.etcdclient import EtcdClient  # noqa: E402
from curvecert.store.etcdops import EtcdWriter  # noqa: E402
from curvecert.store.etcdurl import parse_url  # noqa: E402
from tests.etcdcluster import EtcdCluster, etcd_binary  # noqa: E402

GOALS = {"latency_p99_max_s": 0.200, "load_ratio_max": 2.0, "memory_ratio_max": 2.0,
         "zap_rate_ratio_min": 0.95}

_CERT = ("#   ****  Generated on 2026-11-29 12:00:00 by curvecert  ****\n"
         "#   ZeroMQ CURVE Public Certificate\n"
         "#   Exchange securely, or use a secure mechanism to verify the contents\n"
         "#   of this file after exchange. Store public certificates in your home\n"
         "#   directory, in the .curve subdirectory.\n\n"
         "metadata\n    name = \"client-{i:06d}\"\n    email = \"c{i}@example.org\"\n"
         "    team = \"blue\"\ncurve\n    public-key = \"{key}\"\n")

CHILD = r"""
import gc, json, os, sys, time
kind, mode, where = sys.argv[1:4]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
if kind == "etcd":
    from curvecert.store.etcd import EtcdStore
    store = EtcdStore(where)
else:
    from curvecert.store.watch import CertStore
    store = CertStore(where, watch=False)
gc.collect()
if mode == "tracemalloc":
    import tracemalloc
    tracemalloc.start()
    store.start()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"n": len(store), "retained": current, "peak": peak}))
else:
    before = rss()
    t0 = time.perf_counter()
    store.start()
    elapsed = time.perf_counter() - t0
    gc.collect()
    print(json.dumps({"n": len(store), "seconds": elapsed, "rss": rss() - before}))
store.stop() if kind == "etcd" else None
"""


def populate(url: str, directory: Path, keys: list[bytes]) -> None:
    """The same certificates into etcd (128 puts per transaction) and into a directory."""
    u = parse_url(url)
    client = EtcdClient(u)
    directory.mkdir(parents=True, exist_ok=True)
    ops: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        text = _CERT.format(i=i, key=z85.encode(key)).encode()
        (directory / f"{key.hex()}.key").write_bytes(text)
        ops.append({"request_put": {"key": base64.b64encode(u.key_for(key)).decode(),
                                    "value": base64.b64encode(text).decode()}})
        if len(ops) == 128 or i == len(keys) - 1:
            client.txn([], ops)
            ops = []


def child(kind: str, mode: str, where: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, kind, mode, where], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def load_figures(url: str, directory: Path, reps: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"etcd": [], "dir": []}
    mem: dict[str, list[dict[str, Any]]] = {"etcd": [], "dir": []}
    for _ in range(reps):
        for kind, where in (("etcd", url), ("dir", str(directory))):
            runs[kind].append(child(kind, "time", where))
            mem[kind].append(child(kind, "tracemalloc", where))
    out: dict[str, Any] = {}
    for kind in runs:
        n = runs[kind][0]["n"]
        out[kind] = {"n": n,
                     "seconds": statistics.median(r["seconds"] for r in runs[kind]),
                     "rss_per_key": statistics.median(r["rss"] for r in runs[kind]) / n,
                     "retained_per_key": statistics.median(r["retained"]
                                                           for r in mem[kind]) / n}
    out["load_ratio"] = out["etcd"]["seconds"] / out["dir"]["seconds"]
    out["memory_ratio"] = out["etcd"]["retained_per_key"] / out["dir"]["retained_per_key"]
    return out


def zap_request(key: bytes) -> list[bytes]:
    return [b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", key]


def status(sock: zmq.Socket[Any], key: bytes) -> bytes:
    sock.send_multipart(zap_request(key))
    return sock.recv_multipart()[2]


def latency(url: str, sockets: list[zmq.Socket[Any]], trials: int) -> dict[str, Any]:
    writer = EtcdWriter(parse_url(url))
    grant: list[float] = []
    revoke: list[float] = []
    commit: list[float] = []  # the write alone (etcd's transaction round trips)
    for _ in range(trials):
        cert = Certificate.from_public(os.urandom(32), {"name": "bench"})
        for sample, want, write in (
                (grant, b"200", lambda c=cert: writer.add(c)),
                (revoke, b"400", lambda c=cert: writer.remove([c.public_key]))):
            t0 = time.perf_counter()
            write()
            commit.append(time.perf_counter() - t0)
            pending = list(sockets)
            deadline = t0 + 10
            while pending and time.perf_counter() < deadline:
                pending = [s for s in pending if status(s, cert.public_key) != want]
            sample.append(time.perf_counter() - t0 if not pending else float("inf"))

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {"grant_p50": pct(grant, 50), "grant_p99": pct(grant, 99),
            "revoke_p50": pct(revoke, 50), "revoke_p99": pct(revoke, 99),
            "write_p50": pct(commit, 50), "write_p99": pct(commit, 99), "trials": trials}


class Daemon:
    """`curvecert serve-auth` on an ipc endpoint; output discarded (a full pipe would stall
    it); ready when its socket file exists."""

    def __init__(self, store: str, sock_path: Path, env: dict[str, str]):
        self.endpoint = f"ipc://{sock_path}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curvecert", "-q", "serve-auth", "--store", store,
             "--zap-endpoint", self.endpoint], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        key_file = Path(f"{sock_path}.pub")  # the daemon's ipc socket is a CURVE server
        while not (sock_path.exists() and key_file.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve-auth on {store} did not start")
            time.sleep(0.05)
        self.server_key = z85.decode(key_file.read_text().strip())

    def connect(self, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
        """A lock-step REQ client of the daemon (CURVE, pinned to its published key)."""
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.rcvtimeo = sock.sndtimeo = 10_000
        Certificate.new().apply_client(sock, self.server_key)
        sock.connect(self.endpoint)
        return sock

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def zap_rate(sock: zmq.Socket[Any], key: bytes, n: int) -> float:
    for _ in range(100):
        status(sock, key)
    t0 = time.perf_counter()
    for _ in range(n):
        status(sock, key)
    return n / (time.perf_counter() - t0)


def run_size(cluster: EtcdCluster, work: Path, n: int, args: argparse.Namespace,
             zap: bool) -> dict[str, Any]:
    url = cluster.url(f"bench/{n}")
    directory = work / f"dir-{n}"
    keys = [os.urandom(32) for _ in range(n)]
    t0 = time.perf_counter()
    populate(url, directory, keys)
    print(f"[{n}] populated etcd and directory in {time.perf_counter() - t0:.1f}s", flush=True)
    result: dict[str, Any] = {"n": n, "load": load_figures(url, directory, args.reps)}
    env = dict(os.environ, PYTHONPATH=str(ROOT), CURVECERT_LOGLEVEL="ERROR")
    daemons = [Daemon(url, work / f"zap-{n}-{i}.sock", env) for i in range(3)]
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        socks = [d.connect(ctx) for d in daemons]
        result["latency"] = latency(url, socks, args.trials)
        if zap:
            dd = Daemon(str(directory), work / f"zap-dir-{n}.sock", env)
            try:
                sdir = dd.connect(ctx)
                rates: dict[str, list[float]] = {"etcd": [], "dir": []}
                for rep in range(max(args.reps, 5)):  # alternate who goes first
                    order = (("etcd", socks[0]), ("dir", sdir))
                    for kind, sock in order if rep % 2 == 0 else order[::-1]:
                        rates[kind].append(zap_rate(sock, keys[0], args.requests))
                ratios = [e / d for e, d in zip(rates["etcd"], rates["dir"], strict=True)]
                result["zap"] = {"etcd_per_s": statistics.median(rates["etcd"]),
                                 "dir_per_s": statistics.median(rates["dir"]),
                                 "ratio": statistics.median(ratios)}
                sdir.close()
            finally:
                dd.close()
        for s in socks:
            s.close()
    finally:
        for d in daemons:
            d.close()
        ctx.destroy(linger=0)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k and 10k, fewer trials")
    ap.add_argument("--sizes", default=None, help="comma-separated sizes (default 1000,100000)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    sizes = [int(s) for s in (args.sizes or ("1000,10000" if args.quick
                                             else "1000,100000")).split(",")]
    args.trials = args.trials or (20 if args.quick else 50)
    binary = etcd_binary()
    if binary is None:
        sys.exit("etcd is not installed (Debian package etcd-server)")
    results: dict[str, Any] = {"sizes": {}, "goals": GOALS}
    with tempfile.TemporaryDirectory(prefix="curvecert-etcd-bench-") as tmp:
        cluster = EtcdCluster(binary).start()
        try:
            for n in sizes:
                results["sizes"][str(n)] = run_size(cluster, Path(tmp), n, args,
                                                    zap=n == max(sizes))
                report(results["sizes"][str(n)])
        finally:
            cluster.stop()
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "etcd.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"goals: {GOALS}")


def report(r: dict[str, Any]) -> None:
    ld, lat = r["load"], r["latency"]
    print(f"[{r['n']}] load: etcd {ld['etcd']['seconds']:.3f}s vs directory "
          f"{ld['dir']['seconds']:.3f}s (ratio {ld['load_ratio']:.2f}); retained bytes/key "
          f"{ld['etcd']['retained_per_key']:.0f} vs {ld['dir']['retained_per_key']:.0f} "
          f"(ratio {ld['memory_ratio']:.2f}); RSS bytes/key {ld['etcd']['rss_per_key']:.0f} "
          f"vs {ld['dir']['rss_per_key']:.0f}")
    print(f"[{r['n']}] 3 daemons: grant p50 {lat['grant_p50'] * 1000:.1f} ms p99 "
          f"{lat['grant_p99'] * 1000:.1f} ms; revoke p50 {lat['revoke_p50'] * 1000:.1f} ms "
          f"p99 {lat['revoke_p99'] * 1000:.1f} ms ({lat['trials']} trials); the write alone "
          f"p50 {lat['write_p50'] * 1000:.1f} ms p99 {lat['write_p99'] * 1000:.1f} ms")
    if "zap" in r:
        z = r["zap"]
        print(f"[{r['n']}] ZAP decisions/s: etcd {z['etcd_per_s']:.0f} vs directory "
              f"{z['dir_per_s']:.0f} (ratio {z['ratio']:.2f})")


if __name__ == "__main__":
    main()
