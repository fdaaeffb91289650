"""`curvecert passwd` as a real subprocess: stdin passwords, 0600 files, --force, list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from curvecert.auth.passwords import PasswordFile
from curvecert.auth.pwtable import CheckResult
from tests.conftest import CliResult

Run = Callable[..., CliResult]


def test_add_list_remove(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "conf" / "passwords"
    result = run_cli("passwd", "add", "alice", "--file", str(path), input="wonder land\n")
    assert result.code == 0, result.err
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    text = path.read_text()
    assert text.startswith("alice=$argon2id$") and "wonder" not in text
    assert "wonder" not in result.out + result.err
    assert PasswordFile(path).check("alice", b"wonder land") is CheckResult.OK

    assert run_cli("passwd", "add", "bob", "--stdin", "-F", str(path), input="b\n").code == 0
    listed = run_cli("passwd", "list", "--file", str(path))
    assert (listed.code, listed.out) == (0, "alice\nbob\n")

    removed = run_cli("passwd", "remove", "alice", "--file", str(path))
    assert removed.code == 0
    assert run_cli("passwd", "list", "--file", str(path)).out == "bob\n"
    assert (path.stat().st_mode & 0o777) == 0o600


def test_existing_user_needs_force(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    assert run_cli("passwd", "add", "alice", "-F", str(path), input="one\n").code == 0
    refused = run_cli("passwd", "add", "alice", "-F", str(path), input="two\n")
    assert refused.code == 3 and "--force" in refused.err
    assert PasswordFile(path).check("alice", b"one") is CheckResult.OK
    forced = run_cli("passwd", "add", "alice", "--force", "-F", str(path), input="two\n")
    assert forced.code == 0
    assert PasswordFile(path).check("alice", b"two") is CheckResult.OK


def test_environment_variable_names_the_file(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "env-pw"
    env = {"CURVECERT_PASSWORDS": str(path)}
    assert run_cli("passwd", "add", "carol", input="c\n", env=env).code == 0
    assert run_cli("passwd", "list", env=env).out == "carol\n"


def test_no_password_argument_exists(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    result = run_cli("passwd", "add", "alice", "hunter2", "-F", str(path), input="x\n")
    assert result.code == 2 and not path.exists()
    result = run_cli("passwd", "add", "alice", "--password", "hunter2", "-F", str(path))
    assert result.code == 2 and not path.exists()


def test_bad_input_is_refused(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    assert run_cli("passwd", "add", "alice", "-F", str(path), input="").code == 2
    assert run_cli("passwd", "add", "alice", "-F", str(path), input="a\nb\n").code == 2
    assert run_cli("passwd", "add", "a=b", "-F", str(path), input="x\n").code == 3
    assert not path.exists()


def test_plaintext_for_czmq(run_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    result = run_cli("passwd", "add", "admin", "--plaintext", "-F", str(path), input="secret\n")
    assert result.code == 0 and "clear text" in result.err
    assert path.read_text() == "admin=secret\n"


def test_list_and_remove_errors(run_cli: Run, tmp_path: Path) -> None:
    missing = run_cli("passwd", "list", "-F", str(tmp_path / "none"))
    assert missing.code == 3 and "does not exist" in missing.err
    path = tmp_path / "pw"
    path.write_text("admin=secret\nbroken\n")
    broken = run_cli("passwd", "list", "-F", str(path))
    assert broken.code == 3 and f"{path}:2" in broken.err and "secret" not in broken.err
    path.write_text("admin=secret\n")
    gone = run_cli("passwd", "remove", "bob", "-F", str(path))
    assert gone.code == 3 and "no user" in gone.err
