"""ZAP authenticator benchmark: curvecert vs pyzmq's ThreadAuthenticator vs a bare REP loop.

Part 1, decisions: requests go straight to `inproc://zeromq.zap.01` (no TCP, no crypto),
from a REQ client (lock-step: rate and p50/p99 latency) and a DEALER client (pipelined,
window 64), for NULL, PLAIN, CURVE known key, CURVE unknown key and CURVE allow-any. The
three handlers run side by side in ONE process and run (interleaved repetitions, medians):

- `curvecert`: `curvecert.Authenticator` (CURVE keys from a watched `CertStore` of N
  certificate files; PLAIN from a CZMQ-style plaintext password file);
- `pyzmq`: `zmq.auth.thread.ThreadAuthenticator` (same directory, a dict of passwords);
- `bare`: a REP loop that answers every request `200` without looking at it (the most any
  in-process Python handler can do with this client).

Goals (issue 4): curvecert ≥ 3x pyzmq and ≥ 0.8x bare, lock-step and pipelined.
Extra rows: PLAIN with a scrypt-hashed entry (with the success cache, and the raw KDF rate).

Part 2, handshakes: real CURVE handshakes over loopback TCP. 200 DEALER clients, each with
its own keypair, connect at once to a ROUTER (ZMQ_BACKLOG 1024) and send one message;
rate = clients / time until all messages arrived. Also "serial": clients one at a time.
With the curvecert authenticator and a 100k-certificate store, against no ZAP handler
(goal ≥ 0.95x). `--quick` uses an in-memory 100k-key `StaticKeys` for the big store (same
lookup cost: one dict access) and says so in the JSON; the full run writes 100k files and
watches them with the real `CertStore`.

Usage: python benchmarks/zap_bench.py [--quick] [--json PATH]
Writes benchmarks/results/zap.json. Not a test: numbers depend on the machine (2 shared
cores here); compare ratios from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curvecert.auth.authenticator import Authenticator  # noqa: E402
from curvecert.auth.hashing import hash_password  # noqa: E402
from curvecert.auth.keylookup import StaticKeys  # noqa: E402
from curvecert.auth.passwords import PasswordFile  # noqa: E402
from curvecert.auth.pwtable import PasswordTable  # noqa: E402
from curvecert.formats import z85  # noqa: E402
from curvecert.formats.zap import ZAP_ENDPOINT  # noqa: E402

SCENARIOS = ["NULL", "PLAIN", "CURVE known", "CURVE unknown", "CURVE allow-any"]
IMPLS = ["curvecert", "pyzmq", "bare"]
WINDOW = 64
PASSWORD = b"secret"


# --- fixtures -------------------------------------------------------------------------------

_CERT = """#   ****  Generated on 2026-01-01 00:00:00 by zap_bench  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, in the .curve subdirectory.

metadata
    name = "client-{i:06d}"
    email = "client-{i:06d}@example.org"
    organization = "zapbench"
curve
    public-key = "{key}"
"""


def write_store(directory: Path, keys: list[bytes]) -> None:
    """Public certificate files `client-NNNNNN.key` (read by CertStore and by pyzmq)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(keys):
        (directory / f"client-{i:06d}.key").write_text(_CERT.format(i=i, key=z85.encode(key)))


def request(scenario: str, known: bytes, unknown: bytes, rid: bytes = b"1") -> list[bytes]:
    base = [b"1.0", rid, b"", b"127.0.0.1", b""]
    if scenario == "NULL":
        return [*base, b"NULL"]
    if scenario == "PLAIN":
        return [*base, b"PLAIN", b"admin", PASSWORD]
    if scenario == "PLAIN hashed":
        return [*base, b"PLAIN", b"hashed", PASSWORD]
    key = unknown if scenario == "CURVE unknown" else known
    return [*base, b"CURVE", key]


