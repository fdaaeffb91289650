"""The `curvecert` command line: the root group, lazy sub-commands, and the error boundary.

This is the only place where exceptions become messages and exit codes (STYLE R4). Every
error, click's usage errors included, is one line on stderr,
`curvecert: error: [PATH[:LINE]: ]reason`, and the exit code says what kind it was
(docs/cli.md "Exit codes" holds the same table):

| code | meaning |
| --- | --- |
| 0 | ok |
| 1 | a negative verdict: `verify` or `store check` found problems, `probe` saw the wrong outcome |
| 2 | usage: bad options or arguments, invalid values given on the command line |
| 3 | operational: files (missing, unreadable, directory, FIFO, malformed), network, daemon |
| 130 | interrupted |

Sub-commands live in sibling modules and are imported only when they run, so
`curvecert --help` and `curvecert show` start fast. When a command is loaded, the group
adds `-v/-q` to it (so they work after the sub-command too) and makes its path arguments
report a missing or unusable file as an operational error.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
from typing import Any

import click

from curvecert import __version__
from curvecert.errors import AmbiguousMatch, CurvecertError, OperationalError

__all__ = ["EXIT_INTERRUPTED", "EXIT_NEGATIVE", "EXIT_OK", "EXIT_OPERATIONAL", "EXIT_USAGE",
           "UsageProblem", "Verdict", "cli", "main"]

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2
EXIT_OPERATIONAL = 3
EXIT_INTERRUPTED = 130


class UsageProblem(CurvecertError, ValueError):
    """A value given on the command line is invalid (exit 2); raised by commands."""


class Verdict(Exception):
    """Raised by a command to end with a negative verdict (exit 1) after printing it."""

    def __init__(self, code: int = EXIT_NEGATIVE):
        self.code = code
        super().__init__(code)


# exception class -> exit code; the first match in order wins, CurvecertError last.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (AmbiguousMatch, EXIT_USAGE),
    (UsageProblem, EXIT_USAGE),
    (CurvecertError, EXIT_OPERATIONAL),
)


# command name -> "module:attribute"; modules are imported only when the command runs.
_COMMANDS: dict[str, tuple[str, str]] = {
    "new": ("curvecert.cli.certs", "new"),
    "show": ("curvecert.cli.certs", "show"),
    "verify": ("curvecert.cli.certs", "verify"),
    "keygen": ("curvecert.cli.keys", "keygen"),
    "public": ("curvecert.cli.keys", "public"),
    "fingerprint": ("curvecert.cli.keys", "fingerprint"),
    "export": ("curvecert.cli.keys", "export"),
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
    "fingerprint": "Print one fingerprint line per certificate file or key.",
    "export": "Write the public certificate of a secret certificate file.",
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
        _adapt(cmd, f"curvecert-{name}")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static short help so `--help` imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(n, _SHORT_HELP.get(n, "")) for n in _COMMANDS])


_CLICK_PATH_SUBJECT = re.compile(r"""^\w+ (['"]).*?\1 """)


class _FilePath(click.Path):
    """`click.Path` whose failures are operational errors: `PATH: reason`, exit 3."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            # click says "File 'x' is a directory."; keep the reason, name the path once.
            reason = _CLICK_PATH_SUBJECT.sub("", exc.message).rstrip(".")
            if not os.path.lexists(os.fsdecode(value)):
                reason = "No such file or directory"
            elif reason == "is a file":
                reason = "is not a directory"
            raise OperationalError(f"{os.fsdecode(value)}: {reason}") from None


def _count_option(name: str, short: str, help_text: str) -> click.Option:
    def bump(ctx: click.Context, param: click.Parameter, value: int) -> None:
        if value:
            root = ctx.find_root()
            root.ensure_object(dict)
            root.obj[name] = root.obj.get(name, 0) + value
            _setup_logging(root.obj.get("verbose", 0), root.obj.get("quiet", 0))

    return click.Option([short, f"--{name}"], count=True, expose_value=False,
                        is_eager=True, callback=bump, help=help_text)


_DOC_PATH = re.compile(r"docs/[\w.-]+\.md")


def _adapt(cmd: click.Command, page: str) -> None:
    """Give `cmd` (and its sub-commands) the global -v/-q, operational path errors, and help
    that points at its man page (`page`, installed with the package) instead of the
    repository's docs/ paths, which a pip install does not have."""
    if getattr(cmd, "_curvecert_adapted", False):
        return
    setattr(cmd, "_curvecert_adapted", True)  # noqa: B010 - a marker on a foreign class
    man = f"man {page}"
    if cmd.epilog:
        cmd.epilog = _DOC_PATH.sub(man, cmd.epilog)
    if not cmd.epilog or man not in cmd.epilog:
        cmd.epilog = (cmd.epilog or "").rstrip() + f"\n\nManual: {man}"
    if cmd.help:
        cmd.help = _DOC_PATH.sub(man, cmd.help)
    for p in cmd.params:
        if isinstance(p, click.Option) and p.help:
            p.help = _DOC_PATH.sub(man, p.help)
    taken = {o for p in cmd.params for o in getattr(p, "opts", ())}
    for p in cmd.params:
        if isinstance(p.type, click.Path) and not isinstance(p.type, _FilePath):
            new = _FilePath.__new__(_FilePath)
            new.__dict__.update(p.type.__dict__)
            p.type = new
    if "-v" not in taken and "--verbose" not in taken:
        cmd.params.append(_count_option("verbose", "-v", "More log output; -v also shows "
                                        "tracebacks."))
    if "-q" not in taken and "--quiet" not in taken:
        cmd.params.append(_count_option("quiet", "-q", "Less log output."))
    if isinstance(cmd, click.Group):
        for sub_name, sub in cmd.commands.items():
            _adapt(sub, f"{page}-{sub_name}")


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
                    "Manual: man curvecert, man curvecert-COMMAND. Examples: curvecert new "
                    "server; curvecert show server")
@click.version_option(__version__, "-V", "--version", prog_name="curvecert")
@click.option("-v", "--verbose", count=True, help="More log output; -v also shows tracebacks.")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """curvecert: CURVE certificates, stores and ZAP authentication for ZeroMQ."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = ctx.obj.get("verbose", 0) + verbose
    ctx.obj["quiet"] = ctx.obj.get("quiet", 0) + quiet
    _setup_logging(ctx.obj["verbose"], ctx.obj["quiet"])


def _exit_code_for(exc: BaseException) -> int:
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_OPERATIONAL


def _one_line(message: str) -> str:
    """`message` on one line, with anything that could steer a terminal made visible."""
    from curvecert.formats import sanitize  # only when there is an error to print

    text = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    return sanitize.escape(text)


def _error(message: str, code: int) -> int:
    click.echo(f"curvecert: error: {_one_line(message)}", err=True)
    return code


def _usage_message(exc: click.UsageError) -> str:
    message = exc.format_message().rstrip(".")
    ctx = exc.ctx
    if ctx is not None:
        return f"{message}; see `{ctx.command_path} --help`"
    return message


def _os_message(exc: OSError) -> str:
    where = f"{os.fsdecode(exc.filename)}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}"


def _run(argv: list[str] | None, verbose: bool) -> int:
    try:
        rv: Any = cli.main(args=argv, prog_name="curvecert", standalone_mode=False)
    except Verdict as v:
        return v.code
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _error("interrupted", EXIT_INTERRUPTED)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.FileError as exc:
        return _error(f"{exc.ui_filename}: {exc.message}", EXIT_OPERATIONAL)
    except click.UsageError as exc:
        return _error(_usage_message(exc), EXIT_USAGE)
    except click.ClickException as exc:
        return _error(exc.format_message(), EXIT_USAGE)
    except BrokenPipeError:
        return EXIT_OK
    except (CurvecertError, OSError) as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        if isinstance(exc, OSError):
            return _error(_os_message(exc), EXIT_OPERATIONAL)
        return _error(str(exc), _exit_code_for(exc))
    except Exception as exc:  # a bug: still one line, the traceback with -v
        if verbose:
            import traceback

            traceback.print_exc()
        return _error(f"internal error: {type(exc).__name__}: {exc} (run with -v for the "
                      "traceback and report it)", EXIT_OPERATIONAL)
    return rv if isinstance(rv, int) else EXIT_OK


class _Output:
    """sys.stdout or sys.stderr for the length of one command: once its reader has gone
    (`| head -1`), the rest of the text is dropped instead of ending the command, so the
    exit status stays the command's own (a verdict is not turned into 0 or 1 by a closed
    pipe). Binary output (`store export`) is not covered: losing the data is an error."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return int(self._inner.write(text))
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._inner.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._inner.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the documented code; the one place errors become text."""
    args = argv if argv is not None else sys.argv[1:]
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"})
                  for a in args)
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Output(real_out), _Output(real_err)
    try:
        code = _run(argv, verbose)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        sys.stdout, sys.stderr = real_out, real_err
    sys.exit(code)
