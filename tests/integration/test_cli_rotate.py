"""`curvecert rotate`: the three roles, refusals, and its JSON against its schema."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import jsonschema

from curvecert.certs.cert import Certificate
from tests.conftest import CliResult

Run = Callable[..., CliResult]
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "curvecert" / "schemas"
                     / "rotate.json").read_text())


def _json(r: CliResult) -> dict[str, object]:
    assert r.code == 0, r.err
    data: dict[str, object] = json.loads(r.out)
    jsonschema.validate(data, SCHEMA)
    return data


def test_make_promote_retire(tmp_path: Path, run_cli: Run) -> None:
    p = str(tmp_path / "srv")
    assert run_cli("rotate", p).code == 3  # nothing to rotate yet
    assert run_cli("new", p, "--name", "srv", "--meta", "site=eu", "--expires", "1d").code == 0
    old = Certificate.load(p + "_secret")
    made = _json(run_cli("rotate", p, "--not-after", "2030-01-01T00:00:00Z", "--json"))
    item = made["items"][0]  # type: ignore[index]
    assert item["role"] == "next" and item["not_after"] == "2030-01-01T00:00:00Z"
    nxt = Certificate.load(p + ".next_secret")
    assert dict(nxt.meta) == {"name": "srv", "site": "eu", "not-after": "2030-01-01T00:00:00Z"}
    assert stat.S_IMODE(os.stat(p + ".next_secret").st_mode) == 0o600
    assert run_cli("rotate", p).code == 3  # PATH.next exists
    status = _json(run_cli("rotate", p, "--status", "--json"))
    roles = {i["role"]: i for i in status["items"]}  # type: ignore[attr-defined]
    assert roles["current"]["public_key"] == old.public_txt
    assert roles["next"]["public_key"] == nxt.public_txt and not roles["prev"]["exists"]
    _json(run_cli("rotate", p, "--promote", "--json"))
    assert Certificate.load(p + "_secret") == nxt and Certificate.load(p + ".prev") == old
    assert not os.path.exists(p + ".next") and not os.path.exists(p + ".next_secret")
    assert stat.S_IMODE(os.stat(p + ".prev_secret").st_mode) == 0o600
    assert run_cli("rotate", p, "--promote").code == 3  # no next key
    run_cli("rotate", p)
    assert run_cli("rotate", p, "--promote").code == 3  # PATH.prev still there
    assert Certificate.load(p) == nxt  # nothing moved by the refused promote
    retired = _json(run_cli("rotate", p, "--retire", "--json"))
    assert len(retired["items"]) == 2  # type: ignore[arg-type]
    assert not os.path.exists(p + ".prev_secret") and not os.path.exists(p + ".prev")
    assert run_cli("rotate", p, "--retire").code == 3


def test_usage_errors(tmp_path: Path, run_cli: Run) -> None:
    p = str(tmp_path / "srv")
    run_cli("new", p)
    assert run_cli("rotate", p + "_secret").code == 2
    assert run_cli("rotate", p, "--promote", "--expires", "1d").code == 2
    assert run_cli("rotate", p, "--expires", "soon").code == 2
