"""Shared parts of the fail-closed tests (issue 11 §1-2): real CURVE servers, a known and
a stranger client, a handshake verdict that treats a stall as "not admitted", a small
policy-answering daemon stand-in, and fault injection limited to one handler's thread.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.policy import DomainPolicy, Policy, answer
from curvecert.certs.cert import Certificate
from curvecert.serve.runtime import publish_key

SERVER = Certificate.new()
KNOWN = Certificate.new()
STRANGER = Certificate.new()
POLICY = Policy({"*": DomainPolicy(curve=StaticKeys.from_keys([KNOWN.public_key]))})

#: The faults of issue 11: an unexpected exception, EMFILE, a thread that cannot start.
FAULTS: dict[str, Callable[[], BaseException]] = {
    "exception": lambda: ValueError("injected"),
    "emfile": lambda: zmq.ZMQError(errno.EMFILE),
    "thread": lambda: RuntimeError("can't start new thread"),
}


def outcome(ctx: zmq.Context[Any], endpoint: str, client: Certificate,
            timeout: float = 5.0, server: Certificate | bytes = SERVER) -> int | None:
    """One CURVE handshake against `SERVER`: 200 admitted, the ZAP status when refused,
    None when nothing happened within `timeout` (a stalled handshake: not admitted)."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    client.apply_client(sock, server)
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    try:
        sock.connect(endpoint)
        if not mon.poll(int(timeout * 1000)):
            return None
        event = recv_monitor_message(mon)
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return 200
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return int(event["value"])
        return -1
    finally:
        sock.disable_monitor()
        mon.close(linger=0)
        sock.close(linger=0)


def server_socket(ctx: zmq.Context[Any]) -> tuple[zmq.Socket[Any], str]:
    """A bound CURVE ROUTER server in `ctx` on a loopback port."""
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    SERVER.apply_server(sock)
    sock.bind("tcp://127.0.0.1:*")
    return sock, sock.last_endpoint.decode()


def known_admitted_again(ctx: zmq.Context[Any], endpoint: str, timeout: float = 10.0,
                         server: Certificate | bytes = SERVER) -> None:
    """The known key is admitted again (bounded); the stranger is refused, not stalled."""
    from tests.faults.support import wait_outcome

    wait_outcome(lambda: outcome(ctx, endpoint, KNOWN, 2.0, server) or 0, 200, timeout)
    assert outcome(ctx, endpoint, STRANGER, 5.0, server) not in (200, None)


class PolicyDaemon:
    """A stand-in for `serve-auth`: a ROUTER in its own context answering with `POLICY`."""

    def __init__(self, endpoint: str, server: Certificate | None = None, *,
                 silent: bool = False) -> None:
        self.context: zmq.Context[Any] = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        if server is None and endpoint.startswith("ipc://"):
            server = Certificate.new()  # ipc is CURVE too: the forwarder pins this key
        if server is not None:
            server.apply_server(self.sock)
        self.sock.bind(endpoint)
        if endpoint.startswith("ipc://") and server is not None:
            publish_key(endpoint[len("ipc://"):], server.public_key)
        self.silent = silent
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            frames = self.sock.recv_multipart()
            self.seen += 1
            if self.silent:  # a hung daemon: swallows every request
                continue
            split = frames.index(b"")
            self.sock.send_multipart([*frames[:split + 1], *answer(POLICY, frames[split + 1:])])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close(linger=0)
        self.context.term()


class Fault:
    """Makes patched calls raise while `on`, only in threads whose name starts with
    `thread_prefix` (so the test's own sockets are never affected)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, thread_prefix: str) -> None:
        self.mp = monkeypatch
        self.prefix = thread_prefix
        self.error: Callable[[], BaseException] = FAULTS["exception"]
        self.on = False
        self.hits = 0

    def _active(self) -> bool:
        return self.on and threading.current_thread().name.startswith(self.prefix)

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """`func` that raises the current fault while it is on (in the handler's thread)."""
        def faulty(*args: Any, **kwargs: Any) -> Any:
            if self._active():
                self.hits += 1
                raise self.error()
            return func(*args, **kwargs)
        return faulty

    def patch(self, target: Any, name: str) -> None:
        """Patch `target.name` with the faulty wrapper."""
        self.mp.setattr(target, name, self.wrap(getattr(target, name)))

    @contextmanager
    def active(self, error: Callable[[], BaseException]) -> Iterator[None]:
        self.error, self.on = error, True
        try:
            yield
        finally:
            self.on = False
