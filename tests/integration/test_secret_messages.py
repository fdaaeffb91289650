"""No secret fragment in any message (issue 12; docs/security.md, "Secrets in messages").

A damaged secret certificate (the value pasted twice, one bad character, truncated, extra
quotes, ...) must give errors that say what is wrong and where (path:line, columns) but
share no 4-character substring with the secret key's Z85 text.

- In-process, hypothesis: every mutation kind at any position, through the library paths
  the commands use (`Certificate.load`, `verify_file` text and JSON, `keys.decode_key` for
  `public` on a bare key, the store scan behind `store check`).
- Real subprocesses: `show`, `verify`, `verify --json`, `public`, `store check` and the
  daemon (`serve-auth --server-cert`) for one mutation of each family.

A 4-gram of the secret that a message shares by chance (English words, a path) also
appears when the same mutation is applied to another key; such a 4-gram is not a leak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curvecert import store
from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.certs.verify import verify_file
from curvecert.errors import CurvecertError

#: name -> function(secret Z85 text, position) -> the damaged `secret-key` line
MUTATIONS: dict[str, Callable[[str, int], str]] = {
    "pasted-twice": lambda v, i: f'    secret-key = "{v}{v}"',
    "pasted-twice-quoted": lambda v, i: f'    secret-key = "{v}""{v}"',
    "pasted-twice-spaced": lambda v, i: f'    secret-key = "{v}" "{v}"',
    "bad-character": lambda v, i: f'    secret-key = "{v[:i]}~{v[i + 1:]}"',
    "non-ascii": lambda v, i: f'    secret-key = "{v[:i]}é{v[i + 1:]}"',
    "space-inside": lambda v, i: f'    secret-key = "{v[:i]} {v[i:]}"',
    "truncated": lambda v, i: f'    secret-key = "{v[:i]}"',
    "extra-quote-front": lambda v, i: f'    secret-key = ""{v}"',
    "extra-quote-back": lambda v, i: f'    secret-key = "{v}""',
    "no-closing-quote": lambda v, i: f'    secret-key = "{v}',
    "no-equals": lambda v, i: f'    secret-key{v}',
    "unquoted-tail": lambda v, i: f'    secret-key = {v} {v[i:]}',
    "overflow-group": lambda v, i: f'    secret-key = "#####{v[5:]}"',
    "line-break": lambda v, i: f'    secret-key = "{v[:i]}\n{v[i:]}"',
    "nul": lambda v, i: f'    secret-key = "{v[:i]}\x00{v[i:]}"',
    "wrong-indent": lambda v, i: f'  secret-key = "{v}"',
    "as-a-name": lambda v, i: f"    {v}",
}


def _damaged(cert: Certificate, kind: str, position: int) -> bytes:
    secret = cert.secret_txt
    assert secret is not None
    text = certfile.dump(cert, secret=True)
    line = next(ln for ln in text.splitlines() if "secret-key" in ln)
    return text.replace(line, MUTATIONS[kind](secret, position % 40)).encode("utf-8")


def _grams(text: str) -> set[str]:
    return {text[i:i + 4] for i in range(len(text) - 3)}


def _leaks(secret: str, output: str, control: Callable[[], str]) -> set[str]:
    """4-grams of `secret` in `output` that do not also appear for another key."""
    shared = {g for g in _grams(secret) if g in output}
    if shared:
        shared -= _grams(control())
    return shared


# --- in-process: every path a command takes, any position -------------------------------


def _library_messages(path: Path, data: bytes, secret_key: str) -> str:
    path.write_bytes(data)
    out: list[str] = []
    try:
        Certificate.load(path)
    except CurvecertError as exc:
        out.append(str(exc))
    findings = verify_file(path)
    out += [str(f) for f in findings]
    out.append(json.dumps([f.to_dict() for f in findings]))
    line = next((ln for ln in data.decode("utf-8", "replace").splitlines()
                 if "secret-key" in ln), "")
    try:  # `public` given the damaged value as a bare key
        keys.decode_key(line.split("=", 1)[-1].strip().strip('"'), what="secret key")
    except CurvecertError as exc:
        out.append(str(exc))
    sdir = path.parent / "store"
    sdir.mkdir(exist_ok=True)
    (sdir / "client.key").write_bytes(data)
    out += [str(f) for f in store.scan(str(sdir)).findings]
    return "\n".join(out)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(MUTATIONS)), position=st.integers(0, 39),
       seed=st.binary(min_size=32, max_size=32), other=st.binary(min_size=32, max_size=32))
def test_library_messages_carry_no_secret_fragment(tmp_path: Path, kind: str, position: int,
                                                   seed: bytes, other: bytes) -> None:
    cert = Certificate.from_secret(seed, [("name", "victim")])
    twin = Certificate.from_secret(other if other != seed else bytes(31) + b"\x01",
                                   [("name", "victim")])
    secret = cert.secret_txt
    assert secret is not None
    target = tmp_path / "victim_secret"
    text = _library_messages(target, _damaged(cert, kind, position), secret)
    leaks = _leaks(secret, text, lambda: _library_messages(
        target, _damaged(twin, kind, position), secret))
    assert not leaks, f"{kind}@{position}: {sorted(leaks)} in\n{text}"


# --- real processes: every command and the daemon ---------------------------------------


def _run(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "curvecert", *args], input=stdin,
                          capture_output=True, env=env, timeout=60)
    return proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")


def _all_outputs(work: Path, data: bytes, env: dict[str, str]) -> str:
    secret_file = work / "victim_secret"
    secret_file.write_bytes(data)
    os.chmod(secret_file, 0o600)
    sdir = work / "store"
    sdir.mkdir(exist_ok=True)
    (sdir / "victim.key").write_bytes(data)
    line = next((ln for ln in data.decode("utf-8", "replace").splitlines()
                 if "secret-key" in ln), "")
    bare = line.split("=", 1)[-1].strip().strip('"').encode("utf-8") + b"\n"
    outputs = [
        _run(["show", str(secret_file)], env),
        _run(["show", "--json", str(secret_file)], env),
        _run(["verify", str(secret_file)], env),
        _run(["verify", "--json", str(secret_file)], env),
        _run(["public", str(secret_file)], env),
        _run(["public", "--json", str(secret_file)], env),
        _run(["public"], env, stdin=bare),
        _run(["store", "check", "--store", str(sdir)], env),
        _run(["store", "check", "--json", "--store", str(sdir)], env),
        # the daemon reads --server-cert at start; its log is where the error goes
        _run(["serve-auth", "--store", str(sdir), "--front", "tcp://127.0.0.1:*",
              "--back", "tcp://127.0.0.1:9", "--pattern", "push-pull",
              "--server-cert", str(secret_file)], env),
    ]
    return "\n".join(outputs)


#: One of each family (a subprocess per command is slow; the in-process test covers all).
PROCESS_KINDS = ("pasted-twice-quoted", "bad-character", "truncated", "extra-quote-back",
                 "no-equals")


@pytest.mark.parametrize("kind", PROCESS_KINDS)
def test_commands_and_daemon_carry_no_secret_fragment(
        tmp_path: Path, kind: str,
        cli_env: Callable[[dict[str, str] | None], dict[str, str]]) -> None:
    env = cli_env(None)
    cert = Certificate.new(name="victim")
    twin = Certificate.new(name="victim")
    secret = cert.secret_txt
    assert secret is not None
    position = 17
    text = _all_outputs(tmp_path, _damaged(cert, kind, position), env)
    assert "Traceback" not in text
    leaks = _leaks(secret, text, lambda: _all_outputs(
        tmp_path, _damaged(twin, kind, position), env))
    assert not leaks, f"{kind}: {sorted(leaks)} in\n{text}"