@contextmanager
def handler(impl: str, scenario: str, ctx: zmq.Context[Any], store_dir: Path,
            pw_file: Path, passwords: dict[str, str]) -> Iterator[None]:
    """Run one handler flavour configured for `scenario` on `ctx`."""
    if impl == "curvecert":
        auth = Authenticator(ctx)
        auth.allow("127.0.0.1")
        if scenario == "NULL":
            auth.configure_null()
        elif scenario.startswith("PLAIN"):
            auth.configure_plain(passwords=pw_file)
        elif scenario == "CURVE allow-any":
            auth.configure_curve_unsafe_allow_any()
        else:
            auth.configure_curve(store=store_dir)
        auth.start()
        try:
            yield
        finally:
            auth.stop()
    elif impl == "pyzmq":
        from zmq.auth import CURVE_ALLOW_ANY
        from zmq.auth.thread import ThreadAuthenticator

        pa = ThreadAuthenticator(ctx)
        pa.start()
        pa.allow("127.0.0.1")
        if scenario.startswith("PLAIN"):
            pa.configure_plain("*", passwords)
        elif scenario == "CURVE allow-any":
            pa.configure_curve("*", CURVE_ALLOW_ANY)
        elif scenario.startswith("CURVE"):
            pa.configure_curve("*", str(store_dir))
        try:
            yield
        finally:
            pa.stop()
    else:
        stop = threading.Event()
        ready = threading.Event()

        def loop() -> None:
            rep = ctx.socket(zmq.REP)
            rep.linger = 0
            rep.rcvtimeo = 100
            rep.bind(ZAP_ENDPOINT)
            ready.set()
            while not stop.is_set():
                try:
                    frames = rep.recv_multipart()
                except zmq.Again:
                    continue
                rep.send_multipart([b"1.0", frames[1], b"200", b"OK", b"", b""])
            rep.unbind(ZAP_ENDPOINT)
            rep.close()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        ready.wait(5)
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


def drive_req(ctx: zmq.Context[Any], frames: list[bytes], n: int) -> tuple[float, list[int]]:
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 10_000
    sock.connect(ZAP_ENDPOINT)
    for _ in range(50):  # warm-up
        sock.send_multipart(frames)
        sock.recv_multipart()
    lat: list[int] = []
    now = time.perf_counter_ns
    t0 = time.perf_counter()
    for _ in range(n):
        s = now()
        sock.send_multipart(frames)
        reply = sock.recv_multipart()
        lat.append(now() - s)
    elapsed = time.perf_counter() - t0
    assert reply[2] in (b"200", b"400"), reply
    sock.close()
    return n / elapsed, lat


def drive_dealer(ctx: zmq.Context[Any], make: Callable[[bytes], list[bytes]],
                 n: int) -> tuple[float, list[int]]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 10_000
    sock.sndhwm = sock.rcvhwm = 0
    sock.connect(ZAP_ENDPOINT)
    now = time.perf_counter_ns
    sent: dict[bytes, int] = {}
    lat: list[int] = []
    next_id = 0
    t0 = time.perf_counter()
    received = 0
    while received < n:
        while next_id < n and len(sent) < WINDOW:
            rid = str(next_id).encode()
            sent[rid] = now()
            sock.send_multipart([b"", *make(rid)])
            next_id += 1
        reply = sock.recv_multipart()
        lat.append(now() - sent.pop(reply[2]))
        received += 1
    elapsed = time.perf_counter() - t0
    sock.close()
    return n / elapsed, lat


