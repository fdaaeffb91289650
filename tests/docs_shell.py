"""Running the samples in README.md and docs/*.md (Sybil), so a doc cannot drift from the code.

The conventions, for anyone writing docs (docs/README.md repeats them):

- A fenced block in `console`, `sh`, `bash` or `shell` is a terminal session: each line
  that starts with `$ ` is a command (continued over lines ending in `\\`), the lines after
  it until the next `$ ` are its expected output (stdout and stderr together). A `…` in an
  expected line matches any text. A command must exit 0 unless it ends in a comment saying
  otherwise: `# exit 3` (anything may follow, `# exit 3: already exists`).
- Every command of a document runs with bash in one temporary directory for the whole
  document (files made by one block are there for the next), with `HOME` and the XDG
  directories inside it, `NO_COLOR=1`, and a `curvecert` on `PATH` that runs this checkout
  with this interpreter. `export NAME=VALUE` commands carry over to later commands.
- A ```python block runs in one namespace per document, in the same directory.
- A shell block with no `$ ` line is not a session (a file to write, a script shown whole);
  it must be marked explicitly, like any block that cannot run here (it needs a long-running
  daemon, another host, root, a network): put `<!-- skip: next "why" -->` on the line before
  it (Sybil's skip directive). A block that is not a sample at all uses another language tag
  (`text`, `toml`, `ini`, `yaml`, ...), which is never run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sybil import Example, Region
from sybil.document import Document
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

__all__ = ["PythonSample", "ShellSessionParser", "document_setup", "document_teardown"]

ROOT = Path(__file__).resolve().parents[1]
_EXIT = re.compile(r"#.*\bexit (\d+)\b")
_TIMEOUT = 20


class PythonSample(PythonEvaluator):
    """Runs a ```python block; an exception becomes the failure text (with the traceback),
    so a broken sample fails its own test instead of upsetting pytest's reporting."""

    def __call__(self, example: Example) -> str | None:
        import traceback

        try:
            return super().__call__(example)
        except Exception:
            return f"{example.path}:{example.line}: the sample raised:\n" + \
                traceback.format_exc(limit=-3)


#: A block that starts with this is one of the README's two opening commands (set up and
#: run the demo; set up and run this very suite): `.ci/run` runs it, a doc test must not.
SETUP_COMMAND = "python3 -m venv .venv && "


class ShellSessionParser:
    """Sybil parser: console/sh/bash/shell blocks become one example per block."""

    def __init__(self) -> None:
        self.lexer = FencedCodeBlockLexer(language=r"(?:console|sh|bash|shell)")

    def __call__(self, document: Document) -> Iterator[Region]:
        for lexed in self.lexer(document):
            if str(lexed.lexemes["source"]).startswith(SETUP_COMMAND):
                continue  # the README's two opening commands: CI runs them, not the suite
            yield Region(lexed.start, lexed.end, str(lexed.lexemes["source"]), self.evaluate)

    @staticmethod
    def commands(source: str) -> list[tuple[str, list[str]]]:
        """`(command, expected output lines)` for each `$ ` line of a block."""
        out: list[tuple[str, list[str]]] = []
        lines = source.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1] + "\n" + lines[i]
                out.append((command, []))
            elif out:
                out[-1][1].append(line)
            i += 1
        return out

    def evaluate(self, example: Example) -> str | None:
        source = str(example.parsed)
        session = self.commands(source)
        if not session:
            return ("a shell block with no `$ ` command: mark it "
                    '<!-- skip: next "why" --> or give it another language tag')
        ns = example.namespace
        for command, expected in session:
            problem = _run(command, expected, ns["__tmp__"], ns["__env__"])
            if problem:
                return problem
        return None


def _run(command: str, expected: list[str], tmp: str, env: dict[str, str]) -> str | None:
    wanted = _EXIT.search(command.splitlines()[-1])
    code_wanted = int(wanted.group(1)) if wanted else 0
    envfile = os.path.join(tmp, ".docs-env")
    script = f"[ -f {envfile} ] && . {envfile}\n{command}\n"
    result = subprocess.run(["bash", "-c", script], cwd=tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=_TIMEOUT)
    stripped = command.strip()
    if stripped.startswith("export ") and result.returncode == 0:
        with open(envfile, "a") as fh:
            fh.write(stripped.split("#", 1)[0] + "\n")
    got = result.stdout.splitlines()  # stderr is merged into it, in the order written
    if result.returncode != code_wanted:
        return (f"$ {command}\nexit {result.returncode}, the doc says {code_wanted}:\n"
                + "\n".join(got))
    shown = [line for line in expected if line.strip()]
    if shown and not _matches(shown, [g for g in got if g.strip()]):
        return (f"$ {command}\nthe doc shows:\n" + "\n".join(shown) + "\nbut it printed:\n"
                + "\n".join(got))
    return None


def _matches(expected: list[str], got: list[str]) -> bool:
    if len(expected) != len(got):
        return False
    for want, have in zip(expected, got, strict=True):
        pattern = ".*".join(re.escape(part.rstrip()) for part in want.split("…"))
        if not re.fullmatch(pattern, have.rstrip()):
            return False
    return True


def document_setup(namespace: dict[str, Any]) -> None:
    """A fresh directory, environment and `curvecert` command for one document."""
    tmp = tempfile.mkdtemp(prefix="curvecert-docs-")
    bindir = os.path.join(tmp, ".bin")
    os.mkdir(bindir)
    wrapper = os.path.join(bindir, "curvecert")
    with open(wrapper, "w") as fh:
        fh.write(f'#!/bin/sh\nexec "{sys.executable}" -m curvecert "$@"\n')
    os.chmod(wrapper, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVECERT_")}
    env.update(PATH=bindir + os.pathsep + env.get("PATH", ""), HOME=tmp, NO_COLOR="1",
               XDG_CONFIG_HOME=os.path.join(tmp, ".config"),
               XDG_RUNTIME_DIR=os.path.join(tmp, ".run"), COLUMNS="100",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    namespace["__tmp__"] = tmp
    namespace["__env__"] = env
    namespace["__cwd__"] = os.getcwd()
    os.chdir(tmp)


def document_teardown(namespace: dict[str, Any]) -> None:
    """Back to the old directory; the temporary one goes."""
    os.chdir(namespace["__cwd__"])
    shutil.rmtree(namespace["__tmp__"], ignore_errors=True)
