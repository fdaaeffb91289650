"""`serve-auth --ipc-group G` with a real group (issue 13): the socket's directory is made
0750 with group G, the socket 0660 and the daemon key 0640 for G; an existing directory
the group cannot reach is refused with the commands to fix it (exit 3)."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from curvecert import store
from curvecert.certs.cert import Certificate
from tests.serveproc import ServeAuth

Env = Callable[[dict[str, str] | None], dict[str, str]]


@pytest.fixture
def group() -> grp.struct_group:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another group needs root")
    try:
        return grp.getgrgid(65534)
    except KeyError:
        pytest.skip("no group 65534 on this system")


def _store(tmp: Path) -> Path:
    clients = tmp / "clients"
    store.add_certificate(clients, Certificate.new())
    return clients


def test_ipc_group_creates_the_directory_for_the_group(tmp_path: Path, cli_env: Env,
                                                       group: grp.struct_group) -> None:
    run = tmp_path / "run"
    sock = run / "zap.sock"
    args = ["--store", str(_store(tmp_path)), "--zap-endpoint", f"ipc://{sock}",
            "--ipc-group", group.gr_name]
    with ServeAuth(args, cli_env(None)) as daemon:
        for path, mode in ((run, 0o750), (sock, 0o660), (Path(f"{sock}.pub"), 0o640)):
            st = path.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (mode, group.gr_gid), path
        assert daemon.stop() == 0
    assert not sock.exists() and not Path(f"{sock}.pub").exists()


def test_ipc_group_refuses_a_directory_the_group_cannot_reach(
        tmp_path: Path, cli_env: Env, group: grp.struct_group) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    proc = subprocess.run([sys.executable, "-m", "curvecert", "serve-auth", "--store",
                           str(_store(tmp_path)), "--zap-endpoint", f"ipc://{run}/zap.sock",
                           "--ipc-group", group.gr_name], env=cli_env(None),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert f"{run}: the ipc group cannot reach the socket" in proc.stderr
    assert "chgrp" in proc.stderr and "Traceback" not in proc.stderr
