"""`curvecert new | show | verify`: certificate commands.

The command bodies only gather input, call the library and hand results to
`curvecert.cli.render`; errors travel up as `CurvecertError` (exit 3) or `click.UsageError`
(exit 2), and a negative `verify` ends with `Verdict` (exit 1), all mapped in
`curvecert.cli.main`. Secret keys are never taken from the command line (a file, stdin or
a hidden prompt only) and never printed unless the user asked for exactly that
(`keygen`, `show --reveal-secret`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING

import click

from curvecert.certs import certfile, validity
from curvecert.certs.cert import Certificate
from curvecert.cli import Verdict, render
from curvecert.errors import (
    CertificateError,
    OperationalError,
    ZplError,
    ZplSyntaxError,
)
from curvecert.formats import zpl

if TYPE_CHECKING:  # curvecert.certs.verify is imported by the commands that check something
    from curvecert.certs.verify import Finding

__all__ = ["new", "show", "validity_findings", "validity_options", "verify"]

_logger = logging.getLogger(__name__)

#: The largest input read from stdin (a certificate is a few hundred bytes).
STDIN_LIMIT = 1 << 20
STDIN_LABEL = "<stdin>"
_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _read_stdin() -> bytes:
    data = sys.stdin.buffer.read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise OperationalError(f"{STDIN_LABEL}: more than {STDIN_LIMIT} bytes; "
                               "not a certificate or key")
    return data


def _status(message: str, level: str = "INFO") -> None:
    """A status line for people, on stderr (stdout carries only data)."""
    render.status(level, message)


def _warn_findings(findings: list[Finding]) -> None:
    for f in findings:
        render.status("WARNING", f.message)


def _parse_meta(pairs: list[tuple[str, str]], raw: tuple[str, ...]) -> list[tuple[str, str]]:
    """Validate `--name/--email/--org` and `--meta KEY=VALUE` into ordered metadata."""
    out = list(pairs)
    for item in raw:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        out.append((name, value))
    seen: set[str] = set()
    for name, value in out:
        if not zpl.is_valid_name(name):
            raise click.BadParameter(
                f"{name!r} is not a valid metadata name: use letters, digits and "
                "$ - _ @ . & + / (not starting or ending with /)", param_hint="--meta")
        if name in seen:
            raise click.BadParameter(f"metadata name {name!r} given twice",
                                     param_hint="--meta")
        seen.add(name)
        try:
            zpl.quote_value(value)
        except ZplError as exc:
            raise click.BadParameter(f"{exc}", param_hint=f"value of {name!r}") from None
    return out


# --- new ----------------------------------------------------------------------------------

@click.command(context_settings=_CONTEXT, epilog="""\b
Writes PATH (public, mode 0644) and PATH_secret (secret, mode 0600 from its
first byte) in CZMQ's format, with the metadata in both files. Prints the
public key and fingerprint, never the secret. Existing files are never
replaced without --force; with it the swap is atomic and the secret is 0600.

\b
Examples:
  curvecert new server
  curvecert new certs/alice --name "Alice Example" --email alice@example.org
  curvecert new client --meta role=worker --meta site=eu-1 --json
  curvecert new server --force        # replace an existing pair
  curvecert new client --expires 90d  # not-after = now + 90 days (docs/format.md)
