"""`curvecert new | show | verify | keygen | public` through the real CLI (subprocesses).

Every exit code (0 ok, 1 findings, 2 usage, 3 operational), file modes from creation,
refusal to overwrite, atomic replacement with --force, JSON shapes, stdin input, colour
only on a terminal, and secrets in the output only when asked for.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from curvecert.certs.cert import Certificate
from tests.conftest import CliResult

Run = Callable[..., CliResult]

CLIENT_PUBLIC = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
CLIENT_SECRET = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
CLIENT_HEX = "bb88471d65e2659b30c55a5321cebb5aab2b70a398645c26dca2b2fcb43fc518"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def one_error_line(result: CliResult) -> str:
    """The stderr of a failed command: exactly one line, `curvecert: error: ...`."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("curvecert: error: ")
    assert "Traceback" not in result.err
    return lines[0]


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """A certificate pair written by curvecert (the client test keys), as `tmp/client`."""
    cert = Certificate.from_secret(CLIENT_SECRET, {"name": "Client [ops]", "note": 'say "hi"'})
    cert.save(tmp_path / "client")
    return tmp_path / "client"


# --- new ----------------------------------------------------------------------------------


def test_new_writes_a_private_pair(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "alice"
    r = run_cli("new", str(path), "--name", "Alice Example", "--email", "alice@example.org",
                "--org", "ACME", "--meta", "role=worker", "-m", "empty=")
    assert r.code == 0, r.err
    assert mode(path) == 0o644 and mode(tmp_path / "alice_secret") == 0o600
    cert = Certificate.load(tmp_path / "alice_secret")
    assert list(cert.meta.items()) == [("name", "Alice Example"),
                                       ("email", "alice@example.org"),
                                       ("organization", "ACME"), ("role", "worker"),
                                       ("empty", "")]
    assert Certificate.load(path).meta == cert.meta  # metadata in both files
    assert f"public key:  {cert.public_txt}\n" in r.out
    assert f"fingerprint: {cert.fingerprint}\n" in r.out
    assert cert.secret_txt and cert.secret_txt not in r.out + r.err


def test_new_secret_is_private_from_creation_under_any_umask(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    # a CLI process that starts with umask 0 still writes 0600 / 0644
    code = ("import os, runpy, sys; os.umask(0); sys.argv = ['curvecert', 'new', 'd'];"
            "runpy.run_module('curvecert', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(None),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert mode(tmp_path / "d_secret") == 0o600 and mode(tmp_path / "d") == 0o644


def test_new_json(run_cli: Run, tmp_path: Path) -> None:
    r = run_cli("new", str(tmp_path / "s"), "--name", "server", "--meta", "site=eu", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert set(data) == {"path", "secret_path", "public_key", "public_key_hex", "fingerprint",
                         "metadata", "not_before", "not_after"}
    cert = Certificate.load(tmp_path / "s_secret")
    assert data["public_key"] == cert.public_txt
    assert data["fingerprint"] == cert.fingerprint
    assert data["metadata"] == {"name": "server", "site": "eu"}
    assert data["path"] == str(tmp_path / "s")
    assert data["secret_path"] == str(tmp_path / "s_secret")
    assert cert.secret_txt and cert.secret_txt not in r.out + r.err


def test_new_refuses_to_overwrite(run_cli: Run, pair: Path) -> None:
    before = {p: p.read_bytes() for p in pair.parent.iterdir()}
    r = run_cli("new", str(pair))
    assert r.code == 3
    assert one_error_line(r) == (f"curvecert: error: {pair}: already exists "
                                 "(use --force to replace it)")
    assert {p: p.read_bytes() for p in pair.parent.iterdir()} == before
    assert r.out == ""


def test_new_refuses_when_only_the_secret_exists(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "c_secret").write_text("keep me")
    r = run_cli("new", str(tmp_path / "c"))
    assert r.code == 3 and "c_secret: already exists" in one_error_line(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_secret"]
    assert (tmp_path / "c_secret").read_text() == "keep me"


def test_new_force_replaces_atomically_and_restores_0600(run_cli: Run, pair: Path) -> None:
    secret = pair.parent / "client_secret"
    os.chmod(secret, 0o644)
    old_inodes = (os.stat(pair).st_ino, os.stat(secret).st_ino)
    r = run_cli("new", str(pair), "--force", "--name", "replaced")
    assert r.code == 0, r.err
    assert mode(secret) == 0o600 and mode(pair) == 0o644
    # renamed into place (new inodes), not rewritten in place; no temporary files left
    assert (os.stat(pair).st_ino, os.stat(secret).st_ino) != old_inodes
    assert sorted(p.name for p in pair.parent.iterdir()) == ["client", "client_secret"]
    cert = Certificate.load(secret)
    assert cert.public_txt != CLIENT_PUBLIC and cert.meta == {"name": "replaced"}


@pytest.mark.parametrize(("args", "message"), [
    (["--meta", "novalue"], "is not KEY=VALUE"),
    (["--meta", "bad name=x"], "not a valid metadata name"),
    (["--meta", "=x"], "not a valid metadata name"),
    (["--meta", "nämé=x"], "not a valid metadata name"),
    (["--name", "a", "--meta", "name=b"], "given twice"),
    (["--meta", "x=it's \"both\""], "both quote kinds"),
    (["--unknown"], "No such option"),
])
def test_new_usage_errors(run_cli: Run, tmp_path: Path, args: list[str], message: str) -> None:
    r = run_cli("new", str(tmp_path / "c"), *args)
    assert r.code == 2
    assert message in r.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("path", "message"), [("x_secret", "PATH names the public file"),
                                               ("-", "not '-'")])
def test_new_path_usage_errors(run_cli: Run, tmp_path: Path, path: str, message: str) -> None:
    r = run_cli("new", path, cwd=tmp_path)
    assert r.code == 2 and message in r.err
    assert list(tmp_path.iterdir()) == []


def test_new_missing_directory_is_operational(run_cli: Run, tmp_path: Path) -> None:
    r = run_cli("new", str(tmp_path / "nope" / "c"))
    assert r.code == 3
    assert "cannot write" in one_error_line(r)


def test_new_warns_about_czmq_limits(run_cli: Run, tmp_path: Path) -> None:
    r = run_cli("new", str(tmp_path / "c"), "--meta", "blob=" + "x" * 600, "--meta",
                'say=say "hi"')
    assert r.code == 0
    assert "fixed 512-byte buffer" in r.err
    assert "double quotes" in r.err
    assert Certificate.load(tmp_path / "c").meta["say"] == 'say "hi"'


# --- show ---------------------------------------------------------------------------------


def test_show_for_people(run_cli: Run, pair: Path) -> None:
    r = run_cli("show", str(pair.parent / "client_secret"))
    assert r.code == 0, r.err
    assert CLIENT_PUBLIC in r.out
    assert Certificate.from_public(CLIENT_PUBLIC).fingerprint in r.out
    assert "Client [ops]" in r.out  # metadata is never read as rich markup
    assert 'say "hi"' in r.out
    assert "secret certificate" in r.out
    assert CLIENT_SECRET not in r.out + r.err
    assert not ANSI.search(r.out)
    revealed = run_cli("show", str(pair.parent / "client_secret"), "--reveal-secret")
    assert CLIENT_SECRET in revealed.out


def test_show_json_public_and_secret(run_cli: Run, pair: Path) -> None:
    expected = {"public_key": CLIENT_PUBLIC,
                "public_key_hex": CLIENT_HEX,
                "fingerprint": Certificate.from_public(CLIENT_PUBLIC).fingerprint,
                "metadata": {"name": "Client [ops]", "note": 'say "hi"'},
                "not_before": None, "not_after": None}
    pub = json.loads(run_cli("show", str(pair), "--json").out)
    assert pub == {"path": str(pair), **expected, "has_secret": False}
    secret_path = str(pair.parent / "client_secret")
    r = run_cli("show", secret_path, "--json")
    assert json.loads(r.out) == {"path": secret_path, **expected, "has_secret": True}
    assert CLIENT_SECRET not in r.out + r.err
    revealed = json.loads(run_cli("show", secret_path, "--json", "--reveal-secret").out)
    assert revealed["secret_key"] == CLIENT_SECRET
    # --reveal-secret on a public file reveals nothing (there is nothing)
    assert "secret_key" not in json.loads(run_cli("show", str(pair), "--json",
                                                  "--reveal-secret").out)


def test_show_reads_stdin(run_cli: Run, pair: Path) -> None:
    r = run_cli("show", "-", "--json", input=(pair.parent / "client_secret").read_bytes())
    data = json.loads(r.out)
    assert data["path"] == "<stdin>" and data["has_secret"] is True
    assert data["public_key"] == CLIENT_PUBLIC


def test_show_never_picks_up_the_secret_sibling(run_cli: Run, pair: Path) -> None:
    assert json.loads(run_cli("show", str(pair), "--json").out)["has_secret"] is False


def test_show_malformed_file_is_one_line_with_path_and_line(run_cli: Run,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("metadata\n    ok = 1\n  bad = 2\n")
    r = run_cli("show", str(bad))
    assert r.code == 3
    assert one_error_line(r) == (f"curvecert: error: {bad}:3: indentation of 2 spaces is "
                                 "not a multiple of 4")
    verbose = run_cli("-v", "show", str(bad))
    assert verbose.code == 3 and "Traceback" in verbose.err


@pytest.mark.parametrize(("text", "where"), [
    ('curve\n    public-key = "short"\n', ":2: public-key (columns 19-23) must be exactly 40"),
    ("metadata\n", ": no curve/public-key entry"),
    (f'curve\n    public-key = "{"0" * 40}"\n    secret-key = "{CLIENT_SECRET}"\n',
     ":3: secret-key does not belong to public-key")])
def test_show_invalid_certificates(run_cli: Run, tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "c"
    path.write_text(text)
    r = run_cli("show", str(path))
    assert r.code == 3
    assert one_error_line(r).startswith(f"curvecert: error: {path}{where}")
    assert CLIENT_SECRET not in r.out + r.err


def test_show_missing_file_and_directory(run_cli: Run, tmp_path: Path) -> None:
    r = run_cli("show", str(tmp_path / "missing"))
    assert r.code == 3 and "cannot read" in one_error_line(r)
    r = run_cli("show", str(tmp_path))
    assert r.code == 3 and "is a directory" in one_error_line(r)


def test_show_warns_about_an_exposed_secret(run_cli: Run, pair: Path) -> None:
    os.chmod(pair.parent / "client_secret", 0o644)
    r = run_cli("show", str(pair.parent / "client_secret"))
    assert r.code == 0
    assert "curvecert: WARNING: " in r.err and "chmod 600" in r.err


# --- verify -------------------------------------------------------------------------------


def test_verify_clean(run_cli: Run, pair: Path) -> None:
    (pair.parent / "plain").write_text(f'curve\n    public-key = "{CLIENT_PUBLIC}"\n')
    r = run_cli("verify", str(pair.parent / "plain"))
    assert r.code == 0, r.out
    assert r.out == "" and "OK: 1 file, no findings" in r.err


def test_verify_findings_exit_1_with_path_and_line(run_cli: Run, pair: Path) -> None:
    os.chmod(pair.parent / "client_secret", 0o640)
    bad = pair.parent / "bad"
    bad.write_text("metadata\n  x = 1\n")
    r = run_cli("verify", str(pair), str(pair.parent / "client_secret"), str(bad))
    assert r.code == 1
    lines = r.out.splitlines()
    assert f"{pair}:9: warning: metadata value of 'note' contains '\"'" in r.out
    assert any(line.startswith(f"{pair}_secret: error: secret file has mode 0640 "
                               "(group can read)") for line in lines)
    assert any(line.startswith(f"{bad}:2: error: indentation") for line in lines)
    assert "error" in r.err and "in 3 files" in r.err
    assert CLIENT_SECRET not in r.out + r.err


def test_verify_json(run_cli: Run, pair: Path) -> None:
    r = run_cli("verify", "--json", str(pair))
    assert r.code == 1
    data = json.loads(r.out)
    assert data["ok"] is False and data["items"] == [{"path": str(pair), "ok": False}]
    assert data["findings"] == [{"path": str(pair), "line": 9, "severity": "warning",
                                 "code": "meta-quote", "message": data["findings"][0]["message"]}]
    clean = pair.parent / "clean"
    Certificate.from_public(CLIENT_PUBLIC).save(clean)
    ok = run_cli("verify", "--json", str(clean))
    assert ok.code == 0 and json.loads(ok.out) == {
        "ok": True, "items": [{"path": str(clean), "ok": True}], "findings": []}


def test_verify_stdin(run_cli: Run) -> None:
    r = run_cli("verify", "-", input=f'curve\n    public-key = "{"0" * 40}"\n')
    assert r.code == 1 and "<stdin>:2: error: public-key is all zero bytes" in r.out


def test_verify_usage_and_operational(run_cli: Run, tmp_path: Path) -> None:
    assert run_cli("verify").code == 2
    r = run_cli("verify", str(tmp_path / "missing"))
    assert r.code == 3 and "cannot read" in one_error_line(r)


# --- keygen -------------------------------------------------------------------------------


def test_keygen_plain(run_cli: Run) -> None:
    r = run_cli("keygen")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0] == "== CURVE PUBLIC KEY ==" and lines[2] == "== CURVE SECRET KEY =="
    assert Certificate.from_secret(lines[3]).public_txt == lines[1]


def test_keygen_json_is_fresh(run_cli: Run) -> None:
    first = json.loads(run_cli("keygen", "--json").out)
    second = json.loads(run_cli("keygen", "--json").out)
    assert set(first) == {"public_key", "public_key_hex", "secret_key", "fingerprint"}
    cert = Certificate.from_secret(first["secret_key"])
    assert (cert.public_txt, cert.fingerprint) == (first["public_key"], first["fingerprint"])
    assert first["secret_key"] != second["secret_key"]


def test_keygen_warns_when_stdout_is_a_shared_file(
        tmp_path: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    out = tmp_path / "keys"
    with open(out, "w") as fh:
        os.chmod(out, 0o644)
        proc = subprocess.run([sys.executable, "-m", "curvecert", "keygen"], stdout=fh,
                              stderr=subprocess.PIPE, env=cli_env(None), timeout=60)
    assert proc.returncode == 0
    assert b"others can access" in proc.stderr
    assert "== CURVE SECRET KEY ==" in out.read_text()


# --- public -------------------------------------------------------------------------------


def test_public_from_a_secret_file(run_cli: Run, pair: Path) -> None:
    r = run_cli("public", str(pair.parent / "client_secret"))
    assert (r.code, r.out) == (0, CLIENT_PUBLIC + "\n")
    assert CLIENT_SECRET not in r.err


@pytest.mark.parametrize("stdin", [CLIENT_SECRET, CLIENT_SECRET + "\n", f"  {CLIENT_SECRET}\r\n"])
def test_public_from_a_key_on_stdin(run_cli: Run, stdin: str) -> None:
    r = run_cli("public", input=stdin)
    assert (r.code, r.out) == (0, CLIENT_PUBLIC + "\n")
    assert run_cli("public", "-", input=stdin).out == CLIENT_PUBLIC + "\n"


def test_public_from_a_certificate_on_stdin_and_json(run_cli: Run, pair: Path) -> None:
    r = run_cli("public", "--json", input=(pair.parent / "client_secret").read_bytes())
    assert r.code == 0
    assert json.loads(r.out) == {
        "path": None, "public_key": CLIENT_PUBLIC,
        "public_key_hex": CLIENT_HEX,
        "fingerprint": Certificate.from_public(CLIENT_PUBLIC).fingerprint}


@pytest.mark.parametrize(("stdin", "message"), [
    ("", "40 Z85 characters, got 0"), ("short", "40 Z85 characters, got 5"),
    ("~" * 40, "not a Z85 character"),
    (f'metadata\ncurve\n    public-key = "{CLIENT_PUBLIC}"\n', "holds no secret key")])
def test_public_bad_stdin(run_cli: Run, stdin: str, message: str) -> None:
    r = run_cli("public", input=stdin)
    assert r.code == 3
    line = one_error_line(r)
    assert "<stdin>" in line and message in line


def test_public_refuses_a_public_file(run_cli: Run, pair: Path) -> None:
    r = run_cli("public", str(pair))
    assert r.code == 3
    assert one_error_line(r).startswith(f"curvecert: error: {pair}: holds no secret key")


def test_public_takes_no_secret_on_the_command_line(run_cli: Run) -> None:
    r = run_cli("public", "--secret", CLIENT_SECRET)
    assert r.code == 2
    r = run_cli("public", CLIENT_SECRET)  # never taken as a key, and not echoed back
    assert r.code == 2 and "looks like a key" in r.err
    assert CLIENT_SECRET not in r.out + r.err


def test_public_prompts_without_echo_on_a_terminal(
        cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    env = cli_env(None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: become `curvecert public` on the new terminal at once
        os.execve(sys.executable, [sys.executable, "-m", "curvecert", "public"], env)
    out = b""
    try:
        while b"not echoed" not in out:
            ready, _, _ = select.select([fd], [], [], 30)
            assert ready, out
            out += os.read(fd, 4096)
        os.write(fd, CLIENT_SECRET.encode() + b"\n")
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO once the child has exited
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = out.decode(errors="replace")
    assert CLIENT_PUBLIC in text
    assert CLIENT_SECRET not in text  # the terminal never echoed it


# --- everywhere ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["new", "show", "verify", "keygen", "public"])
def test_help_has_examples(run_cli: Run, command: str) -> None:
    r = run_cli(command, "--help")
    assert r.code == 0
    assert "Examples:" in r.out and f"curvecert {command}" in r.out
    assert run_cli(command, "-h").out == r.out


def test_root_help_lists_the_commands(run_cli: Run) -> None:
    r = run_cli("--help")
    assert r.code == 0
    for command in ("new", "show", "verify", "keygen", "public"):
        assert f"  {command} " in r.out


def _on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run the CLI with stdout on a pseudo-terminal and return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "curvecert", *args], stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_colour_only_on_a_terminal_and_never_with_no_color(
        run_cli: Run, pair: Path, cli_env: Callable[[dict[str, str] | None], dict[str, str]]
) -> None:
    env = {"NO_COLOR": "", "TERM": "xterm-256color"}
    assert ANSI.search(_on_a_terminal(["show", str(pair)], cli_env(env)))
    assert not ANSI.search(_on_a_terminal(["show", str(pair)], cli_env({**env, "NO_COLOR": "1"})))
    assert not ANSI.search(_on_a_terminal(["show", str(pair)], cli_env({**env, "TERM": "dumb"})))
    piped = run_cli("show", str(pair), env=env)
    assert piped.code == 0 and CLIENT_PUBLIC in piped.out and not ANSI.search(piped.out)


def test_exit_code_table(run_cli: Run, pair: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    Certificate.from_public(CLIENT_PUBLIC).save(clean)
    assert run_cli("verify", str(clean)).code == 0
    assert run_cli("verify", str(pair)).code == 1
    assert run_cli("show").code == 2
    assert run_cli("nonsense").code == 2
    assert run_cli("show", str(tmp_path / "missing")).code == 3
