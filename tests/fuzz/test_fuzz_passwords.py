"""Fuzz target: PLAIN password files (`curvecert.auth.passwords`).

Properties, for any bytes and for grammar-aware files (entries, hashes, comments, CRLF,
blanks, duplicates, bad hashes, non-UTF-8):

- `parse` returns a table or raises `PasswordFileError` whose message starts with
  `path:line:` (a line that exists); never another exception;
- an error message never quotes a password or a hash (each test password is a unique
  marker, searched for in the message);
- a table answers `check` for any user and password bytes without raising, OK exactly
  for the stored plaintext password;
- CRLF line ends mean the same table;
- `PasswordFile.add` / `remove` on any file: a file that parses is rewritten so that it
  parses again with exactly the change (other entries untouched), mode 0600; a file that
  does not parse is refused with `PasswordFileError` and left byte for byte as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile

from hypothesis import example, given
from hypothesis import strategies as st

from curvecert.auth import hashing, passwords, pwtable
from curvecert.errors import PasswordFileError
from tests.fuzz.conftest import FUZZ, scaled

# Cheap scrypt parameters keep hashed entries affordable in a fuzz loop.
_HASHED = {f"h{i}": f"hashed-pw-{i}" for i in range(3)}
_HASHES = {u: hashing.hash_password(p, n=2, r=1, p=1) for u, p in _HASHED.items()}
_USERS = ["alice", "bob", "carol", "#x", " alice", "alice ", "", "ü", "a=b", "h0", "h1"]


@st.composite
def _line(draw: st.DrawFn, n: int) -> tuple[str, str | None]:
    """One line of a password file and the marker password it holds (if any)."""
    marker = f"MARK{n:04d}x"
    kind = draw(st.integers(0, 19)) - 10  # below 0: an ordinary entry
    pick = draw(st.integers(0, 5))
    if pick < 4:  # mostly a fresh, valid name; sometimes a repeat or an invalid one
        user = f"user{n}"
    elif pick == 4:
        user = draw(st.sampled_from(_USERS))
    else:
        user = draw(st.text(max_size=6))
    if kind < 0 or kind > 5:
        suffix = draw(st.sampled_from(["", " ", "=", chr(13), "#"]))
        return f"{user}={marker}{suffix}", marker
    if kind == 0:
        return "# " + draw(st.text(max_size=10)), None
    if kind == 1:
        return draw(st.sampled_from(["", "   ", "\t", "\r"])), None
    if kind == 2:
        return user, None  # no '='
    if kind == 3:
        h = draw(st.sampled_from(sorted(_HASHES)))
        return f"{h}={_HASHES[h]}", None
    if kind == 4:  # a damaged hash that still carries the marker
        bad = draw(st.sampled_from([
            f"$scrypt$n=16,r=1,p=1${marker}$AAAAAAAAAAAAAAAAAAAAAA",
            f"$scrypt${marker}", f"$scrypt$n=3,r=1,p=1$AAAAAAAAAAA${marker}",
            f"$scrypt$n=16,r=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA$x{marker}",
            f"$scrypt$n=1048576,r=99,p=1$AAAAAAAAAAA${marker}"]))
        return f"{user}={bad}", marker
    return "x" * draw(st.integers(4090, 4100)) + "=" + marker, marker


@st.composite
def password_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A password file (bytes) and the marker passwords written into it."""
    lines = [draw(_line(i)) for i in range(draw(st.integers(0, 8)))]
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join(line for line, _m in lines) + draw(st.sampled_from(["", end]))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        data += b"\nbad=\xff\xfe"
    return data, [m for _l, m in lines if m]


def _parse(data: bytes) -> pwtable.PasswordTable | PasswordFileError:
    try:
        return passwords.parse(data, path="pw.txt")
    except PasswordFileError as exc:
        return exc


