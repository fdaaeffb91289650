"""Output for people (rich) and for scripts (JSON), shared by every command.

Commands build plain values (a `Certificate`, a list of `Finding`s) and hand them here;
nothing below decides anything. JSON helpers return plain dicts so the shapes are easy to
test and to document; `print_json` writes them to stdout without colour. The rich side
never interprets text from files as markup (metadata may contain `[`), colours only when
the stream is a terminal, and honours `NO_COLOR` and `TERM=dumb`.

Text from files and peers (paths, metadata names and values, finding messages) goes
through `curvecert.formats.sanitize` here, so no command can print a control character,
a bidi override or a line separator it did not mean (docs/security.md, "Untrusted text").

A secret key appears in output only when the caller passes `reveal_secret=True`, which
commands do only when the user asked for exactly that.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

from curvecert.certs import validity
from curvecert.formats.sanitize import escape, json_text

if TYPE_CHECKING:
    # rich (and json, verify) are imported where they are used, so a command that
    # prints plain text or JSON does not pay for loading rich at start-up.
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

    from curvecert.certs.cert import Certificate
    from curvecert.certs.verify import Finding

__all__ = [
    "cert_to_json",
    "certificate_rows",
    "plain_certificate",
    "console",
    "findings_summary",
    "findings_to_json",
    "print_json",
    "render_certificate",
    "render_findings",
    "render_keypair",
    "status",
    "use_colour",
]

_logger = logging.getLogger(__name__)

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}


def use_colour(stream: IO[str]) -> bool:
    """True when `stream` is a terminal and neither `NO_COLOR` nor `TERM=dumb` is set."""
    if os.environ.get("NO_COLOR", "") != "":
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def console(*, stderr: bool = False) -> Console:
    """A rich `Console` on stdout (data) or stderr (diagnostics), coloured only on a TTY.

    A reader that goes away (`| head -1`) is handled below rich, by the streams the CLI
    installs for each command (`curvecert.cli._Output`), so rich never sees it.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    colour = use_colour(stream)
    return Console(file=stream, stderr=stderr, highlight=False, emoji=False, markup=False,
                   no_color=not colour, color_system="auto" if colour else None,
                   force_terminal=colour, soft_wrap=True)


def status(level: str, message: str) -> None:
    """A message for people on stderr in the one scheme: `curvecert: LEVEL: message`.

    `level` is `INFO` (what was done; hidden by `-q`), `WARNING` or `ERROR`; `message` is
    escaped (it often names a file). The same prefix and levels as the log handler, so
    the CLI and the daemon can be grepped alike (docs/cli.md).
    """
    level = level.upper()
    if level == "INFO" and logging.getLogger("curvecert").level > logging.WARNING:
        return
    sys.stderr.write(f"curvecert: {level}: {escape(message)}\n")
    sys.stderr.flush()


def print_json(obj: Any, *, file: IO[str] | None = None) -> None:
    """Write `obj` as indented JSON plus a newline to stdout (never coloured).

    Strings keep their content; controls, format characters and line separators inside
    them are JSON escapes (`sanitize.json_text`), so a terminal shows them inert.
    """
    out = file if file is not None else sys.stdout
    out.write(json_text(obj) + "\n")
    out.flush()


# --- certificates -----------------------------------------------------------------------


def cert_to_json(cert: Certificate, *, path: str | None = None,
                 reveal_secret: bool = False) -> dict[str, Any]:
    """A certificate as a plain dict; `secret_key` is present only with `reveal_secret`."""
    out: dict[str, Any] = {}
    if path is not None:
        out["path"] = path
    out["public_key"] = cert.public_txt
    out["public_key_hex"] = cert.public_key.hex()
    out["fingerprint"] = cert.fingerprint
    out["metadata"] = dict(cert.meta)
    out.update(validity.to_json(validity.from_meta(cert.meta)))
    out["has_secret"] = cert.has_secret
    if reveal_secret and cert.has_secret:
        out["secret_key"] = cert.secret_txt
    return out


