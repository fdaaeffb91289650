"""Never unbind, never open (issue 11 §1-2; docs/security.md "Never unbind, never open").

Fault injection at each socket/thread call inside every ZAP handler's loop (an exception,
EMFILE, a thread that cannot start): while the fault lasts a stranger key is never
admitted, and once it clears the known key is admitted again. And: after `stop()`, a
`with` exit or `ZapForwarder.stop()`, a CURVE server still bound in that context refuses a
stranger, while a new handler takes the endpoint over.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import curvecert.auth.aio as aio_mod
import curvecert.auth.authenticator as auth_mod
import curvecert.serve.relay as relay_mod
from curvecert.auth.aio import AsyncioAuthenticator
from curvecert.auth.authenticator import Authenticator
from curvecert.auth.endpoint import guarded
from curvecert.compat.thread import ThreadAuthenticator
from curvecert.errors import OperationalError
from curvecert.formats.zap import ZapRequest
from curvecert.serve.forwarder import ZapForwarder
from curvecert.serve.gateway import Gateway
from tests.conftest import wait_until
from tests.faults.zaphandlers import (
    FAULTS,
    KNOWN,
    POLICY,
    SERVER,
    STRANGER,
    Fault,
    PolicyDaemon,
    known_admitted_again,
    outcome,
    server_socket,
)

Ctx = zmq.Context[Any]
STALL = 1.0  # seconds a faulty handshake may take before it counts as stalled


def known_only(request: ZapRequest) -> bool:
    return bool(request.credentials and request.credentials[0] == KNOWN.public_key)


def patch_site(fault: Fault, site: str, module: Any) -> None:
    """Install `fault` at one call the handler's loop makes."""
    if site == "recv" or site == "send":
        real = module.fast_io

        def patched(sock: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
            recv, send = real(sock)
            return (fault.wrap(recv), send) if site == "recv" else (recv, fault.wrap(send))

        fault.mp.setattr(module, "fast_io", patched)
    elif site == "prepare":
        fault.patch(module, "prepare")
    elif site == "poll":
        fault.patch(zmq.Poller, "poll")
    elif site == "thread-start":
        fault.patch(threading.Thread, "start")
    else:  # pragma: no cover
        raise AssertionError(site)


def stranger_never_admitted(ctx: Ctx, endpoint: str, fault: Fault) -> None:
    for _ in range(2):
        assert outcome(ctx, endpoint, STRANGER, STALL) != 200
    assert fault.hits > 0, "the injected fault was never reached"


# --- the thread authenticator (and its compat class) ----------------------------------------

THREAD_SITES = ["recv", "send", "prepare", "poll", "thread-start"]


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("site", THREAD_SITES)
def test_thread_authenticator_faults(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, site: str,
                                     kind: str) -> None:
    fault = Fault(monkeypatch, "curvecert-authenticator")
    patch_site(fault, site, auth_mod)
    auth = Authenticator(ctx)
    auth.configure_provider("CURVE", known_only, timeout=2.0)  # the dispatch path too
    auth.start()
    server, endpoint = server_socket(ctx)
    try:
        with fault.active(FAULTS[kind]):
            stranger_never_admitted(ctx, endpoint, fault)
        known_admitted_again(ctx, endpoint)
        assert auth.running
    finally:
        server.close(linger=0)
        auth.stop()


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_thread_authenticator_start_failure_keeps_endpoint(
        ctx: Ctx, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The handler thread (and even the deny-all responder) cannot start: the endpoint is
    bound all the same; a later start takes over."""
    fault = Fault(monkeypatch, "MainThread")
    fault.patch(threading.Thread, "start")
    server, endpoint = server_socket(ctx)
    try:
        with fault.active(FAULTS[kind]):
            with pytest.raises(OperationalError):
                Authenticator(ctx).start()
            assert guarded(ctx)
            assert outcome(ctx, endpoint, STRANGER, STALL) != 200
        with Authenticator(ctx) as auth:
            auth.configure_curve(store=None)
            auth.configure_provider("CURVE", known_only)
            known_admitted_again(ctx, endpoint)
    finally:
        server.close(linger=0)


# --- the asyncio authenticator --------------------------------------------------------------

class LoopThread:
    """An asyncio loop running in a thread named for the fault filter."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="curvecert-test-aio")
        self.thread.start()

    def call(self, func: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return func()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("site", ["recv", "send", "prepare", "thread-start"])
def test_asyncio_authenticator_faults(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, site: str,
                                      kind: str) -> None:
    fault = Fault(monkeypatch, "curvecert-test-aio")
    patch_site(fault, site, aio_mod)
    lt = LoopThread()
    auth = AsyncioAuthenticator(ctx)
    auth.configure_provider("CURVE", known_only, timeout=2.0)
    lt.call(auth.start)
    server, endpoint = server_socket(ctx)
    try:
        with fault.active(FAULTS[kind]):
            stranger_never_admitted(ctx, endpoint, fault)
        known_admitted_again(ctx, endpoint)
    finally:
        server.close(linger=0)
        lt.call(auth.stop)
        lt.close()


def test_asyncio_start_before_the_loop_runs(ctx: Ctx) -> None:
    """pyzmq's behaviour (issue 13): bound at once, answering once the loop runs."""
    loop = asyncio.new_event_loop()
    auth = AsyncioAuthenticator(ctx)
    auth.configure_provider("CURVE", known_only)
    done: list[BaseException | None] = []

    def in_thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            auth.start()
            done.append(None)
        except BaseException as exc:  # pragma: no cover - reported below
            done.append(exc)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(10)
    assert done == [None] and auth.running and guarded(ctx)
    runner = threading.Thread(target=loop.run_forever, name="curvecert-test-aio")
    runner.start()
    server, endpoint = server_socket(ctx)
    try:
        known_admitted_again(ctx, endpoint)
    finally:
        server.close(linger=0)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(10)
        loop.call_soon_threadsafe(auth.stop)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


# --- the forwarder --------------------------------------------------------------------------

@pytest.fixture
def ipc_ep(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/zap.sock"


@pytest.fixture
def daemon(ipc_ep: str) -> Iterator[PolicyDaemon]:
    d = PolicyDaemon(ipc_ep)
    yield d
    d.close()


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("site", ["recv", "send", "poll"])
def test_forwarder_faults(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, daemon: PolicyDaemon,
                          ipc_ep: str, site: str, kind: str) -> None:
    fault = Fault(monkeypatch, "curvecert-zap-forwarder")
    if site == "recv":
        fault.patch(zmq.Socket, "recv_multipart")
    elif site == "send":
        fault.patch(relay_mod, "send_frames")
    else:
        fault.patch(zmq.Poller, "poll")
    fwd = ZapForwarder(ctx, ipc_ep).start()
    server, endpoint = server_socket(ctx)
    try:
        known_admitted_again(ctx, endpoint)
        with fault.active(FAULTS[kind]):
            stranger_never_admitted(ctx, endpoint, fault)
        known_admitted_again(ctx, endpoint)
        assert fwd.running
    finally:
        server.close(linger=0)
        fwd.stop()


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_forwarder_link_reset_failure(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, ipc_ep: str,
                                      kind: str) -> None:
    """The daemon is silent for a deadline and the link cannot be reopened (EMFILE,
    ZMQ_MAX_SOCKETS...): every request is denied until it can; then the daemon answers."""
    fault = Fault(monkeypatch, "curvecert-zap-forwarder")
    fault.patch(ZapForwarder, "_open_backend")
    fwd = ZapForwarder(ctx, ipc_ep, timeout=0.2).start()
    server, endpoint = server_socket(ctx)
    daemon = None
    try:
        with fault.active(FAULTS[kind]):
            stranger_never_admitted(ctx, endpoint, fault)
            assert outcome(ctx, endpoint, KNOWN, STALL) != 200  # nobody is, meanwhile
        daemon = PolicyDaemon(ipc_ep)
        known_admitted_again(ctx, endpoint)
    finally:
        server.close(linger=0)
        fwd.stop()
        if daemon is not None:
            daemon.close()


def test_forwarder_start_failure_keeps_endpoint(ctx: Ctx, monkeypatch: pytest.MonkeyPatch,
                                               daemon: PolicyDaemon, ipc_ep: str) -> None:
    fault = Fault(monkeypatch, "MainThread")
    fault.patch(threading.Thread, "start")
    server, endpoint = server_socket(ctx)
    try:
        with fault.active(FAULTS["thread"]):
            with pytest.raises(OperationalError):
                ZapForwarder(ctx, ipc_ep).start()
            assert outcome(ctx, endpoint, STRANGER, STALL) != 200
        with ZapForwarder(ctx, ipc_ep):
            known_admitted_again(ctx, endpoint)
    finally:
        server.close(linger=0)


# --- the gateway ----------------------------------------------------------------------------

@pytest.mark.parametrize(("site", "kind"), [("recv", "emfile"), ("prepare", "exception"),
                                             ("send", "thread")])
def test_gateway_faults(monkeypatch: pytest.MonkeyPatch, site: str, kind: str) -> None:
    fault = Fault(monkeypatch, "curvecert-authenticator")
    patch_site(fault, site, auth_mod)
    app: Ctx = zmq.Context()
    pull = app.socket(zmq.ROUTER)
    pull.linger = 0
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    gw = Gateway("tcp://127.0.0.1:*", f"tcp://127.0.0.1:{port}", "router-dealer", SERVER,
                 POLICY)
    gw.start()
    client_ctx: Ctx = zmq.Context()
    try:
        assert gw.front_endpoint is not None
        with fault.active(FAULTS[kind]):
            stranger_never_admitted(client_ctx, gw.front_endpoint, fault)
        known_admitted_again(client_ctx, gw.front_endpoint)
    finally:
        gw.stop()
        pull.close(linger=0)
        app.term()
        client_ctx.destroy(linger=0)


# --- stop never opens the door --------------------------------------------------------------

def _refused_after_stop(ctx: Ctx, endpoint: str) -> None:
    """The still-bound server refuses a stranger with the responder's 500, promptly."""
    assert outcome(ctx, endpoint, STRANGER) == 500
    assert outcome(ctx, endpoint, KNOWN) == 500


def test_thread_stop_and_with_exit_keep_the_door_shut(ctx: Ctx) -> None:
    server, endpoint = server_socket(ctx)
    try:
        auth = Authenticator(ctx)
        auth.configure_provider("CURVE", known_only)
        auth.start()
        known_admitted_again(ctx, endpoint)
        auth.stop()
        _refused_after_stop(ctx, endpoint)
        with Authenticator(ctx) as again:  # takes the bound socket over, no gap
            again.configure_provider("CURVE", known_only)
            known_admitted_again(ctx, endpoint)
        _refused_after_stop(ctx, endpoint)  # leaving `with`
        with ThreadAuthenticator(ctx) as compat:
            compat.configure_curve(domain="*", location=str(Path.cwd() / "no-such-dir"))
            assert outcome(ctx, endpoint, STRANGER) not in (200, None)
        _refused_after_stop(ctx, endpoint)  # the pyzmq mirror's exit
    finally:
        server.close(linger=0)


def test_asyncio_stop_keeps_the_door_shut(ctx: Ctx) -> None:
    lt = LoopThread()
    server, endpoint = server_socket(ctx)
    try:
        auth = AsyncioAuthenticator(ctx)
        auth.configure_provider("CURVE", known_only)
        lt.call(auth.start)
        known_admitted_again(ctx, endpoint)
        lt.call(auth.stop)
        _refused_after_stop(ctx, endpoint)
    finally:
        server.close(linger=0)
        lt.close()


def test_forwarder_stop_keeps_the_door_shut(ctx: Ctx, daemon: PolicyDaemon,
                                            ipc_ep: str) -> None:
    server, endpoint = server_socket(ctx)
    try:
        with ZapForwarder(ctx, ipc_ep):
            known_admitted_again(ctx, endpoint)
        _refused_after_stop(ctx, endpoint)
        fwd = ZapForwarder(ctx, ipc_ep).start()  # takes over
        known_admitted_again(ctx, endpoint)
        fwd.stop()
        _refused_after_stop(ctx, endpoint)
    finally:
        server.close(linger=0)


def test_context_terminates_after_stop() -> None:
    """The deny-all responder leaves on ETERM: term() completes, the guard is gone."""
    context: Ctx = zmq.Context()
    Authenticator(context).start().stop()
    assert guarded(context)
    finished = threading.Event()

    def term() -> None:
        context.term()
        finished.set()

    t = threading.Thread(target=term, daemon=True)
    t.start()
    assert finished.wait(10), "ctx.term() hangs after stop()"
    assert not guarded(context)


def test_destroy_with_a_running_authenticator_completes() -> None:
    context: Ctx = zmq.Context()
    server_socket(context)  # a tracked socket that destroy() closes
    auth = Authenticator(context).start()
    finished = threading.Event()

    def destroy() -> None:
        context.destroy(linger=0)
        finished.set()

    t = threading.Thread(target=destroy, daemon=True)
    t.start()
    assert finished.wait(10)
    auth.stop()
    assert not auth.running


# --- the remote variant: plain TCP connections exhaust a low RLIMIT_NOFILE ------------------

def test_remote_fd_exhaustion_during_daemon_outage(tmp_path: Path) -> None:
    """Issue 11 §1, as an attacker does it: while the daemon is down, plain TCP connections
    to the CURVE port use the application's last descriptors, so the forwarder's link
    reset fails with EMFILE. No stranger is admitted then or later; once descriptors are
    free and the daemon is back, the known key is admitted."""
    import queue
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT

    endpoint = f"ipc://{tmp_path}/zap.sock"
    hung = PolicyDaemon(endpoint, silent=True)  # up, key published, never answers
    child = subprocess.Popen([sys.executable, "-m", "tests.faults.rlimitchild", endpoint],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []

    def pump(stream: Any, sink: Callable[[str], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    threading.Thread(target=pump, args=(child.stdout, lines.put), daemon=True).start()
    threading.Thread(target=pump, args=(child.stderr, errors.append), daemon=True).start()
    client_ctx: Ctx = zmq.Context()
    raw: list[socket.socket] = []
    daemon = None
    try:
        ready = lines.get(timeout=20).split()
        assert ready[0] == "READY", ready
        tcp, server_key = ready[1], bytes.fromhex(ready[2])
        first = threading.Thread(
            target=lambda: outcome(client_ctx, tcp, STRANGER, 5.0, server_key))
        first.start()
        assert lines.get(timeout=10) == "FORWARDED"
        for _ in range(60):  # within the 2 s deadline: the reset then finds no descriptor
            host, port = tcp.removeprefix("tcp://").rsplit(":", 1)
            raw.append(socket.create_connection((host, int(port)), timeout=5))
        first.join(10)
        wait_until(lambda: any("cannot open the link" in e and "Too many open files" in e
                               for e in errors),
                   message="the forwarder's link reset hit EMFILE")
        for s in raw:
            s.close()
        raw.clear()
        for _ in range(3):  # daemon still hung: denied (or stalled), never admitted
            assert outcome(client_ctx, tcp, STRANGER, 3.0, server_key) != 200
        hung.close()
        daemon = PolicyDaemon(endpoint)
        known_admitted_again(client_ctx, tcp, 20.0, server_key)
        child.stdin.close()  # type: ignore[union-attr]
        stats = lines.get(timeout=20).split()
        assert stats[0] == "STATS" and int(stats[1]) >= 1
        assert child.wait(20) == 0
    finally:
        for s in raw:
            s.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        if daemon is not None:
            daemon.close()
        if not hung._stop.is_set():
            hung.close()
        client_ctx.destroy(linger=0)


@pytest.mark.parametrize("kind", sorted(FAULTS))
@pytest.mark.parametrize("site", ["recv", "send", "poll"])
def test_deny_all_responder_faults(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, site: str,
                                   kind: str) -> None:
    """The responder that holds the endpoint after stop() is a loop too."""
    import curvecert.auth.endpoint as endpoint_mod

    fault = Fault(monkeypatch, "curvecert-zap-deny-all")
    if site == "poll":
        fault.patch(zmq.Poller, "poll")
    else:
        patch_site(fault, site, endpoint_mod)
    server, endpoint = server_socket(ctx)
    try:
        Authenticator(ctx).start().stop()
        with fault.active(FAULTS[kind]):
            stranger_never_admitted(ctx, endpoint, fault)
        _refused_after_stop(ctx, endpoint)
        with Authenticator(ctx) as auth:  # and it still hands over
            auth.configure_provider("CURVE", known_only)
            known_admitted_again(ctx, endpoint)
    finally:
        server.close(linger=0)


def test_compat_manual_mode_answers_and_stop_keeps_the_door_shut(ctx: Ctx,
                                                                tmp_path: Path) -> None:
    """pyzmq's manual mode (`zap_socket` + `handle_zap_message`) on the guarded socket."""
    from curvecert.compat.base import Authenticator as ManualAuthenticator

    keys = tmp_path / "public"
    keys.mkdir()
    KNOWN.save_public(keys / "known.key")
    auth = ManualAuthenticator(ctx)
    auth.configure_curve(domain="*", location=str(keys))
    auth.start()
    stop = threading.Event()

    def pump() -> None:  # what a pyzmq application's own loop does
        sock = auth.zap_socket
        assert sock is not None
        while not stop.is_set():
            if sock.poll(50):
                asyncio.run(auth.handle_zap_message(sock.recv_multipart()))

    t = threading.Thread(target=pump)
    t.start()
    server, endpoint = server_socket(ctx)
    try:
        known_admitted_again(ctx, endpoint)
    finally:
        stop.set()
        t.join(10)
    try:
        auth.stop()
        _refused_after_stop(ctx, endpoint)
    finally:
        server.close(linger=0)
