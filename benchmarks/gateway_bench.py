"""Gateway revocation: how fast a removed key is cut off, and what the per-message check costs.

Both parts run the gateway's relay (`curvecert.serve.gatewayrelay.GatewayRelay`, the
loop `serve-auth --front/--back` runs) in this process, behind a real CURVE front socket on
loopback TCP, a real `Authenticator` and a watched `CertStore`; the "application" is a
plain socket on loopback TCP.

(a) `revocation`: a client sends a message every 50 ms and keeps its connection open; the
    key is removed from the store (`store remove`'s library call) at a random moment.
    Reported per trial: removal -> the store's new snapshot (the peer: the store's own
    reload latency, which bounds any revocation), removal -> the relay's cache emptied
    (from then on every message of that key is dropped), and the send time of the last
    message that still reached the application. p50/p99 over the trials.
(b) `throughput`: one client sends as fast as it can; messages per second reaching the
    application through the relay as the gateway runs it (`check`: the check armed only
    while a revoked peer may be connected), with every message checked (`check-every`:
    the cost while armed), without the check (`nocheck`), and through
    `zmq.proxy_steerable` (libzmq's C proxy, the gateway before revocation); interleaved
    in one run, for a PULL front (push-pull) and a ROUTER front (router-dealer). Ratios
    use the best round of each (interference on a shared machine only slows a round
    down); medians are reported too.

Usage: python benchmarks/gateway_bench.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curvecert import store  # noqa: E402
from curvecert.auth.authenticator import Authenticator  # noqa: E402
from curvecert.auth.policy import DomainPolicy, Policy  # noqa: E402
from curvecert.auth.recheck import Rechecker  # noqa: E402
from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.serve.gatewayrelay import GatewayRelay as Relay  # noqa: E402
from curvecert.store.watch import CertStore  # noqa: E402

_STAMP = struct.Struct("<d")


class Rig:
    """Front (CURVE) -> relay/proxy -> back -> app, in one context."""

    def __init__(self, directory: Path, mode: str, front_type: int):
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.server = Certificate.new(name="gateway")
        self.store = CertStore(directory).start()
        self.published: list[float] = []
        self.store.on_reload.append(lambda snap: self.published.append(time.monotonic()))
        policy = Policy({"*": DomainPolicy(curve=self.store)})
        self.checker = Rechecker(policy) if mode.startswith("check") else None
        checker = self.checker

        def admitted(request: Any, decision: Any) -> None:
            if checker is not None and decision.status == "200":
                checker.admit(decision.user_id.decode())

        self.auth = Authenticator(self.ctx, policy, log_decisions=False,
                                  on_decision=admitted).start()
        self.cut: list[float] = []
        if self.checker is not None:
            self.store.on_reload.append(lambda snap: self.cut.append(time.monotonic()))
        self.front = self.ctx.socket(front_type)
        self.front.linger = 0
        self.server.apply_server(self.front)
        self.endpoint = f"tcp://127.0.0.1:{self.front.bind_to_random_port('tcp://127.0.0.1')}"
        routed = front_type == zmq.ROUTER
        self.app = self.ctx.socket(zmq.ROUTER if routed else zmq.PULL)
        self.app.linger = 0
        port = self.app.bind_to_random_port("tcp://127.0.0.1")
        self.back = self.ctx.socket(zmq.DEALER if routed else zmq.PUSH)
        self.back.linger = 0
        self.back.connect(f"tcp://127.0.0.1:{port}")
        self.ctl = self.ctx.socket(zmq.PAIR)
        self.ctl.bind(f"inproc://ctl-{id(self)}")
        pipe = self.ctx.socket(zmq.PAIR)
        pipe.connect(f"inproc://ctl-{id(self)}")
        self._pipe = pipe
        if mode == "proxy":
            target: Any = lambda: zmq.proxy_steerable(self.front, self.back, None, pipe)  # noqa: E731
        else:
            target = Relay(self.front, self.back, pipe, self.checker,
                           gated=mode == "check").run
        self.thread = threading.Thread(target=self._guard(target), daemon=True)
        self.thread.start()
        self.kind = zmq.DEALER if routed else zmq.PUSH

    @staticmethod
    def _guard(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except zmq.ZMQError:
                pass
        return run

    def client(self, cert: Certificate) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
        cctx: zmq.Context[Any] = zmq.Context()
        sock = cctx.socket(self.kind)
        sock.linger = 0
        sock.sndhwm = 100_000
        cert.apply_client(sock, self.server)
        sock.connect(self.endpoint)
        return cctx, sock

    def close(self) -> None:
        self.ctl.send(b"TERMINATE")
        self.thread.join(5)
        for s in (self.front, self.back, self.app, self.ctl, self._pipe):
            s.close(linger=0)
        self.auth.stop()
        self.store.stop()
        self.ctx.destroy(linger=0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def revocation(trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "clients"
        victim, other = Certificate.new(name="victim"), Certificate.new(name="other")
        store.add_certificate(directory, victim)
        store.add_certificate(directory, other)
        rig = Rig(directory, "check", zmq.PULL)
        cctx, sock = rig.client(victim)
        stop = threading.Event()

        def sender() -> None:
            while not stop.is_set():
                sock.send(_STAMP.pack(time.monotonic()))
                stop.wait(0.05)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        publish, cut, last_after = [], [], []
        try:
            for _ in range(trials):
                assert rig.app.poll(5000), "the victim's messages do not arrive"
                while rig.app.poll(0):
                    rig.app.recv()
                time.sleep(random.uniform(0.0, 0.05))  # a random phase against the sender
                n_pub, n_cut = len(rig.published), len(rig.cut)
                t0 = time.monotonic()
                store.remove(directory, victim.public_txt)
                latest = 0.0
                deadline = time.monotonic() + 0.6
                while time.monotonic() < deadline:
                    if rig.app.poll(20):
                        latest = max(latest, _STAMP.unpack(rig.app.recv())[0])
                publish.append(rig.published[n_pub] - t0)
                cut.append(rig.cut[n_cut] - t0)
                last_after.append(max(0.0, latest - t0))
                store.add_certificate(directory, victim)
        finally:
            stop.set()
            thread.join(2)
            sock.close(linger=0)
            cctx.destroy(linger=0)
            rig.close()

    def summary(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": round(pct(xs, 50) * 1000, 1), "p99_ms": round(pct(xs, 99) * 1000, 1),
                "max_ms": round(max(xs) * 1000, 1)}

    return {"trials": trials, "store_published": summary(publish),
            "relay_cut_off": summary(cut), "last_delivered_send_after_removal": summary(last_after)}


def throughput_once(mode: str, front_type: int, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "clients"
        client = Certificate.new(name="client")
        store.add_certificate(directory, client)
        rig = Rig(directory, mode, front_type)
        cctx, sock = rig.client(client)
        try:
            payload = b"x" * 64
            sock.send(payload)  # the handshake, outside the timing
            assert rig.app.poll(10_000)
            rig.app.recv_multipart()

            def blast() -> None:
                for _ in range(n):
                    sock.send(payload)

            sender = threading.Thread(target=blast, daemon=True)
            t0 = time.perf_counter()
            sender.start()
            for _ in range(n):
                rig.app.recv_multipart()
            elapsed = time.perf_counter() - t0
            sender.join()
            return n / elapsed
        finally:
            sock.close(linger=0)
            cctx.destroy(linger=0)
            rig.close()


def throughput(rounds: int, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, front_type in (("push-pull", zmq.PULL), ("router-dealer", zmq.ROUTER)):
        rates: dict[str, list[float]] = {"check": [], "check-every": [], "nocheck": [],
                                         "proxy": []}
        for _ in range(rounds):
            for mode in rates:
                rates[mode].append(throughput_once(mode, front_type, n))
        # best of the rounds: on a shared machine interference only ever slows a round
        best = {m: max(v) for m, v in rates.items()}
        med = {m: statistics.median(v) for m, v in rates.items()}
        out[label] = {"msgs_per_s_best": {m: round(v) for m, v in best.items()},
                      "msgs_per_s_median": {m: round(v) for m, v in med.items()},
                      "check_vs_nocheck": round(best["check"] / best["nocheck"], 3),
                      "check_every_vs_nocheck": round(best["check-every"] / best["nocheck"], 3),
                      "check_vs_c_proxy": round(best["check"] / best["proxy"], 3),
                      "median_check_vs_nocheck": round(med["check"] / med["nocheck"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    trials, rounds, n = (10, 3, 50_000) if args.quick else (40, 11, 100_000)
    result = {"python": platform.python_version(), "zmq": zmq.zmq_version(),
              "pyzmq": zmq.pyzmq_version(), "revocation": revocation(trials),
              "throughput": throughput(rounds, n)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
