"""Asyncio ZAP authenticators: curvecert's beside pyzmq's, decisions per second, one run.

Both handlers are configured with the SAME pyzmq-style calls (`allow`, `configure_plain`,
`configure_curve`, `configure_curve_callback`): pyzmq's
`zmq.auth.asyncio.AsyncioAuthenticator` and curvecert's drop-in
`curvecert.compat.asyncio.AsyncioAuthenticator` (curvecert.auth.aio underneath), so only the
import differs. Each runs on an asyncio event loop in the main thread; `start()` is
called inside the running loop, as both require.

Client driver (the same as benchmarks/zap_bench.py, imported from it): plain zmq sockets in
ONE other thread of the same process (the loop hands it to `run_in_executor` and awaits
it), talking straight to `inproc://zeromq.zap.01` in the same context as the handler
(no TCP, no crypto): a REQ client in lock-step (rate, p50/p99 latency) and a DEALER client
with 64 requests in flight (pipelined rate). By default the process is pinned to the
idlest CPU, as zap_bench does: two threads ping-ponging across two shared cores give
bimodal rates (PYZMQ.md §6); `--no-pin` turns that off.

Scenarios: NULL (address allowed), PLAIN (100 passwords), CURVE known / unknown key (a
directory of 1000 public certificates), CURVE allow-any, and CURVE through a credentials
callback (a dict lookup): a plain one (curvecert runs it in a worker thread with a
deadline, pyzmq on the loop without one), the same with curvecert's `inline=True` (on the
loop, like pyzmq), and an `async def` one (curvecert: a task per request with a deadline;
pyzmq: awaited in its single handler task). Repetitions are interleaved (the order
of the two handlers alternates) and each ratio is the median of per-repetition ratios.

Usage: python benchmarks/aio_bench.py [--quick] [--json PATH] [--no-pin]
Writes benchmarks/results/aio.json. Not a test: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from zap_bench import (  # noqa: E402  (the same client driver as the thread benchmark)
    PASSWORD,
    WINDOW,
    _idlest_cpu,
    drive_dealer,
    drive_req,
    pct,
    request,
    write_store,
)

from curvecert.formats import z85  # noqa: E402

IMPLS = ["curvecert", "pyzmq"]
SCENARIOS = ["NULL", "PLAIN", "CURVE known", "CURVE unknown", "CURVE allow-any",
             "CURVE callback", "CURVE callback inline", "CURVE async callback"]
EXPECT = {"CURVE unknown": b"400"}


class _Provider:
    """pyzmq's credentials-provider shape: `callback(domain, key_z85)`."""

    def __init__(self, known: set[bytes]) -> None:
        self.known = known

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.known


class _AsyncProvider(_Provider):
    async def callback(self, domain: str, key: bytes) -> bool:  # type: ignore[override]
        return key in self.known


def make_auth(impl: str, scenario: str, ctx: zmq.Context[Any], store_dir: Path,
              passwords: dict[str, str], known_z85: set[bytes]) -> Any:
    """Build and configure one handler (not started) with pyzmq's calls."""
    if impl == "pyzmq":
        from zmq.auth.asyncio import AsyncioAuthenticator as PyzmqAuth
        auth: Any = PyzmqAuth(ctx)
        allow_any: Any = __import__("zmq.auth", fromlist=["CURVE_ALLOW_ANY"]).CURVE_ALLOW_ANY
    else:
        from curvecert.compat import CURVE_ALLOW_ANY
        from curvecert.compat.asyncio import AsyncioAuthenticator as CurvecertAuth
        auth = CurvecertAuth(ctx)
        auth.log_decisions = False  # pyzmq logs at DEBUG only: keep both quiet
        allow_any = CURVE_ALLOW_ANY
    auth.allow("127.0.0.1")
    if scenario == "PLAIN":
        auth.configure_plain("*", passwords)
    elif scenario == "CURVE allow-any":
        auth.configure_curve("*", allow_any)
    elif scenario == "CURVE callback":
        auth.configure_curve_callback("*", _Provider(known_z85))
    elif scenario == "CURVE callback inline":
        if impl == "pyzmq":  # pyzmq always calls it inline, without a deadline
            auth.configure_curve_callback("*", _Provider(known_z85))
        else:  # curvecert's opt-in for callbacks that cannot block
            auth.configure_curve_callback("*", _Provider(known_z85), inline=True)
    elif scenario == "CURVE async callback":
        auth.configure_curve_callback("*", _AsyncProvider(known_z85))
    elif scenario.startswith("CURVE"):
        auth.configure_curve("*", str(store_dir))
    return auth


def frames_for(scenario: str, known: bytes, unknown: bytes) -> Callable[[bytes], list[bytes]]:
    base = "CURVE known" if "callback" in scenario else scenario
    return functools.partial(request, base, known, unknown)


async def one(impl: str, scenario: str, args: argparse.Namespace, store_dir: Path,
              passwords: dict[str, str], known: bytes, unknown: bytes,
              known_z85: set[bytes]) -> tuple[float, list[int], float, list[int]]:
    """One handler, one scenario: REQ lock-step then DEALER pipelined."""
    loop = asyncio.get_running_loop()
    ctx: zmq.Context[Any] = zmq.Context()
    auth = make_auth(impl, scenario, ctx, store_dir, passwords, known_z85)
    auth.start()
    try:
        make = frames_for(scenario, known, unknown)
        # sanity: the handler says what it should
        check = ctx.socket(zmq.REQ)
        check.linger = 0
        check.connect("inproc://zeromq.zap.01")
        await loop.run_in_executor(None, check.send_multipart, make(b"1"))
        reply = await loop.run_in_executor(None, check.recv_multipart)
        check.close()
        want = EXPECT.get(scenario, b"200")
        if reply[2] != want:
            raise SystemExit(f"{impl} {scenario}: got {reply[2]!r}, expected {want!r}")
        gc.collect()
        r_rate, r_lat = await loop.run_in_executor(None, drive_req, ctx, make(b"1"), args.n)
        d_rate, d_lat = await loop.run_in_executor(None, drive_dealer, ctx, make, args.n)
    finally:
        auth.stop()
        ctx.destroy(linger=0)
    return r_rate, r_lat, d_rate, d_lat