""")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option("-n", "--name", help="Metadata item name (a person or service).")
@click.option("-e", "--email", help="Metadata item email.")
@click.option("--org", "organization", help="Metadata item organization.")
@click.option("-m", "--meta", multiple=True, metavar="KEY=VALUE",
              help="Extra metadata; repeat for more. Names: letters, digits, $-_@.&+/")
@click.option("--expires", metavar="DURATION",
              help="Valid for DURATION from now (90d, 12h, 1d12h): sets not-after.")
@click.option("--not-after", metavar="TIME",
              help="Expiry time, ISO-8601 UTC (2027-03-01T00:00:00Z).")
@click.option("--not-before", metavar="TIME",
              help="Start of validity, ISO-8601 UTC (default: none, valid at once).")
@click.option("-f", "--force", is_flag=True, help="Replace existing files (atomically).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: path, secret_path, public_key, public_key_hex, "
                   "fingerprint, metadata, not_before, not_after.")
def new(path: str, name: str | None, email: str | None, organization: str | None,
        meta: tuple[str, ...], expires: str | None, not_after: str | None,
        not_before: str | None, force: bool, as_json: bool) -> None:
    """Generate a certificate pair: PATH (public) and PATH_secret (secret)."""
    from curvecert.certs.verify import check_metadata

    if path == "-":
        raise click.BadParameter("new writes files; give a path, not '-'", param_hint="PATH")
    if path.endswith(certfile.SECRET_SUFFIX):
        raise click.BadParameter(
            f"PATH names the public file; the secret goes to PATH{certfile.SECRET_SUFFIX} "
            f"(drop the {certfile.SECRET_SUFFIX!r})", param_hint="PATH")
    fixed = [(k, v) for k, v in (("name", name), ("email", email),
                                 ("organization", organization)) if v is not None]
    metadata = _parse_meta(fixed, meta)
    metadata = validity_options(metadata, expires=expires, not_after=not_after,
                                not_before=not_before)
    cert = Certificate.new(metadata)
    warnings = [f for f in check_metadata(metadata, path)
                if f.code in ("meta-overflow", "meta-quote", "meta-name-zmtp",
                              "meta-reserved", "meta-pyzmq-key")]
    certfile.save(cert, path, force=force)
    secret = certfile.secret_path(path)
    _logger.info("wrote %s and %s", path, secret)
    _warn_findings(warnings)
    period = validity.from_meta(cert.meta)
    why = period.refusal(time.time()) if period is not None else None
    if why is not None:  # allowed (a test fixture, a key for later), but say so
        _status(f"{why}; the authenticator refuses it until that changes", "WARNING")
    if as_json:
        render.print_json({
            "path": os.path.abspath(path),
            "secret_path": os.path.abspath(secret),
            "public_key": cert.public_txt,
            "public_key_hex": cert.public_key.hex(),
            "fingerprint": cert.fingerprint,
            "metadata": dict(cert.meta),
            **validity.to_json(period),
        })
        return
    _status(f"wrote {path} (public, 0644) and {secret} (secret, 0600)")
    click.echo(f"public key:  {cert.public_txt}")
    click.echo(f"fingerprint: {cert.fingerprint}")
    if period is not None and period.not_after is not None:
        click.echo(f"not after:   {validity.format_time(period.not_after)}")


def validity_options(metadata: list[tuple[str, str]], *, expires: str | None,
                     not_after: str | None, not_before: str | None) -> list[tuple[str, str]]:
    """`metadata` with `not-before`/`not-after` from `--expires`/`--not-after`/`--not-before`
    (usage errors, exit 2, for bad values); also used by `rotate`."""
    if expires is not None and not_after is not None:
        raise click.UsageError("give --expires or --not-after, not both")
    if any(n in (validity.NOT_BEFORE, validity.NOT_AFTER) for n, _ in metadata) and (
            expires or not_after or not_before):
        raise click.UsageError("not-before/not-after given both with --meta and with "
                               "--expires/--not-after/--not-before")
    try:
        nb = validity.parse_time(not_before, what="--not-before") if not_before else None
        if expires is not None:
            start = nb if nb is not None else time.time()
            na: float | None = start + validity.parse_duration(expires, what="--expires")
        else:
            na = validity.parse_time(not_after, what="--not-after") if not_after else None
        if nb is None and na is None:
            return metadata
        return validity.with_validity(metadata, not_before=nb, not_after=na)
    except CertificateError as exc:
        raise click.UsageError(str(exc)) from None


# --- show ---------------------------------------------------------------------------------

def _load_any(file: str) -> tuple[Certificate, str]:
    """A certificate from a path or from stdin (`-`), with the label to show for it."""
    if file == "-":
        return Certificate.parse(_read_stdin(), path=STDIN_LABEL), STDIN_LABEL
    if os.path.isdir(file):
        raise OperationalError(f"{file}: is a directory, not a certificate file")
    return Certificate.load(file), file


@click.command(context_settings=_CONTEXT, epilog="""\b
Reads exactly FILE (a public file never picks up its _secret sibling), or
stdin when FILE is '-'. Accepts CZMQ files (NAME, NAME_secret) and pyzmq
files (NAME.key, NAME.key_secret). The secret key is shown only with
--reveal-secret.

\b
Examples:
  curvecert show server
  curvecert show server_secret --json
  curvecert show server_secret --json --reveal-secret | jq -r .secret_key
  cat alice.key | curvecert show -
