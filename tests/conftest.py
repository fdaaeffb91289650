"""Shared fixtures: tracked ZeroMQ contexts, a real-subprocess CLI runner, leak guards.

Nothing here sleeps to synchronise; helpers wait on a condition with a bounded timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture
def asset() -> Callable[[str], Path]:
    """Path of a file under tests/assets/."""
    return lambda name: ASSETS / name


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A fresh ZeroMQ context, destroyed with linger 0 after the test."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread of its own running (watchdog's guard)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        extra = [t for t in threading.enumerate()
                 if t not in before and t.is_alive() and not t.daemon]
        if not extra or time.monotonic() > deadline:
            break
        extra[0].join(timeout=0.05)
    assert not extra, f"threads left running: {extra}"


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.005, message: str = "condition") -> None:
    """Poll `predicate` until it is true or fail after `timeout` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@dataclass
class CliResult:
    """Outcome of one real `curvecert` process."""

    code: int
    out: str
    err: str


def _cli_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CURVECERT_STORE", None)
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """Run `python -m curvecert ARGS...` as a real subprocess and capture its streams."""

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None, timeout: float = 60) -> CliResult:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run([sys.executable, "-m", "curvecert", *args], input=data,
                              capture_output=True, env=_cli_env(env), cwd=cwd,
                              timeout=timeout)
        return CliResult(proc.returncode, proc.stdout.decode(errors="replace"),
                         proc.stderr.decode(errors="replace"))

    return run


@pytest.fixture
def cli_env() -> Callable[[dict[str, str] | None], dict[str, str]]:
    """The environment `run_cli` uses, for tests that start `curvecert` with Popen."""
    return _cli_env


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[object]:
    """A real three-member etcd cluster for the whole run (tests/etcdcluster.py)."""
    from tests.etcdcluster import cluster_fixture

    yield from cluster_fixture()
