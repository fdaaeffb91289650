"""`curvecert probe ENDPOINT`: connect once and say why a handshake fails, or that it works.

The work happens in `curvecert.probe` (`client`, `wire`, `advice`); this module gathers
the options, reads a PLAIN password from a hidden prompt or stdin (never the command
line), prints the one verdict with its cause and fix (or `--json`), and ends with exit 0
when the outcome is the expected one (admitted; with `--stranger`, refused) and `Verdict`
(exit 1) when not. The client's secret key and the password are never printed.
"""

from __future__ import annotations

import logging
import math
import sys

import click

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.cli import UsageProblem, Verdict, render
from curvecert.errors import InvalidKey, OperationalError
from curvecert.formats.sanitize import escape
from curvecert.probe.advice import ProbeVerdict
from curvecert.probe.client import MAX_TIMEOUT, ProbeResult
from curvecert.probe.client import probe as run_probe
from curvecert.probe.wire import SERVER_TYPES, parse_endpoint

__all__ = ["probe"]

_logger = logging.getLogger(__name__)

_CONTEXT = {"help_option_names": ["-h", "--help"]}

_STYLE = {True: "bold green", False: "bold red"}


def _read_password(user: str) -> str:
    """The PLAIN password: a hidden prompt on a terminal, else the first line of stdin."""
    stdin = sys.stdin
    if stdin.isatty():
        value: str = click.prompt(f"Password for {user}", hide_input=True, err=True)
        return value
    line = stdin.readline()
    if not line:
        raise click.UsageError("--plain needs a password on stdin (one line) or a terminal "
                               "to prompt on")
    return line.rstrip("\r\n")


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Refuse NaN, which passes every range check."""
    if math.isnan(value):
        raise click.BadParameter("not a number", ctx=ctx, param=param)
    return value


def _server_keys(server_keys: tuple[str, ...], server_certs: tuple[str, ...]) -> list[bytes]:
    """The server keys to try: every `--server-key`, then every `--server-cert`."""
    out = []
    for text in server_keys:
        try:
            out.append(keys.decode_key(text, what="--server-key"))
        except InvalidKey as exc:
            raise click.BadParameter(str(exc), param_hint="--server-key") from None
    out += [Certificate.load(path).public_key for path in server_certs]
    return out


def _pairs(endpoints: tuple[str, ...], server_keys: list[bytes]
           ) -> list[tuple[str, bytes | None]]:
    """Probe targets: pairwise for N endpoints and N keys, else every key on one endpoint
    or one key on every endpoint (a rotation overlap serves each key on its own endpoint)."""
    if not server_keys:
        return [(e, None) for e in endpoints]
    if len(endpoints) == len(server_keys):
        return list(zip(endpoints, server_keys, strict=True))
    if len(endpoints) == 1:
        return [(endpoints[0], k) for k in server_keys]
    if len(server_keys) == 1:
        return [(e, server_keys[0]) for e in endpoints]
    raise click.UsageError(f"{len(endpoints)} endpoints and {len(server_keys)} server keys: "
                           "give one key per endpoint, one endpoint, or one key")


def _render(result: ProbeResult) -> None:
    from rich.text import Text

    out = render.console()
    title = result.verdict.value.upper().replace("-", " ")
    mark = "ok" if result.ok else "NOT OK"
    head = Text()
    head.append(f"{title}", style=_STYLE[result.ok])
    head.append(f"  {escape(result.endpoint)}  ({result.mechanism}"
                + (", stranger" if result.stranger else "") + f")  [{mark}]")
    out.print(head)
    if result.verdict is ProbeVerdict.FAILS_OPEN:
        out.print(Text("The server accepts ANY CURVE client.", style="bold red"))
    out.print(Text.assemble(("Why: ", "bold"), escape(result.cause)))
    out.print(Text.assemble(("Fix: ", "bold"), escape(result.fix)))
    for note in result.notes:
        out.print(Text.assemble(("Note: ", "bold"), escape(note)))
    if result.client_fingerprint:
        what = "stranger key" if result.stranger else "client key"
        out.print(Text(f"{what}: {result.client_key} ({result.client_fingerprint})",
                       style="dim"))
    if result.greeting.mechanism:
        out.print(Text(f"server greeting: ZMTP, mechanism {escape(result.greeting.mechanism)}",
                       style="dim"))
    if result.server_type_found:
        out.print(Text(f"server socket type: {result.server_type_found}", style="dim"))
    if result.exchange is not None:
        x = result.exchange
        requests = "request" if x.received == 1 else "requests"
        replies = "reply" if x.sent == 1 else "replies"
        out.print(Text(f"round trip: {x.outcome} ({x.received} {requests} received, "
                       f"{x.sent} {replies} sent)", style="dim"))
    out.print(Text("events:", style="dim"))
    if not result.events:
        out.print(Text("  (none)", style="dim"))
    for ev in result.events:
        out.print(Text(f"  +{ev.time:7.3f}s  {ev.name:<28} {escape(ev.detail)}", style="dim"))


@click.command(context_settings=_CONTEXT, epilog="""\b
Examples:
  curvecert probe tcp://127.0.0.1:5555 --server-cert server.key --cert client.key_secret
  curvecert probe tcp://db:5555 --server-cert server.key --stranger
  echo "$PW" | curvecert probe tcp://db:5556 --plain admin
  curvecert probe ipc:///run/app.sock --json
  curvecert probe tcp://gw:5555 tcp://gw:5556 --server-cert server \\
      --server-cert server.next --cert client_secret      # both keys of a rotation
