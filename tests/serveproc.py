"""Helpers for tests that run `curvecert serve-auth` as a real process and handshake with it.

`ServeAuth` starts the daemon with `python -m curvecert serve-auth ...`, waits (bounded) for
its readiness line on stderr, collects its output without threads (non-blocking reads
driven by `selectors`), and is always killed by `close()`. `handshake()` runs one real
CURVE handshake against a server socket in the caller's context and reports the outcome
as the server saw it (monitor events), so no test waits for a timeout to prove a denial.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert.certs.cert import Certificate

__all__ = ["Outcome", "ServeAuth", "Server", "handshake", "retry_until"]

READY = re.compile(r"curvecert: INFO: ready on (.+)")


class _Stream:
    def __init__(self, pipe: Any):
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.lines: list[str] = []
        self.eof = False

    def pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
                return
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            self.lines.extend(line.decode("utf-8", "replace") for line in done)


class ServeAuth:
    """One `curvecert serve-auth` process; use as a context manager."""

    def __init__(self, args: list[str], env: Mapping[str, str], *, ready_timeout: float = 20,
                 pass_fds: tuple[int, ...] = ()):
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "curvecert", "serve-auth", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=dict(env), pass_fds=pass_fds)
        self.out = _Stream(self.proc.stdout)
        self.err = _Stream(self.proc.stderr)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.out.fd, selectors.EVENT_READ, self.out)
        self.sel.register(self.err.fd, selectors.EVENT_READ, self.err)
        self.where: list[str] = []
        if ready_timeout:
            try:
                line = self.wait_stderr(READY, ready_timeout)
            except BaseException:
                self.close()
                raise
            self.where = READY.search(line).group(1).split(", ")  # type: ignore[union-attr]

    def secure(self, sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
        """Make `sock` a CURVE client pinned to the key the daemon published next to its
        ipc socket (the daemon's ipc socket is a CURVE server); returns `sock`."""
        from curvecert.serve.runtime import read_key

        key = read_key(self.endpoint[len("ipc://"):], {os.geteuid()})
        Certificate.new().apply_client(sock, key)
        return sock

    @property
    def endpoint(self) -> str:
        """The ZAP endpoint from the readiness line."""
        return self.where[0]

    def _pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            key.data.pump()
        if self.out.eof and self.err.eof:
            return

    def _wait(self, stream: _Stream, pattern: re.Pattern[str] | str, timeout: float,
              start: int = 0) -> str:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for line in stream.lines[seen:]:
                if rx.search(line):
                    return line
            seen = len(stream.lines)
            if stream.eof or time.monotonic() > deadline:
                raise AssertionError(
                    f"no line matching {rx.pattern!r} within {timeout}s "
                    f"(exit {self.proc.poll()}); stderr:\n" + "\n".join(self.err.lines)
                    + "\nstdout:\n" + "\n".join(self.out.lines[-20:]))
            self._pump(min(0.1, max(0.0, deadline - time.monotonic())))

    def wait_stderr(self, pattern: re.Pattern[str] | str, timeout: float = 10,
                    start: int = 0) -> str:
        """The first stderr line (from index `start`) matching `pattern`, waiting for it."""
        return self._wait(self.err, pattern, timeout, start)

    def wait_stdout(self, pattern: re.Pattern[str] | str, timeout: float = 10,
                    start: int = 0) -> str:
        """The first stdout line (from index `start`) matching `pattern`, waiting for it."""
        return self._wait(self.out, pattern, timeout, start)

    def drain(self) -> None:
        """Read what the process wrote so far (a full pipe would block its logging)."""
        self._pump(0)

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (each must parse)."""
        self._pump(0)
        return [json.loads(line) for line in self.out.lines if line.strip()]

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process."""
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15) -> int:
        """Wait for the process to exit and collect the rest of its output."""
        code = self.proc.wait(timeout)
        while not (self.out.eof and self.err.eof):
            self._pump(0.1)
        return code

    def close(self) -> None:
        """Kill the process if still running and release the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sel.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> ServeAuth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and return its exit code."""
        self.send_signal(sig)
        return self.wait_exit()


@dataclass
class Outcome:
    """How the server saw one handshake: status 200/400/500 and the User-Id on success."""

    status: int
    user_id: str | None = None


class Server:
    """A CURVE server socket (PULL) in the caller's context, with a handshake monitor."""

    def __init__(self, ctx: zmq.Context[Any], cert: Certificate, *, domain: str = ""):
        self.cert = cert
        self.sock = ctx.socket(zmq.PULL)
        self.sock.linger = 0
        cert.apply_server(self.sock)
        if domain:
            self.sock.zap_domain = domain.encode()
        self.mon = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")

    def close(self) -> None:
        self.sock.disable_monitor()
        self.mon.close(linger=0)
        self.sock.close(linger=0)


def handshake(server: Server, client: Certificate, timeout: float = 10) -> Outcome:
    """Connect `client` to `server` once; the server's verdict (and User-Id if admitted)."""
    cctx: zmq.Context[Any] = zmq.Context()
    push = cctx.socket(zmq.PUSH)
    push.linger = 0
    client.apply_client(push, server.cert)
    try:
        push.connect(f"tcp://127.0.0.1:{server.port}")
        if not server.mon.poll(int(timeout * 1000)):
            raise AssertionError("no handshake event")
        event = recv_monitor_message(server.mon)
        if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return Outcome(int(event["value"]))
        push.send(b"hello")
        if not server.sock.poll(int(timeout * 1000)):
            raise AssertionError("admitted but no message arrived")
        frame = server.sock.recv(copy=False)
        return Outcome(200, frame.get("User-Id"))
    finally:
        push.close(linger=0)
        cctx.term()


def retry_until(attempt: Callable[[], Outcome], want: Callable[[Outcome], bool],
                timeout: float = 10) -> Outcome:
    """Repeat `attempt` until `want(outcome)`; bounded; returns the matching outcome."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = attempt()
        if want(outcome):
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"last outcome {outcome} after {timeout}s")


def zap_asker(ctx: zmq.Context[Any], daemon: ServeAuth) -> Callable[[Certificate], int]:
    """Ask the daemon's ZAP endpoint directly, as a forwarder would: `ask(cert)` sends one
    CURVE request for `cert`'s key and returns the reply's status code (200, 400, ...)."""
    req = daemon.secure(ctx.socket(zmq.REQ))
    req.linger = 0
    req.connect(daemon.endpoint)
    counter = [0]

    def ask(cert: Certificate) -> int:
        counter[0] += 1
        rid = str(counter[0]).encode()
        req.send_multipart([b"1.0", rid, b"", b"127.0.0.1", b"", b"CURVE", cert.public_key])
        assert req.poll(5000), f"serve-auth did not answer request {counter[0]}"
        reply = req.recv_multipart()
        assert reply[:2] == [b"1.0", rid] and len(reply) == 6
        if counter[0] % 50 == 0:
            daemon.json_lines()  # drain the decision log, or its pipe fills and blocks it
        return int(reply[2])

    return ask
