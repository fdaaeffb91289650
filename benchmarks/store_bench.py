"""The certificate store against pyzmq's `zmq.auth.load_certificates`, side by side in one run.

Measured at 1k, 10k and 100k public certificates (`--quick`: 1k and 10k), on the same files
(written once into a temporary directory, named `<hex key>.key` so both loaders read them,
three metadata fields each as CZMQ's benchmarks use):

- load time per certificate: `curvecert.store.snapshot.scan(dir)` (full ZPL + metadata, the
  ZMTP blob pre-encoded) vs `zmq.auth.load_certificates(dir)` (a line scan of `*.key`),
  each in a fresh child process, interleaved, median of the repetitions;
- memory per certificate retained after the load: tracemalloc in a fresh child, and the
  RSS growth in another (tracemalloc slows loading, so time and memory are separate runs);
- lookup cost per call at each size, in a fresh child holding only that store:
  `Snapshot.lookup` and `CertStore.lookup` (raw key, returns the entry) vs pyzmq's
  `z85 in certs` (also with the `z85.encode` its authenticator does first); known and
  unknown keys;
- a full rescan with nothing changed (the stat cache), the path a Kubernetes `..data`
  swap takes;
- revocation and grant latency at the largest size: a watched `CertStore` (inotify,
  default debounce); a file is removed (revocation) or written back by temp file + rename
  (grant), and a tight loop polls `lookup` until the answer changes; p50/p99 over the
  trials. pyzmq never notices either change (it needs an explicit reload, i.e. a load).

Prints a table with ratios vs pyzmq and writes JSON to benchmarks/results/store.json.
Not a test: nothing here asserts; the goals are printed next to the figures.

Usage: python benchmarks/store_bench.py [--quick] [--sizes 1000,10000] [--trials N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curvecert import store  # noqa: E402
from curvecert.certs import certfile  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.formats import z85  # noqa: E402

GOALS = {"load_ratio_max": 1.0, "bytes_per_cert_max": 400, "latency_p99_max_s": 0.100}

# Runs in a fresh interpreter: `python -c CHILD impl mode directory` -> one JSON line.
CHILD = r"""
import gc, json, os, sys, time
impl, mode, directory = sys.argv[1:4]
import zmq.auth
from curvecert import store  # noqa: E402
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
load = ((lambda: store.scan(directory, log_findings=False)) if impl == "curvecert"
        else (lambda: zmq.auth.load_certificates(directory)))
gc.collect()
if mode == "tracemalloc":
    import tracemalloc
    tracemalloc.start()
    result = load()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"n": len(result), "retained": current, "peak": peak}))
else:
    before = rss()
    t0 = time.perf_counter()
    result = load()
    elapsed = time.perf_counter() - t0
    gc.collect()
    print(json.dumps({"n": len(result), "seconds": elapsed, "rss_growth": rss() - before}))
