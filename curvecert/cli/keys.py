"""`curvecert fingerprint | export`, and the secret-file mode rule shared by every command.

The conventions are the ones operators know from ssh-keygen and wg: `fingerprint` prints one
line per input like `ssh-keygen -l` (`SHA256:... name (path)`), `export` writes the public
half of a secret certificate like `ssh-keygen -y`, and a command that *uses* a secret key
refuses a secret file that group or others can read, printing the `chmod` to run (OpenSSH
refuses such private keys the same way). Containers that mount secrets read-only with other
modes set `CURVECERT_ALLOW_WEAK_SECRET_MODES=1`; then the command warns and goes on.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import sys
from typing import Any

import click

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.cli import UsageProblem, render
from curvecert.errors import CurvecertError, OperationalError
from curvecert.formats import sanitize, z85

__all__ = ["ALLOW_WEAK_ENV", "export", "fingerprint", "load_secret", "require_private"]

_logger = logging.getLogger(__name__)

#: Set to 1 to let commands use a secret file that group/other can read (with a warning).
ALLOW_WEAK_ENV = "CURVECERT_ALLOW_WEAK_SECRET_MODES"
_CONTEXT = {"help_option_names": ["-h", "--help"]}
_STDIN_LIMIT = 1 << 20


def require_private(path: str) -> None:
    """Refuse (`OperationalError`) a secret file with any group/other permission bit.

    The message names the `chmod 600` to run. With `CURVECERT_ALLOW_WEAK_SECRET_MODES=1` in
    the environment the refusal becomes a warning on stderr.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # loading the file reports why it cannot be read
    if not stat.S_ISREG(mode) or not mode & 0o077:
        return
    who = "group and others" if mode & 0o007 and mode & 0o070 else (
        "others" if mode & 0o007 else "group")
    problem = (f"{path}: secret file has mode {stat.S_IMODE(mode):04o}: {who} can access it; "
               f"run `chmod 600 {shlex.quote(path)}`")
    if os.environ.get(ALLOW_WEAK_ENV, "") == "1":
        _logger.warning("%s (allowed by %s=1)", problem, ALLOW_WEAK_ENV)
        return
    raise OperationalError(f"{problem} (or set {ALLOW_WEAK_ENV}=1 where secrets are mounted "
                           "read-only with other modes)")


def load_secret(path: str, *, what: str = "secret certificate") -> Certificate:
    """Load a secret certificate for use: it must hold a secret key and be private."""
    cert = Certificate.load(path)
    if not cert.has_secret:
        raise OperationalError(f"{path}: holds no secret key; a {what} is needed "
                               "(NAME_secret or NAME.key_secret)")
    require_private(path)
    return cert


# --- fingerprint ----------------------------------------------------------------------------


def _read_stdin() -> bytes:
    data = sys.stdin.buffer.read(_STDIN_LIMIT + 1)
    if len(data) > _STDIN_LIMIT:
        raise OperationalError("<stdin>: more than 1 MiB; not a certificate or key")
    return data


def _input_cert(item: str) -> tuple[Certificate, str | None]:
    """A certificate (public part) for one `fingerprint` input, and the path to show."""
    if item == "-":
        data = _read_stdin()
        stripped = data.strip()
        if z85.is_key_text(stripped.decode("ascii", "replace")):
            return Certificate.from_public(stripped), None
        return certfile.parse(data, path="<stdin>"), "<stdin>"
    if not os.path.lexists(item) and z85.is_key_text(item):
        return Certificate.from_public(item), None
    return Certificate.load(item), item


def _line(cert: Certificate, path: str | None) -> str:
    name = cert.meta.get("name")
    shown = sanitize.escape(name, limit=80) if name else "-"
    where = sanitize.escape(path) if path is not None else "key"
    return f"{cert.fingerprint} {shown} ({where})"


@click.command(context_settings=_CONTEXT, epilog="""\b
Each INPUT is a certificate file (public or secret; only the public key is
used), a public key in Z85 (40 characters), or '-' for stdin (a certificate or
a key). One line per input, like `ssh-keygen -l`:
  SHA256:<base64 of SHA-256 of the 32-byte key> NAME (PATH)
NAME is the certificate's metadata name, '-' when it has none; PATH is 'key'
for a key given as text.

\b
Examples:
  curvecert fingerprint server alice.key
  curvecert fingerprint store/*
  curvecert keygen --json | jq -r .public_key | curvecert fingerprint -
""")
@click.argument("inputs", nargs=-1, required=True, metavar="FILE|KEY|-...",
                type=click.Path(dir_okay=True, allow_dash=True, path_type=str))
@click.option("--json", "as_json", is_flag=True,
              help='Print {"items": [{path, name, public_key, public_key_hex, '
                   'fingerprint}], "findings": [...]}.')
def fingerprint(inputs: tuple[str, ...], as_json: bool) -> None:
    """Print the fingerprint of each certificate file or public key, one line each."""
    if inputs.count("-") > 1:
        raise UsageProblem("'-' (stdin) may be given only once")
    items: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    errors: list[str] = []
    for item in inputs:
        try:
            cert, path = _input_cert(item)
        except (CurvecertError, OSError) as exc:
            label = "<stdin>" if item == "-" else item
            message = str(exc) if isinstance(exc, CurvecertError) else exc.strerror or str(exc)
            errors.append(message if message.startswith(label) else f"{label}: {message}")
            findings.append({"severity": "error", "code": "unreadable",
                             "message": message.removeprefix(f"{label}: "),
                             "path": label, "line": None})
            continue
        if as_json:
            items.append({"path": path, "name": cert.meta.get("name"),
                          "public_key": cert.public_txt,
                          "public_key_hex": cert.public_key.hex(),
                          "fingerprint": cert.fingerprint})
        else:
            click.echo(_line(cert, path))
    if as_json:
        render.print_json({"items": items, "findings": findings})
    if len(errors) == 1:
        raise OperationalError(errors[0])
    if errors:
        raise OperationalError(f"{errors[0]} (and {len(errors) - 1} more inputs could not "
                               "be read)")


# --- export ---------------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT, epilog="""\b
Writes the public certificate of SECRET_FILE (its public key and metadata,
never the secret key) to stdout or to -o FILE (mode 0644, written atomically;
an existing FILE is replaced only with --force). This is the file to share:
copy it to the peers or into a store. Like ssh-keygen -y, it refuses a secret
file that group or others can read (see `man curvecert`, CURVECERT_ALLOW_WEAK_SECRET_MODES).

\b
Examples:
  curvecert export server_secret -o server.pub
  curvecert export client.key_secret | ssh host 'cat > clients/client.key'
""")
@click.argument("secret_file", metavar="SECRET_FILE",
                type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False, path_type=str),
              help="Write the public certificate to FILE instead of stdout.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True,
              help="With -o: print {path, public_key, public_key_hex, fingerprint, metadata}.")
def export(secret_file: str, output: str | None, force: bool, as_json: bool) -> None:
    """Write the public certificate of a secret certificate file."""
    cert = load_secret(secret_file)
    public = cert.public_only()
    if output is None:
        if as_json:
            raise UsageProblem("--json needs -o FILE (stdout carries the certificate)")
        click.echo(certfile.dump(public, secret=False), nl=False)
        return
    public.save_public(output, force=force)
    if as_json:
        render.print_json(render.cert_to_json(public, path=output))
    else:
        click.echo(f"curvecert: wrote {output} ({public.fingerprint})", err=True)