def pct(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000.0


def decisions(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Part 1: decisions per second and latency, three handlers, interleaved."""
    known_keys = [zmq.curve_keypair()[0] for _ in range(args.decision_store)]
    known = z85.decode(known_keys[0])
    unknown = os.urandom(32)
    store_dir = work / "decision-store"
    write_store(store_dir, [z85.decode(k) for k in known_keys])
    passwords = {f"user{i:03d}": f"pw{i:03d}" for i in range(99)}
    passwords["admin"] = PASSWORD.decode()
    pw_file = work / "passwords"
    lines = [f"{u}={p}" for u, p in passwords.items()]
    lines.append(f"hashed={hash_password(PASSWORD.decode())}")
    pw_file.write_text("\n".join(lines) + "\n")
    pw_file.chmod(0o600)

    rows: dict[str, dict[str, Any]] = {}
    scenarios = [*SCENARIOS, "PLAIN hashed"]
    for rep in range(args.reps):
        for scenario in scenarios:
            impls = IMPLS[rep % 3:] + IMPLS[:rep % 3]  # rotate the order each repetition
            if scenario == "PLAIN hashed":
                impls = ["curvecert"]
            for impl in impls:
                ctx: zmq.Context[Any] = zmq.Context()
                try:
                    with handler(impl, scenario, ctx, store_dir, pw_file, passwords):
                        frames = request(scenario, known, unknown)
                        gc.collect()
                        r_rate, r_lat = drive_req(ctx, frames, args.n)
                        d_rate, d_lat = drive_dealer(
                            ctx, functools.partial(request, scenario, known, unknown), args.n)
                finally:
                    ctx.destroy(linger=0)
                row = rows.setdefault(f"{scenario} | {impl}", {
                    "scenario": scenario, "impl": impl, "req_rates": [], "dealer_rates": [],
                    "req_lat": [], "dealer_lat": []})
                row["req_rates"].append(r_rate)
                row["dealer_rates"].append(d_rate)
                row["req_lat"].extend(r_lat)
                row["dealer_lat"].extend(d_lat)
                print(f"  rep {rep + 1} {scenario:16s} {impl:9s} REQ {r_rate:8.0f}/s  "
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
    # Ratios are taken per repetition (the three handlers ran back to back, so a slow
    # phase of the shared machine hits all three) and the median of those is reported.
    ratios: dict[str, Any] = {}
    for scenario in SCENARIOS:
        cc, pz, bare = (rows[f"{scenario} | {i}"] for i in IMPLS)

        def paired(mode: str, other: dict[str, Any], c: dict[str, Any] = cc) -> float:
            values = [a / b for a, b in zip(c[mode], other[mode], strict=True)]
            return round(float(statistics.median(values)), 2)

        ratios[scenario] = {
            "req_vs_pyzmq": paired("req_rates", pz),
            "req_vs_bare": paired("req_rates", bare),
            "dealer_vs_pyzmq": paired("dealer_rates", pz),
            "dealer_vs_bare": paired("dealer_rates", bare),
        }
    # The KDF itself: what an uncached hashed PLAIN login costs.
    table = PasswordTable.from_mapping({"u": hash_password("pw")}, cache_ttl=0)
    t0 = time.perf_counter()
    kdf_n = 10 if args.quick else 30
    for _ in range(kdf_n):
        table.check("u", b"pw")
    kdf_rate = kdf_n / (time.perf_counter() - t0)
    PasswordFile(pw_file)  # the file loads (sanity)
    return {"rows": out, "ratios": ratios, "store_files": args.decision_store,
            "plain_hashed_uncached_per_s": round(kdf_rate, 1),
            "note": "PLAIN hashed = scrypt n=16384 entry, repeated logins served by the "
                    "success cache; plain_hashed_uncached_per_s = one KDF per login"}


# --- part 2: handshakes ---------------------------------------------------------------------

def _big_store(args: argparse.Namespace, work: Path, client_keys: list[bytes]) -> Any:
    filler = [os.urandom(32) for _ in range(args.store - len(client_keys))]
    if args.quick:
        return StaticKeys.from_keys(client_keys + filler), "in-memory StaticKeys (--quick)"
    from curvecert.store.watch import CertStore

    directory = work / "big-store"
    t0 = time.perf_counter()
    write_store(directory, client_keys + filler)
    written = time.perf_counter() - t0
    store = CertStore(directory, watch=True)
    t0 = time.perf_counter()
    store.start()
    loaded = time.perf_counter() - t0
    assert len(store) == args.store, len(store)
    return store, f"CertStore on disk (write {written:.1f}s, initial scan {loaded:.1f}s)"


def handshake_round(clients: list[tuple[bytes, bytes]], server_keys: tuple[bytes, bytes],
                    zap: str, store: Any, serial: bool) -> float:
    """One round (`zap`: none, curvecert or bare); returns handshakes per second."""
    server_ctx: zmq.Context[Any] = zmq.Context()
    client_ctx: zmq.Context[Any] = zmq.Context()
    auth = None
    bare = contextlib.ExitStack()
    try:
        if zap == "curvecert":
            auth = Authenticator(server_ctx, log_decisions=False)
            auth.configure_curve(store=store)
            auth.start()
        elif zap == "bare":
            bare.enter_context(handler("bare", "CURVE", server_ctx, Path(), Path(), {}))
        server = server_ctx.socket(zmq.ROUTER)
        server.linger = 0
        server.setsockopt(zmq.BACKLOG, 1024)
        server.curve_server = True
        server.curve_publickey, server.curve_secretkey = server_keys
        port = server.bind_to_random_port("tcp://127.0.0.1")
        n = len(clients)
        socks = []
        for pub, sec in clients:  # socket set-up is not part of the handshake
            c = client_ctx.socket(zmq.DEALER)
            c.linger = 0
            c.curve_publickey, c.curve_secretkey = pub, sec
            c.curve_serverkey = server_keys[0]
            socks.append(c)
        endpoint = f"tcp://127.0.0.1:{port}"
        got = 0
        t0 = time.perf_counter()
        for i, c in enumerate(socks):
            c.connect(endpoint)
            c.send(b"x")
            if serial:
                if not server.poll(10_000):
                    raise RuntimeError(f"client {i} did not get through")
                server.recv_multipart()
                got += 1
        while got < n:
            if not server.poll(30_000):
                raise RuntimeError(f"only {got}/{n} clients got through")
            server.recv_multipart()
            got += 1
        elapsed = time.perf_counter() - t0
        for c in socks:
            c.close(linger=0)
        server.close(linger=0)
        if auth is not None:
            assert auth.counters["CURVE"]["allowed"] == n, auth.counters
        return n / elapsed
    finally:
        if auth is not None:
            auth.stop()
        bare.close()
        client_ctx.destroy(linger=0)
        server_ctx.destroy(linger=0)


def handshakes(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Part 2: real CURVE handshakes, authenticator + big store vs no ZAP handler."""
    clients = [tuple(z85.decode(k) for k in zmq.curve_keypair()) for _ in range(args.clients)]
    pub, sec = zmq.curve_keypair()
    server_keys = (z85.decode(pub), z85.decode(sec))
    store, store_kind = _big_store(args, work, [c[0] for c in clients])
    kinds = ["none", "curvecert", "bare"]
    results: dict[str, list[float]] = {f"{k}{m}": [] for k in kinds for m in ("", " serial")}
    try:
        for rnd in range(args.rounds):
            for name in kinds[rnd % 3:] + kinds[:rnd % 3]:  # rotate the order
                rate = handshake_round(clients, server_keys, name, store, serial=False)  # type: ignore[arg-type]
                results[name].append(rate)
                serial = handshake_round(clients[:args.serial], server_keys, name, store,  # type: ignore[arg-type]
                                         serial=True)
                results[f"{name} serial"].append(serial)
                print(f"  round {rnd + 1} {name:9s} concurrent {rate:7.0f}/s  "
                      f"serial {serial:7.0f}/s", flush=True)
    finally:
        if hasattr(store, "stop"):
            store.stop()
    med = {k: round(statistics.median(v), 1) for k, v in results.items()}

    def paired(a: str, b: str) -> list[float]:
        # All kinds run back to back in each round: the per-round ratio cancels slow
        # drifts in what else the shared machine is doing; headlines are their medians.
        return [x / y for x, y in zip(results[a], results[b], strict=True)]

    pairs, serial_pairs = paired("curvecert", "none"), paired("curvecert serial", "none serial")
    bare_pairs = paired("bare", "none")
    bare_serial = paired("bare serial", "none serial")
    return {
        "clients": args.clients, "serial_clients": args.serial, "store_size": args.store,
        "store": store_kind, "rounds": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "median_per_s": med,
        "round_ratios_concurrent": [round(x, 3) for x in pairs],
        "round_ratios_serial": [round(x, 3) for x in serial_pairs],
        "ratio_concurrent": round(statistics.median(pairs), 3),
        "ratio_serial": round(statistics.median(serial_pairs), 3),
        "ratio_of_medians_concurrent": round(med["curvecert"] / med["none"], 3),
        "bare_zap_ratio_concurrent": round(statistics.median(bare_pairs), 3),
        "bare_zap_ratio_serial": round(statistics.median(bare_serial), 3),
        "note": "bare = a REP loop answering 200 without looking: the floor any in-process "
                "ZAP handler pays (two extra thread hand-offs per handshake)",
    }


def _idlest_cpu(cpus: set[int]) -> int:
    """The CPU (of `cpus`) that was idle the most over the last 0.3 s (/proc/stat)."""
    def idle() -> dict[int, int]:
        out = {}
        try:
            with open("/proc/stat") as fh:
                for line in fh:
                    name, *fields = line.split()
                    if name.startswith("cpu") and name != "cpu":
                        out[int(name[3:])] = int(fields[3]) + int(fields[4])
        except OSError:
            pass
        return out

    before = idle()
    time.sleep(0.3)
    after = idle()
    scores = {c: after.get(c, 0) - before.get(c, 0) for c in cpus}
    return max(sorted(scores), key=lambda c: scores[c])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a shorter run (< 60 s)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "zap.json"))
    ap.add_argument("--only", choices=["decisions", "handshakes"],
                    help="run one part (the JSON then holds only that part)")
    ap.add_argument("--rounds", type=int, help="handshake rounds (default 4 quick, 8 full)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the decision part to one CPU")
    args = ap.parse_args()
    args.n = 800 if args.quick else 4000
    args.reps = 7 if args.quick else 11
    args.decision_store = 1000
    args.clients = 200
    args.serial = 50 if args.quick else 100
    args.store = 100_000
    args.rounds = args.rounds or (6 if args.quick else 12)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zapbench-") as tmp:
        work = Path(tmp)
        dec: dict[str, Any] = {}
        hs: dict[str, Any] = {}
        if args.only != "handshakes":
            all_cpus = os.sched_getaffinity(0)
            pinned = None
            if not args.no_pin and len(all_cpus) > 1:
                # Two threads ping-ponging across two shared cores give bimodal rates
                # (PYZMQ.md §6); on one CPU every handler sees the same, stable conditions.
                pinned = _idlest_cpu(all_cpus)
                os.sched_setaffinity(0, {pinned})
            where = f" pinned to CPU {pinned}" if pinned is not None else ""
            print(f"decisions (inproc ZAP){where}:", flush=True)
            try:
                dec = decisions(args, work)
            finally:
                os.sched_setaffinity(0, all_cpus)
            dec["pinned_cpu"] = pinned
        if args.only != "decisions":
            print("handshakes (CURVE over loopback TCP, all CPUs):", flush=True)
            hs = handshakes(args, work)
    result = {
        "benchmark": "zap", "quick": args.quick, "requests_per_rep": args.n,
        "reps": args.reps, "window": WINDOW,
        "machine": {"python": platform.python_version(), "pyzmq": zmq.pyzmq_version(),
                    "libzmq": zmq.zmq_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "decisions": dec, "handshakes": hs,
        "seconds": round(time.perf_counter() - started, 1),
        "sha": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12],
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    if dec:
        print("\nratios (curvecert vs pyzmq / vs bare), REQ and DEALER:")
        for scenario, r in dec["ratios"].items():
            print(f"  {scenario:16s} REQ {r['req_vs_pyzmq']:5.2f}x / {r['req_vs_bare']:4.2f}x   "
                  f"DEALER {r['dealer_vs_pyzmq']:5.2f}x / {r['dealer_vs_bare']:4.2f}x")
    if hs:
        print(f"handshakes vs no ZAP: concurrent {hs['ratio_concurrent']:.3f}  "
              f"serial {hs['ratio_serial']:.3f}  ({hs['store']}); bare REP handler: "
              f"{hs['bare_zap_ratio_concurrent']:.3f} / {hs['bare_zap_ratio_serial']:.3f}")
    print(f"wrote {path} in {result['seconds']}s")


if __name__ == "__main__":
    main()
