"""Every `--json` output matches its JSON Schema (curvecert/schemas/COMMAND.json, docs/json.md).

The schemas ship in the package; this test finds them there, checks each is a valid
draft 2020-12 schema, and validates the real output of every command that has `--json`,
in its success and its failure shapes (findings, a negative verdict). It also fails when
a command offers `--json` without a schema, or a schema has no sample run here: a command
added with `--json` gets a schema file and a row in `SAMPLES`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import zmq
from referencing import Registry, Resource

from curvecert.certs.cert import Certificate
from curvecert.cli import cli
from tests.conftest import _cli_env

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SCHEMA_DIR = resources.files("curvecert") / "schemas"


def _schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for entry in SCHEMA_DIR.iterdir():
        if entry.name.endswith(".json"):
            out[entry.name.removesuffix(".json")] = json.loads(entry.read_text())
    return out


SCHEMAS = _schemas()
# The schemas refer to each other by file name (defs.json), resolved against their $id.
REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())

# schema name -> runs: (arguments, stdin, exit codes allowed); {placeholders} from `scene`.
SAMPLES: dict[str, list[tuple[list[str], str | None, set[int]]]] = {
    "new": [(["new", "{tmp}/fresh", "--name", "fresh", "--expires", "30d", "--json"], None,
             {0})],
    "show": [(["show", "--json", "{pub}"], None, {0}),
             (["show", "--json", "{sec}", "--reveal-secret"], None, {0}),
             (["show", "--json", "-"], "{pub_text}", {0})],
    "export": [(["export", "{sec}", "-o", "{tmp}/exported", "--json"], None, {0})],
    "keygen": [(["keygen", "--json"], None, {0})],
    "public": [(["public", "--json", "{sec}"], None, {0}),
               (["public", "--json"], "{secret_key}", {0})],
    "verify": [(["verify", "--json", "{pub}", "{sec}"], None, {0}),
               (["verify", "--json", "{pub}", "{bad}", "{missing}"], None, {3}),
               (["verify", "--json", "{bad}"], None, {1})],
    "fingerprint": [(["fingerprint", "--json", "{pub}", "--", "{public_key}"], None, {0}),
                    (["fingerprint", "--json", "{pub}", "{missing}"], None, {3})],
    "store-list": [(["store", "list", "--json", "--store", "{store}"], None, {0}),
                   (["store", "list", "--json", "--store", "{bad_store}"], None, {0})],
    "store-check": [(["store", "check", "--json", "--store", "{store}"], None, {0}),
                    (["store", "check", "--json", "--store", "{bad_store}"], None, {1})],
    "probe": [(["probe", "--json", "{listening}", "--timeout", "5"], None, {0}),
              (["probe", "--json", "{closed}", "--timeout", "2"], None, {1}),
              (["probe", "--json", "{listening}", "--server-key", "{public_key}",
                "--timeout", "2"], None, {1})],
    "rotate": [(["rotate", "{tmp}/rot", "--json"], None, {0}),
               (["rotate", "{tmp}/rot", "--status", "--json"], None, {0})],
}


def _json_commands() -> Iterator[str]:
    """Schema names (`store list` -> `store-list`) of every command with a --json option."""
    ctx = click.Context(cli)
    todo: list[tuple[list[str], click.Command]] = [([], cli)]
    while todo:
        path, cmd = todo.pop()
        if any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params):
            yield "-".join(path)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                todo.append(([*path, name], sub))


@pytest.fixture(scope="module")
def listening() -> Iterator[str]:
    """A NULL ROUTER server (admits every probe) on a loopback port."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield f"tcp://127.0.0.1:{port}"
    sock.close()
    ctx.term()


@pytest.fixture
def scene(tmp_path: Path, listening: str) -> dict[str, str]:
    cert = Certificate.new(name="alice")
    cert.save(tmp_path / "alice")
    (tmp_path / "bad").write_text("curve\n  public-key = \"short\"\n")
    good, bad = tmp_path / "store", tmp_path / "bad_store"
    good.mkdir()
    bad.mkdir()
    cert.save_public(good / "alice.key")
    Certificate.new().save_public(bad / "other.key")
    (bad / "junk").write_text("not a certificate\n")
    Certificate.new(name="rot").save(tmp_path / "rot")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    assert cert.secret_txt is not None
    return {"tmp": str(tmp_path), "pub": str(tmp_path / "alice"),
            "sec": str(tmp_path / "alice_secret"), "bad": str(tmp_path / "bad"),
            "missing": str(tmp_path / "missing"), "store": str(good), "bad_store": str(bad),
            "listening": listening, "closed": closed, "public_key": cert.public_txt,
            "secret_key": cert.secret_txt, "pub_text": (tmp_path / "alice").read_text()}


def _run(args: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    env = _cli_env(None)
    return subprocess.run([sys.executable, "-m", "curvecert", *args], input=stdin or "",
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMAS[name])
    assert SCHEMAS[name]["$id"] == f"https://curvecert.invalid/schemas/{name}.json"


def _validated_elsewhere(name: str) -> bool:
    """A schema whose command needs a live daemon is validated by that command's tests."""
    tests = Path(__file__).resolve().parents[1]
    here = Path(__file__).resolve()
    return any(f'"{name}.json"' in p.read_text() for p in tests.rglob("test_*.py") if p != here)


def test_every_json_command_has_a_schema_and_every_schema_a_sample() -> None:
    commands = set(_json_commands())
    assert not commands - set(SCHEMAS), f"--json without a schema: {commands - set(SCHEMAS)}"
    unsampled = {n for n in set(SCHEMAS) - set(SAMPLES) - {"defs"}
                 if not _validated_elsewhere(n)}
    assert not unsampled, f"schemas with no sample in SAMPLES (or a test of their own): " \
                          f"{unsampled}"


def test_schemas_ship_in_the_package() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    assert "schemas/*.json" in data["tool"]["setuptools"]["package-data"]["curvecert"]


CASES = [(name, i) for name in sorted(SAMPLES) for i in range(len(SAMPLES[name]))]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_output_matches_the_schema(scene: dict[str, str], name: str, index: int) -> None:
    if name not in SCHEMAS:
        pytest.fail(f"no schema curvecert/schemas/{name}.json")
    args, stdin, codes = SAMPLES[name][index]
    fill: Callable[[str], str] = lambda text: text.format(**scene)  # noqa: E731
    result = _run([fill(a) for a in args], fill(stdin) if stdin is not None else None)
    assert result.returncode in codes, (args, result.returncode, result.stderr)
    document = json.loads(result.stdout)
    validator = jsonschema.Draft202012Validator(SCHEMAS[name], registry=REGISTRY)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
