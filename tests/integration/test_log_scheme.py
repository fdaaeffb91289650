"""One prefix and level scheme on stderr for the CLI and the daemon (issue 13, "Logs").

Every message for people is `curvecert: LEVEL: message` (INFO for what was done,
WARNING, ERROR), whether a command prints it or the logging handler does, and a command's
final failure is the one line `curvecert: error: ...`. The daemon's start-up, reload and
stop lines follow the same scheme (a successful reload at INFO, not WARNING).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from curvecert import store
from curvecert.certs.cert import Certificate
from tests.serveproc import ServeAuth

SCHEME = re.compile(r"^curvecert: (INFO|WARNING|ERROR|error): \S")
Env = Callable[[dict[str, str] | None], dict[str, str]]


def _stderr(env: dict[str, str], *args: str, stdin: str | None = None) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "curvecert", *args], capture_output=True,
                          text=True, env=env, input=stdin, timeout=60)
    return proc.stderr.splitlines()


def test_cli_messages_follow_the_scheme(tmp_path: Path, cli_env: Env) -> None:
    env = cli_env(None)
    lines = _stderr(env, "new", str(tmp_path / "server"), "--name", "server")
    assert lines and lines[0].startswith("curvecert: INFO: wrote ")
    os.chmod(tmp_path / "server_secret", 0o644)
    lines += _stderr(env, "show", str(tmp_path / "server_secret"))
    lines += _stderr(env, "passwd", "add", "alice", "--plaintext", "--file",
                     str(tmp_path / "pw"), stdin="pw\n")
    lines += _stderr(env, "store", "add", "--store", str(tmp_path / "s"),
                     str(tmp_path / "server_secret"))
    lines += _stderr(env, "show", str(tmp_path / "missing"))
    assert any(ln.startswith("curvecert: WARNING: ") for ln in lines)
    assert any(ln.startswith("curvecert: error: ") for ln in lines)
    bad = [ln for ln in lines if not SCHEME.match(ln)]
    assert not bad, bad
    assert _stderr(env, "-q", "new", str(tmp_path / "quiet")) == []  # -q hides INFO


def test_daemon_lines_follow_the_scheme(tmp_path: Path, cli_env: Env) -> None:
    clients = tmp_path / "clients"
    clients.mkdir()
    store.add_certificate(clients, Certificate.new(name="alice"))
    conf = tmp_path / "serve-auth.toml"
    conf.write_text(f'zap-endpoint = "ipc://{tmp_path}/zap.sock"\nlog-format = "json"\n'
                    f'log-stream = "stdout"\n[domains."*"]\nstores = ["{clients}"]\n')
    with ServeAuth(["--config", str(conf)], cli_env(None)) as daemon:
        n = len(daemon.err.lines)
        daemon.send_signal(signal.SIGHUP)
        line = daemon.wait_stderr("configuration reloaded", start=n)
        assert line.startswith("curvecert: INFO: configuration reloaded")
        assert daemon.stop(signal.SIGTERM) == 0
    bad = [ln for ln in daemon.err.lines if not SCHEME.match(ln)]
    assert not bad, bad
