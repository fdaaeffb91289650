"""The CLI's one error boundary, command by command (issue 13, docs/cli.md "Exit codes").

Every row runs the real `curvecert` in a child process that permission bits apply to
(tests/faults/support.py), and checks the whole contract: the exit code of the table, and
stderr is exactly one line `curvecert: error: ...` naming the path when a path is at fault,
with no click usage block and no traceback. The paths cover the file faults every
file-taking command must report the same way: missing, unreadable (mode 0), a directory
and a FIFO where a file belongs (a FIFO must not block the command).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from curvecert.certs.cert import Certificate
from tests.conftest import _cli_env
from tests.faults.support import Unprivileged, unprivileged

USAGE, OPERATIONAL = 2, 3

# (arguments, exit code, placeholder that must appear in the message or None)
ROWS: list[tuple[list[str], int, str | None]] = [
    # usage: options, arguments, values
    (["--bogus"], USAGE, None),
    (["no-such-command"], USAGE, None),
    (["new"], USAGE, None),
    (["new", "x", "--bogus"], USAGE, None),
    (["new", "x", "--meta", "novalue"], USAGE, None),
    (["new", "x", "--meta", "bad name=1"], USAGE, None),
    (["show"], USAGE, None),
    (["show", "{pub}", "extra"], USAGE, None),
    (["verify"], USAGE, None),
    (["verify", "--bogus", "{pub}"], USAGE, None),
    (["keygen", "extra"], USAGE, None),
    (["public", "{sec}", "--bogus"], USAGE, None),
    (["fingerprint", "--bogus"], USAGE, None),
    (["export"], USAGE, None),
    (["store", "bogus"], USAGE, None),
    (["store", "list", "--bogus"], USAGE, None),
    (["store", "check", "extra"], USAGE, None),
    (["store", "remove"], USAGE, None),
    (["passwd", "add"], USAGE, None),
    (["passwd", "list", "--bogus"], USAGE, None),
    (["serve-auth", "--log-format", "xml"], USAGE, None),
    (["serve-auth", "--stats-interval", "soon"], USAGE, None),
    (["serve-auth", "--stats-interval", "1e-9"], USAGE, None),
    (["serve-auth", "--stats-interval", "0.5"], USAGE, None),
    (["probe"], USAGE, None),
    (["probe", "tcp://host-without-port"], USAGE, None),
    (["probe", "tcp://127.0.0.1:1", "--timeout", "0"], USAGE, None),
    (["probe", "tcp://127.0.0.1:1", "--server-type", "FOO"], USAGE, None),
    (["probe", "tcp://127.0.0.1:1", "--server-key", "not-a-key"], USAGE, None),
    (["probe", "tcp://127.0.0.1:1", "--stranger"], USAGE, None),
    (["completion", "tcsh"], USAGE, None),
    # operational: the paths given do not lead to a usable file
    *[([cmd, "{" + fault + "}"], OPERATIONAL, "{" + fault + "}")
      for cmd in ("show", "verify", "public", "fingerprint", "export")
      for fault in ("missing", "unreadable", "dir", "fifo")
      if (cmd, fault) != ("verify", "dir")],  # verify DIR checks a store
    (["new", "{pub}"], OPERATIONAL, "{pub}"),
    (["new", "{dir}"], OPERATIONAL, "{dir}"),
    (["public", "{pub}"], OPERATIONAL, "{pub}"),
    (["store", "list", "--store", "{missing}"], OPERATIONAL, "{missing}"),
    (["store", "list", "--store", "{pub}"], OPERATIONAL, "{pub}"),
    (["store", "check", "--store", "{missing}"], OPERATIONAL, "{missing}"),
    (["store", "add", "--store", "{store}", "{missing}"], OPERATIONAL, "{missing}"),
    (["store", "add", "--store", "{store}", "{fifo}"], OPERATIONAL, "{fifo}"),
    (["passwd", "list", "--file", "{missing}"], OPERATIONAL, "{missing}"),
    (["passwd", "list", "--file", "{dir}"], OPERATIONAL, "{dir}"),
    (["passwd", "list", "--file", "{unreadable}"], OPERATIONAL, "{unreadable}"),
    (["serve-auth", "--config", "{missing}"], OPERATIONAL, "{missing}"),
    (["serve-auth", "--store", "{missing}"], OPERATIONAL, "{missing}"),
    *[(["probe", "tcp://127.0.0.1:1", "--server-cert", "{" + fault + "}"], OPERATIONAL,
       "{" + fault + "}") for fault in ("missing", "unreadable", "dir", "fifo")],
    (["probe", "tcp://127.0.0.1:1", "--server-cert", "{pub}", "--cert", "{pub}"],
     OPERATIONAL, "{pub}"),
]


@pytest.fixture(scope="module")
def child() -> Unprivileged:
    return unprivileged()


@pytest.fixture
def scene(tmp_path: Path, child: Unprivileged) -> dict[str, str]:
    cert = Certificate.new()
    cert.save(tmp_path / "pub")
    paths = {
        "pub": tmp_path / "pub", "sec": tmp_path / "pub_secret", "dir": tmp_path / "dir",
        "fifo": tmp_path / "fifo", "unreadable": tmp_path / "unreadable",
        "missing": tmp_path / "missing", "store": tmp_path / "store",
    }
    paths["dir"].mkdir()
    paths["store"].mkdir()
    os.mkfifo(paths["fifo"])
    paths["unreadable"].write_bytes((tmp_path / "pub").read_bytes())
    paths["unreadable"].chmod(0)
    child.prepare(tmp_path)
    if child.as_nobody:  # the secret must stay the owner's: nobody gets a copy of its own
        for name in ("pub", "dir", "store"):
            os.chown(paths[name], 65534, 65534)
        os.chown(paths["sec"], 65534, 65534)
    return {k: str(v) for k, v in paths.items()}


def _run(child: Unprivileged, args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    env = dict(_cli_env(None), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "curvecert", *args], capture_output=True,
                          stdin=subprocess.DEVNULL, text=True, env=env, cwd=cwd,
                          preexec_fn=child.preexec_fn, timeout=60)


@pytest.mark.parametrize(("args", "code", "where"), ROWS, ids=lambda v: (
    " ".join(v) if isinstance(v, list) else None))
def test_one_line_and_the_tables_exit_code(child: Unprivileged, scene: dict[str, str],
                                           args: list[str], code: int,
                                           where: str | None) -> None:
    argv = [a.format(**scene) for a in args]
    result = _run(child, argv, cwd=str(Path(scene["pub"]).parent))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (argv, result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("curvecert: error: "), lines[0]
    assert "Traceback" not in result.stderr and "Usage:" not in result.stderr
    if where is not None:
        assert where.format(**scene) in lines[0], lines[0]


def test_verbose_and_quiet_after_the_subcommand(run_cli: object, tmp_path: Path) -> None:
    Certificate.new().save(tmp_path / "a")
    for flags in (["-v"], ["-q"], ["-vv"], ["--verbose"], ["--quiet"]):
        result = subprocess.run([sys.executable, "-m", "curvecert", "show", str(tmp_path / "a"),
                                 *flags], capture_output=True, text=True, env=_cli_env(None),
                                timeout=60)
        assert result.returncode == 0, (flags, result.stderr)
    nested = subprocess.run([sys.executable, "-m", "curvecert", "store", "list", "--store",
                             str(tmp_path), "-q"], capture_output=True, text=True,
                            env=_cli_env(None), timeout=60)
    assert nested.returncode == 0, nested.stderr


def test_verbose_shows_the_traceback_after_the_subcommand(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "curvecert", "show",
                             str(tmp_path / "missing"), "-v"], capture_output=True, text=True,
                            env=_cli_env(None), timeout=60)
    assert result.returncode == OPERATIONAL
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("curvecert: error: ")
