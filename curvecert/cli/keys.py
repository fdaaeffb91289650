"""`curvecert keygen | public | fingerprint | export`, and the secret-file mode rule.

The conventions are the ones operators know from ssh-keygen and wg:

- `keygen | public` works like `wg genkey | wg pubkey`: stdin holds a bare Z85 secret key,
  keygen's output, or a secret certificate.
- `fingerprint` prints one line per input like `ssh-keygen -l`: `SHA256:... name (path)`.
- `export` writes the public half of a secret certificate, like `ssh-keygen -y`.
- A command that *uses* a secret key refuses a secret file that group or others can read
  and prints the `chmod` to run (OpenSSH refuses such private keys too). Containers that
  mount secrets read-only with other modes set `CURVECERT_ALLOW_WEAK_SECRET_MODES=1`; then
  the command warns and goes on.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import sys
from typing import Any

import click

from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.cli import UsageProblem, render
from curvecert.errors import CertificateError, CurvecertError, InvalidKey, OperationalError
from curvecert.formats import sanitize, z85

__all__ = ["ALLOW_WEAK_ENV", "export", "fingerprint", "keygen", "load_secret", "public",
           "require_private"]

_logger = logging.getLogger(__name__)

#: Set to 1 to let commands use a secret file that group/other can read (with a warning).
ALLOW_WEAK_ENV = "CURVECERT_ALLOW_WEAK_SECRET_MODES"
_CONTEXT = {"help_option_names": ["-h", "--help"]}
_STDIN_LIMIT = 1 << 20
STDIN_LABEL = "<stdin>"


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


def load_secret(ref: str, *, what: str = "secret certificate") -> Certificate:
    """Load a secret certificate for use: it must hold a secret key and, when it is a file,
    be private (`require_private`).

    `ref` is a path or a secret reference (`env:NAME`, `fd:N`, `cred:NAME`, `file:PATH`;
    `curvecert.certs.secretsource`). Raises `OperationalError` (unreadable, no secret key,
    a file others can read) or `CertificateError` (a damaged value).
    """
    from curvecert.certs import secretsource

    scheme, rest = secretsource.split(ref)
    if scheme == "file":
        cert = Certificate.load(rest)
        if not cert.has_secret:
            raise OperationalError(f"{rest}: holds no secret key; a {what} is needed "
                                   "(NAME_secret or NAME.key_secret)")
        require_private(rest)
        return cert
    return secretsource.load_secret(ref)


# --- keygen -------------------------------------------------------------------------------

def _warn_if_exposed_stdout() -> None:
    """Like `wg genkey`: warn when stdout is a file that others can read."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        _logger.warning("writing a secret key to a file with mode %04o that others can "
                        "access; consider `umask 077` first", stat.S_IMODE(st.st_mode))


@click.command(context_settings=_CONTEXT, epilog="""\b
Prints a fresh keypair (Z85) from libzmq, like libzmq's curve_keygen. This
command prints the secret key because that is what it is for; to keep one in a
file use `curvecert new`, which writes it with mode 0600.

\b
Examples:
  curvecert keygen
  curvecert keygen --json | jq -r .public_key
""")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: public_key, secret_key, fingerprint.")
def keygen(as_json: bool) -> None:
    """Print a fresh Z85 CURVE keypair (public and secret)."""
    pub, sec = keys.keypair()
    cert = Certificate(pub, sec, check=False)
    _warn_if_exposed_stdout()
    if as_json:
        render.print_json({"public_key": cert.public_txt,
                           "public_key_hex": cert.public_key.hex(),
                           "fingerprint": cert.fingerprint, "secret_key": cert.secret_txt})
        return
    click.echo(render.render_keypair(cert.public_txt, cert.secret_txt or ""), nl=False)


# --- public -------------------------------------------------------------------------------

def _cert_from_stdin() -> Certificate:
    stdin = sys.stdin
    if stdin.isatty():
        text = click.prompt("Secret key (Z85, not echoed)", hide_input=True, err=True)
        data = text.encode("utf-8")
    else:
        data = _read_stdin()
    stripped = data.strip()
    # `curvecert keygen` prints the key pair under two headers: take the secret key.
    lines = stripped.splitlines()
    if len(lines) == 4 and lines[2].strip() == b"== CURVE SECRET KEY ==":
        stripped = lines[3].strip()
    if b"\n" in stripped or stripped.startswith(b"#"):
        cert = Certificate.parse(data, path=STDIN_LABEL)
    else:
        try:
            cert = Certificate.from_secret(stripped)
        except InvalidKey as exc:
            raise InvalidKey(f"{STDIN_LABEL}: {exc} (give a Z85 secret key or a secret "
                             "certificate file)") from exc
    if not cert.has_secret:
        raise CertificateError("holds no secret key (a public certificate); "
                               "`curvecert public` derives a public key from a secret",
                               path=STDIN_LABEL)
    return cert


@click.command(context_settings=_CONTEXT, epilog="""\b
FILE is a secret certificate (NAME_secret, NAME.key_secret). With no FILE or
'-', stdin holds either a Z85 secret key or a whole secret certificate; on a
terminal the key is asked for without echo. Secrets are never taken as
arguments.

\b
Examples:
  curvecert public server_secret
  curvecert keygen --json | jq -r .secret_key | curvecert public
  curvecert public --json < client.key_secret
  curvecert public --secret-from env:SERVER_SECRET
  curvecert public --secret-from fd:3 3< server_secret
""")
@click.argument("file", required=False, default="-", metavar="[FILE|-]",
                type=click.Path(allow_dash=True, path_type=str))
@click.option("--secret-from", metavar="SOURCE",
              help="Read the secret from env:NAME, file:PATH, fd:N or cred:NAME "
                   "(docs/security.md) instead of FILE.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: path, public_key, public_key_hex, fingerprint.")
def public(file: str, secret_from: str | None, as_json: bool) -> None:
    """Print the public key of a secret certificate or of a secret key on stdin."""
    if secret_from is not None and file != "-":
        raise click.UsageError("give FILE or --secret-from, not both")
    if secret_from is not None:
        cert = load_secret(secret_from)
    elif file == "-":
        cert = _cert_from_stdin()
    else:
        if not os.path.lexists(file) and z85.is_key_text(file):
            # Say so without echoing it: argv leaks through ps, /proc and shell history.
            raise click.UsageError("FILE looks like a key: secrets are never taken on the "
                                   "command line; pipe the key on stdin instead "
                                   "(curvecert public < keyfile)")
        if os.path.isdir(file):
            raise OperationalError(f"{file}: is a directory, not a certificate file")
        cert = Certificate.load(file)
        if not cert.has_secret:
            raise CertificateError("holds no secret key (a public certificate; "
                                   "`curvecert show` prints its key)", path=file)
        require_private(file)
    if as_json:
        render.print_json({"path": None if file == "-" or secret_from else file,
                           "public_key": cert.public_txt,
                           "public_key_hex": cert.public_key.hex(),
                           "fingerprint": cert.fingerprint})
        return
    click.echo(cert.public_txt)


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
        return Certificate.parse(data, path="<stdin>"), "<stdin>"
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
for a key given as text. A Z85 key may start with '-': put `--` before keys.

\b
Examples:
  curvecert fingerprint server alice.key
  curvecert fingerprint store/*
  curvecert fingerprint -- 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'
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
        render.status("INFO", f"wrote {output} ({public.fingerprint})")
