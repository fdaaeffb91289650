"""Password files: CZMQ's `user=password` lines, scrypt entries, watching, atomic edits."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.auth import hashing
from curvecert.auth.hashing import hash_password
from curvecert.auth.passwords import PasswordFile, parse
from curvecert.auth.pwtable import CheckResult
from curvecert.errors import OperationalError, PasswordFileError

FAST = {"n": 16}  # cheap scrypt for tests; the format carries its own parameters


def _count_kdf(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every scrypt call made through curvecert.auth.passwords."""
    import hashlib

    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashing.hashlib, "scrypt", counting)  # type: ignore[attr-defined]
    return calls


def test_czmq_format_and_comments() -> None:
    table = parse(b"# users\nadmin=secret\n\nbob=pa=ss word \n#carol=x\n  # indented\n")
    assert table.users() == ["admin", "bob"]
    assert table.check("admin", b"secret") is CheckResult.OK
    assert table.check("bob", b"pa=ss word ") is CheckResult.OK  # split at the first '='
    assert table.check("bob", b"pa=ss word") is CheckResult.BAD_PASSWORD
    assert table.check("carol", b"x") is CheckResult.UNKNOWN_USER


def test_crlf_lines_do_not_keep_carriage_returns() -> None:
    table = parse(b"admin=secret\r\nbob=x\r\n")
    assert table.check("admin", b"secret") is CheckResult.OK
    assert table.check("bob", b"x") is CheckResult.OK


def test_empty_password_entry_matches_only_empty() -> None:
    table = parse(b"guest=\n")
    assert table.check("guest", b"") is CheckResult.OK
    assert table.check("guest", b"x") is CheckResult.BAD_PASSWORD


@pytest.mark.parametrize("data, line, what", [
    (b"admin=x\nnoequals\n", 2, "expected user=password"),
    (b"=x\n", 1, "may not be empty"),
    (b"admin = x\n", 1, "blanks"),
    (b"admin=x\nadmin=y\n", 2, "appears twice"),
    (b"a=x\nb=\xff\xfe\n", 2, "UTF-8"),
    (b"a=$scrypt$n=16,r=8,p=1$c2FsdA\n", 1, "scrypt"),
    (b"a=$scrypt$n=15,r=8,p=1$c2FsdHNhbHQ$" + b"A" * 43 + b"\n", 1, "power of 2"),
    (b"a=$scrypt$n=16,r=8,p=1$!!!$" + b"A" * 43 + b"\n", 1, "base64"),
    (b"a=$scrypt$x$c2FsdHNhbHQ$" + b"A" * 43 + b"\n", 1, "parameters"),
    (b"a=" + b"x" * 5000 + b"\n", 1, "longer than"),
])
def test_malformed_lines_name_path_and_line(data: bytes, line: int, what: str) -> None:
    with pytest.raises(PasswordFileError) as info:
        parse(data, path="/etc/pw")
    assert str(info.value).startswith(f"/etc/pw:{line}: ")
    assert what in str(info.value)


def test_errors_never_show_the_password() -> None:
    with pytest.raises(PasswordFileError) as info:
        parse(b"admin=hunter2\nadmin=hunter3\n")
    assert "hunter" not in str(info.value)


def test_hashed_entries_round_trip() -> None:
    value = hash_password("s3cret", **FAST)
    assert value.startswith("$scrypt$n=16,r=8,p=1$") and "s3cret" not in value
    table = parse(f"alice={value}\n".encode())
    assert table.check("alice", b"s3cret") is CheckResult.OK
    assert table.check("alice", b"s3cret ") is CheckResult.BAD_PASSWORD
    assert table.check("bob", b"s3cret") is CheckResult.UNKNOWN_USER


def test_default_cost_is_documented() -> None:
    assert (hashing.SCRYPT_N, hashing.SCRYPT_R, hashing.SCRYPT_P) == (16384, 8, 1)


def test_success_cache_skips_kdf_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse(f"alice={hash_password('pw', **FAST)}\nbob={hash_password('pw2', **FAST)}\n"
                  .encode(), cache_size=1)
    assert table.check("alice", b"pw") is CheckResult.OK
    calls = _count_kdf(monkeypatch)
    assert table.check("alice", b"pw") is CheckResult.OK and calls == []   # cached
    assert table.check("alice", b"wrong") is CheckResult.BAD_PASSWORD and calls == [1]
    assert table.check("bob", b"pw2") is CheckResult.OK                  # evicts alice
    assert len(table._cache) == 1
    calls.clear()
    assert table.check("alice", b"pw") is CheckResult.OK and calls == [1]


def test_cache_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse(f"alice={hash_password('pw', **FAST)}\n".encode(), cache_ttl=0)
    table.check("alice", b"pw")
    assert table._cache == {}


def test_unknown_user_pays_a_kdf_when_hashes_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse(f"alice={hash_password('pw', **FAST)}\n".encode())
    calls = _count_kdf(monkeypatch)
    assert table.check("mallory", b"pw") is CheckResult.UNKNOWN_USER
    assert calls == [1]


# --- the file -------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OperationalError, match="does not exist"):
        PasswordFile(tmp_path / "nope")
    pf = PasswordFile(tmp_path / "nope", missing_ok=True)
    assert pf.users() == [] and pf.check("a", b"b") is CheckResult.UNKNOWN_USER


