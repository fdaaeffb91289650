"""Only regular files are read as certificates or configuration (issue 12, "FIFOs").

A FIFO with no writer, a character device and a listening unix socket, given to `show`,
`verify`, `public` and `serve-auth --config`, give a clear one-line error naming the path
and its kind, and the process ends (the subprocess timeout is the hang detector; opening
uses O_NONBLOCK and fstat, so nothing waits for a writer).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from curvecert.certs.fileio import read_bytes
from curvecert.errors import ConfigError, OperationalError
from curvecert.serve import config


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[dict[str, Path]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    try:
        yield {"a FIFO": fifo, "a character device": Path("/dev/zero"), "a socket": sock_path}
    finally:
        listener.close()


COMMANDS = {
    "show": ["show"],
    "verify": ["verify"],
    "public": ["public"],
    "serve-auth": ["serve-auth", "--config"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["a FIFO", "a character device", "a socket"])
def test_commands_refuse_special_files_at_once(
        command: str, kind: str, specials: dict[str, Path],
        cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    path = specials[kind]
    proc = subprocess.run([sys.executable, "-m", "curvecert", *COMMANDS[command], str(path)],
                          capture_output=True, text=True, env=cli_env(None), timeout=20,
                          stdin=subprocess.DEVNULL)
    err = proc.stderr + proc.stdout
    assert proc.returncode in (1, 3), err  # verify may report it as a finding (exit 1)
    assert str(path) in err and "regular file" in err, err
    assert "Traceback" not in err
    if proc.returncode == 3:
        assert proc.stderr.startswith("curvecert: error: ") and proc.stderr.count("\n") == 1


def test_read_bytes_names_the_kind(specials: dict[str, Path]) -> None:
    for kind, path in specials.items():
        with pytest.raises(OperationalError, match=f"is {kind}, not a regular file"):
            read_bytes(path)


def test_read_bytes_caps_size(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2049)
    with pytest.raises(OperationalError, match="larger than 2048 bytes"):
        read_bytes(big, limit=2048)
    assert read_bytes(big, limit=4096) == b"x" * 2049


def test_config_load_refuses_a_fifo(specials: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="is a FIFO, not a regular file"):
        config.load(specials["a FIFO"])
