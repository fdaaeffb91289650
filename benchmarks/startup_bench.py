"""Start-up time of `curvecert --help` and `curvecert show FILE` against
`python -m zmq.curve_keygen`, measured interleaved in one run (issue 7 goal: <= 1.5x).

Each command runs `--runs` times as a fresh process (stdout to /dev/null, NO_COLOR), the
cases interleaved so that machine noise hits them alike; medians are compared. Also shown:
`show --json` (the same path without rich) and `curvecert keygen`.
`tests/unit/test_startup_imports.py` guards what these paths import.

Usage: python benchmarks/startup_bench.py [--runs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.5  # x the median of `python -m zmq.curve_keygen`
GOAL_CASES = ("curvecert --help", "curvecert show")


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cert = os.path.join(tmp, "server")
        subprocess.run([py, "-m", "curvecert", "new", cert, "--name", "bench"], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cases = {
            "zmq.curve_keygen": [py, "-m", "zmq.curve_keygen"],
            "curvecert --help": [py, "-m", "curvecert", "--help"],
            "curvecert show": [py, "-m", "curvecert", "show", cert],
            "curvecert show --json": [py, "-m", "curvecert", "show", "--json", cert],
            "curvecert keygen": [py, "-m", "curvecert", "keygen"],
        }
        for cmd in cases.values():  # warm the page cache and .pyc files
            _time(cmd, env)
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.runs):
            for name, cmd in cases.items():
                samples[name].append(_time(cmd, env))
    base = statistics.median(samples["zmq.curve_keygen"])
    results = {}
    print(f"{'command':<22} {'median ms':>10} {'p90 ms':>8} {'ratio':>6}  goal {GOAL}x")
    for name, vals in samples.items():
        med = statistics.median(vals)
        p90 = sorted(vals)[int(0.9 * (len(vals) - 1))]
        results[name] = {"median_s": med, "p90_s": p90, "ratio_vs_keygen": med / base}
        verdict = "" if name not in GOAL_CASES else (
            "  ok" if med / base <= GOAL else "  over")
        print(f"{name:<22} {med * 1e3:>10.1f} {p90 * 1e3:>8.1f} {med / base:>6.2f}{verdict}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"benchmark": "startup_bench", "runs": args.runs, "goal_ratio": GOAL,
         "python": platform.python_version(), "cpus": os.cpu_count(), "results": results},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
