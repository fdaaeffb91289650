"""Secret references (env:, fd:, file:, cred:) through real `curvecert` processes: the
key arrives, and a damaged value is reported without any of its characters."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from tests.conftest import CliResult

Run = Callable[..., CliResult]


def _fragments(secret: str, size: int = 6) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def assert_no_secret(text: str, secret: str) -> None:
    leaked = [f for f in _fragments(secret) if f in text]
    assert not leaked, f"secret fragments in output: {len(leaked)}"


@pytest.fixture
def cert() -> Certificate:
    return Certificate.new([("name", "svc")])


def test_env_bare_key_and_certificate_text(run_cli: Run, cert: Certificate) -> None:
    secret = cert.secret_txt or ""
    r = run_cli("public", "--secret-from", "env:SVC_SECRET", env={"SVC_SECRET": secret})
    assert r.code == 0, r.err
    assert r.out.strip() == cert.public_txt
    assert_no_secret(r.out + r.err, secret)
    text = certfile.dump(cert, secret=True)
    r = run_cli("public", "--secret-from", "env:SVC_SECRET", env={"SVC_SECRET": text})
    assert r.code == 0 and r.out.strip() == cert.public_txt


def test_fd_source(tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]],
                   cert: Certificate) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, (cert.secret_txt or "").encode() + b"\n")
    os.close(write_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "curvecert", "public", "--json",
                               "--secret-from", f"fd:{read_end}"], pass_fds=(read_end,),
                              capture_output=True, env=cli_env(None), timeout=60)
    finally:
        os.close(read_end)
    assert proc.returncode == 0, proc.stderr
    assert cert.public_txt in proc.stdout.decode()


def test_cred_and_file_sources(tmp_path: Path, run_cli: Run, cert: Certificate) -> None:
    cert.save(tmp_path / "svc")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "svc").write_text(cert.secret_txt or "")
    r = run_cli("public", "--secret-from", "cred:svc",
                env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert r.code == 0 and r.out.strip() == cert.public_txt, r.err
    r = run_cli("public", "--secret-from", f"file:{tmp_path / 'svc_secret'}")
    assert r.code == 0 and r.out.strip() == cert.public_txt, r.err
    r = run_cli("public", "--secret-from", "cred:svc")
    assert r.code == 3 and "CREDENTIALS_DIRECTORY is not set" in r.err


@pytest.mark.parametrize("damage", ["one-short", "bad-char", "cert-syntax", "cert-bad-key",
                                    "public-only"])
def test_damaged_values_are_reported_without_their_characters(
        run_cli: Run, cert: Certificate, damage: str) -> None:
    secret = cert.secret_txt or ""
    value = {
        "one-short": secret[:-1],
        "bad-char": secret[:20] + "~" + secret[21:],
        "cert-syntax": certfile.dump(cert, secret=True).replace("    secret-key",
                                                                "   secret-key"),
        "cert-bad-key": certfile.dump(cert, secret=True).replace(secret, secret[:-1] + "~"),
        "public-only": certfile.dump(cert, secret=False),
    }[damage]
    r = run_cli("public", "--secret-from", "env:SVC_SECRET", env={"SVC_SECRET": value})
    assert r.code == 3, r.err
    assert r.err.startswith("curvecert: error: env:SVC_SECRET")
    assert len(r.err.strip().splitlines()) == 1
    assert_no_secret(r.out + r.err, secret)


def test_missing_sources(run_cli: Run) -> None:
    r = run_cli("public", "--secret-from", "env:NOPE_NOT_SET")
    assert r.code == 3 and "NOPE_NOT_SET is not set" in r.err
    r = run_cli("public", "--secret-from", "fd:987")
    assert r.code == 3 and "fd:987: cannot read" in r.err


def test_serve_auth_gateway_key_from_a_descriptor(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    import zmq

    from curvecert import store
    from tests.integration.test_gateway import client, verdict
    from tests.serveproc import ServeAuth

    gw, alice = Certificate.new(name="gw"), Certificate.new(name="alice")
    clients = tmp_path / "clients"
    clients.mkdir()
    store.add_certificate(clients, alice)
    ctx: zmq.Context[Any] = zmq.Context()
    app = ctx.socket(zmq.PULL)
    app.linger = 0
    back = f"tcp://127.0.0.1:{app.bind_to_random_port('tcp://127.0.0.1')}"
    read_end, write_end = os.pipe()
    os.write(write_end, certfile.dump(gw, secret=True).encode())
    os.close(write_end)
    try:
        with ServeAuth(["--front", "tcp://127.0.0.1:*", "--back", back, "--pattern",
                        "push-pull", "--server-cert", f"fd:{read_end}", "--store",
                        str(clients)], cli_env({"CURVECERT_LOGLEVEL": "DEBUG"}),
                       pass_fds=(read_end,)) as daemon:
            front = daemon.where[0].split()[1]
            push, mon = client(ctx, zmq.PUSH, alice, gw, front)
            assert verdict(mon) == 200
            push.send(b"hello")
            assert app.poll(10_000) and app.recv() == b"hello"
            with open(f"/proc/{daemon.proc.pid}/cmdline", "rb") as fh:
                assert (gw.secret_txt or "").encode() not in fh.read()
        assert_no_secret("\n".join(daemon.err.lines + daemon.out.lines), gw.secret_txt or "")
    finally:
        os.close(read_end)
        ctx.destroy(linger=0)


# --- an fd: source that never ends (a FIFO the test holds open) --------------------------

def _held_fifo(tmp_path: Path) -> int:
    """A FIFO opened read-write by the test: never at end of data while the test lives."""
    path = tmp_path / "secret.fifo"
    os.mkfifo(path)
    return os.open(path, os.O_RDWR)


def _queued(fd: int) -> int:
    import fcntl
    import termios

    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


def _fd_timeout_message(fd: int) -> str:
    from curvecert.certs.secretsource import FD_TIMEOUT

    return (f"fd:{fd}: no end of data within {FD_TIMEOUT:g} s; a secret source must be a "
            "file or a pipe that is closed after the secret")


def test_a_pipe_that_never_closes_is_refused_within_the_bound(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]],
        cert: Certificate) -> None:
    from curvecert.certs.secretsource import FD_TIMEOUT

    secret = cert.secret_txt or ""
    fd = _held_fifo(tmp_path)
    try:
        os.write(fd, secret.encode())  # the whole key, but the writer never closes
        proc = subprocess.run([sys.executable, "-m", "curvecert", "public", "--secret-from",
                               f"fd:{fd}"], pass_fds=(fd,), capture_output=True, text=True,
                              env=cli_env(None), timeout=FD_TIMEOUT + 30)
    finally:
        os.close(fd)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == f"curvecert: error: {_fd_timeout_message(fd)}\n"
    assert proc.stdout == ""
    assert_no_secret(proc.stderr, secret)


def test_file_and_cred_sources_refuse_a_fifo_at_once(tmp_path: Path, run_cli: Run) -> None:
    fd = _held_fifo(tmp_path)  # a writer exists: a blocking open would succeed and hang
    try:
        for ref in (f"file:{tmp_path / 'secret.fifo'}", str(tmp_path / "secret.fifo")):
            r = run_cli("public", "--secret-from", ref, timeout=30)
            assert r.code == 3 and "is a FIFO, not a regular file" in r.err, r.err
        r = run_cli("public", "--secret-from", "cred:secret.fifo", timeout=30,
                    env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
        assert r.code == 3 and "is a FIFO, not a regular file" in r.err, r.err
    finally:
        os.close(fd)


@pytest.mark.parametrize("stop", ["timeout", "SIGTERM", "SIGINT"])
def test_serve_auth_waiting_on_a_descriptor_stops(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]],
        cert: Certificate, stop: str) -> None:
    """serve-auth --server-cert fd:N on a pipe nobody closes: refused after FD_TIMEOUT,
    and SIGTERM/SIGINT during the wait end it at once (docs/security.md, "Signals")."""
    import signal
    import time

    from curvecert.certs.secretsource import FD_TIMEOUT

    secret = cert.secret_txt or ""
    clients = tmp_path / "clients"
    clients.mkdir()
    fd = _held_fifo(tmp_path)
    try:
        os.write(fd, secret.encode())
        proc = subprocess.Popen(
            [sys.executable, "-m", "curvecert", "serve-auth", "--front", "tcp://127.0.0.1:*",
             "--back", "tcp://127.0.0.1:9", "--pattern", "push-pull", "--server-cert",
             f"fd:{fd}", "--store", str(clients), "--control", "none"],
            pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env(None))
        try:
            if stop == "timeout":
                _, err = proc.communicate(timeout=FD_TIMEOUT + 30)
                assert proc.returncode == 3, err
                assert err.splitlines()[-1] == f"curvecert: error: {_fd_timeout_message(fd)}"
            else:
                # The daemon has read what was written: it is in the fd: wait, with its
                # signal handlers installed (they are set before start-up reads secrets).
                deadline = time.monotonic() + 30
                while _queued(fd):
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.01)
                sent = time.monotonic()
                proc.send_signal(getattr(signal, stop))
                _, err = proc.communicate(timeout=FD_TIMEOUT + 30)
                assert proc.returncode == 130, err
                assert err.splitlines()[-1] == "curvecert: error: interrupted"
                assert time.monotonic() - sent < FD_TIMEOUT  # the signal, not the deadline
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        os.close(fd)
    assert_no_secret(err, secret)
