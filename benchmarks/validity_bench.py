"""What the expiry check costs a ZAP decision (issue 16): before/after in one process.

The check lives on the hot path (`curvecert.auth.policy._decide_curve`): after a key is
found, its metadata blob is searched for `not-`; only a certificate with dates is parsed
(once per blob, then cached) and compared with the clock. This script times
`policy.respond(policy, frames)` for a CURVE request of a known key in a scanned store of
N certificates (half of them with a `not-after`), for

- `before`: the policy module as it was before the check (loaded from git, `--before REV`,
  into its own module name; skipped if git or that revision is not available);
- `after, no dates`: today's module, a key whose certificate has no dates;
- `after, dated`: today's module, a key whose certificate has `not-after`.

Repetitions are interleaved and the median reported, as CPU ns per decision (process
time, so other load on the machine matters less) and as ratios against `before` measured
in the same run. Not a test: numbers depend on the machine.

Usage: python benchmarks/validity_bench.py [--certs N] [--calls N] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curvecert import store  # noqa: E402
from curvecert.auth import policy  # noqa: E402
from curvecert.certs import validity  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402


def _load_before(rev: str) -> ModuleType | None:
    try:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:curvecert/auth/policy.py"],
                              capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("policy_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["policy_before"] = module  # dataclasses look their module up there
    try:
        exec(compile(text, f"{rev}:policy.py", "exec"), module.__dict__)
    except Exception as exc:  # the old module no longer imports against today's packages
        print(f"before: cannot load {rev}: {type(exc).__name__}: {exc}")
        return None
    return module


def _time(respond: Any, pol: Any, frames: list[bytes], calls: int) -> float:
    # CPU time of this process: on a shared machine, wall time mostly measures the others.
    start = time.process_time()
    for _ in range(calls):
        respond(pol, frames)
    return (time.process_time() - start) / calls * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--certs", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--before", default="559974c",
                    help="git revision whose policy.py has no expiry check")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        far = time.time() + 365 * 86400
        plain = dated = None
        for i in range(args.certs):
            meta = [("name", f"client-{i}"), ("email", f"c{i}@example.org")]
            if i % 2:
                meta = validity.with_validity(meta, not_after=far)
            cert = Certificate.new(meta)
            store.add_certificate(tmp, cert)
            if i == 0:
                plain = cert
            elif i == 1:
                dated = cert
        assert plain is not None and dated is not None
        snap = store.scan(tmp)

    def frames(cert: Certificate) -> list[bytes]:
        return [b"1.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", cert.public_key]

    rows: dict[str, list[float]] = {"after, no dates": [], "after, dated": []}
    after = policy.Policy({"*": policy.DomainPolicy(curve=snap)})
    before_mod = _load_before(args.before)
    before = None
    if before_mod is not None:
        before = before_mod.Policy({"*": before_mod.DomainPolicy(curve=snap)})
        rows = {"before": [], **rows}
        assert before_mod.respond(before, frames(plain))[1].status == "200"
    assert policy.respond(after, frames(dated))[1].status == "200"
    for _ in range(args.reps):
        if before_mod is not None:
            rows["before"].append(_time(before_mod.respond, before, frames(plain), args.calls))
        rows["after, no dates"].append(_time(policy.respond, after, frames(plain), args.calls))
        rows["after, dated"].append(_time(policy.respond, after, frames(dated), args.calls))
    medians = {name: statistics.median(v) for name, v in rows.items()}
    base = medians.get("before")
    print(f"{args.certs} certificates (half dated), {args.calls} calls x {args.reps} reps")
    for name, ns in medians.items():
        ratio = f"  {base / ns:.3f}x the decisions/s of before" if base else ""
        print(f"  {name:<16} {ns:8.0f} ns/decision{ratio}")


if __name__ == "__main__":
    main()
