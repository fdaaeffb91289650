"""`kill -9` in the middle of every write the CLI makes, many times: never a partial file.

Two kinds of kill, each many times per command:

- deterministic: `tests.faults.killpoint` runs the real CLI and SIGKILLs it right before
  its 1st, 2nd, ... Nth file-system call inside `curvecert.certs.fileio` (create the temporary,
  chmod, write, fsync, close, rename, directory fsync), so every step of every write is
  interrupted once;
- external: the plain CLI process is killed with SIGKILL after an increasing delay spread
  over its whole run time (start-up, parsing, hashing, writing).

After every kill: each target file is byte for byte the old content or a complete new one
(it parses and carries this run's marker); no secret file or temporary has a group/other
permission bit; temporaries left behind are hidden dot-files the store scan ignores; the
store keeps trusting its key. A process that only reloads a store is killed the same way
and must leave the store directory exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from curvecert import store
from curvecert.auth import passwords, pwtable
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.certs.verify import verify_file
from tests.faults.support import leftover_temps, secret_mode_problems, temps_are_ignored

pytestmark = pytest.mark.slow

#: At least this many kills per command (the rest after the fileio steps are external).
MIN_KILLS = 25
MIN_EXTERNAL = 8


@dataclass
class Tally:
    """What the kills produced (asserted on, and printed with -s for the report)."""

    runs: int = 0
    old: int = 0
    new: int = 0
    other: dict[str, int] = field(default_factory=dict)

    def note(self, what: str) -> None:
        self.other[what] = self.other.get(what, 0) + 1


def _env(cli_env: Callable[[dict[str, str] | None], dict[str, str]],
         extra: dict[str, str] | None = None) -> dict[str, str]:
    env = cli_env(extra)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(argv: list[str], env: dict[str, str], stdin: bytes, *, kill_at: int = 0,
         kill_after: float | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[bytes] | int:
    """Run the CLI once; killed by itself at `kill_at` or by us after `kill_after` s."""
    if kill_after is None:
        env = dict(env, CURVECERT_KILL_AT=str(kill_at))
        return subprocess.run([sys.executable, "-m", "tests.faults.killpoint", *argv],
                              input=stdin, capture_output=True, env=env, cwd=cwd, timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "curvecert", *argv], env=env, cwd=cwd,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    try:
        proc.stdin.write(stdin)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    time.sleep(kill_after)  # fault timing (when to kill), not synchronisation
    proc.kill()
    return proc.wait(30)


def _trace_len(argv: list[str], env: dict[str, str], stdin: bytes, tmp: Path) -> int:
    trace = tmp / "trace.log"
    result = subprocess.run([sys.executable, "-m", "tests.faults.killpoint", *argv],
                            input=stdin, capture_output=True, timeout=60,
                            env=dict(env, CURVECERT_KILL_TRACE=str(trace)))
    assert result.returncode == 0, result.stderr.decode()
    n = len(trace.read_text().splitlines())
    trace.unlink()
    assert n >= 5, "the trace saw no write"
    return n


def _run_time(argv: list[str], env: dict[str, str], stdin: bytes) -> float:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "curvecert", *argv], input=stdin,
                            capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return time.monotonic() - start


def _kill_many(argv_for: Callable[[int], list[str]], stdin_for: Callable[[int], bytes],
               env: dict[str, str], tmp: Path, check: Callable[[int], str],
               where: Path) -> Tally:
    """Kill at every fileio step, then at increasing delays; `check(i)` after each."""
    steps = _trace_len(argv_for(0), env, stdin_for(0), tmp)
    check(0)
    duration = _run_time(argv_for(-1), env, stdin_for(-1))
    check(-1)
    tally = Tally()
    plan: list[tuple[int, float | None]] = [(k, None) for k in range(1, steps + 1)]
    external = max(MIN_EXTERNAL, MIN_KILLS - steps)
    plan += [(0, duration * (0.4 + 0.75 * j / (external - 1))) for j in range(external)]
    for i, (kill_at, delay) in enumerate(plan, start=1):
        result = _run(argv_for(i), env, stdin_for(i), kill_at=kill_at, kill_after=delay)
        if delay is None:  # the process must have died at exactly that call
            assert isinstance(result, subprocess.CompletedProcess)
            assert result.returncode == -signal.SIGKILL, (kill_at, result.stderr.decode())
        outcome = check(i)
        tally.runs += 1
        if outcome == "old":
            tally.old += 1
        elif outcome == "new":
            tally.new += 1
        else:
            tally.note(outcome)
    print(f"\n{argv_for(0)[:2]}: {tally} over {steps} fileio steps "
          f"+ {external} external kills; temporaries left: {len(leftover_temps(where))}")
    return tally


# --- curvecert new --force ------------------------------------------------------------------

def test_kill_new_force(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = _env(cli_env)
    pub, sec = tmp_path / "server", tmp_path / "server_secret"
    certfile.save(Certificate.new(name="original"), pub)
    state = {"pub": pub.read_bytes(), "sec": sec.read_bytes()}

    def check(i: int) -> str:
        pub_bytes, sec_bytes = pub.read_bytes(), sec.read_bytes()
        p, s = Certificate.parse(pub_bytes), Certificate.parse(sec_bytes)  # complete files only
        assert not p.has_secret and s.has_secret
        pub_new = pub_bytes != state["pub"]
        sec_new = sec_bytes != state["sec"]
        if pub_new:
            assert p.meta["name"] == f"run{i}"
        if sec_new:
            assert s.meta["name"] == f"run{i}"
        assert not secret_mode_problems(tmp_path, lambda n: n.endswith("_secret"))
        assert stat.S_IMODE(sec.stat().st_mode) == 0o600
        temps_are_ignored(tmp_path)
        state["pub"], state["sec"] = pub_bytes, sec_bytes
        if pub_new:
            # the secret is written first: a new public file always has its secret
            assert sec_new and s.public_key == p.public_key, "public file without its secret"
            return "new"
        if sec_new:
            # killed between the two renames: new secret, old public. Two files cannot
            # change in one step; `verify` flags the mismatch, the next `new --force`
            # repairs it.
            assert any(f.code for f in verify_file(pub)), "mismatched pair not flagged"
            return "new secret, old public"
        return "old"

    tally = _kill_many(lambda i: ["new", "--force", "--name", f"run{i}", str(pub)],
                       lambda i: b"", env, tmp_path, check, tmp_path)
    assert tally.runs >= MIN_KILLS
    assert tally.old >= 1


# --- curvecert store add --------------------------------------------------------------------

def test_kill_store_add(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = _env(cli_env)
    sd = tmp_path / "store"
    key = Certificate.new()
    inputs = tmp_path / "in"
    inputs.mkdir()

    def input_file(i: int) -> Path:
        path = inputs / f"cert{i}"
        if not path.exists():
            certfile.save_public(Certificate(key.public_key, None, [("name", f"run{i}")]),
                                 path)
        return path

    store.add_certificate(sd, Certificate(key.public_key, None, [("name", "original")]))
    target = sd / store.store_filename(key.public_key)
    state = {"bytes": target.read_bytes()}
    other = Certificate.new(name="bystander")
    store.add_certificate(sd, other)

    def check(i: int) -> str:
        data = target.read_bytes()
        cert = Certificate.parse(data)
        snap = store.scan(sd, log_findings=False)
        assert snap.healthy and not snap.findings, snap.findings
        assert set(snap.keys()) == {key.public_key, other.public_key}
        entry = snap.lookup(key.public_key)
        assert entry is not None and entry.meta["name"] == cert.meta["name"]
        temps_are_ignored(sd)
        assert all(stat.S_IMODE(os.lstat(sd / n).st_mode) & 0o022 == 0
                   for n in os.listdir(sd))
        if data == state["bytes"]:
            return "old"
        assert cert.meta["name"] == f"run{i}"
        state["bytes"] = data
        return "new"

    tally = _kill_many(lambda i: ["store", "add", "--force", "--store", str(sd),
                                  str(input_file(i))],
                       lambda i: b"", env, tmp_path, check, sd)
    assert tally.runs >= MIN_KILLS and tally.old >= 1


# --- curvecert passwd add (password on stdin) ------------------------------------------------

def test_kill_passwd_add(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = _env(cli_env)
    pwfile = tmp_path / "passwords"
    pf = passwords.PasswordFile(pwfile, missing_ok=True)
    pf.add("alice", "alice-pw", plaintext=True)
    pf.add("bob", "bob-pw", plaintext=True)
    state = {"bytes": pwfile.read_bytes()}
    fixed = passwords.parse(state["bytes"]).entries

    def check(i: int) -> str:
        data = pwfile.read_bytes()
        table = passwords.parse(data, path=pwfile)  # complete, valid file
        assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
        assert not secret_mode_problems(tmp_path, lambda n: n == "passwords")
        assert {u: table.entries[u] for u in ("alice", "bob")} == fixed
        temps_are_ignored(tmp_path)
        if data == state["bytes"]:
            return "old"
        assert table.users() == ["alice", "bob", "carol"]
        assert table.check("carol", f"carol-{i}".encode()) is pwtable.CheckResult.OK
        state["bytes"] = data
        return "new"

    tally = _kill_many(lambda i: ["passwd", "add", "--force", "--stdin", "--file", str(pwfile),
                                  "carol"],
                       lambda i: f"carol-{i}\n".encode(), env, tmp_path, check, tmp_path)
    assert tally.runs >= MIN_KILLS and tally.old >= 1


# --- a store reload ---------------------------------------------------------------------------

_RELOADER = """
import sys
from curvecert.store.watch import CertStore
store = CertStore(sys.argv[1], watch=True, debounce=0.0).start()
print(len(store), flush=True)
while True:
    store.reload()
"""


def _digest(directory: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            p = Path(dirpath, name)
            out[str(p.relative_to(directory))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_kill_store_reload(tmp_path: Path, cli_env: Callable[..., dict[str, str]]) -> None:
    env = _env(cli_env)
    sd = tmp_path / "store"
    sub = sd / "team"
    sub.mkdir(parents=True)
    for i in range(1000):  # plain writes: the fixture need not be crash-safe itself
        cert = Certificate.new(name=f"c{i}").public_only()
        folder = sd if i < 700 else sub
        (folder / store.store_filename(cert.public_key)).write_text(
            certfile.dump(cert, secret=False))
    before = _digest(sd)
    kills = 25
    for i in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", _RELOADER, str(sd)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        if i % 2:  # half of the kills land during start-up and the first scan
            time.sleep(0.015 * i)  # fault timing, not synchronisation
        else:  # the others after the first snapshot, while it reloads in a loop
            assert proc.stdout.readline().strip() == b"1000"
            time.sleep(0.004 * i)
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
        assert _digest(sd) == before, "a killed reader changed the store"
        assert not leftover_temps(sd) and not leftover_temps(sub)
    snap = store.scan(sd, log_findings=False)
    assert snap.healthy and not snap.findings and len(snap) == 1000
