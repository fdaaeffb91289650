"""The man pages are generated from the click commands and kept up to date, and `--help`
points at them instead of repository paths (a pip install has no docs/ directory)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import _cli_env

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "curvecert" / "man" / "man1"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_manpages",
                                                  ROOT / "scripts" / "make_manpages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGES = dict(_generator().pages())


def test_every_command_has_an_up_to_date_page() -> None:
    on_disk = {p.name for p in MAN.glob("*.1")}
    assert on_disk == set(PAGES), "run: python scripts/make_manpages.py"
    stale = [name for name, text in PAGES.items() if (MAN / name).read_text() != text]
    assert not stale, f"stale man pages {stale}; run: python scripts/make_manpages.py"


def test_pages_are_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "man/man1/*.1" in config["package-data"]["curvecert"]
    assert config["data-files"]["share/man/man1"] == ["curvecert/man/man1/*.1"]


def test_pages_render() -> None:
    if subprocess.run(["sh", "-c", "command -v man"], capture_output=True).returncode:
        pytest.skip("man is not installed")
    out = subprocess.run(["man", "-l", str(MAN / "curvecert-probe.1")], capture_output=True,
                         text=True, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert out.returncode == 0 and "SYNOPSIS" in out.stdout and "--server-type" in out.stdout


@pytest.mark.parametrize("page", sorted(PAGES))
def test_help_points_at_the_man_page(page: str) -> None:
    args = page.removesuffix(".1").split("-")[1:]
    # sub-command names may hold a dash themselves (serve-auth, store-...): rebuild them
    words: list[str] = []
    for part in args:
        if words and words[-1] == "serve" and part == "auth":
            words[-1] = "serve-auth"
        else:
            words.append(part)
    result = subprocess.run([sys.executable, "-m", "curvecert", *words, "--help"],
                            capture_output=True, text=True, env=_cli_env(None), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "docs/" not in result.stdout
    assert "man curvecert" in result.stdout
