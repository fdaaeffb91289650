"""End-to-end demo: one `curvecert serve-auth` daemon decides who may talk to an application.

    python examples/demo.py

What happens (each step prints ✓ or ✗; exit status 0 only if every step passed):

1. `curvecert new` makes a server certificate and a client certificate ("alice").
2. `curvecert store add` trusts alice's public certificate.
3. `curvecert serve-auth` starts as a separate process on an ipc socket.
4. This process plays the application: a `ZapForwarder` (bound first, so CURVE can never
   run without authentication) and then a CURVE server socket.
5. alice connects: admitted, her message arrives, and the server sees her User-Id.
6. `curvecert store remove` revokes alice; the daemon notices the change on its own.
7. alice connects again: refused.

Everything lives in a temporary directory that is removed at the end, and the daemon is
stopped with SIGTERM (it removes its socket file and exits 0).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

ROOT = Path(__file__).resolve().parent.parent
try:  # run from a checkout without `pip install -e .`
    import curvecert  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT))

from curvecert.certs.cert import Certificate  # noqa: E402
from curvecert.serve.forwarder import ZapForwarder  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
ENV.pop("CURVECERT_STORE", None)


class Failed(Exception):
    """A step did not do what it should."""


def step(ok: bool, text: str) -> None:
    print(f"{'✓' if ok else '✗'} {text}", flush=True)
    if not ok:
        raise Failed(text)


def cli(*args: str) -> str:
    """Run `curvecert ARGS` like a user would; return its stdout."""
    proc = subprocess.run([sys.executable, "-m", "curvecert", *args], capture_output=True,
                          text=True, env=ENV, timeout=30)
    if proc.returncode != 0:
        raise Failed(f"curvecert {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


class Daemon:
    """`curvecert serve-auth` in a child process; its stderr is shown as it arrives."""

    def __init__(self, store: Path, endpoint: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curvecert", "serve-auth", "--store", str(store),
             "--zap-endpoint", endpoint], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        assert self.proc.stderr is not None
        self.fd = self.proc.stderr.fileno()
        os.set_blocking(self.fd, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)
        self.buf = b""

    def lines(self, timeout: float = 0.0) -> list[str]:
        """Complete stderr lines that arrived within `timeout` seconds."""
        if self.sel.select(timeout):
            try:
                self.buf += os.read(self.fd, 65536)
            except BlockingIOError:
                pass
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode("utf-8", "replace") for line in done]

    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.lines(0.1):
                show(line)
                if text in line:
                    return line
        raise Failed(f"serve-auth did not print {text!r} (exit {self.proc.poll()})")

    def show_new(self, timeout: float = 0.5, *, last: bool = False) -> None:
        """Print the daemon's decision lines for the last step (waits briefly for them)."""
        lines = self.lines(timeout)
        for line in lines[-1:] if last else lines:
            show(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        for line in self.lines(0):
            show(line)
        self.sel.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def show(line: str) -> None:
    if line.strip():
        print(f"      serve-auth | {line}", flush=True)


class Application:
    """The application's side: the forwarder first, then a CURVE server socket."""

    def __init__(self, server: Certificate, zap_endpoint: str):
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.server = server
        self.forwarder = ZapForwarder(self.ctx, zap_endpoint).start()  # BEFORE bind
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.linger = 0
        server.apply_server(self.sock)
        self.mon = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")

    def connect(self, client: Certificate) -> tuple[bool, str]:
        """One client connection: (admitted, User-Id or the refusal status)."""
        cctx: zmq.Context[Any] = zmq.Context()
        push = cctx.socket(zmq.PUSH)
        push.linger = 0
        client.apply_client(push, self.server)
        try:
            push.connect(f"tcp://127.0.0.1:{self.port}")
            if not self.mon.poll(10_000):
                raise Failed("no handshake happened within 10 s")
            event = recv_monitor_message(self.mon)
            if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return False, f"status {event['value']}"
            push.send(b"Hello from alice")
            if not self.sock.poll(10_000):
                raise Failed("admitted, but the message never arrived")
            frame = self.sock.recv(copy=False)
            return True, f"{frame.bytes.decode()!r}, User-Id {frame.get('User-Id')}"
        finally:
            push.close(linger=0)
            cctx.term()

    def close(self) -> None:
        self.sock.disable_monitor()
        self.mon.close(linger=0)
        self.sock.close(linger=0)
        self.forwarder.stop()
        self.ctx.term()


def run(tmp: Path) -> None:
    store = tmp / "clients"
    endpoint = f"ipc://{tmp}/run/zap.sock"

    cli("new", str(tmp / "server"), "--name", "demo server")
    cli("new", str(tmp / "alice"), "--name", "alice")
    step(True, "1. certificates made: server, alice (curvecert new)")

    cli("store", "add", "--store", str(store), str(tmp / "alice"))
    step(len(list(store.iterdir())) == 1, f"2. alice trusted (curvecert store add → {store.name}/)")

    daemon = Daemon(store, endpoint)
    app = None
    try:
        daemon.wait_for("ready on")
        step(True, f"3. curvecert serve-auth running on {endpoint}")

        app = Application(Certificate.load(tmp / "server_secret"), endpoint)
        step(True, f"4. application: ZapForwarder bound, then CURVE server on port {app.port}")

        alice = Certificate.load(tmp / "alice_secret")
        admitted, detail = app.connect(alice)
        daemon.show_new()
        step(admitted, f"5. alice admitted: {detail}")

        cli("store", "remove", "--store", str(store), str(tmp / "alice"))
        step(not list(store.iterdir()), "6. alice revoked (curvecert store remove)")

        # The daemon's watcher applies the change within moments; retry (bounded) so the
        # demo does not depend on how fast this machine's file events are.
        deadline = time.monotonic() + 10
        attempts = 0
        while True:
            attempts += 1
            admitted, detail = app.connect(alice)
            if not admitted or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # give the file event a moment; this is a demo, not a test
        daemon.show_new(last=True)
        step(not admitted, f"7. alice refused on a new connection ({detail}; "
                           f"connection attempt {attempts} after the removal)")
    finally:
        if app is not None:
            app.close()
        code = daemon.stop()
    step(code == 0 and not (tmp / "run" / "zap.sock").exists(),
         "   serve-auth stopped with SIGTERM: exit 0, socket file removed")


def main() -> int:
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="curvecert-demo-") as tmp:
            run(Path(tmp))
    except Failed as exc:
        if not str(exc).startswith(("1.", "2.", "3.", "4.", "5.", "6.", "7.", "  ")):
            print(f"✗ {exc}", flush=True)
        return 1
    print(f"✓ demo finished in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