def _grid() -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def certificate_rows(cert: Certificate, *, path: str | None = None,
                     reveal_secret: bool = False) -> list[tuple[str, str]]:
    """The `(label, text)` rows people see for a certificate; metadata rows are indented."""
    rows: list[tuple[str, str]] = []
    if path is not None:
        rows.append(("file", escape(path)))
    rows.append(("type", "secret certificate" if cert.has_secret else "public certificate"))
    rows.append(("public key", cert.public_txt))
    rows.append(("fingerprint", cert.fingerprint))
    if cert.has_secret:
        rows.append(("secret key", (cert.secret_txt or "") if reveal_secret
                     else "present (not shown; --reveal-secret prints it)"))
    period = validity.from_meta(cert.meta)
    if period is not None:
        rows.append(("valid", validity.describe(period, time.time())))
    if not cert.meta:
        rows.append(("metadata", "(none)"))
    else:
        rows.append(("metadata", ""))
        for name, value in cert.meta.items():
            rows.append((f"  {escape(name)}", _shown_value(value)))
    return rows


def plain_certificate(cert: Certificate, *, path: str | None = None,
                      reveal_secret: bool = False) -> str:
    """The certificate as aligned `label  text` lines: what `show` prints into a pipe.

    Plain text needs no rich import, so `curvecert show FILE | grep ...` starts fast and
    its output stays stable for scripts; on a terminal `render_certificate` is used.
    """
    rows = certificate_rows(cert, path=path, reveal_secret=reveal_secret)
    width = max(len(label) for label, _ in rows)
    return "".join(f"{label:<{width}}  {text}".rstrip() + "\n" for label, text in rows)


def render_certificate(cert: Certificate, *, path: str | None = None,
                       reveal_secret: bool = False) -> RenderableType:
    """A panel with the keys, fingerprint and metadata of `cert`, for people."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    styles = {"public key": "cyan", "secret key": "bold magenta" if reveal_secret else "dim"}
    grid = _grid()
    meta: Table | None = None
    for label, text in certificate_rows(cert, path=path, reveal_secret=reveal_secret):
        if label.startswith("  "):
            assert meta is not None
            meta.add_row(Text(label[2:]), Text(text))
        elif label == "metadata" and not text:
            meta = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
            meta.add_column("name", no_wrap=True)
            meta.add_column("value", overflow="fold")
            grid.add_row(label, meta)
        else:
            style = "dim" if text == "(none)" else styles.get(label, "")
            grid.add_row(label, Text(text, style=style))
    return Panel(grid, title=Text("CURVE certificate"), title_align="left", expand=False)


def _shown_value(value: str) -> str:
    """A metadata value as people see it: escaped, and quoted when its edges would hide."""
    out = escape(value)
    if out == "" or out != out.strip():
        return '"' + out.replace('"', '\\"') + '"'
    return out


def render_keypair(public_txt: str, secret_txt: str) -> str:
    """libzmq `curve_keygen`-style text: a public and a secret key under headings."""
    return (f"== CURVE PUBLIC KEY ==\n{public_txt}\n"
            f"== CURVE SECRET KEY ==\n{secret_txt}\n")


# --- findings ---------------------------------------------------------------------------


def findings_to_json(findings: Iterable[Finding]) -> list[dict[str, object]]:
    """Findings as a list of plain dicts (`path`, `line`, `severity`, `code`, `message`)."""
    return [f.to_dict() for f in findings]


def render_findings(findings: Sequence[Finding]) -> Text:
    """One line per finding, `path:line: severity: message [code]` (compiler style)."""
    from rich.text import Text

    out = Text()
    for i, f in enumerate(findings):
        if i:
            out.append("\n")
        out.append(f"{escape(f.location)}: ", style="bold")
        out.append(f.severity, style=_SEVERITY_STYLE.get(f.severity, ""))
        out.append(f": {escape(f.message)} ")
        out.append(f"[{f.code}]", style="dim")
    return out


def findings_summary(findings: Sequence[Finding], files: int) -> Text:
    """`OK: 2 files, no findings` or `3 errors, 1 warning in 2 files`."""
    from rich.text import Text

    from curvecert.certs.verify import ERROR

    if not findings:
        noun = "file" if files == 1 else "files"
        return Text(f"OK: {files} {noun}, no findings", style="green")
    errors = sum(1 for f in findings if f.severity == ERROR)
    warnings = len(findings) - errors
    bad_files = len({f.path for f in findings})
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    noun = "file" if bad_files == 1 else "files"
    return Text(f"{', '.join(parts)} in {bad_files} {noun}",
                style="bold red" if errors else "yellow")

