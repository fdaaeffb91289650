"""What a person sees on a real terminal: `store list` through a pseudo-terminal, rendered by
a terminal emulator (pexpect + pyte), at the widths people use; and shell completion of
file names through click's completion protocol in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pyte
import pytest

from curvecert.certs.cert import Certificate
from tests.conftest import _cli_env


def _screen(args: list[str], columns: int, rows: int = 60) -> list[str]:
    env = dict(_cli_env(None), TERM="xterm", COLUMNS=str(columns), LINES=str(rows))
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "curvecert", *args], env=env,
                          dimensions=(rows, columns), encoding="utf-8", timeout=30)
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    screen = pyte.Screen(columns, rows)
    stream = pyte.Stream(screen)
    stream.feed(output.replace("\n", "\r\n") if "\r\n" not in output else output)
    return [line.rstrip() for line in screen.display]


@pytest.fixture
def store_dir(tmp_path: Path) -> tuple[Path, list[Certificate]]:
    d = tmp_path / "store"
    d.mkdir()
    certs = [Certificate.new(name=n) for n in ("alice", "bob with a rather long name " * 2,
                                               "carol")]
    certs.append(Certificate.new())  # no name
    for i, c in enumerate(certs):
        c.save_public(d / f"client-{i}-with-a-long-file-name.key")
    return d, certs


@pytest.mark.parametrize("columns", [80, 100, 120, 132, 200])
def test_store_list_shows_whole_keys_and_fingerprints(store_dir: tuple[Path, list[Certificate]],
                                                      columns: int) -> None:
    d, certs = store_dir
    lines = _screen(["store", "list", "--store", str(d)], columns)
    text = "\n".join(lines)
    for c in certs:
        assert any(c.public_txt in line for line in lines), (c.public_txt, text)
        assert any(c.fingerprint in line for line in lines), (c.fingerprint, text)
    assert all(len(line) <= columns for line in lines)


def _complete(args: list[str], incomplete: str, cwd: Path) -> list[tuple[str, str]]:
    words = ["curvecert", *args, incomplete]
    env = dict(_cli_env(None), _CURVECERT_COMPLETE="bash_complete",
               COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1))
    result = subprocess.run([sys.executable, "-c", "from curvecert.cli import main; main()"],
                            capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    # bash_complete prints "type,value" lines; "file"/"dir" tell bash to complete paths.
    return [tuple(line.split(",", 1)) for line in result.stdout.splitlines() if line]  # type: ignore[misc]


@pytest.mark.parametrize("args", [
    ["show"], ["verify"], ["public"], ["fingerprint"], ["export"], ["store", "add"],
    ["probe", "tcp://127.0.0.1:1", "--cert"], ["probe", "tcp://127.0.0.1:1", "--server-cert"],
    ["serve-auth", "--server-cert"], ["serve-auth", "--config"], ["new"],
    ["passwd", "list", "--file"], ["export", "x_secret", "-o"],
])
def test_completion_completes_paths(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "alice_secret").write_text("")
    kinds = {kind for kind, _ in _complete(args, "ali", tmp_path)}
    assert kinds & {"file", "dir"}, kinds


def test_completion_still_completes_commands_and_options(tmp_path: Path) -> None:
    names = {value for _, value in _complete([], "fin", tmp_path)}
    assert "fingerprint" in names
    options = {value for _, value in _complete(["store", "list"], "--st", tmp_path)}
    assert "--store" in options


def test_completion_script_names_the_program() -> None:
    out = subprocess.run([sys.executable, "-m", "curvecert", "completion", "bash"],
                         capture_output=True, text=True, env=_cli_env(None), timeout=60)
    assert out.returncode == 0 and "_CURVECERT_COMPLETE" in out.stdout
    assert os.linesep in out.stdout
