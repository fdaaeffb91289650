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
