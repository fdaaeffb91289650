"""Password hashes: caps at load time, argon2id entries, equal cost for every user."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.auth import hashing
from curvecert.auth.passwords import parse
from curvecert.auth.pwtable import MAX_SHAPES, CheckResult, PasswordTable
from curvecert.errors import PasswordFileError

SALT, DIGEST = "c2FsdHNhbHRzYWx0", "A" * 43  # 12-byte salt, 32-byte hash


@pytest.mark.parametrize("value", [
    f"$scrypt$n=131072,r=8,p=1${SALT}${DIGEST}",     # n above the cap
    f"$scrypt$n=16384,r=32,p=1${SALT}${DIGEST}",     # r=32 used to load, then fail checks
    f"$scrypt$n=65536,r=16,p=1${SALT}${DIGEST}",     # n*r*p above the cap
    f"$scrypt$n=1000,r=8,p=1${SALT}${DIGEST}",       # not a power of 2
    f"$argon2id$v=19$m=65537,t=2,p=1${SALT}${DIGEST}",
    f"$argon2id$v=19$m=19456,t=5,p=1${SALT}${DIGEST}",
    f"$argon2id$v=19$m=8,t=2,p=2${SALT}${DIGEST}",   # m below 8*p
    f"$argon2id$v=16$m=19456,t=2,p=1${SALT}${DIGEST}",
    f"$argon2i$v=19$m=19456,t=2,p=1${SALT}${DIGEST}",
    "$argon2id$v=19$m=19456,t=2,p=1$!!$AAAA",
])
def test_entries_above_the_caps_are_refused_with_path_and_line(value: str) -> None:
    data = f"# comment\nalice=x\nbob={value}\n".encode()
    with pytest.raises(PasswordFileError) as err:
        parse(data, path="pw")
    assert str(err.value).startswith("pw:3: ")
    assert value[12:] not in str(err.value)


@settings(max_examples=30, deadline=None)
@given(log_n=st.integers(1, 4), r=st.integers(1, hashing.SCRYPT_MAX_R),
       p=st.integers(1, hashing.SCRYPT_MAX_P))
def test_every_scrypt_entry_that_loads_can_be_checked(log_n: int, r: int, p: int) -> None:
    value = hashing.hash_password("pw", n=1 << log_n, r=r, p=p)
    table = parse(f"u={value}\n".encode())
    assert table.check("u", b"pw") is CheckResult.OK
    assert table.check("u", b"px") is CheckResult.BAD_PASSWORD


def test_scrypt_at_the_largest_memory_cap_can_be_checked() -> None:
    n, r = hashing.SCRYPT_MAX_N, hashing.SCRYPT_MAX_WORK // hashing.SCRYPT_MAX_N
    entry = hashing.parse_hash(f"$scrypt$n={n},r={r},p=1${SALT}${DIGEST}")
    assert entry.matches(b"pw") is False  # runs (no maxmem error), no match


@settings(max_examples=10, deadline=None)
@given(t=st.integers(1, hashing.ARGON2_MAX_T), p=st.integers(1, hashing.ARGON2_MAX_P))
def test_every_argon2_entry_that_loads_can_be_checked(t: int, p: int) -> None:
    value = hashing.hash_argon2id("pw", t=t, m=8 * p, p=p)
    table = parse(f"u={value}\n".encode())
    assert table.check("u", b"pw") is CheckResult.OK
    assert table.check("u", b"px") is CheckResult.BAD_PASSWORD


def test_new_entries_default_to_argon2id() -> None:
    value = hashing.new_entry("s3cret")
    assert value.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and "s3cret" not in value
    assert hashing.parse_hash(value).matches(b"s3cret")
    assert hashing.new_entry("s3cret", "scrypt").startswith("$scrypt$n=16384,r=8,p=1$")
    with pytest.raises(ValueError):
        hashing.new_entry("x", "md5")


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    calls: collections.Counter[str] = collections.Counter()
    for cls in (hashing.Scrypt, hashing.Argon2id):
        real = cls.matches

        def counting(self: hashing.Verifier, password: bytes,
                     real: object = real) -> bool:
            calls[repr(self.shape)] += 1
            return real(self, password)  # type: ignore[operator]

        monkeypatch.setattr(cls, "matches", counting)
    yield calls


MIXED = {
    "clear": "clear-pw",
    "scrypt": hashing.hash_password("scrypt-pw", n=16, r=1, p=1),
    "argon": hashing.hash_argon2id("argon-pw", t=1, m=8, p=1),
}


@pytest.mark.parametrize("files", [
    {"clear": MIXED["clear"]},
    {"scrypt": MIXED["scrypt"]},
    {"argon": MIXED["argon"]},
    MIXED,
])
def test_every_check_runs_the_same_kdfs(files: dict[str, str],
                                        kdf_calls: collections.Counter[str]) -> None:
    table = PasswordTable.from_mapping(files, cache_ttl=0)
    seen = []
    for user in [*files, "nobody"]:
        for password in (b"wrong", f"{user}-pw".encode()):
            kdf_calls.clear()
            table.check(user, password)
            seen.append(dict(kdf_calls))
    assert all(s == seen[0] for s in seen), seen
    assert sum(seen[0].values()) == table.shapes == len(files.keys() - {"clear"})


def test_quick_answers_only_without_a_kdf(kdf_calls: collections.Counter[str]) -> None:
    table = PasswordTable.from_mapping(MIXED)
    assert table.quick("clear", b"clear-pw") is None  # would be faster than an unknown user
    assert table.quick("nobody", b"x") is None
    assert table.check("scrypt", b"scrypt-pw") is CheckResult.OK
    kdf_calls.clear()
    assert table.quick("scrypt", b"scrypt-pw") is CheckResult.OK  # cached success
    assert not kdf_calls
    clear_only = PasswordTable.from_mapping({"a": "b"})
    assert clear_only.quick("a", b"b") is CheckResult.OK
    assert clear_only.quick("x", b"b") is CheckResult.UNKNOWN_USER


def test_shape_cap_names_the_line() -> None:
    lines = [f"u{n}={hashing.hash_password('pw', n=1 << n, r=1, p=1)}"
             for n in range(1, MAX_SHAPES + 2)]
    with pytest.raises(PasswordFileError, match=rf"^pw:{MAX_SHAPES + 1}: more than"):
        parse("\n".join(lines).encode(), path="pw")
    parse("\n".join(lines[:-1]).encode(), path="pw")
