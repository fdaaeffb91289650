"""serve-auth and signals (issue 12; docs/security.md "Signals"): a SIGHUP whose reload
raises anything keeps the running policy; SIGTERM ends the daemon within its bound even
while a reload is stuck (a FIFO as password file). Real daemons: in-process `Daemon`
objects with real sockets, and `curvecert serve-auth` subprocesses.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs.cert import Certificate
from curvecert.serve.config import DaemonConfig, DomainConfig
from curvecert.serve.daemon import Daemon
from curvecert.serve.forwarder import ZapForwarder
from tests.conftest import wait_until
from tests.serveproc import ServeAuth, Server, handshake

Env = Callable[[dict[str, str] | None], dict[str, str]]
#: The documented bound (docs/serve-auth.md "Signals"): serve-auth exits this soon after
#: SIGTERM whatever a reload is doing.
SIGTERM_BOUND = 10.0


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = Certificate.new()
        self.alice = Certificate.new()
        self.store = tmp / "clients"
        self.store.mkdir()
        store.add_certificate(self.store, self.alice)
        run = tmp / "run"
        run.mkdir(mode=0o700)
        self.ipc = f"ipc://{run}/zap.sock"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def app(ctx: zmq.Context[Any], world: World) -> Iterator[Server]:
    fwd = ZapForwarder(ctx, world.ipc).start()
    srv = Server(ctx, world.server)
    yield srv
    srv.close()
    fwd.stop()


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"),
                                   ValueError("x"), KeyError("k"), MemoryError()])
def test_any_reload_error_keeps_the_running_policy(world: World, app: Server,
                                                   error: BaseException) -> None:
    calls = {"n": 0}

    def loader() -> DaemonConfig:
        calls["n"] += 1
        if calls["n"] > 1:
            raise error
        return DaemonConfig(domains=(DomainConfig(name="*", stores=(world.store,)),),
                            zap_endpoint=world.ipc)

    daemon = Daemon(loader)
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        assert handshake(app, world.alice).status == 200
        daemon.request_reload()
        wait_until(lambda: daemon.counters["reload_errors"] == 1, message="reload failed")
        assert daemon.generation == 0
        assert handshake(app, world.alice).status == 200  # the old policy answers
    finally:
        daemon.request_stop()
        runner.join(SIGTERM_BOUND)
        assert not runner.is_alive()
        daemon.close()


def test_stuck_reload_stalls_nothing(world: World, app: Server) -> None:
    """A reload that never returns: requests are still answered and stop() is prompt."""
    stuck = threading.Event()
    calls = {"n": 0}

    def loader() -> DaemonConfig:
        calls["n"] += 1
        if calls["n"] > 1:
            stuck.set()
            threading.Event().wait()  # forever (a daemon thread: abandoned on close)
        return DaemonConfig(domains=(DomainConfig(name="*", stores=(world.store,)),),
                            zap_endpoint=world.ipc)

    daemon = Daemon(loader)
    daemon.start()
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        daemon.request_reload()
        assert stuck.wait(10)
        assert handshake(app, world.alice).status == 200
        assert handshake(app, Certificate.new()).status == 400
    finally:
        daemon.request_stop()
        runner.join(SIGTERM_BOUND)
        assert not runner.is_alive()
        daemon.close()


def _config(world: World, passwords: Path) -> Path:
    conf = world.tmp / "serve-auth.toml"
    conf.write_text(f'zap-endpoint = "{world.ipc}"\n[domains."*"]\nstores = ["{world.store}"]\n'
                    f'passwords = "{passwords}"\n')
    return conf


def test_sigterm_during_a_reload_stuck_on_a_fifo(world: World, app: Server,
                                                 cli_env: Env) -> None:
    passwords = world.tmp / "passwords"
    passwords.write_text("")
    passwords.chmod(0o600)
    conf = _config(world, passwords)
    with ServeAuth(["--config", str(conf)], cli_env(None)) as daemon:
        assert handshake(app, world.alice).status == 200
        passwords.unlink()
        os.mkfifo(passwords, 0o600)  # nobody will ever write to it
        n = len(daemon.err.lines)
        daemon.send_signal(signal.SIGHUP)
        assert handshake(app, world.alice).status == 200  # still answering
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait_exit(SIGTERM_BOUND)
        assert code == 0, daemon.err.lines[n:]


def test_sighup_with_a_deeply_nested_config_keeps_serving(world: World, app: Server,
                                                          cli_env: Env) -> None:
    passwords = world.tmp / "passwords"
    passwords.write_text("")
    passwords.chmod(0o600)
    conf = _config(world, passwords)
    with ServeAuth(["--config", str(conf)], cli_env(None)) as daemon:
        assert handshake(app, world.alice).status == 200
        n = len(daemon.err.lines)
        conf.write_text(conf.read_text() + "deep = " + "[" * 50_000 + "]" * 50_000 + "\n")
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_stderr("reload failed", start=n)
        assert handshake(app, world.alice).status == 200
        assert daemon.stop(signal.SIGTERM) == 0