def _check_error(data: bytes, exc: PasswordFileError, markers: list[str]) -> None:
    message = str(exc)
    head, _, _ = message.partition(": ")
    path, _, line = head.rpartition(":")
    assert path == "pw.txt", message
    assert 1 <= int(line) <= data.count(b"\n") + 1, message
    for marker in markers:
        assert marker not in message, "an error message quotes a password"


@FUZZ
@given(st.binary(max_size=300))
@example(b"a=b\r\r\n")
@example(b"=x")
@example(b"a=$scrypt$n=0,r=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA")
def test_parse_any_bytes(data: bytes) -> None:
    got = _parse(data)
    if isinstance(got, PasswordFileError):
        _check_error(data, got, [])
        return
    for user in got.users():
        passwords.validate_user(user)


@FUZZ
@given(password_files(), st.binary(max_size=40), st.text(max_size=8))
def test_parse_files_and_check(case: tuple[bytes, list[str]], guess: bytes, who: str) -> None:
    data, markers = case
    got = _parse(data)
    if isinstance(got, PasswordFileError):
        _check_error(data, got, markers)
        return
    assert isinstance(got.check(who, guess), pwtable.CheckResult)
    for user in got.users():
        entry = got.entries[user]
        if isinstance(entry, bytes):
            assert got.check(user, entry) is pwtable.CheckResult.OK
            assert got.check(user, entry + b"!") is pwtable.CheckResult.BAD_PASSWORD
        elif user in _HASHED:
            assert got.check(user, _HASHED[user].encode()) is pwtable.CheckResult.OK
    same = _parse(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert isinstance(same, pwtable.PasswordTable)
    assert same.users() == got.users()


@scaled(0.25)
@given(password_files(), st.sampled_from(["alice", "dave", "h0"]),
       st.sampled_from(["add", "add-force", "remove"]))
@example((b"user0=MARK0000x\r\r\n", ["MARK0000x"]), "alice", "add")
def test_add_and_remove_rewrite_exactly(case: tuple[bytes, list[str]], user: str,
                                        action: str) -> None:
    data, _markers = case
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "passwords")
        with open(path, "wb") as fh:
            fh.write(data)
        before = _parse(data)
        try:
            pf = passwords.PasswordFile(path)
            if action == "remove":
                pf.remove(user)
            else:
                pf.add(user, "new-pass", force=action == "add-force", plaintext=True)
        except PasswordFileError:
            with open(path, "rb") as fh:
                assert fh.read() == data, "a refused change modified the file"
            if isinstance(before, pwtable.PasswordTable):
                # refused only for a reason that concerns the user asked for
                assert (action == "add") == (user in before.users())
            return
        assert isinstance(before, pwtable.PasswordTable)
        with open(path, "rb") as fh:
            after = passwords.parse(fh.read())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        others = [u for u in before.users() if u != user]
        assert [u for u in after.users() if u != user] == others
        for u in others:
            assert after.entries[u] == before.entries[u]
        if action == "remove":
            assert user not in after.users()
        else:
            assert after.check(user, b"new-pass") is pwtable.CheckResult.OK


# --- regressions found by the fuzzer ---------------------------------------------------------

def test_rewrite_keeps_a_password_that_ends_in_cr(tmp_path: os.PathLike[str]) -> None:
    """Found by `test_add_and_remove_rewrite_exactly`: in a CRLF file the line
    `user0=pw\\r\\r\\n` holds the password `pw\\r` (one CR belongs to the line end). `add`
    rewrote the file with LF line ends and that password silently lost its CR."""
    path = os.path.join(os.fspath(tmp_path), "passwords")
    with open(path, "wb") as fh:
        fh.write(b"user0=pw\r\r\nbob=x\r\n")
    passwords.PasswordFile(path).add("alice", "new-pass", plaintext=True)
    with open(path, "rb") as fh:
        after = passwords.parse(fh.read())
    assert after.entries["user0"] == b"pw\r"
    assert after.entries["bob"] == b"x"
