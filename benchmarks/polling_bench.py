"""The cost of one poll of a store: the store's own rescan against watchdog's poller.

When inotify cannot be used (a network file system, or the kernel out of watches) the
store polls: every `poll_interval` seconds it rescans the directory with its stat cache,
parsing only files whose (inode, size, mtime, ctime) changed. Before, watchdog's
PollingObserver took its own snapshot of the directory each interval and diffed it with
the last one, and the store then re-read what the diff named. The peer here, measured in
the same run on the same files, is that snapshot and diff alone (the store's part came on
top). Reported: milliseconds per poll with nothing changed, and with 1% of the files
rewritten; ratios store / watchdog. Not a test; nothing here asserts.

Usage: python benchmarks/polling_bench.py [--quick] [--sizes 10000,100000] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff  # noqa: E402

from curvecert import store  # noqa: E402
from curvecert.certs import certfile  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402


def _fill(directory: Path, n: int) -> list[Path]:
    texts = [certfile.dump(Certificate.new(name=f"c{i}"), secret=False) for i in range(50)]
    paths = []
    for i in range(n):
        path = directory / f"client-{i:06d}.key"
        # distinct keys are not needed for a stat-and-parse cost; 50 texts, n files
        path.write_text(texts[i % 50].replace('name = "', f'name = "{i}-', 1))
        paths.append(path)
    return paths


def _touch(paths: list[Path], step: int, generation: int) -> None:
    for path in paths[::step]:
        text = path.read_text()
        path.write_text(text + f"# {generation}\n")


def _poll_store(directory: Path, paths: list[Path], rounds: int, step: int) -> list[float]:
    scanner = store.Scanner(directory, log_findings=False)
    scanner.scan()
    out = []
    for r in range(rounds):
        if step:
            _touch(paths, step, r)
        t0 = time.perf_counter()
        scanner.scan()
        out.append(time.perf_counter() - t0)
    return out


def _poll_watchdog(directory: Path, paths: list[Path], rounds: int, step: int) -> list[float]:
    last = DirectorySnapshot(str(directory), recursive=True)
    out = []
    for r in range(rounds):
        if step:
            _touch(paths, step, r)
        t0 = time.perf_counter()
        new = DirectorySnapshot(str(directory), recursive=True)
        DirectorySnapshotDiff(last, new)
        out.append(time.perf_counter() - t0)
        last = new
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k files, 5 rounds")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rounds = 5 if args.quick else args.rounds
    results = []
    for n in sizes:
        base = Path(tempfile.mkdtemp(prefix="curvecert-poll-"))
        try:
            paths = _fill(base, n)
            row: dict[str, float | int] = {"files": n}
            for label, step in (("unchanged", 0), ("1pct_changed", 100)):
                # interleaved: store, watchdog, store, watchdog ... medians of each
                ours, theirs = [], []
                for _ in range(2):
                    ours += _poll_store(base, paths, rounds, step)
                    theirs += _poll_watchdog(base, paths, rounds, step)
                row[f"store_{label}_ms"] = statistics.median(ours) * 1e3
                row[f"watchdog_{label}_ms"] = statistics.median(theirs) * 1e3
                row[f"ratio_{label}"] = statistics.median(ours) / statistics.median(theirs)
            results.append(row)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"{n:>7} files  nothing changed: store {row['store_unchanged_ms']:8.1f} ms  "
              f"watchdog snapshot+diff {row['watchdog_unchanged_ms']:8.1f} ms  "
              f"(x{row['ratio_unchanged']:.2f})")
        print(f"{'':>13}  1% rewritten:    store {row['store_1pct_changed_ms']:8.1f} ms  "
              f"watchdog snapshot+diff {row['watchdog_1pct_changed_ms']:8.1f} ms  "
              f"(x{row['ratio_1pct_changed']:.2f}; the store also parsed the changed files)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "polling.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
