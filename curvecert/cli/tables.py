"""Terminal layouts that never cut a key or a fingerprint.

A Z85 key (40 characters) and a `SHA256:` fingerprint (50) are copied from the terminal
into commands and configs, so an ellipsis in either makes the output useless. The layout
follows the terminal's width: one table row per certificate when both fit with room for
the other columns, else one short block per certificate with the key and the fingerprint
each on a line of its own. Only the name and the file name may be shortened in the table;
on a terminal too narrow even for a block, rich folds the long values onto the next line
(nothing is dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from curvecert.formats.sanitize import escape

__all__ = ["TABLE_MIN_WIDTH", "certificate_listing"]

_KEY = 40
_FINGERPRINT = 50
#: Below this width the table would squeeze the key or fingerprint columns.
TABLE_MIN_WIDTH = _KEY + _FINGERPRINT + 2 * 3 + 2 * 12


class Listed(Protocol):
    """What a listing shows of one certificate (a store entry has these)."""

    @property
    def public_txt(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def relpath(self) -> str: ...
    @property
    def meta(self) -> dict[str, str]: ...


def certificate_listing(entries: Iterable[Listed], console: Console, *,
                        valid: Callable[[Any], str] | None = None) -> RenderableType:
    """The listing of `entries` for `console`'s width: a table, or blocks when narrow.

    `valid(entry)` is an optional validity text (`until T`, `EXPIRED T`), shown in red when
    it starts with EXP or INV.
    """
    rows = list(entries)

    def validity(e: Any) -> Text:
        text = valid(e) if valid is not None else ""
        return Text(text, style="bold red" if text.startswith(("EXP", "INV")) else "")

    if console.width >= TABLE_MIN_WIDTH:
        table = Table(box=None, pad_edge=False)
        table.add_column("public key (Z85)", no_wrap=True, min_width=_KEY, style="cyan")
        table.add_column("fingerprint", no_wrap=True, min_width=_FINGERPRINT)
        table.add_column("name", overflow="ellipsis", ratio=1)
        table.add_column("file", overflow="ellipsis", ratio=1)
        if valid is not None:
            table.add_column("valid", overflow="fold")
        for e in rows:
            cells = [e.public_txt, e.fingerprint, escape(e.meta.get("name", "")),
                     escape(e.relpath)]
            table.add_row(*cells, *([validity(e)] if valid is not None else []))
        return table
    blocks: list[RenderableType] = []
    for e in rows:
        head = Text(escape(e.meta.get("name", "")) or "(no name)", style="bold")
        head.append(f"  {escape(e.relpath)}", style="dim")
        if valid is not None and valid(e):
            head.append("  ")
            head.append(validity(e))
        blocks.append(head)
        blocks.append(Text.assemble("  key          ", (e.public_txt, "cyan"),
                                    overflow="fold"))
        blocks.append(Text(f"  fingerprint  {e.fingerprint}", overflow="fold"))
    return Group(*blocks)
