"""`curvecert passwd add | remove | list`: manage a PLAIN password file (Woodhouse).

Passwords are read from a hidden prompt (asked twice) or from stdin (`--stdin`, or
whenever stdin is not a terminal: `printf '%s\\n' "$PW" | curvecert passwd add alice`),
never from the command line, where `ps` and shell history would keep them. New entries
are argon2id hashes (`--scheme scrypt` for the older kind; `curvecert.auth.hashing`);
`--plaintext` writes a clear-text entry that CZMQ's zauth can also read. The file is
rewritten atomically with mode 0600. Only a regular file is read (a FIFO, device or socket
is a one-line error, never a wait). `--json` prints one object (schemas
`passwd-add.json`, `passwd-remove.json`, `passwd-list.json`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from curvecert.auth.hashing import DEFAULT_SCHEME, SCHEMES
from curvecert.auth.passwords import PasswordFile, validate_password
from curvecert.cli import render
from curvecert.errors import OperationalError, PasswordFileError

__all__ = ["DEFAULT_FILE", "ENV_VAR", "default_file", "passwd"]

_logger = logging.getLogger(__name__)

#: Environment variable naming the password file when `--file` is not given.
ENV_VAR = "CURVECERT_PASSWORDS"
#: Fallback path, under the user's configuration directory.
DEFAULT_FILE = "~/.config/curvecert/passwords"
_CONTEXT = {"help_option_names": ["-h", "--help"]}
_MAX_STDIN = 4096


def default_file() -> str:
    """`$CURVECERT_PASSWORDS`, else `$XDG_CONFIG_HOME/curvecert/passwords`, else the
    `~/.config` path."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return os.path.join(xdg, "curvecert", "passwords")
    return os.path.expanduser(DEFAULT_FILE)


def _file_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--file", "-F", "path", type=click.Path(dir_okay=False), default=None,
        help=f"Password file (default: ${ENV_VAR}, else {DEFAULT_FILE}).")(fn)


def _json_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON object on stdout.")(fn)


def _resolve(path: str | None) -> str:
    return os.path.expanduser(path) if path else default_file()


def _read_password(use_stdin: bool) -> str:
    if use_stdin or not sys.stdin.isatty():
        data = sys.stdin.buffer.read(_MAX_STDIN + 1)
        if len(data) > _MAX_STDIN:
            raise click.UsageError("stdin holds more than one password line")
        try:
            text = data.decode("utf-8", "strict") if data else ""
        except UnicodeDecodeError:  # never quote the bytes: they are a password
            raise PasswordFileError("the password read from stdin is not UTF-8 text") from None
        lines = text.splitlines()
        if len(lines) != 1:
            raise click.UsageError("stdin must hold exactly one line: the password")
        password = lines[0]
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    validate_password(password)
    return password


_ADD_EPILOG = """\b
Examples:
  curvecert passwd add admin                     # prompts twice, hidden
  printf '%s' "$PW" | curvecert passwd add deploy --stdin
  curvecert passwd add admin --force             # change a password
"""


@click.group(context_settings=_CONTEXT, epilog="""\b
Examples:
  curvecert passwd add admin --file /etc/app/passwords
  printf '%s' "$PW" | curvecert passwd add deploy --stdin --file /etc/app/passwords
  curvecert passwd list --file /etc/app/passwords
  curvecert passwd remove deploy --file /etc/app/passwords
""")
def passwd() -> None:
    """Manage a PLAIN password file (user=password lines, scrypt-hashed entries)."""


@passwd.command(context_settings=_CONTEXT, epilog=_ADD_EPILOG)
@click.argument("user")
@_file_option
@click.option("--stdin", "use_stdin", is_flag=True,
              help="Read the password from stdin (implied when stdin is not a terminal).")
@click.option("-f", "--force", is_flag=True, help="Replace the password of an existing user.")
@click.option("--plaintext", is_flag=True,
              help="Store the password in clear text (CZMQ zauth can read it; avoid).")
@click.option("--scheme", type=click.Choice(SCHEMES), default=DEFAULT_SCHEME,
              show_default=True, help="Hash for the new entry.")
@_json_option
def add(user: str, path: str | None, use_stdin: bool, force: bool, plaintext: bool,
        scheme: str, as_json: bool) -> None:
    """Add USER (the password comes from a prompt or stdin, never the command line)."""
    target = _resolve(path)
    pf = PasswordFile(target, missing_ok=True)
    if not force and user in pf.users():
        # Refuse before asking for a password nobody will use.
        raise PasswordFileError(f"{target}: user {user!r} already exists "
                                "(use --force to replace it)")
    password = _read_password(use_stdin)
    parent = Path(target).parent
    if not parent.exists():
        try:
            parent.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise OperationalError(f"{parent}: cannot create: {exc.strerror}") from exc
    existed = user in pf.users()
    pf.add(user, password, force=force, plaintext=plaintext, scheme=scheme)
    if plaintext:
        render.status("WARNING", "stored in clear text (--plaintext)")
    action = "updated" if existed else "added"
    if as_json:
        render.print_json({"path": target, "user": user, "action": action,
                           "scheme": "clear" if plaintext else scheme})
    else:
        render.status("INFO", f"{action} {user} in {target}")


@passwd.command(context_settings=_CONTEXT, epilog="""\b
Example:
  curvecert passwd remove deploy --file /etc/app/passwords
""")
@click.argument("user")
@_file_option
@_json_option
def remove(user: str, path: str | None, as_json: bool) -> None:
    """Remove USER."""
    target = _resolve(path)
    PasswordFile(target).remove(user)
    if as_json:
        render.print_json({"path": target, "user": user, "action": "removed"})
    else:
        render.status("INFO", f"removed {user} from {target}")


@passwd.command(name="list", context_settings=_CONTEXT, epilog="""\b
Example:
  curvecert passwd list --file /etc/app/passwords
""")
@_file_option
@_json_option
def list_users(path: str | None, as_json: bool) -> None:
    """Print the user names, one per line (never a password or hash)."""
    target = _resolve(path)
    table = PasswordFile(target).table()
    if as_json:
        render.print_json({"path": target, "items": [
            {"user": u, "scheme": table.scheme_of(u)} for u in table.users()]})
        return
    for user in table.users():
        click.echo(user)
