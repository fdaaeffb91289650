"""What the fast CLI paths import: `--help`, `show --json`, `keygen` and `import curvecert`.

Why: `curvecert --help` and `curvecert show` must start about as fast as
`python -m zmq.curve_keygen` (issue 7), which holds only while they do not load watchdog,
pyzmq or rich when they do not need them. Timing is not asserted (benchmarks/startup_bench.py
measures it); each test runs the path in a fresh interpreter and checks which heavy
packages ended up in `sys.modules`, so an eager import added anywhere on the path fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from curvecert.certs.cert import Certificate

HEAVY = ("zmq", "rich", "watchdog")

# Runs in a fresh interpreter: call the CLI in-process (stdout captured), then report
# which of the heavy packages were imported.
PROBE = r"""
import contextlib, io, json, sys
argv = json.loads(sys.argv[1])
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    if argv is None:
        import curvecert
    else:
        import curvecert.cli
        try:
            curvecert.cli.main(argv)
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
        if code:
            raise SystemExit(f"curvecert {argv} exited with {code}")
heavy = set(json.loads(sys.argv[2]))
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
                  "stdout": out.getvalue()}))
"""


def _imports(env: Callable[[dict[str, str] | None], dict[str, str]],
             argv: list[str] | None) -> tuple[set[str], str]:
    """The heavy top-level packages imported by running `curvecert ARGV`, and its stdout."""
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, env=env(None), timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    return {m.split(".")[0] for m in result["modules"]}, result["stdout"]


@pytest.fixture
def public_cert(tmp_path: Path) -> Path:
    path = tmp_path / "server"
    Certificate.new(name="startup").save(path)
    return path


def test_import_curvecert_loads_no_heavy_package(cli_env: Callable[..., dict[str, str]]
                                                 ) -> None:
    loaded, _ = _imports(cli_env, None)
    assert loaded == set()


@pytest.mark.parametrize("argv", [["--help"], ["show", "--help"], ["--version"]])
def test_help_loads_no_heavy_package(cli_env: Callable[..., dict[str, str]],
                                     argv: list[str]) -> None:
    loaded, out = _imports(cli_env, argv)
    assert "curvecert" in out  # the help (or version) text really was printed
    assert loaded == set(), f"`curvecert {' '.join(argv)}` imported {sorted(loaded)}"


def test_show_json_loads_neither_rich_nor_zmq(cli_env: Callable[..., dict[str, str]],
                                              public_cert: Path) -> None:
    loaded, out = _imports(cli_env, ["show", "--json", str(public_cert)])
    assert json.loads(out)["public_key"] == Certificate.load(public_cert).public_txt
    assert loaded == set()


def test_show_into_a_pipe_is_plain_and_loads_nothing_heavy(
        cli_env: Callable[..., dict[str, str]], public_cert: Path) -> None:
    # Not a terminal: plain "label  text" lines, which need no rich.
    loaded, out = _imports(cli_env, ["show", str(public_cert)])
    assert f"public key   {Certificate.load(public_cert).public_txt}" in out
    assert "╭" not in out
    assert loaded == set()


def test_keygen_loads_zmq_but_not_rich(cli_env: Callable[..., dict[str, str]]) -> None:
    loaded, out = _imports(cli_env, ["keygen"])
    assert "== CURVE PUBLIC KEY ==" in out
    assert loaded == {"zmq"}
