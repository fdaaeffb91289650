"""A read-only store (and other read-only targets): a clear error, exit 3, nothing partial.

Root ignores permission bits, so "read-only" is made real in two ways:

- a read-only bind mount of the store directory onto itself (EROFS), when this process
  may mount (skipped with the reason otherwise);
- a child that permission bits apply to (`nobody`, or root without the DAC capabilities;
  see `tests.faults.support.unprivileged`) and a directory with mode 0o555 (EACCES).

Reading keeps working: `store list` and `store check` still succeed on a read-only store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from curvecert import store
from curvecert.auth import hashing
from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from tests.faults.support import (
    Unprivileged,
    leftover_temps,
    one_error_line,
    run_cli_as,
    unprivileged,
)

Env = Callable[..., dict[str, str]]


class Scene:
    """A store holding alice, a certificate file for bob, and a password file."""

    def __init__(self, base: Path):
        self.base = base
        self.store = base / "store"
        self.alice = Certificate.new(name="alice")
        self.bob = Certificate.new(name="bob")
        self.alice_file = Path(store.add_certificate(self.store, self.alice))
        self.inputs = base / "inputs"
        self.inputs.mkdir()
        self.bob_file = self.inputs / "bob.cert"
        certfile.save_public(self.bob, self.bob_file)
        self.alice_v2 = self.inputs / "alice-v2.cert"
        certfile.save_public(Certificate(self.alice.public_key, None, [("name", "v2")]),
                             self.alice_v2)
        self.pw_dir = base / "pw"
        self.pw_dir.mkdir()
        self.pwfile = self.pw_dir / "passwords"
        self.pwfile.write_text(f"alice={hashing.hash_password('a', n=2, r=1, p=1)}\n")
        os.chmod(self.pwfile, 0o644)  # hashed only: readable is fine, and nobody can read
        self.certs = base / "certs"
        self.certs.mkdir()
        certfile.save(Certificate.new(name="old"), self.certs / "server")

    def state(self) -> dict[str, bytes]:
        out = {}
        for d in (self.store, self.pw_dir, self.certs):
            for p in sorted(d.rglob("*")):
                out[str(p)] = p.read_bytes() if p.is_file() else b"<dir>"
        return out

    def run_all(self, env: dict[str, str], why: str,
                preexec: Callable[[], None] | None) -> None:
        before = self.state()
        target_bob = self.store / store.store_filename(self.bob.public_key)
        one_error_line(run_cli_as(env, "store", "add", "--store", str(self.store),
                                  str(self.bob_file), preexec=preexec), target_bob, why)
        one_error_line(run_cli_as(env, "store", "add", "--force", "--store", str(self.store),
                                  str(self.alice_v2), preexec=preexec), self.alice_file, why)
        one_error_line(run_cli_as(env, "store", "remove", "--store", str(self.store),
                                  self.alice.public_txt, preexec=preexec),
                       self.alice_file, why)
        one_error_line(run_cli_as(env, "passwd", "add", "--stdin", "--file", str(self.pwfile),
                                  "bob", stdin=b"bob-pw\n", preexec=preexec),
                       self.pwfile, why)
        one_error_line(run_cli_as(env, "new", "--force", str(self.certs / "server"),
                                  preexec=preexec), self.certs, why)
        assert self.state() == before, "a refused write changed something"
        for d in (self.store, self.pw_dir, self.certs):
            assert not leftover_temps(d)
        # reading a read-only store still works
        listed = run_cli_as(env, "store", "list", "--store", str(self.store), preexec=preexec)
        assert listed.returncode == 0, listed.stderr
        assert self.alice.public_txt in listed.stdout
        checked = run_cli_as(env, "store", "check", "--store", str(self.store),
                             preexec=preexec)
        assert checked.returncode == 0, checked.stderr


@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[Scene]:
    scene = Scene(tmp_path)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    mounted: list[Path] = []
    try:
        for d in (scene.store, scene.pw_dir, scene.certs):
            for cmd in (["mount", "--bind", str(d), str(d)],
                        ["mount", "-o", "remount,bind,ro", str(d)]):
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    pytest.skip(f"cannot make a read-only bind mount here: {r.stderr.strip()}")
                if cmd[1] == "--bind":
                    mounted.append(d)
        yield scene
    finally:
        for d in reversed(mounted):
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def test_read_only_bind_mount(ro_mount: Scene, cli_env: Env) -> None:
    ro_mount.run_all(cli_env(None), "Read-only file system", None)


@pytest.fixture(scope="module")
def child() -> Unprivileged:
    return unprivileged()


def test_directories_the_user_cannot_write(child: Unprivileged, tmp_path: Path,
                                           cli_env: Env) -> None:
    scene = Scene(tmp_path)
    child.prepare(scene.base, scene.store, scene.pw_dir, scene.certs, scene.inputs)
    for d in (scene.store, scene.pw_dir, scene.certs):
        os.chmod(d, 0o555)
    try:
        scene.run_all(cli_env(None), "Permission denied", child.preexec_fn)
    finally:
        for d in (scene.store, scene.pw_dir, scene.certs):
            os.chmod(d, 0o755)
