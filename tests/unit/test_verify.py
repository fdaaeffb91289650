"""`verify`: every finding, with the path and line it points at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curvecert.certs import verify
from curvecert.certs.cert import Certificate
from curvecert.certs.verify import Finding, check_metadata, check_mode, check_text, verify_file
from curvecert.errors import OperationalError

SERVER_PUBLIC = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
SERVER_SECRET = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
CLIENT_PUBLIC = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
CLIENT_SECRET = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"


def codes(findings: list[Finding]) -> list[tuple[str, int | None]]:
    return [(f.code, f.line) for f in findings]


def write(path: Path, text: str, mode: int) -> str:
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def cert_text(meta: str = "", public: str = SERVER_PUBLIC, secret: str | None = None) -> str:
    text = f"metadata\n{meta}curve\n    public-key = \"{public}\"\n"
    if secret is not None:
        text += f"    secret-key = \"{secret}\"\n"
    return text


def test_a_clean_pair_has_no_findings(tmp_path: Path) -> None:
    Certificate.from_secret(SERVER_SECRET, {"name": "server"}).save(tmp_path / "s")
    assert verify_file(tmp_path / "s") == []
    assert verify_file(tmp_path / "s_secret") == []
    assert verify.verify_files([tmp_path / "s", tmp_path / "s_secret"]) == []


def test_syntax_error_with_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c", "metadata\n    ok = 1\n  bad = 2\n", 0o644)
    found = verify_file(path)
    assert codes(found) == [("syntax", 3)]
    assert found[0].severity == "error"
    assert str(found[0]).startswith(f"{path}:3: error: indentation of 2 spaces")


def test_syntax_error_in_a_secret_file_still_checks_the_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "c_secret", "curve\n  secret-key = \"x\"\n", 0o640)
    assert codes(verify_file(path)) == [("secret-mode", None), ("syntax", 2)]


@pytest.mark.parametrize(("text", "expected"), [
    ("metadata\n", [("no-public-key", None)]),
    ("curve\n    other = 1\n", [("no-public-key", 1)]),
    (cert_text(public="short"), [("key-length", 3)]),
    (cert_text(public=f" {SERVER_PUBLIC}"), [("key-length", 3)]),
    (cert_text(public="~" * 40), [("key-invalid", 3)]),
    (cert_text(public="%nSc1" * 8), [("key-invalid", 3)]),
    (cert_text(public="0" * 40), [("key-zero", 3)]),
    (cert_text() + f'    public-key = "{CLIENT_PUBLIC}"\n', [("duplicate-key", 4)]),
    (cert_text() + "curve\nmetadata\n", [("duplicate-section", 4), ("duplicate-section", 5)]),
    (cert_text(meta="    a = \"1\"\n        deep = \"x\"\n"), [("meta-nested", 3)]),
])
def test_public_file_content(tmp_path: Path, text: str,
                             expected: list[tuple[str, int | None]]) -> None:
    assert codes(verify_file(write(tmp_path / "c", text, 0o644))) == expected


@pytest.mark.parametrize(("secret", "expected"), [
    ("", [("secret-empty", 4)]),
    ("0" * 40, [("secret-none", 4)]),
    ("abc", [("key-length", 4)]),
    ("~" * 40, [("key-invalid", 4)]),
    (CLIENT_SECRET, [("key-mismatch", 4)]),
])
def test_secret_file_content(tmp_path: Path, secret: str,
                             expected: list[tuple[str, int | None]]) -> None:
    path = write(tmp_path / "c_secret", cert_text(secret=secret), 0o600)
    found = verify_file(path)
    assert codes(found) == expected
    if expected[0][0] == "key-mismatch":
        assert SERVER_PUBLIC not in found[0].message  # names the key it derives to
        assert CLIENT_PUBLIC in found[0].message


def test_names_that_mislead(tmp_path: Path) -> None:
    secret_without_suffix = write(tmp_path / "c", cert_text(secret=SERVER_SECRET), 0o600)
    assert codes(verify_file(secret_without_suffix)) == [("secret-name", 4)]
    public_named_secret = write(tmp_path / "d_secret", cert_text(), 0o600)
    assert codes(verify_file(public_named_secret)) == [("no-secret", 2)]


@pytest.mark.parametrize(("mode", "what"), [
    (0o644, "group can read, others can read"), (0o640, "group can read"),
    (0o604, "others can read"), (0o620, "group can write"), (0o601, "others can execute"),
    (0o666, "group can read/write, others can read/write")])
def test_secret_file_modes(tmp_path: Path, mode: int, what: str) -> None:
    path = write(tmp_path / "c_secret", cert_text(secret=SERVER_SECRET), mode)
    found = verify_file(path)
    assert codes(found) == [("secret-mode", None)]
    assert f"mode {mode:04o} ({what})" in found[0].message
    assert f"chmod 600 {path}" in found[0].message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_secret_modes_are_fine(tmp_path: Path, mode: int) -> None:
    assert verify_file(write(tmp_path / "c_secret", cert_text(secret=SERVER_SECRET), mode)) == []


@pytest.mark.parametrize(("mode", "what"), [(0o664, "group can write"),
                                            (0o646, "others can write"),
                                            (0o666, "group can write, others can write")])
def test_public_file_writable_by_others(tmp_path: Path, mode: int, what: str) -> None:
    found = verify_file(write(tmp_path / "c", cert_text(), mode))
    assert codes(found) == [("public-writable", None)]
    assert f"({what})" in found[0].message


@pytest.mark.parametrize("mode", [0o644, 0o444, 0o600, 0o640])
def test_readable_public_files_are_fine(tmp_path: Path, mode: int) -> None:
    assert verify_file(write(tmp_path / "c", cert_text(), mode)) == []


def test_exposed_secret_sibling(tmp_path: Path) -> None:
    Certificate.from_secret(SERVER_SECRET).save(tmp_path / "s")
    os.chmod(tmp_path / "s_secret", 0o644)
    found = verify_file(tmp_path / "s")
    assert [(f.path, f.code) for f in found] == [(f"{tmp_path}/s_secret", "secret-sibling-mode")]


def test_sibling_with_another_key(tmp_path: Path) -> None:
    Certificate.from_secret(SERVER_SECRET).save_public(tmp_path / "s")
    Certificate.from_secret(CLIENT_SECRET).save_secret(tmp_path / "s_secret")
    found = verify_file(tmp_path / "s")
    assert codes(found) == [("sibling-mismatch", None)]
    assert "zcert_load" in found[0].message and CLIENT_PUBLIC in found[0].message


def test_unreadable_sibling_is_not_this_files_finding(tmp_path: Path) -> None:
    Certificate.from_secret(SERVER_SECRET).save_public(tmp_path / "s")
    write(tmp_path / "s_secret", "  broken\n", 0o600)
    assert verify_file(tmp_path / "s") == []


# --- metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize(("meta", "expected"), [
    ('    note = \'say "hi"\'\n', [("meta-quote", 2)]),
    ("    note = it's \"both\"\n", [("meta-unwritable", 2)]),
    ('    a = "1"\n    a = "2"\n', [("meta-duplicate", 3)]),
    ('    created@host = "x"\n', [("meta-name-zmtp", 2)]),
    ('    User-Id = "x"\n', [("meta-reserved", 2)]),
    ('    public-key-owner = "x"\n', [("meta-pyzmq-key", 2)]),
])
def test_metadata_in_files(tmp_path: Path, meta: str,
                           expected: list[tuple[str, int | None]]) -> None:
    assert codes(verify_file(write(tmp_path / "c", cert_text(meta=meta), 0o644))) == expected


def test_duplicate_message_points_at_the_first() -> None:
    found = check_metadata([("a", "1"), ("b", "2"), ("a", "3")], "f", [2, 3, 4])
    assert codes(found) == [("meta-duplicate", 4)]
    assert "(line 2)" in found[0].message


def test_czmq_zauth_512_byte_limit() -> None:
    # one item costs 5 + len(name) + len(value) bytes: "n" with 506 bytes is exactly 512
    assert verify.metadata_wire_size([("n", "v" * 506)]) == 512
    assert check_metadata([("n", "v" * 506)], "f") == []
    found = check_metadata([("n", "v" * 507)], "f", [7])
    assert codes(found) == [("meta-overflow", 7)]
    assert "513 bytes" in found[0].message
    # multi-byte characters count as bytes
    assert verify.metadata_wire_size([("n", "é")]) == 8
    many = [(f"name{i}", "x" * 40) for i in range(12)]
    assert codes(check_metadata(many, "f")) == [("meta-overflow", None)]


def test_metadata_overflow_in_a_file(tmp_path: Path) -> None:
    meta = "".join(f'    item{i} = "{"x" * 60}"\n' for i in range(8))
    found = verify_file(write(tmp_path / "c", cert_text(meta=meta), 0o644))
    assert codes(found) == [("meta-overflow", 2)]


@pytest.mark.parametrize(("name", "code"), [("bad name", "meta-name"), ("", "meta-name"),
                                            ("/x", "meta-name"), ("n" * 256, "meta-name-long")])
def test_metadata_names_from_code(name: str, code: str) -> None:
    assert [f.code for f in check_metadata([(name, "v")], "f")] == [code]


def test_metadata_values_from_code() -> None:
    assert [f.code for f in check_metadata([("a", "x\ny")], "f")] == ["meta-unsafe-text",
                                                                    "meta-unwritable"]
    assert check_metadata([("a", "  spaces, #, =, ünï  ")], "f") == []


# --- pure parts and the finding value ---------------------------------------------------


def test_check_text_facts() -> None:
    found, facts = check_text(cert_text(secret=SERVER_SECRET).encode(), "x_secret")
    assert found == [] and facts.parsed and facts.holds_secret
    assert facts.public_key is not None and len(facts.public_key) == 32
    _, facts = check_text(b"  bad", "y")
    assert not facts.parsed and not facts.holds_secret


def test_check_mode_is_pure() -> None:
    assert check_mode("f", 0o100600, holds_secret=True) == []
    assert [f.code for f in check_mode("f", 0o100644, holds_secret=True)] == ["secret-mode"]
    assert [f.code for f in check_mode("f", 0o100666, holds_secret=False)] == [
        "public-writable"]


def test_finding_value() -> None:
    f = Finding("p", 3, "warning", "code", "msg")
    assert f.location == "p:3" and str(f) == "p:3: warning: msg [code]"
    assert Finding("p", None, "error", "c", "m").location == "p"
    assert f.to_dict() == {"path": "p", "line": 3, "severity": "warning", "code": "code",
                           "message": "msg"}
    assert verify.has_errors([f, Finding("p", None, "error", "c", "m")])
    assert not verify.has_errors([f])
    with pytest.raises(AttributeError):
        f.line = 4  # type: ignore[misc]


def test_unreadable_inputs_are_operational_errors(tmp_path: Path) -> None:
    with pytest.raises(OperationalError, match="is a directory"):
        verify_file(tmp_path)
    with pytest.raises(OperationalError, match="cannot read"):
        verify_file(tmp_path / "missing")


def test_stale_temporary_of_an_interrupted_write_is_reported_once(tmp_path: Path) -> None:
    from curvecert.certs.cert import Certificate
    from curvecert.certs.verify import verify_files

    Certificate.new(name="a").save(tmp_path / "a")
    stale = tmp_path / ".a_secret.0123456789ab.tmp"
    stale.write_text("half a secret")
    (tmp_path / ".other.0123456789ab.tmp").write_text("not ours")
    found = [f for f in verify_files([tmp_path / "a", tmp_path / "a_secret"])
             if f.code == "stale-temporary"]
    assert [f.path for f in found] == [str(stale)]
    assert found[0].severity == "warning"