\b
Exit codes: 0 expected outcome (admitted; with --stranger, refused), 1 otherwise,
2 usage, 3 operational error. See docs/troubleshooting.md for every verdict.""")
@click.argument("endpoints", nargs=-1, required=True, metavar="ENDPOINT...")
@click.option("--server-key", "server_keys", multiple=True, metavar="KEY",
              help="The server's public key (40 Z85 characters); repeatable.")
@click.option("--server-cert", "server_certs", multiple=True, metavar="FILE",
              type=click.Path(path_type=str),
              help="The server's public certificate file (makes this a CURVE probe); "
                   "repeatable: several endpoints pair with several keys in order (a key "
                   "rotation's current and next front, docs/rotation.md).")
@click.option("--cert", "--secret-from", "client_cert", metavar="FILE|SOURCE",
              type=click.Path(path_type=str),
              help="The client's SECRET certificate (NAME_secret), or env:NAME, fd:N, "
                   "cred:NAME (docs/security.md). Without it a CURVE probe uses a throwaway key.")
@click.option("--plain", "plain_user", metavar="USER",
              help="Probe as a PLAIN client; the password comes from a prompt or stdin.")
@click.option("--zap-domain", metavar="DOMAIN",
              help="The ZAP domain the server socket sets, if known. Clients cannot send a "
                   "domain; it only sharpens the advice.")
@click.option("--stranger", is_flag=True,
              help="Connect with a fresh key no store can contain; expect a refusal. An "
                   "admission means the server fails open (exit 1).")
@click.option("--server-type", type=click.Choice(sorted(SERVER_TYPES), case_sensitive=False),
              default=None,
              help="The server socket's type; the probe connects with a compatible one. "
                   "Without it, a dropped handshake is retried as DEALER, PULL, SUB, PUSH, "
                   "PAIR and ROUTER, and the type that gets an answer is reported. A REQ "
                   "server is admitted only after a round trip: the probe waits for its "
                   "request and answers it with an empty reply.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True, max=MAX_TIMEOUT),
              default=5.0, show_default=True, metavar="SECONDS", callback=_finite,
              help="How long to wait for a verdict, retries with other socket types "
                   "included (at most a day).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def probe(endpoints: tuple[str, ...], server_keys: tuple[str, ...],
          server_certs: tuple[str, ...],
          client_cert: str | None, plain_user: str | None, zap_domain: str | None,
          stranger: bool, server_type: str | None, timeout: float, as_json: bool) -> None:
    """Connect to ENDPOINT once and explain the handshake outcome.

    Watches the socket monitor (connection and handshake events) and prints one verdict
    with its likely cause and the fix: nothing listening, not a ZeroMQ peer, mechanism
    mismatch, wrong server key, refused (400), server error (500), stalled (300 or a hung
    ZAP handler), admitted, or fails open (--stranger admitted). For a REQ server, also
    dropped after handshake (the reply was lost) or no message (no request came).
    """
    curve = bool(server_keys or server_certs)
    if plain_user is not None and curve:
        raise click.UsageError("--plain is a PLAIN probe; it cannot be combined with a "
                               "server key (CURVE)")
    if stranger and not curve:
        raise click.UsageError("--stranger is a CURVE probe: give --server-key or "
                               "--server-cert")
    if stranger and client_cert is not None:
        raise click.UsageError("--stranger makes its own key; do not combine it with --cert")
    if client_cert is not None and not curve:
        raise click.UsageError("--cert needs --server-key or --server-cert")

    for endpoint in endpoints:
        try:
            parse_endpoint(endpoint)
        except OperationalError as exc:
            raise UsageProblem(str(exc)) from None
    targets = _pairs(endpoints, _server_keys(server_keys, server_certs))
    cert = None
    if client_cert is not None:
        from curvecert.cli.keys import load_secret

        cert = load_secret(client_cert, what="client secret certificate (--cert)")
    plain = (plain_user, _read_password(plain_user)) if plain_user is not None else None

    results = [run_probe(endpoint, server_key=key, client_cert=cert, plain=plain,
                         zap_domain=zap_domain, stranger=stranger, timeout=timeout,
                         server_type=server_type.upper() if server_type else None)
               for endpoint, key in targets]
    if as_json:
        if len(results) == 1:
            render.print_json(results[0].to_dict())
        else:
            render.print_json({"ok": all(r.ok for r in results),
                               "items": [r.to_dict() for r in results]})
    else:
        for result in results:
            _render(result)
    for result in results:
        if result.verdict is ProbeVerdict.FAILS_OPEN:
            _logger.warning("%s accepts any CURVE client (fails open)", result.endpoint)
    sys.stdout.flush()
    if not all(r.ok for r in results):
        raise Verdict()