def test_add_remove_list_atomic_private(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    pf = PasswordFile(path, missing_ok=True)
    pf.add("alice", "wonder land")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert "wonder" not in path.read_text()
    pf.add("bob", "builder", plaintext=True)
    assert "bob=builder\n" in path.read_text()
    assert pf.users() == ["alice", "bob"]
    assert pf.check("alice", b"wonder land") is CheckResult.OK
    with pytest.raises(PasswordFileError, match="already exists"):
        pf.add("alice", "x")
    pf.add("alice", "new one", force=True)
    assert pf.check("alice", b"wonder land") is CheckResult.BAD_PASSWORD
    assert pf.check("alice", b"new one") is CheckResult.OK
    pf.remove("alice")
    assert pf.users() == ["bob"]
    with pytest.raises(PasswordFileError, match="no user"):
        pf.remove("alice")


def test_edits_keep_comments(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"# team\nadmin=x\r\n# end\n")
    PasswordFile(path).add("zoe", "z", plaintext=True)
    assert path.read_bytes() == b"# team\nadmin=x\r\n# end\nzoe=z\n"  # untouched lines kept


def test_edits_keep_line_ends_and_a_password_ending_in_cr(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"user0=pw\r\r\nbob=x\r\n")   # user0's password is "pw\r"
    pf = PasswordFile(path)
    pf.add("alice", "new", plaintext=True)
    assert path.read_bytes() == b"user0=pw\r\r\nbob=x\r\nalice=new\r\n"
    assert pf.check("user0", b"pw\r") is CheckResult.OK
    pf.remove("bob")
    assert path.read_bytes() == b"user0=pw\r\r\nalice=new\r\n"
    pf.add("alice", "newer", plaintext=True, force=True)
    assert path.read_bytes() == b"user0=pw\r\r\nalice=newer\r\n"


@pytest.mark.parametrize("user, password", [("", "x"), ("a=b", "x"), (" a", "x"), ("#a", "x"),
                                            ("a", ""), ("a", "x\ny"), ("a", "p" * 256)])
def test_add_validates(tmp_path: Path, user: str, password: str) -> None:
    with pytest.raises(PasswordFileError):
        PasswordFile(tmp_path / "pw", missing_ok=True).add(user, password)


def test_plaintext_that_looks_like_a_hash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="read as a hash"):
        PasswordFile(tmp_path / "pw", missing_ok=True).add("a", "$scrypt$x", plaintext=True)


def test_changes_are_picked_up_without_waiting_a_second(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"admin=one\n")
    pf = PasswordFile(path, check_interval=0)
    assert pf.check("admin", b"one") is CheckResult.OK
    # Same size, same second: CZMQ's mtime-seconds check (and its 5 s age rule) misses this.
    path.write_bytes(b"admin=two\n")
    assert pf.check("admin", b"two") is CheckResult.OK
    assert pf.check("admin", b"one") is CheckResult.BAD_PASSWORD


def test_check_interval_limits_stat_calls(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"admin=one\n")
    pf = PasswordFile(path, check_interval=3600)
    pf.check("admin", b"one")
    path.write_bytes(b"admin=two\n")
    assert pf.check("admin", b"two") is CheckResult.BAD_PASSWORD  # not re-checked yet
    assert pf.refresh(force=True)
    assert pf.check("admin", b"two") is CheckResult.OK


def test_failed_reload_fails_closed_then_recovers(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"admin=secret\n")
    pf = PasswordFile(path, check_interval=0)
    generation = pf.generation
    with caplog.at_level(logging.ERROR, logger="curvecert.auth.passwords"):
        path.write_bytes(b"admin=secret\nbroken line\n")
        assert pf.check("admin", b"secret") is CheckResult.UNAVAILABLE
    assert pf.error is not None and f"{path}:2" in pf.error
    assert "denying every PLAIN login" in caplog.text and "secret" not in caplog.text
    assert pf.generation == generation + 1
    assert pf.check("admin", b"secret") is CheckResult.UNAVAILABLE  # stays closed
    path.write_bytes(b"admin=secret\n")
    assert pf.check("admin", b"secret") is CheckResult.OK and pf.error is None


def test_deleted_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"admin=secret\n")
    pf = PasswordFile(path, check_interval=0)
    os.unlink(path)
    assert pf.check("admin", b"secret") is CheckResult.UNAVAILABLE


def test_world_readable_plaintext_file_warns(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"admin=secret\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="curvecert.auth.passwords"):
        PasswordFile(path)
    assert "readable by group/others" in caplog.text and "secret" not in caplog.text


def test_rewrite_refuses_a_file_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"admin=x\n")
    pf = PasswordFile(path, check_interval=3600)
    path.write_bytes(b"garbage\n")
    with pytest.raises(PasswordFileError):
        pf.add("bob", "y")
    assert path.read_bytes() == b"garbage\n"


_user = st.text(st.characters(exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]),
                min_size=1, max_size=20).filter(lambda u: "=" not in u and u[0] != "#")
_pw = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\0"),
              min_size=1, max_size=40).filter(lambda p: not hashing.is_hash(p))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_user, _pw, max_size=5))
def test_plaintext_files_round_trip(entries: dict[str, str]) -> None:
    data = "".join(f"{u}={p}\n" for u, p in entries.items()).encode()
    table = parse(data)
    assert table.users() == list(entries)
    for user, pw in entries.items():
        assert table.check(user, pw.encode()) is CheckResult.OK
