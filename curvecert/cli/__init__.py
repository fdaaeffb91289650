"""The `curvecert` command line: the root group, lazy sub-commands, and exit codes.

This is the only place where exceptions become messages and exit codes (STYLE R4):

| code | meaning |
| --- | --- |
| 0 | ok |
| 1 | a negative verdict: `verify` or `store check` found problems, `probe` saw the wrong outcome |
| 2 | usage: bad options or arguments, an ambiguous selector |
| 3 | operational failure: I/O, permissions, malformed input files, libzmq errors |
| 130 | interrupted |

Sub-commands live in sibling modules and are imported only when they run, so
`curvecert --help` and `curvecert show` start fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from curvecert import __version__
from curvecert.errors import AmbiguousMatch, CurvecertError

__all__ = ["EXIT_INTERRUPTED", "EXIT_NEGATIVE", "EXIT_OK", "EXIT_OPERATIONAL", "EXIT_USAGE",
           "Verdict", "cli", "main"]

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2
EXIT_OPERATIONAL = 3
EXIT_INTERRUPTED = 130

# exception class -> exit code; the first match in order wins, CurvecertError last.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (AmbiguousMatch, EXIT_USAGE),
    (CurvecertError, EXIT_OPERATIONAL),
)


class Verdict(Exception):
    """Raised by a command to end with a negative verdict (exit 1) after printing it."""

    def __init__(self, code: int = EXIT_NEGATIVE):
        self.code = code
        super().__init__(code)


# command name -> "module:attribute"; modules are imported only when the command runs.
_COMMANDS: dict[str, tuple[str, str]] = {
    "new": ("curvecert.cli.certs", "new"),
    "show": ("curvecert.cli.certs", "show"),
    "verify": ("curvecert.cli.certs", "verify"),
    "keygen": ("curvecert.cli.certs", "keygen"),
    "public": ("curvecert.cli.certs", "public"),
    "rotate": ("curvecert.cli.rotate", "rotate"),
    "store": ("curvecert.cli.store", "store"),
    "passwd": ("curvecert.cli.passwd", "passwd"),
    "serve-auth": ("curvecert.cli.serve", "serve_auth"),
    "probe": ("curvecert.cli.probe", "probe"),
    "completion": ("curvecert.cli.completion", "completion"),
    "status": ("curvecert.cli.ops", "status"),
    "trusted": ("curvecert.cli.ops", "trusted"),
    "decisions": ("curvecert.cli.ops", "decisions"),
    "top": ("curvecert.cli.ops", "top"),
}

_SHORT_HELP = {
    "new": "Generate a certificate pair (NAME and NAME_secret).",
    "show": "Show a certificate file.",
    "verify": "Check certificate files for problems.",
    "keygen": "Print a fresh Z85 keypair.",
    "public": "Print the public key of a secret certificate or key.",
    "rotate": "Rotate a server key with an overlap (next, promote, retire).",
    "store": "Manage a directory of trusted public certificates.",
    "passwd": "Manage a PLAIN password file (hashed entries).",
    "serve-auth": "Run the ZAP authenticator daemon or gateway.",
    "probe": "Diagnose a CURVE/PLAIN/NULL handshake with a server.",
    "completion": "Print the shell completion script (bash, zsh, fish).",
    "status": "Ask a running serve-auth for its health and counters.",
    "trusted": "List the keys a running serve-auth trusts right now.",
    "decisions": "Show (or follow) a running serve-auth's recent decisions.",
    "top": "Live view of a running serve-auth.",
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        cmd = getattr(module, target[1])
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static short help so `--help` imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(n, _SHORT_HELP.get(n, "")) for n in _COMMANDS])


def _setup_logging(verbose: int, quiet: int) -> None:
    level_name = os.environ.get("CURVECERT_LOGLEVEL", "").upper()
    level = getattr(logging, level_name, None) if level_name else None
    if not isinstance(level, int):
        level = logging.WARNING - 10 * verbose + 10 * quiet
    logger = logging.getLogger("curvecert")
    logger.setLevel(level)
    if not logger.handlers:
        from curvecert.formats.sanitize import EscapingFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter("curvecert: %(levelname)s: %(message)s"))
        logger.addHandler(handler)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 ok, 1 negative verdict, 2 usage, 3 operational failure.\n\n"
                    "Docs: docs/cli.md. Examples: curvecert new server; curvecert show server")
@click.version_option(__version__, "-V", "--version", prog_name="curvecert")
@click.option("-v", "--verbose", count=True, help="More log output; -v also shows tracebacks.")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """curvecert: CURVE certificates, stores and ZAP authentication for ZeroMQ."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose, quiet)


def _exit_code_for(exc: BaseException) -> int:
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_OPERATIONAL


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the documented code; the one place errors become text."""
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"})
                  for a in (argv if argv is not None else sys.argv[1:]))
    try:
        rv: Any = cli.main(args=argv, prog_name="curvecert", standalone_mode=False)
    except Verdict as v:
        sys.exit(v.code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except CurvecertError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        from curvecert.formats.sanitize import escape

        click.echo(f"curvecert: error: {escape(str(exc))}", err=True)
        sys.exit(_exit_code_for(exc))
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