""")
@click.argument("file", type=click.Path(allow_dash=True, path_type=str), metavar="FILE|-")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: public_key, public_key_hex, fingerprint, metadata, "
                   "has_secret (and secret_key with --reveal-secret).")
@click.option("--reveal-secret", is_flag=True, help="Also print the secret key.")
def show(file: str, as_json: bool, reveal_secret: bool) -> None:
    """Show a certificate file: keys, fingerprint and metadata."""
    cert, label = _load_any(file)
    if cert.has_secret and file != "-":
        from curvecert.certs.verify import check_mode

        try:
            mode = os.stat(file).st_mode
        except OSError:
            mode = 0
        for f in check_mode(file, mode, holds_secret=True):
            render.status("WARNING", f"{f.location}: {f.message}")
    if as_json:
        render.print_json(render.cert_to_json(cert, path=label, reveal_secret=reveal_secret))
        return
    if not sys.stdout.isatty():  # a pipe or a file: plain lines, and no rich import
        click.echo(render.plain_certificate(cert, path=label, reveal_secret=reveal_secret),
                   nl=False)
        return
    render.console().print(render.render_certificate(cert, path=label,
                                                     reveal_secret=reveal_secret))


# --- verify -------------------------------------------------------------------------------

@click.command(context_settings=_CONTEXT, epilog="""\b
Checks, with path:line for each finding: ZPL syntax (as CZMQ parses it); key
length and Z85; a secret key that does not belong to the public key; a secret
file with any group/other permission bit; a public file writable by group or
others; a public file whose _secret sibling is exposed or holds another key
(CZMQ loads the sibling instead); metadata CZMQ cannot handle (values it cannot
read back after saving, more than 512 bytes of encoded metadata, which crashes
CZMQ's zauth), duplicate names. '-' reads stdin (no permission checks).
Validity (not-before / not-after metadata): expired or not yet valid
certificates are errors, those expiring within --warn-within (default 14d)
a warning (expires-soon). A directory is checked as a store (what `store
check` reports, modes included).

\b
Exit status: 0 no findings, 1 findings, 3 a file could not be read (each
unreadable file is one finding; the other files are still checked).

\b
Examples:
  curvecert verify server server_secret
  curvecert verify certs/*
  curvecert verify --json client_secret | jq '.findings[].message'
""")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True, path_type=str),
                metavar="FILE...")
@click.option("--warn-within", metavar="DURATION", default="14d", show_default=True,
              help="Report certificates that expire within DURATION (expires-soon).")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"ok": bool, "items": [{"path", "ok"}], "findings": [...]}.')
def verify(files: tuple[str, ...], warn_within: str, as_json: bool) -> None:
    """Check certificate files for problems (exit 1 when there are findings)."""
    from curvecert.certs.fileio import read_bytes
    from curvecert.certs.verify import Finding as _Finding
    from curvecert.certs.verify import check_text, verify_file

    try:
        warn = validity.parse_duration(warn_within, what="--warn-within")
    except CertificateError as exc:
        raise click.BadParameter(exc.reason, param_hint="--warn-within") from None
    now = time.time()
    findings: list[Finding] = []
    unreadable: list[str] = []
    for file in files:
        try:
            if file == "-":
                data = _read_stdin()
                found, _ = check_text(data, STDIN_LABEL)
                findings += found + validity_findings(data, STDIN_LABEL, now, warn)
            elif os.path.isdir(file):  # a store directory: what `store check` reports
                from curvecert.cli.store import store_findings

                findings += store_findings(file)
            else:
                findings += verify_file(file)
                findings += validity_findings(read_bytes(file), file, now, warn)
        except OperationalError as exc:
            # One finding per file that cannot be read; the others are still checked.
            unreadable.append(str(exc))
            label = STDIN_LABEL if file == "-" else file
            reason = str(exc).removeprefix(f"{label}: ")
            findings.append(_Finding(label, None, "error", "unreadable", reason))
    findings = list(dict.fromkeys(findings))  # a stale temporary is seen from both files of a pair
    labels = [STDIN_LABEL if f == "-" else f for f in files]
    if as_json:
        render.print_json({"ok": not findings,
                           "items": [{"path": label,
                                      "ok": not any(f.path == label for f in findings)}
                                     for label in labels],
                           "findings": render.findings_to_json(findings)})
    else:
        if findings:
            render.console().print(render.render_findings(findings))
        if not unreadable:  # else the error line below is the summary
            render.console(stderr=True).print(render.findings_summary(findings, len(files)))
    if len(unreadable) == 1:
        raise OperationalError(unreadable[0])
    if unreadable:
        raise OperationalError(f"{len(unreadable)} of {len(files)} files could not be read")
    if findings:
        raise Verdict()


def validity_findings(data: bytes, label: str, now: float, warn_within: float
                      ) -> list[Finding]:
    """`expired`, `expires-soon`, `not-yet-valid`, `validity-invalid` findings for one file
    (at the line of its `not-after`/`not-before` item); nothing for a file that does not
    parse (its syntax finding says why)."""
    from curvecert.certs.verify import Finding

    try:
        root = zpl.parse(data, path=label)
    except ZplSyntaxError:
        return []
    node = root.child("metadata")
    items = [(c.name, c.value, c.line) for c in node.children] if node is not None else []
    period = validity.from_meta([(n, v) for n, v, _ in items])
    if period is None:
        return []
    lines = {n: ln for n, _, ln in reversed(items)}
    line = lines.get(validity.NOT_AFTER, lines.get(validity.NOT_BEFORE))
    return [Finding(label, lines.get(validity.NOT_BEFORE, line) if code == "not-yet-valid"
                    else line, severity, code, message)  # type: ignore[arg-type]
            for severity, code, message in period.problems(now, warn_within)]