"""


def write_store(directory: Path, n: int, rng: random.Random) -> list[Certificate]:
    """`n` public certificates, as curvecert (and CZMQ) lay them out, three metadata fields."""
    import zmq

    directory.mkdir(parents=True)
    certs = []
    for i in range(n):
        pub, _sec = zmq.curve_keypair()
        c = Certificate.from_public(pub.decode("ascii"), [
            ("name", f"cert-{i:06d}"), ("email", f"cert-{i:06d}@example.org"),
            ("organization", "zapbench")])
        (directory / store.store_filename(c.public_key)).write_text(
            certfile.dump(c, secret=False))
        certs.append(c)
    rng.shuffle(certs)
    return certs


def child(impl: str, mode: str, directory: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, impl, mode, str(directory)],
                         capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure_load(directory: Path, n: int, reps: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"curvecert": [], "pyzmq": []}
    rss: dict[str, list[int]] = {"curvecert": [], "pyzmq": []}
    for rep in range(reps):
        order = ("pyzmq", "curvecert") if rep % 2 == 0 else ("curvecert", "pyzmq")
        for impl in order:
            r = child(impl, "time", directory)
            assert r["n"] == n, (impl, r)
            times[impl].append(r["seconds"])
            rss[impl].append(r["rss_growth"])
    out: dict[str, Any] = {}
    for impl in ("curvecert", "pyzmq"):
        tm = child(impl, "tracemalloc", directory)
        med = statistics.median(times[impl])
        out[impl] = {"load_s": med, "load_us_per_cert": med / n * 1e6,
                     "load_s_all": times[impl],
                     "rss_bytes_per_cert": statistics.median(rss[impl]) / n,
                     "traced_bytes_per_cert": tm["retained"] / n,
                     "traced_peak_bytes_per_cert": tm["peak"] / n}
    out["load_ratio"] = out["curvecert"]["load_s"] / out["pyzmq"]["load_s"]
    out["traced_ratio"] = (out["curvecert"]["traced_bytes_per_cert"]
                           / out["pyzmq"]["traced_bytes_per_cert"])
    return out


def ns_per_call(fn: Any, arg_list: list[Any], number: int) -> float:
    """Best of 3 timings of `number` calls cycling through `arg_list`, in ns per call."""
    args = (arg_list * (number // len(arg_list) + 1))[:number]

    def run() -> None:
        for a in args:
            fn(a)

    return min(timeit.repeat(run, number=1, repeat=3)) / number * 1e9


def measure_lookups(directory: Path) -> dict[str, Any]:
    """Lookup costs, measured in a fresh child process holding only this store."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--lookup-child", str(directory)],
                         capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def lookup_child(directory: Path) -> None:
    import zmq.auth
    from zmq.utils import z85 as pyzmq_z85

    from curvecert.store.watch import CertStore

    snap = store.scan(directory, log_findings=False)
    live = CertStore(directory, watch=False).start()
    pyz = zmq.auth.load_certificates(str(directory))
    rng = random.Random(2)
    # fresh bytes objects, as a ZAP request frame would bring them
    known = [bytes(bytearray(k)) for k in rng.sample(list(snap.keys()), min(1000, len(snap)))]
    unknown = [rng.randbytes(32) for _ in range(200)]
    known_z = [z85.encode(k).encode() for k in known]
    unknown_z = [z85.encode(k).encode() for k in unknown]
    number = 200_000
    cases: dict[str, tuple[Any, list[Any], int]] = {
        "curvecert_snapshot_known_ns": (snap.lookup, known, number),
        "curvecert_snapshot_unknown_ns": (snap.lookup, unknown, number),
        "curvecert_certstore_known_ns": (live.lookup, known, number),
        "curvecert_certstore_unknown_ns": (live.lookup, unknown, number),
        "pyzmq_dict_known_ns": (pyz.__contains__, known_z, number),
        "pyzmq_dict_unknown_ns": (pyz.__contains__, unknown_z, number),
        # pyzmq's authenticator gets 32 raw bytes and encodes them before the dict test
        "pyzmq_encode_and_dict_known_ns": (lambda k: pyzmq_z85.encode(k) in pyz, known,
                                           number // 10),
    }
    gc.collect()
    res: dict[str, Any] = {name: float("inf") for name in cases}
    for _round in range(3):  # interleaved rounds, best of each: less noise from neighbours
        for name, (fn, args, count) in cases.items():
            res[name] = min(res[name], ns_per_call(fn, args, count))
    # a full rescan with nothing changed: one stat per file, nothing parsed
    scanner = store.Scanner(directory, log_findings=False)
    scanner.scan()
    before = scanner.parsed
    t0 = time.perf_counter()
    scanner.scan()
    res["rescan_unchanged_s"] = time.perf_counter() - t0
    res["rescan_parsed"] = scanner.parsed - before
    live.stop()
    print(json.dumps(res))


def measure_latency(directory: Path, certs: list[Certificate], trials: int) -> dict[str, Any]:
    from curvecert.store.watch import CertStore

    t0 = time.perf_counter()
    live = CertStore(directory).start()  # inotify, default debounce, default rescan interval
    start_s = time.perf_counter() - t0
    revoke: list[float] = []
    grant: list[float] = []
    timeouts = 0
    try:
        for c in certs[-trials:]:
            path = directory / store.store_filename(c.public_key)
            data = path.read_bytes()
            key = c.public_key
            t0 = time.perf_counter()
            path.unlink()
            deadline = t0 + 5.0
            while live.lookup(key) is not None and time.perf_counter() < deadline:
                time.sleep(0)  # a tight loop that still lets the reload thread run
            if live.lookup(key) is not None:
                timeouts += 1
            revoke.append(time.perf_counter() - t0)
            tmp = directory / f".{path.name}.tmp"
            t0 = time.perf_counter()
            tmp.write_bytes(data)
            os.replace(tmp, path)  # consul-template / Vault Agent style
            deadline = t0 + 5.0
            while live.lookup(key) is None and time.perf_counter() < deadline:
                time.sleep(0)
            if live.lookup(key) is None:
                timeouts += 1
            grant.append(time.perf_counter() - t0)
    finally:
        live.stop()

    def pct(vals: list[float], q: float) -> float:
        s = sorted(vals)
        return s[min(len(s) - 1, round(q * (len(s) - 1)))]

    return {"n": len(certs), "trials": trials, "certstore_start_s": start_s,
            "timeouts": timeouts, "polling": live.polling,
            "revocation_p50_s": pct(revoke, 0.5), "revocation_p99_s": pct(revoke, 0.99),
            "revocation_max_s": max(revoke),
            "grant_p50_s": pct(grant, 0.5), "grant_p99_s": pct(grant, 0.99),
            "grant_max_s": max(grant),
            "pyzmq": "never (needs an explicit configure_curve, i.e. a full load)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1k and 10k only, fewer trials")
    ap.add_argument("--sizes", help="comma-separated certificate counts")
    ap.add_argument("--trials", type=int, help="revocation/grant trials (default 50, quick 15)")
    ap.add_argument("--reps", type=int, help="load repetitions per size (default 3, quick 1)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "store.json"))
    ap.add_argument("--keep", help="write the store files under this directory and keep them")
    ap.add_argument("--lookup-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lookup_child:
        lookup_child(Path(args.lookup_child))
        return
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [1000, 10_000] if args.quick else [1000, 10_000, 100_000])
    trials = args.trials or (15 if args.quick else 50)
    reps = args.reps or (1 if args.quick else 3)
    rng = random.Random(1)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="store-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {"sizes": sizes, "goals": GOALS, "python": sys.version.split()[0],
                               "per_size": {}}
    try:
        certs_by_size: dict[int, list[Certificate]] = {}
        for n in sizes:
            t0 = time.perf_counter()
            certs_by_size[n] = write_store(base / f"n{n}", n, rng)
            print(f"wrote {n} certificates in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for n in sizes:
            d = base / f"n{n}"
            entry = measure_load(d, n, reps)
            entry["lookup"] = measure_lookups(d)
            results["per_size"][str(n)] = entry
            print(f"measured N={n}", file=sys.stderr)
        largest = max(sizes)
        results["latency"] = measure_latency(base / f"n{largest}", certs_by_size[largest],
                                             trials)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    report(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.json}")


def report(r: dict[str, Any]) -> None:
    print("\nLoad (fresh process per run; median) and memory retained per certificate")
    print(f"{'N':>7} | {'load us/cert':>22} | {'ratio':>5} | {'traced B/cert':>15} | "
          f"{'RSS B/cert':>13}")
    print(f"{'':>7} | {'curvecert':>10} {'pyzmq':>11} | {'':>5} | {'cc':>7} {'pyzmq':>7} | "
          f"{'cc':>6} {'pyzmq':>6}")
    for n, e in r["per_size"].items():
        cc, pz = e["curvecert"], e["pyzmq"]
        print(f"{int(n):>7} | {cc['load_us_per_cert']:>10.1f} {pz['load_us_per_cert']:>11.1f} | "
              f"{e['load_ratio']:>5.2f} | {cc['traced_bytes_per_cert']:>7.0f} "
              f"{pz['traced_bytes_per_cert']:>7.0f} | {cc['rss_bytes_per_cert']:>6.0f} "
              f"{pz['rss_bytes_per_cert']:>6.0f}")
    print("\nLookup, ns per call (known / unknown key)")
    print(f"{'N':>7} | {'Snapshot.lookup':>17} | {'CertStore.lookup':>17} | "
          f"{'pyzmq dict':>13} | {'pyzmq enc+dict':>14} | {'rescan, unchanged':>17}")
    for n, e in r["per_size"].items():
        lk = e["lookup"]
        print(f"{int(n):>7} | {lk['curvecert_snapshot_known_ns']:>7.0f} / "
              f"{lk['curvecert_snapshot_unknown_ns']:>7.0f} | "
              f"{lk['curvecert_certstore_known_ns']:>7.0f} / "
              f"{lk['curvecert_certstore_unknown_ns']:>7.0f} | "
              f"{lk['pyzmq_dict_known_ns']:>5.0f} / {lk['pyzmq_dict_unknown_ns']:>5.0f} | "
              f"{lk['pyzmq_encode_and_dict_known_ns']:>14.0f} | "
              f"{lk['rescan_unchanged_s'] * 1e3:>11.0f} ms ({lk['rescan_parsed']} parsed)")
    first, last = next(iter(r["per_size"].values())), list(r["per_size"].values())[-1]
    flat = (last["lookup"]["curvecert_snapshot_known_ns"]
            / first["lookup"]["curvecert_snapshot_known_ns"])
    print(f"lookup cost, largest / smallest N: {flat:.2f}x (flat = ~1)")
    lat = r["latency"]
    print(f"\nRevocation / grant at N={lat['n']} ({lat['trials']} trials each, watched "
          f"CertStore, {'polling' if lat['polling'] else 'inotify'}; start "
          f"{lat['certstore_start_s']:.2f}s; timeouts {lat['timeouts']})")
    print(f"  revocation p50 {lat['revocation_p50_s'] * 1e3:.1f} ms  p99 "
          f"{lat['revocation_p99_s'] * 1e3:.1f} ms  max {lat['revocation_max_s'] * 1e3:.1f} ms")
    print(f"  grant      p50 {lat['grant_p50_s'] * 1e3:.1f} ms  p99 "
          f"{lat['grant_p99_s'] * 1e3:.1f} ms  max {lat['grant_max_s'] * 1e3:.1f} ms")
    print(f"  pyzmq: {lat['pyzmq']}")
    worst_load = max(e["load_ratio"] for e in r["per_size"].values())
    worst_mem = max(e["curvecert"]["traced_bytes_per_cert"] for e in r["per_size"].values())
    p99 = max(lat["revocation_p99_s"], lat["grant_p99_s"])
    print("\nGoals: load <= pyzmq: worst ratio {:.2f} {}; <= 400 B/cert: worst {:.0f} {}; "
          "p99 <= 100 ms: {:.1f} ms {}".format(
              worst_load, "ok" if worst_load <= 1.0 else "MISSED",
              worst_mem, "ok" if worst_mem <= 400 else "MISSED",
              p99 * 1e3, "ok" if p99 <= 0.1 else "MISSED"))
    print(f"elapsed {r['elapsed_s']:.0f}s")


if __name__ == "__main__":
    main()
