"""Generate the man pages (curvecert/man/man1/*.1) from the click commands with click-man.

Run after changing a command's help: `python scripts/make_manpages.py`. The pages are
package data and are installed to share/man/man1 (pyproject.toml); a test
(tests/unit/test_manpages.py) fails when they are out of date. The date field holds the
version, so the output depends only on the code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click_man.core import generate_man_page

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curvecert import __version__  # noqa: E402
from curvecert.cli import cli  # noqa: E402

TARGET = ROOT / "curvecert" / "man" / "man1"


def _section(title: str, text: str) -> str:
    """A troff section holding `text` as preformatted lines (click's \\b markers dropped)."""
    body = []
    for line in text.splitlines():
        if line.strip() == "\b":
            continue
        line = line.replace("\\", "\\e")
        body.append(("\\&" + line) if line.startswith((".", "'")) else line)
    return f".SH {title}\n.nf\n" + "\n".join(body) + "\n.fi\n"


def pages() -> Iterator[tuple[str, str]]:
    """`(file name, troff text)` for `curvecert` and every sub-command, recursively."""
    todo: list[tuple[click.Command, str, click.Context | None]] = [(cli, "curvecert", None)]
    while todo:
        cmd, name, parent = todo.pop(0)
        ctx = click.Context(cmd, info_name=name, parent=parent)
        text = generate_man_page(ctx, version=__version__, date=__version__)
        if cmd.epilog:  # click-man leaves the epilog (examples, exit codes) out
            text = text.rstrip("\n") + "\n" + _section("NOTES", cmd.epilog)
        yield f"{ctx.command_path.replace(' ', '-')}.1", text
        if isinstance(cmd, click.Group):
            for sub_name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, sub_name)
                if sub is not None and not sub.hidden:
                    todo.append((sub, sub_name, ctx))


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    wanted = dict(pages())
    for old in TARGET.glob("*.1"):
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (TARGET / name).write_text(text)
    print(f"wrote {len(wanted)} pages to {TARGET}")


if __name__ == "__main__":
    main()
