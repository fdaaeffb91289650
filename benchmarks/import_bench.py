"""Bulk import of public keys into a store, against the one-by-one path and pyzmq, one run.

Three ways to put N public keys (default 100,000, each with a `name`) into an empty store
directory, on the same file system, in the same run:

- `bulk`: `curvecert.store.bulk.import_certificates`, fed by `read_sources` from a JSON
  lines file (parsing included): temporaries, one `syncfs`, renames, one directory fsync;
- `one-by-one`: `curvecert.store.add_certificate` per key, the path `store add` took before
  (an fsync per file and per directory entry); measured on a slice (`--slice`, default
  5,000) and reported as a rate, since 100,000 of them take minutes;
- `pyzmq`: what `zmq.auth.create_certificates` does per file, `open(...).write(...)` of
  the same public certificate text, with no fsync at all (not durable).

Reported: files/s of each and the ratios bulk / one-by-one (goal >= 10) and bulk / pyzmq
(goal >= 0.5). Not a test; nothing asserts.

Usage: python benchmarks/import_bench.py [--quick] [-n N] [--slice N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curvecert import store  # noqa: E402
from curvecert.certs import certfile, keys  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.store import bulk  # noqa: E402


def _keys(n: int) -> list[Certificate]:
    # random 32-byte public keys: generating keypairs is not what is measured
    out = (Certificate(os.urandom(32), meta={"name": f"client-{i}"}) for i in range(n))
    return [c for c in out if keys.weak_public_key(c.public_key) is None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--slice", type=int, default=5_000)
    ap.add_argument("--quick", action="store_true", help="10,000 keys, a 1,000 slice")
    args = ap.parse_args()
    if args.quick:
        args.n, args.slice = 10_000, 1_000
    base = Path(tempfile.mkdtemp(prefix="curvecert-import-"))
    try:
        certs = _keys(args.n)
        jsonl = base / "keys.jsonl"
        with jsonl.open("w") as fh:
            for c in certs:
                fh.write(json.dumps({"public_key": c.public_txt, "metadata": dict(c.meta)})
                         + "\n")
        texts = [(store.store_filename(c.public_key), certfile.dump(c, secret=False))
                 for c in certs]

        d = base / "pyzmq"
        d.mkdir()
        t0 = time.perf_counter()
        for name, text in texts:
            with open(d / name, "w", encoding="utf-8") as f:
                f.write(text)
        pyzmq_s = time.perf_counter() - t0

        d = base / "bulk"
        t0 = time.perf_counter()
        items = bulk.import_certificates(d, bulk.read_sources([str(jsonl)]))
        bulk_s = time.perf_counter() - t0
        assert len(items) == len(certs)

        d = base / "single"
        t0 = time.perf_counter()
        for c in certs[:args.slice]:
            store.add_certificate(d, c)
        single_s = time.perf_counter() - t0

        trusted = len(store.scan(base / "bulk", log_findings=False))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    n = len(certs)
    rates = {"bulk": n / bulk_s, "pyzmq": n / pyzmq_s, "one_by_one": args.slice / single_s}
    result = {"n": n, "slice": args.slice, "trusted_after_bulk": trusted,
              "files_per_s": {k: round(v) for k, v in rates.items()},
              "bulk_vs_one_by_one": rates["bulk"] / rates["one_by_one"],
              "bulk_vs_pyzmq": rates["bulk"] / rates["pyzmq"],
              "goals": {"bulk_vs_one_by_one_min": 10, "bulk_vs_pyzmq_min": 0.5}}
    print(f"{n} public keys (one-by-one on {args.slice}):")
    for k, v in rates.items():
        print(f"  {k:11s} {v:9.0f} files/s")
    print(f"  bulk / one-by-one = {result['bulk_vs_one_by_one']:.1f}x (goal >= 10), "
          f"bulk / pyzmq = {result['bulk_vs_pyzmq']:.2f}x (goal >= 0.5); "
          f"{trusted} trusted after the bulk import")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "import.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
