"""Hostile certificate names and file names through the real commands (issue 12).

A client's certificate whose metadata and file name carry escape sequences, bidi
overrides and line separators, as `store list` (pipe and `--json`), `store check`,
`show` and `verify` print it: nothing reaches stdout or stderr raw, each row stays one
line, and `verify`/`store check` report the characters as findings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate

EVIL_NAME = "mallory\x1b[2J\x1b]0;title\x07\u202eyeknom\u2028x\x85y"
EVIL_FILE = "evil\x1b[8m\u202e.key"


def _clean(out: str) -> None:
    for line in out.splitlines():
        bad = [c for c in line if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"}]
        assert not bad, f"{bad!r} in {line!r}"
    assert not any(c in out for c in "\x85\u2028\u2029\r\x1b")


def test_commands_print_hostile_names_inert(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    sdir = tmp_path / "store"
    sdir.mkdir()
    cert = Certificate.new([("name", EVIL_NAME), ("org", "a\u2029b")])
    path = sdir / EVIL_FILE
    path.write_text(certfile.dump(cert, secret=False))
    env = cli_env(None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "curvecert", *args], capture_output=True,
                              text=True, env=env, timeout=60)
        _clean(proc.stdout)
        _clean(proc.stderr)
        return proc

    listed = run("store", "list", "--store", str(sdir))
    assert len(listed.stdout.splitlines()) == 1 and cert.public_txt in listed.stdout
    items = json.loads(run("store", "list", "--json", "--store", str(sdir)).stdout)
    items = items["items"] if isinstance(items, dict) else items
    assert items[0]["metadata"]["name"] == EVIL_NAME  # JSON keeps the value, escaped
    check = run("store", "check", "--store", str(sdir))
    assert check.returncode == 1 and "U+001B" in check.stdout + check.stderr
    verify = run("verify", str(path))
    assert verify.returncode == 1
    assert "file-name-unsafe" in verify.stdout and "meta-unsafe-text" in verify.stdout
    show = run("show", str(path))
    assert "\\x1b[2J" in show.stdout and "\\u202e" in show.stdout
