"""Key-tool conventions through real processes: `keygen | public`, `fingerprint`, `export`,
and the refusal of secret files that group/other can read (ssh-keygen's rule)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from curvecert.certs.cert import Certificate
from tests.conftest import CliResult, _cli_env

Run = Callable[..., CliResult]
CURVECERT = f"{sys.executable} -m curvecert"


def _shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=cwd,
                          env=_cli_env(None), timeout=60)


def test_keygen_pipes_into_public(tmp_path: Path) -> None:
    result = _shell(f"{CURVECERT} keygen | tee pair | {CURVECERT} public", tmp_path)
    assert result.returncode == 0, result.stderr
    pair = (tmp_path / "pair").read_text().splitlines()
    assert result.stdout.strip() == pair[1]  # the public key keygen printed


def test_a_bare_secret_key_on_stdin(run_cli: Run) -> None:
    cert = Certificate.new()
    result = run_cli("public", input=f"{cert.secret_txt}\n")
    assert result.code == 0 and result.out.strip() == cert.public_txt


def test_fingerprint_files_keys_and_stdin(run_cli: Run, tmp_path: Path) -> None:
    alice = Certificate.new(name="alice")
    alice.save(tmp_path / "alice")
    bare = Certificate.new()
    stdin_key = Certificate.new()
    # `--`: a Z85 key may start with '-'.
    result = run_cli("fingerprint", "--", str(tmp_path / "alice"),
                     str(tmp_path / "alice_secret"), bare.public_txt, "-",
                     input=stdin_key.public_txt + "\n")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"{alice.fingerprint} alice ({tmp_path / 'alice'})",
        f"{alice.fingerprint} alice ({tmp_path / 'alice_secret'})",
        f"{bare.fingerprint} - (key)",
        f"{stdin_key.fingerprint} - (key)",
    ]
    cert_on_stdin = run_cli("fingerprint", "-",
                            input=(tmp_path / "alice").read_bytes())
    assert cert_on_stdin.out == f"{alice.fingerprint} alice (<stdin>)\n"


def test_fingerprint_reports_the_good_inputs_and_fails_on_the_bad(run_cli: Run,
                                                                  tmp_path: Path) -> None:
    Certificate.new().save(tmp_path / "ok")
    result = run_cli("fingerprint", str(tmp_path / "ok"), str(tmp_path / "missing"))
    assert result.code == 3
    assert len(result.out.splitlines()) == 1
    assert result.err.startswith(f"curvecert: error: {tmp_path / 'missing'}: ")


def test_export_writes_the_public_certificate_with_metadata(run_cli: Run,
                                                             tmp_path: Path) -> None:
    cert = Certificate.new(name="server", role="db")
    cert.save(tmp_path / "server")
    out = run_cli("export", str(tmp_path / "server_secret"))
    assert out.code == 0, out.err
    assert cert.secret_txt is not None and cert.secret_txt not in out.out
    target = tmp_path / "server.pub"
    written = run_cli("export", str(tmp_path / "server_secret"), "-o", str(target))
    assert written.code == 0, written.err
    loaded = Certificate.load(target)
    assert not loaded.has_secret and loaded.public_key == cert.public_key
    assert dict(loaded.meta) == {"name": "server", "role": "db"}
    assert target.stat().st_mode & 0o777 == 0o644
    again = run_cli("export", str(tmp_path / "server_secret"), "-o", str(target))
    assert again.code == 3 and "--force" in again.err
    assert run_cli("export", str(tmp_path / "server_secret"), "-o", str(target),
                   "-f").code == 0


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
@pytest.mark.parametrize("command", ["public", "export", "probe", "serve-auth"])
def test_secret_files_readable_by_others_are_refused(run_cli: Run, tmp_path: Path,
                                                     command: str, mode: int) -> None:
    cert = Certificate.new()
    cert.save(tmp_path / "c")
    secret = tmp_path / "c_secret"
    os.chmod(secret, mode)
    args = {
        "public": ["public", str(secret)],
        "export": ["export", str(secret)],
        "probe": ["probe", "tcp://127.0.0.1:1", "--server-key", cert.public_txt,
                  "--cert", str(secret), "--timeout", "0.2"],
        "serve-auth": ["serve-auth", "--zap-endpoint", "tcp://127.0.0.1:1",
                       "--server-cert", str(secret), "--forwarders", str(tmp_path),
                       "--store", str(tmp_path)],
    }[command]
    refused = run_cli(*args)
    assert refused.code == 3, refused.err
    assert refused.err.count("\n") == 1
    assert f"chmod 600 {secret}" in refused.err and f"{mode:04o}" in refused.err
    if command in ("public", "export"):
        allowed = run_cli(*args, env={"CURVECERT_ALLOW_WEAK_SECRET_MODES": "1"})
        assert allowed.code == 0, allowed.err
        assert "chmod 600" in allowed.err  # still said, as a warning


def test_fingerprint_json(run_cli: Run, tmp_path: Path) -> None:
    cert = Certificate.new(name="n")
    cert.save(tmp_path / "n")
    data = json.loads(run_cli("fingerprint", "--json", str(tmp_path / "n")).out)
    assert data == {"items": [{"path": str(tmp_path / "n"), "name": "n",
                               "public_key": cert.public_txt,
                               "public_key_hex": cert.public_key.hex(),
                               "fingerprint": cert.fingerprint}], "findings": []}
