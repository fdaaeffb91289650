"""One load-benchmark scenario: the server process, its authenticator and the client workers.

Started by `run.py` with one JSON argument; prints one JSON object on stdout. The server
is a CURVE ROUTER socket (listen backlog 4096) on 127.0.0.1 whose handshakes are decided by

- `embedded`: a `curvecert.Authenticator` with a watched `CertStore` in this process; or
- `serve-auth`: a real `curvecert serve-auth` daemon (its own process, ipc endpoint, JSON
  decision log to /dev/null) reached through a `ZapForwarder` in this process.

Every message the ROUTER receives must carry a `User-Id` (set by ZAP) equal to the key
the client claims in the message and present in the trusted set; the reply says `ok` or
why not, and the server counts mismatches itself. Once a second it samples the resident
memory (VmRSS) and open file descriptors of this process and of the daemon.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loadlib
import zmq
from zmq.utils import z85

from curvecert.auth.authenticator import Authenticator
from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder
from curvecert.store.watch import CertStore

__all__ = ["main"]

HERE = Path(__file__).resolve().parent


def _log(msg: str) -> None:
    print(f"[load {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _start_daemon(store_dir: str, endpoint: str, errlog: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(loadlib.ROOT), NO_COLOR="1")
    env.pop("CURVECERT_STORE", None)
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "curvecert", "serve-auth", "--store", store_dir,
             "--zap-endpoint", endpoint, "--log-format", "json", "--log-stream", "stdout"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
            preexec_fn=loadlib.raise_nofile)
    deadline = time.monotonic() + 120
    while b"ready on" not in errlog.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"serve-auth did not start:\n{errlog.read_text(errors='replace')}")
        time.sleep(0.05)  # polling a log file for the readiness line (not a test)
    return proc


def _sample(t: float, decisions: int, received: int, daemon: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"t": round(t, 2), "decisions": decisions, "received": received,
                           "server_rss_kb": loadlib.rss_kb(), "server_fds": loadlib.fd_count(),
                           **{f"server_{k}": v for k, v in loadlib.heap_kb().items()}}
    if daemon is not None:
        row["daemon_rss_kb"] = loadlib.rss_kb(daemon)
        row["daemon_fds"] = loadlib.fd_count(daemon)
    return row


def main() -> None:
    cfg = json.loads(sys.argv[1])
    mode = cfg["mode"]
    loadlib.raise_nofile()
    trusted = {z85.encode(pub) for pub, _ in loadlib.read_keypairs(Path(cfg["blob"]))}
    ctx: zmq.Context[Any] = zmq.Context(io_threads=cfg.get("io_threads", 1))
    ctx.max_sockets = 65536
    tmp = tempfile.TemporaryDirectory(prefix="curvecert-load-")
    daemon: subprocess.Popen[bytes] | None = None
    store: CertStore | None = None
    auth: Authenticator | None = None
    fwd: ZapForwarder | None = None
    t_setup = time.monotonic()
    if mode == "embedded":
        store = CertStore(cfg["store"], watch=True).start()
        auth = Authenticator(ctx)
        auth.configure_curve(store=store)
        auth.start()
        _log(f"embedded authenticator, store of {len(store)} certificates")
    else:
        endpoint = f"ipc://{tmp.name}/zap.sock"
        daemon = _start_daemon(cfg["store"], endpoint, Path(tmp.name) / "serve-auth.err")
        fwd = ZapForwarder(ctx, endpoint, timeout=cfg["forwarder_timeout"]).start()
        _log(f"serve-auth pid {daemon.pid} on {endpoint}, forwarder deadline "
             f"{cfg['forwarder_timeout']}s")
    setup_s = time.monotonic() - t_setup

    def decisions() -> int:
        if auth is not None:
            return auth.requests
        assert fwd is not None
        st = fwd.stats
        return st.answered + st.timed_out + st.unreachable

    server_cert = Certificate.new()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.backlog = 4096
    server_cert.apply_server(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    daemon_pid = daemon.pid if daemon is not None else None

    gc.collect()
    idle_before = _sample(0, decisions(), 0, daemon_pid)

    workers = []
    per = cfg["clients"] // cfg["workers"]
    extra = cfg["clients"] % cfg["workers"]
    n_keys = len(trusted)
    for w in range(cfg["workers"]):
        wcfg = {"endpoint": f"tcp://127.0.0.1:{port}", "server_key": server_cert.public_txt,
                "blob": cfg["blob"], "key_start": w * n_keys // cfg["workers"],
                "key_stop": (w + 1) * n_keys // cfg["workers"],
                "slots": per + (1 if w < extra else 0), "duration": cfg["duration"],
                "drain": cfg["drain"], "verdict_timeout": cfg["verdict_timeout"],
                "untrusted_share": cfg["untrusted_share"], "seed": cfg["seed"] * 100 + w}
        workers.append(subprocess.Popen([sys.executable, str(HERE / "client.py"),
                                         json.dumps(wcfg)], stdout=subprocess.PIPE,
                                        preexec_fn=loadlib.raise_nofile))
    t0 = time.monotonic()
    cpu0 = loadlib.cpu_s(), (loadlib.cpu_s(daemon_pid) if daemon_pid else 0.0)
    received = 0
    server_wrong: dict[str, int] = {"no-user-id": 0, "user-id-mismatch": 0,
                                    "user-id-untrusted": 0}
    samples = [idle_before | {"t": 0.0}]
    next_sample = t0 + 1.0
    next_progress = t0 + 5.0
    recv, send = router.recv_multipart, router.send_multipart
    while any(p.poll() is None for p in workers):
        if router.poll(100):
            while True:
                try:
                    frames = recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                received += 1
                claimed = frames[-1].bytes
                try:
                    user_id = frames[-1].get("User-Id").encode("ascii")
                except (zmq.ZMQError, AttributeError):
                    user_id = b""
                if not user_id:
                    verdict = b"no-user-id"
                elif user_id != claimed:
                    verdict = b"user-id-mismatch"
                elif user_id not in trusted:
                    verdict = b"user-id-untrusted"
                else:
                    verdict = b"ok"
                if verdict != b"ok":
                    server_wrong[verdict.decode()] += 1
                send([frames[0].bytes, verdict])
        now = time.monotonic()
        if now >= next_sample:
            samples.append(_sample(now - t0, decisions(), received, daemon_pid))
            next_sample += 1.0
        if now >= next_progress:
            last = samples[-1]
            _log(f"{mode}: t={last['t']:.0f}s decisions={last['decisions']} "
                 f"rss={last['server_rss_kb'] // 1024}MiB fds={last['server_fds']}"
                 + (f" daemon rss={last['daemon_rss_kb'] // 1024}MiB "
                    f"fds={last['daemon_fds']}" if daemon_pid else ""))
            next_progress += 5.0
    load_s = time.monotonic() - t0
    cpu = {"server": round(loadlib.cpu_s() - cpu0[0], 2)}
    if daemon_pid:
        cpu["daemon"] = round(loadlib.cpu_s(daemon_pid) - cpu0[1], 2)
    results = []
    for p in workers:
        out, _ = p.communicate()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))

    # After the load: let the server drop the last connections, then sample it idle.
    settle_until = time.monotonic() + 10
    while (loadlib.fd_count() > idle_before["server_fds"]
           and time.monotonic() < settle_until):
        router.poll(50)
    gc.collect()
    idle_after = _sample(time.monotonic() - t0, decisions(), received, daemon_pid)
    loadlib.malloc_trim()
    idle_after["server_rss_kb_after_malloc_trim"] = loadlib.rss_kb()
    counters = auth.counters if auth is not None else None
    fwd_stats = fwd.stats.__dict__ if fwd is not None else None

    router.close(linger=0)
    if auth is not None:
        auth.stop()
    if store is not None:
        store.stop()
    if fwd is not None:
        fwd.stop()
    daemon_exit = None
    if daemon is not None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon_exit = daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon_exit = daemon.wait(5)
    ctx.term()
    tmp.cleanup()
    print(json.dumps({"mode": mode, "setup_s": setup_s, "load_s": load_s,
                      "received": received, "cpu_s": cpu, "server_wrong": server_wrong,
                      "authenticator_counters": counters, "forwarder_stats": fwd_stats,
                      "daemon_exit": daemon_exit, "idle_before": idle_before,
                      "idle_after": idle_after, "samples": samples, "workers": results}))


if __name__ == "__main__":
    main()