async def decisions(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    known_keys = [zmq.curve_keypair()[0] for _ in range(args.store)]
    known = z85.decode(known_keys[0])
    unknown = os.urandom(32)
    store_dir = work / "store"
    write_store(store_dir, [z85.decode(k) for k in known_keys])
    passwords = {f"user{i:03d}": f"pw{i:03d}" for i in range(99)}
    passwords["admin"] = PASSWORD.decode()
    known_z85 = set(known_keys)
    rows: dict[str, dict[str, Any]] = {}
    for rep in range(args.reps):
        for scenario in SCENARIOS:
            impls = IMPLS if rep % 2 == 0 else IMPLS[::-1]
            for impl in impls:
                r_rate, r_lat, d_rate, d_lat = await one(
                    impl, scenario, args, store_dir, passwords, known, unknown, known_z85)
                row = rows.setdefault(f"{scenario} | {impl}", {
                    "scenario": scenario, "impl": impl, "req_rates": [], "dealer_rates": [],
                    "req_lat": [], "dealer_lat": []})
                row["req_rates"].append(r_rate)
                row["dealer_rates"].append(d_rate)
                row["req_lat"].extend(r_lat)
                row["dealer_lat"].extend(d_lat)
                print(f"  rep {rep + 1} {scenario:22s} {impl:9s} REQ {r_rate:8.0f}/s  "
                      f"DEALER {d_rate:8.0f}/s", flush=True)
    out: dict[str, Any] = {}
    for key, row in rows.items():
        out[key] = {
            "scenario": row["scenario"], "impl": row["impl"],
            "req_rate": round(statistics.median(row["req_rates"])),
            "req_rates": [round(r) for r in row["req_rates"]],
            "req_p50_us": round(pct(row["req_lat"], 0.50), 1),
            "req_p99_us": round(pct(row["req_lat"], 0.99), 1),
            "dealer_rate": round(statistics.median(row["dealer_rates"])),
            "dealer_rates": [round(r) for r in row["dealer_rates"]],
            "dealer_p50_us": round(pct(row["dealer_lat"], 0.50), 1),
            "dealer_p99_us": round(pct(row["dealer_lat"], 0.99), 1),
        }
    ratios: dict[str, Any] = {}
    for scenario in SCENARIOS:
        cc, pz = rows[f"{scenario} | curvecert"], rows[f"{scenario} | pyzmq"]

        def paired(mode: str, a: dict[str, Any] = cc, b: dict[str, Any] = pz) -> float:
            values = [x / y for x, y in zip(a[mode], b[mode], strict=True)]
            return round(float(statistics.median(values)), 2)

        ratios[scenario] = {"req_vs_pyzmq": paired("req_rates"),
                            "dealer_vs_pyzmq": paired("dealer_rates")}
    return {"rows": out, "ratios": ratios, "store_files": args.store}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a shorter run (< 60 s)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "aio.json"))
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = ap.parse_args()
    args.n = 1500 if args.quick else 5000
    args.reps = 5 if args.quick else 9
    args.store = 1000
    started = time.perf_counter()
    all_cpus = os.sched_getaffinity(0)
    pinned = None
    if not args.no_pin and len(all_cpus) > 1:
        pinned = _idlest_cpu(all_cpus)
        os.sched_setaffinity(0, {pinned})
    where = f" pinned to CPU {pinned}" if pinned is not None else ""
    print(f"asyncio ZAP decisions (inproc){where}:", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="aiobench-") as tmp:
            dec = asyncio.run(decisions(args, Path(tmp)))
    finally:
        os.sched_setaffinity(0, all_cpus)
    result = {
        "benchmark": "aio", "quick": args.quick, "requests_per_rep": args.n,
        "reps": args.reps, "window": WINDOW, "pinned_cpu": pinned,
        "client": "zap_bench driver (REQ lock-step, DEALER window 64) in one other thread "
                  "of the same process, same zmq context, inproc://zeromq.zap.01",
        "machine": {"python": platform.python_version(), "pyzmq": zmq.pyzmq_version(),
                    "libzmq": zmq.zmq_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "decisions": dec,
        "seconds": round(time.perf_counter() - started, 1),
        "sha": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12],
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print("\nmedian rates (decisions/s) and curvecert/pyzmq ratios:")
    rows = dec["rows"]
    for scenario, r in dec["ratios"].items():
        cc, pz = rows[f"{scenario} | curvecert"], rows[f"{scenario} | pyzmq"]
        print(f"  {scenario:22s} REQ {cc['req_rate']:6d} vs {pz['req_rate']:5d} "
              f"({r['req_vs_pyzmq']:5.2f}x)   DEALER {cc['dealer_rate']:6d} vs "
              f"{pz['dealer_rate']:5d} ({r['dealer_vs_pyzmq']:5.2f}x)")
    print(f"wrote {path} in {result['seconds']}s")


if __name__ == "__main__":
    main()
