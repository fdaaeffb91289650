"""`curvecert passwd` and `PasswordFile` against hostile inputs (issue 12): FIFOs, devices,
sockets and non-UTF-8 passwords give one-line errors at once; `--json` follows its schema.
Real `os.mkfifo`, a real unix socket, real subprocesses."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from curvecert.auth.passwords import PasswordFile
from curvecert.auth.pwtable import CheckResult
from curvecert.errors import OperationalError
from tests.conftest import CliResult

Run = Callable[..., CliResult]
SCHEMAS = Path(__file__).resolve().parents[2] / "curvecert" / "schemas"


def _schema(name: str) -> dict[str, object]:
    return json.loads((SCHEMAS / name).read_text())  # type: ignore[no-any-return]


@pytest.fixture(params=["fifo", "socket", "device"])
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "passwords"
    sock = None
    if request.param == "fifo":
        os.mkfifo(path)
    elif request.param == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    else:
        path = Path("/dev/zero")
    yield path
    if sock is not None:
        sock.close()


def _one_line_error(result: CliResult) -> None:
    assert result.code == 3, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("curvecert: error: "), result.err
    assert "not a regular file" in lines[0] and "Traceback" not in result.err


@pytest.mark.parametrize("args", [["list"], ["remove", "alice"], ["add", "alice"]])
def test_cli_refuses_special_files_at_once(run_cli: Run, special: Path,
                                           args: list[str]) -> None:
    result = run_cli("passwd", *args, "--file", str(special), input="pw\n", timeout=10)
    _one_line_error(result)


def test_library_refuses_special_files(special: Path) -> None:
    with pytest.raises(OperationalError, match="not a regular file"):
        PasswordFile(special)


def test_file_replaced_by_a_fifo_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    pf = PasswordFile(path, missing_ok=True)
    pf.add("alice", "pw", plaintext=True)
    assert pf.check("alice", b"pw") is CheckResult.OK
    path.unlink()
    os.mkfifo(path)
    assert pf.refresh(force=True)  # returns at once: the FIFO is never opened blocking
    assert pf.error is not None and "not a regular file" in pf.error
    assert pf.check("alice", b"pw") is CheckResult.UNAVAILABLE  # 500 for PLAIN
    path.unlink()
    path.write_text("alice=pw\n")
    pf.refresh(force=True)
    assert pf.check("alice", b"pw") is CheckResult.OK


@pytest.mark.parametrize("data", [b"\xff\xfepw\n", b"caf\xe9\n", b"\xc3\n"])
def test_non_utf8_password_is_one_line_without_bytes(run_cli: Run, tmp_path: Path,
                                                     data: bytes) -> None:
    path = tmp_path / "pw"
    result = run_cli("passwd", "add", "alice", "--file", str(path), input=data)
    assert result.code == 3 and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert lines == ["curvecert: error: the password read from stdin is not UTF-8 text"]
    assert not path.exists()


def test_json_outputs_follow_their_schemas(run_cli: Run, tmp_path: Path) -> None:
    path = str(tmp_path / "pw")
    added = run_cli("passwd", "add", "alice", "--file", path, "--json", input="a\n")
    assert added.code == 0, added.err
    doc = json.loads(added.out)
    jsonschema.validate(doc, _schema("passwd-add.json"))
    assert doc == {"path": path, "user": "alice", "action": "added", "scheme": "argon2id"}
    for args, scheme in ((["--scheme", "scrypt"], "scrypt"), (["--plaintext"], "clear")):
        out = run_cli("passwd", "add", "bob", "--force", "--file", path, "--json", *args,
                      input="b\n")
        doc = json.loads(out.out)
        jsonschema.validate(doc, _schema("passwd-add.json"))
        assert (doc["action"], doc["scheme"]) == ("added" if scheme == "scrypt" else
                                                  "updated", scheme)
    listed = json.loads(run_cli("passwd", "list", "--file", path, "--json").out)
    jsonschema.validate(listed, _schema("passwd-list.json"))
    assert listed["items"] == [{"user": "alice", "scheme": "argon2id"},
                               {"user": "bob", "scheme": "clear"}]
    removed = json.loads(run_cli("passwd", "remove", "bob", "--file", path, "--json").out)
    jsonschema.validate(removed, _schema("passwd-remove.json"))
    assert removed == {"path": path, "user": "bob", "action": "removed"}
