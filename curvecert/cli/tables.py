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

from collections.abc import Iterable
from typing import Protocol

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


def certificate_listing(entries: Iterable[Listed], console: Console) -> RenderableType:
    """The listing of `entries` for `console`'s width: a table, or blocks when narrow."""
    rows = list(entries)
    if console.width >= TABLE_MIN_WIDTH:
        table = Table(box=None, pad_edge=False)
        table.add_column("public key (Z85)", no_wrap=True, min_width=_KEY, style="cyan")
        table.add_column("fingerprint", no_wrap=True, min_width=_FINGERPRINT)
        table.add_column("name", overflow="ellipsis", ratio=1)
        table.add_column("file", overflow="ellipsis", ratio=1)
        for e in rows:
            table.add_row(e.public_txt, e.fingerprint, escape(e.meta.get("name", "")),
                          escape(e.relpath))
        return table
    blocks: list[RenderableType] = []
    for e in rows:
        head = Text(escape(e.meta.get("name", "")) or "(no name)", style="bold")
        head.append(f"  {escape(e.relpath)}", style="dim")
        blocks.append(head)
        blocks.append(Text.assemble("  key          ", (e.public_txt, "cyan"),
                                    overflow="fold"))
        blocks.append(Text(f"  fingerprint  {e.fingerprint}", overflow="fold"))
    return Group(*blocks)
