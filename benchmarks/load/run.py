"""Load benchmark: 1,000+ concurrent CURVE clients against a 100k-certificate store.

Why: an authenticator must keep deciding correctly, in flat memory, without leaking file
descriptors, while a thousand clients connect, handshake and go at once. Two scenarios,
each in a fresh server process (`server.py`) for a bounded time:

- `embedded`: `curvecert.Authenticator` + watched `CertStore` in the server process;
- `serve-auth`: a real `curvecert serve-auth` daemon on ipc, a `ZapForwarder` in the
  server process.

Clients (`client.py`) run in several worker processes, `--clients` in all (default 1,024
= 4 x 256). About two thirds use keys from the store (must be admitted), one third fresh
keys (must be refused); each client connects with a new socket, sends one message, waits
for the reply or the monitor's `HANDSHAKE_FAILED_AUTH`, closes and starts over. The server
checks the ZAP `User-Id` of every message it receives against the key the client claims
and the trusted set.

Reported per scenario: decisions and decisions/s; wrong decisions (trusted refused or
never decided, untrusted admitted, messages with a wrong User-Id); latency p50/p99;
resident memory (VmRSS) of the server process and of the daemon, sampled every second:
the median of the first window after warm-up against the median of the last one, with
the number of decisions in between (goal: < 10 % over >= 100k decisions); open file
descriptors the same way, and with no client connected before and after the load. RSS
under load swings with the number of connections open at the moment (libzmq buffers
per connection) and includes memory malloc keeps for reuse, so the server also reports,
idle before and after the load, malloc's bytes in use (glibc `mallinfo2`), Python's
allocated blocks and the RSS after `malloc_trim`: a leak shows there, fragmentation not.
The 100k keys are generated once into a cache directory (`--cache`) and reused.

Usage: python benchmarks/load/run.py [--quick] [--duration S] [--clients N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import loadlib

HERE = Path(__file__).resolve().parent
GOALS = {"clients_min": 1000, "wrong_max": 0, "rss_growth_max_pct": 10.0,
         "decisions_after_warmup_min": 100_000, "fd_growth_max": 0}


def _merge(workers: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
    counts: dict[str, int] = {}
    latency: dict[str, dict[int, int]] = {}
    for w in workers:
        for k, v in w["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for kind, hist in w["latency_ms"].items():
            dst = latency.setdefault(kind, {})
            for ms, n in hist.items():
                dst[int(ms)] = dst.get(int(ms), 0) + n
    return counts, latency


def _growth(samples: list[dict[str, Any]], key: str, warm: dict[str, Any],
            end: dict[str, Any], window: float) -> dict[str, Any]:
    """How `key` moved between the first and the last `window` seconds after warm-up.

    Memory and descriptors swing with the number of connections in flight at the moment
    of a sample, so each end is the median of the samples in a window, not one sample.
    """
    after = [s for s in samples if warm["t"] <= s["t"] <= end["t"]]
    first = [s[key] for s in after if s["t"] < warm["t"] + window]
    last = [s[key] for s in after if s["t"] > end["t"] - window]
    base, final = statistics.median(first), statistics.median(last)
    peak = max(s[key] for s in after)
    return {"first_window_median": base, "last_window_median": final,
            "growth": final - base,
            "growth_pct": round(100.0 * (final - base) / base, 2) if base else None,
            "max_after_warmup": peak,
            "max_vs_first_pct": round(100.0 * (peak - base) / base, 2) if base else None,
            "min_after_warmup": min(s[key] for s in after)}


def summarise(raw: dict[str, Any], duration: float, warmup: float) -> dict[str, Any]:
    """The figures for one scenario from `server.py`'s raw output."""
    counts, latency = _merge(raw["workers"])
    total = sum(counts.values())
    decided = sum(v for k, v in counts.items() if ".undecided" not in k)
    false_refuse = sum(v for k, v in counts.items()
                       if k.startswith("trusted.") and not k == "trusted.admitted")
    false_admit = sum(v for k, v in counts.items() if k.startswith("untrusted.admitted"))
    server_wrong = sum(raw["server_wrong"].values())
    untrusted_undecided = sum(v for k, v in counts.items()
                              if k.startswith("untrusted.undecided"))
    samples = raw["samples"]
    loaded = [s for s in samples if 0 < s["t"] <= duration]
    warm = next((s for s in loaded if s["t"] >= warmup), loaded[0])
    end = loaded[-1]
    window = max(2.0, min(10.0, (end["t"] - warm["t"]) / 3))
    out: dict[str, Any] = {
        "mode": raw["mode"],
        "setup_s": round(raw["setup_s"], 2),
        "load_s": round(raw["load_s"], 2),
        "attempts": total,
        "decisions": decided,
        "decisions_per_s": round(decided / max(w["elapsed"] for w in raw["workers"]), 1),
        "zap_decisions_server_side": raw["idle_after"]["decisions"],
        "cpu_s": {**raw["cpu_s"], "clients": round(sum(w["cpu_s"] for w in raw["workers"]), 2)},
        "outcomes": dict(sorted(counts.items())),
        "wrong": {"false_refusals": false_refuse, "false_admissions": false_admit,
                  "server_user_id_errors": server_wrong,
                  "total": false_refuse + false_admit + server_wrong},
        "untrusted_undecided": untrusted_undecided,
        "latency_ms": {kind: {"p50": loadlib.percentile(h, 0.5),
                              "p99": loadlib.percentile(h, 0.99),
                              "max": max(h) if h else None}
                       for kind, h in latency.items()},
        "warmup_s": warm["t"],
        "end_s": end["t"],
        "decisions_after_warmup": end["decisions"] - warm["decisions"],
        "window_s": window,
        "server_rss_kb": _growth(samples, "server_rss_kb", warm, end, window),
        "server_fds": _growth(samples, "server_fds", warm, end, window),
        "server_fds_idle": {"before": raw["idle_before"]["server_fds"],
                            "after": raw["idle_after"]["server_fds"]},
        # With no client connected, before and after the load: what a leak would leave.
        "server_idle": {
            "rss_kb": [raw["idle_before"]["server_rss_kb"], raw["idle_after"]["server_rss_kb"]],
            "rss_kb_after_malloc_trim": raw["idle_after"].get("server_rss_kb_after_malloc_trim"),
            "malloc_in_use_kb": [raw["idle_before"].get("server_malloc_in_use_kb"),
                                 raw["idle_after"].get("server_malloc_in_use_kb")],
            "malloc_free_kb": [raw["idle_before"].get("server_malloc_free_kb"),
                               raw["idle_after"].get("server_malloc_free_kb")],
            "python_blocks": [raw["idle_before"]["server_py_blocks"],
                              raw["idle_after"]["server_py_blocks"]]},
        "authenticator_counters": raw["authenticator_counters"],
        "forwarder_stats": raw["forwarder_stats"],
    }
    if "daemon_rss_kb" in warm:
        out["daemon_rss_kb"] = _growth(samples, "daemon_rss_kb", warm, end, window)
        out["daemon_fds"] = _growth(samples, "daemon_fds", warm, end, window)
        out["daemon_fds_idle"] = {"before": raw["idle_before"]["daemon_fds"],
                                  "after": raw["idle_after"]["daemon_fds"]}
        out["daemon_exit"] = raw["daemon_exit"]
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    def rss(r: dict[str, Any], who: str) -> str:
        g = r.get(f"{who}_rss_kb")
        if not g:
            return "-"
        return (f"{g['first_window_median'] / 1024:.0f}->"
                f"{g['last_window_median'] / 1024:.0f} MiB ({g['growth_pct']:+.1f}%)")

    def fds(r: dict[str, Any], who: str) -> str:
        g, idle = r.get(f"{who}_fds"), r.get(f"{who}_fds_idle")
        if not g or not idle:
            return "-"
        return (f"{g['first_window_median']:.0f}->{g['last_window_median']:.0f} "
                f"(idle {idle['before']}->{idle['after']})")

    lines = []
    head = ("mode", "decisions", "dec/s", "wrong", "after warm-up", "server RSS",
            "server fds", "daemon RSS", "daemon fds", "p50/p99 ms")
    table = [head]
    for r in rows:
        lat = r["latency_ms"]
        lat_txt = "/".join(f"{lat[k]['p50']}/{lat[k]['p99']}" for k in ("admitted", "refused")
                           if k in lat and lat[k]["p50"] is not None)
        table.append((r["mode"], str(r["decisions"]), f"{r['decisions_per_s']:.0f}",
                      f"{r['wrong']['total']} ({r['wrong']['false_refusals']}/"
                      f"{r['wrong']['false_admissions']}/{r['wrong']['server_user_id_errors']})",
                      str(r["decisions_after_warmup"]), rss(r, "server"), fds(r, "server"),
                      rss(r, "daemon"), fds(r, "daemon"), lat_txt))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    lines.append("wrong = total (false refusals / false admissions / server User-Id errors); "
                 "p50/p99 = admitted then refused; RSS and fds: median of the first\n"
                 "and of the last window after warm-up; idle = with no client, before and "
                 "after the load")
    lines.append("server process idle, before -> after the load (a leak stays; memory "
                 "malloc keeps for reuse goes with malloc_trim):")
    for r in rows:
        idle = r["server_idle"]
        kib = [f"{v / 1024:.1f}" if v is not None else "?" for v in (
            *idle["rss_kb"], idle["rss_kb_after_malloc_trim"], *idle["malloc_in_use_kb"])]
        lines.append(f"  {r['mode']}: RSS {kib[0]} -> {kib[1]} MiB ({kib[2]} MiB after "
                     f"malloc_trim); malloc in use {kib[3]} -> {kib[4]} MiB; Python blocks "
                     f"{idle['python_blocks'][0]} -> {idle['python_blocks'][1]}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="15 s per scenario")
    ap.add_argument("--duration", type=float, help="seconds of load per scenario (60; quick 15)")
    ap.add_argument("--warmup", type=float, help="seconds excluded from growth (10; quick 4)")
    ap.add_argument("--clients", type=int, default=1024, help="concurrent clients in all")
    ap.add_argument("--workers", type=int, default=4, help="client worker processes")
    ap.add_argument("--certs", type=int, default=100_000, help="trusted certificates")
    ap.add_argument("--untrusted-share", type=float, default=1 / 3)
    ap.add_argument("--modes", default="embedded,serve-auth")
    ap.add_argument("--forwarder-timeout", type=float, default=0.5,
                    help="ZapForwarder deadline (the library default is 0.5 s)")
    ap.add_argument("--verdict-timeout", type=float, default=10.0,
                    help="a client with no verdict after this long counts as undecided")
    ap.add_argument("--io-threads", type=int, default=1, help="server context I/O threads")
    ap.add_argument("--cache", type=Path, default=loadlib.DEFAULT_CACHE)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path,
                    default=loadlib.ROOT / "benchmarks" / "results" / "load.json")
    args = ap.parse_args()
    duration = args.duration or (15.0 if args.quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (4.0 if args.quick else 10.0)
    started = time.monotonic()
    store, blob = loadlib.ensure_cache(args.cache, args.certs)
    rows = []
    for mode in args.modes.split(","):
        cfg = {"mode": mode, "store": str(store), "blob": str(blob), "clients": args.clients,
               "workers": args.workers, "duration": duration, "drain": 15.0,
               "verdict_timeout": args.verdict_timeout,
               "untrusted_share": args.untrusted_share, "seed": args.seed,
               "forwarder_timeout": args.forwarder_timeout, "io_threads": args.io_threads}
        print(f"--- {mode}: {args.clients} clients in {args.workers} processes, "
              f"{duration:.0f} s, {args.certs} certificates", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, str(HERE / "server.py"), json.dumps(cfg)],
                              stdout=subprocess.PIPE, check=True)
        raw = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        row = summarise(raw, duration, warmup)
        row["samples"] = raw["samples"]
        rows.append(row)
    print(_table(rows))
    for r in rows:
        print(f"{r['mode']}: outcomes {r['outcomes']}")
    result = {"benchmark": "load", "mode": "quick" if args.quick else "full",
              "clients": args.clients, "workers": args.workers, "certs": args.certs,
              "duration_s": duration, "warmup_s": warmup,
              "untrusted_share": round(args.untrusted_share, 3),
              "forwarder_timeout_s": args.forwarder_timeout,
              "python": platform.python_version(), "cpus": _cpus(), "goals": GOALS,
              "total_s": round(time.monotonic() - started, 1), "results": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} ({result['total_s']} s in all)")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
