"""PLAIN benchmark (issue 12): CURVE decision latency under a PLAIN flood, and the cost of
known vs unknown users for each kind of password file.

Part 1, flood: CURVE ZAP requests (a known key) go one at a time from a DEALER to the ZAP
handler, and the time to each reply is recorded: first with no other traffic, then while
a child process runs 400 PLAIN clients with a wrong password against a PLAIN server of
the same context (each reconnects after libzmq's 100 ms reconnect interval: a sustained
flood). Two handlers, same run: the embedded `Authenticator`, and a real `serve-auth`
process reached through a `ZapForwarder`. Reported: p50/p99 with and without the flood
and their ratio (goal: p99 within 2x).

Part 2, user enumeration: `PasswordTable.check` with a wrong password for a known user
and for an unknown one, success cache off, for files holding clear text only, scrypt
only, argon2id only, and all three (default costs). Reported: the medians and their
ratio (goal: within 10%).

Usage: python benchmarks/plain_bench.py [--samples N] [--json PATH]
Not a test: numbers depend on the machine; compare ratios from one run.
"""

from __future__ import annotations

import argparse
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

from curvecert.auth import hashing  # noqa: E402
from curvecert.auth.authenticator import Authenticator  # noqa: E402
from curvecert.auth.keylookup import StaticKeys  # noqa: E402
from curvecert.auth.passwords import PasswordFile  # noqa: E402
from curvecert.auth.pwtable import PasswordTable  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.formats.zap import ZAP_ENDPOINT  # noqa: E402
from curvecert.serve.forwarder import ZapForwarder  # noqa: E402
from curvecert.store import add_certificate  # noqa: E402

FLOOD = 400


def flood_child(port: int) -> None:
    """Run FLOOD wrong-password PLAIN clients until stdin closes."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks = []
    for i in range(FLOOD):
        s = ctx.socket(zmq.PUSH)
        s.linger = 0
        s.plain_username = f"anon{i}".encode()
        s.plain_password = b"wrong"
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
    print("FLOODING", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close(linger=0)
    ctx.destroy(linger=0)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": ordered[len(ordered) // 2] * 1e3,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3}


def _latencies(ctx: zmq.Context[Any], key: bytes, n: int) -> list[float]:
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(ZAP_ENDPOINT)
    out = []
    try:
        for i in range(n):
            rid = str(i).encode()
            frames = [b"", b"1.0", rid, b"", b"127.0.0.1", b"", b"CURVE", key]
            t0 = time.perf_counter()
            dealer.send_multipart(frames)
            reply = dealer.recv_multipart()
            out.append(time.perf_counter() - t0)
            if reply[3] != b"200":
                raise SystemExit(f"CURVE request refused: {reply[3:5]!r}")
    finally:
        dealer.close(linger=0)
    return out


def _measure(ctx: zmq.Context[Any], key: bytes, samples: int) -> dict[str, Any]:
    plain = ctx.socket(zmq.PULL)
    plain.linger = 0
    plain.plain_server = True
    port = plain.bind_to_random_port("tcp://127.0.0.1")
    try:
        _latencies(ctx, key, 200)  # warm-up
        quiet = _latencies(ctx, key, samples)
        child = subprocess.Popen([sys.executable, __file__, "--flood-child", str(port)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "FLOODING"
            time.sleep(1.0)  # let the flood build up (a benchmark, not a test)
            flooded = _latencies(ctx, key, samples)
        finally:
            child.communicate("", timeout=30)
    finally:
        plain.close(linger=0)
    q, f = _percentiles(quiet), _percentiles(flooded)
    return {"no_flood": q, "flood": f, "p99_ratio": f["p99_ms"] / q["p99_ms"],
            "p50_ratio": f["p50_ms"] / q["p50_ms"]}


def bench_embedded(tmp: Path, samples: int) -> dict[str, Any]:
    ctx: zmq.Context[Any] = zmq.Context()
    cert = Certificate.new()
    pwfile = tmp / "pw-embedded"
    PasswordFile(pwfile, missing_ok=True).add("admin", "secret")
    with Authenticator(ctx, log_decisions=False) as auth:
        auth.configure_curve(store=StaticKeys.from_certificates([cert.public_only()]))
        auth.configure_plain(passwords=pwfile)
        result = _measure(ctx, cert.public_key, samples)
        result["plain_counters"] = auth.counters.get("PLAIN", {})
    ctx.destroy(linger=0)
    return result


def bench_serve_auth(tmp: Path, samples: int) -> dict[str, Any]:
    cert = Certificate.new()
    store = tmp / "clients"
    store.mkdir()
    add_certificate(store, cert)
    pwfile = tmp / "pw-daemon"
    PasswordFile(pwfile, missing_ok=True).add("admin", "secret")
    ipc = f"ipc://{tmp}/run/zap.sock"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "curvecert", "serve-auth", "--store", str(store),
         "--passwords", str(pwfile), "--zap-endpoint", ipc, "--log-format", "json",
         "--log-stream", "stdout"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, text=True)
    try:
        assert daemon.stderr is not None
        while "ready on" not in (line := daemon.stderr.readline()):
            if not line:
                raise SystemExit("serve-auth did not start")
        ctx: zmq.Context[Any] = zmq.Context()
        fwd = ZapForwarder(ctx, ipc).start()
        try:
            return _measure(ctx, cert.public_key, samples)
        finally:
            fwd.stop()
            ctx.destroy(linger=0)
    finally:
        daemon.terminate()
        daemon.wait(15)


def bench_enumeration(rounds: int) -> dict[str, Any]:
    entries = {
        "clear": {"alice": "clear-pw"},
        "scrypt": {"alice": hashing.hash_password("scrypt-pw")},
        "argon2id": {"alice": hashing.hash_argon2id("argon-pw")},
    }
    entries["mixed"] = {"alice": "clear-pw", "bob": entries["scrypt"]["alice"],
                        "carol": entries["argon2id"]["alice"]}
    out: dict[str, Any] = {}
    for kind, mapping in entries.items():
        table = PasswordTable.from_mapping(mapping, cache_ttl=0)
        n = rounds * (200 if kind == "clear" else 1)
        users = list(mapping)
        known: list[float] = []
        unknown: list[float] = []
        for i in range(n):  # interleaved, so drift hits both sides alike
            for who, sink in ((users[i % len(users)], known), ("nobody", unknown)):
                t0 = time.perf_counter()
                table.check(who, b"wrong password")
                sink.append(time.perf_counter() - t0)
        k, u = statistics.median(known), statistics.median(unknown)
        out[kind] = {"known_median_ms": k * 1e3, "unknown_median_ms": u * 1e3,
                     "ratio": u / k, "samples": n}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "plain.json"))
    parser.add_argument("--flood-child", type=int)
    args = parser.parse_args()
    if args.flood_child:
        flood_child(args.flood_child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "embedded": bench_embedded(Path(tmp), args.samples),
            "serve_auth": bench_serve_auth(Path(tmp), args.samples),
            "enumeration": bench_enumeration(args.rounds),
            "cpus": os.cpu_count(),
        }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
