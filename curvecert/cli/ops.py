"""`curvecert status`, `trusted`, `decisions`, `top`: ask a running `serve-auth`.

Each command sends read-only requests over the daemon's control channel
(`curvecert.serve.control`) and prints sanitized text, or with `--json` one JSON object
(schemas in `curvecert/schemas/`). `decisions --follow --json` prints one JSON object per
line (a decision each). docs/operations.md is the reference.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from curvecert.cli.replytext import as_list, dicts, etcd_line, items_of, number, shown
from curvecert.formats.sanitize import field, json_line
from curvecert.serve import config as cfgmod
from curvecert.serve.control import ControlClient, control_endpoint_for

__all__ = ["decisions", "status", "top", "trusted"]

_ENDPOINT_HELP = ("Control socket of the daemon (ipc://PATH). Default: control.sock next to "
                  "the default ZAP endpoint.")


def _client(endpoint: str | None) -> ControlClient:
    if endpoint is None:
        endpoint = control_endpoint_for(None, cfgmod.default_zap_endpoint())
    elif not endpoint.startswith("ipc://"):
        raise click.BadParameter("expected ipc://PATH", param_hint="--endpoint")
    return ControlClient(endpoint)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json_line(obj) + "\n")
    sys.stdout.flush()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a long-running view like Ctrl-C does."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- status ---------------------------------------------------------------------------------

def status_lines(st: dict[str, Any]) -> list[str]:
    """Plain-text status, every value from the daemon escaped."""
    head = "healthy" if st.get("healthy") is True else "UNHEALTHY"
    lines = [f"serve-auth pid {number(st.get('pid'))}: {head}, "
             f"up {number(st.get('uptime', 0), '.1f')} s, "
             f"policy generation {number(st.get('generation'))}"]
    for problem in as_list(st.get("problems", [])):
        lines.append(f"  problem: {shown(problem)}")
    for dom in dicts(st.get("domains", [])):
        mechs = ", ".join(shown(m) for m in as_list(dom.get("mechanisms", []))) or "none"
        lines.append(f"domain {field(str(dom.get('name')))}: {mechs}")
        for store in dicts(dom.get("stores", [])):
            state = "healthy" if store.get("healthy") is True else \
                f"UNHEALTHY ({shown(store.get('problem'))})"
            lines.append(f"  store {shown(store.get('path'))}: "
                         f"{number(store.get('certificates'))} certificate(s), {state}, "
                         f"{number(store.get('finding_count'))} finding(s)")
            if store.get("backend") == "etcd":
                lines.append(f"    {etcd_line(store)}")
    decisions = st.get("decisions", {})
    if isinstance(decisions, dict) and decisions:
        for mech, by_status in sorted(decisions.items(), key=lambda kv: str(kv[0])):
            pairs = sorted(by_status.items(), key=lambda kv: str(kv[0])) \
                if isinstance(by_status, dict) else []
            counts = " ".join(f"{shown(s)}={number(n)}" for s, n in pairs)
            lines.append(f"decisions {shown(mech)}: {counts}")
    else:
        lines.append("decisions: none yet")
    lines.append(f"findings: {len(as_list(st.get('findings', [])))}")
    fw = st.get("forwarders", {})
    fw = fw if isinstance(fw, dict) else {}
    lines.append(f"forwarders: {number(fw.get('connected', 0))} connected, "
                 f"{number(fw.get('seen', 0))} seen, {number(fw.get('refused', 0))} refused")
    return lines


@click.command(epilog="""\b
Examples:
  curvecert status
  curvecert status --json | jq .healthy
Exit status 1 when the daemon reports itself unhealthy. Docs: docs/operations.md""")
@click.option("--endpoint", metavar="EP", help=_ENDPOINT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(endpoint: str | None, as_json: bool) -> None:
    """Health, uptime, policy generation, stores and decision counts of serve-auth."""
    from curvecert.cli import Verdict

    with _client(endpoint) as client:
        st = client.request({"command": "status"})
    if as_json:
        _emit_json(st)
    else:
        click.echo("\n".join(status_lines(st)))
    if not st.get("healthy"):
        raise Verdict()


# --- trusted --------------------------------------------------------------------------------

@click.command(epilog="""\b
Examples:
  curvecert trusted
  curvecert trusted --domain global --json | jq -r '.items[].fingerprint'
Docs: docs/operations.md""")
@click.option("--endpoint", metavar="EP", help=_ENDPOINT_HELP)
@click.option("--domain", metavar="D", help="Only this ZAP domain's stores.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def trusted(endpoint: str | None, domain: str | None, as_json: bool) -> None:
    """The keys the daemon's live snapshot trusts (name, fingerprint, file)."""
    req: dict[str, Any] = {"command": "trusted"}
    if domain is not None:
        req["domain"] = domain
    with _client(endpoint) as client:
        result = client.request(req)
    if as_json:
        _emit_json(result)
        return
    for item in items_of(result):
        click.echo(trusted_line(item))


def trusted_line(item: dict[str, Any]) -> str:
    """One trusted key as sanitized text: domain, fingerprint, name, file."""
    return (f"{field(str(item.get('domain')))}  {shown(item.get('fingerprint'))}  "
            f"{field(str(item.get('name') or '-'))}  {shown(item.get('path'))}")


# --- decisions ------------------------------------------------------------------------------

def decision_line(d: dict[str, Any]) -> str:
    """One decision as sanitized text."""
    who = d.get("user_id") or d.get("subject") or ""
    parts = [shown(d.get("time")), number(d.get("status")), shown(d.get("mechanism")),
             f"address={field(str(d.get('address') or ''))}",
             f"domain={field(str(d.get('domain') or ''))}"]
    if who:
        parts.append(f"user={field(str(who))}")
    if d.get("name"):
        parts.append(f"name={field(str(d['name']))}")
    if d.get("fingerprint"):
        parts.append(shown(d["fingerprint"]))
    if d.get("reason"):
        parts.append(f"reason={field(str(d['reason']))}")
    return " ".join(parts)


@click.command(epilog="""\b
Examples:
  curvecert decisions --last 50
  curvecert decisions --denied --follow
  curvecert decisions --json | jq -r '.items[] | select(.status != "200") | .address'
With --follow, Ctrl-C or SIGTERM ends the stream (exit 0). Docs: docs/operations.md""")
@click.option("--endpoint", metavar="EP", help=_ENDPOINT_HELP)
@click.option("--last", "last", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="How many recent decisions.")
@click.option("--denied", is_flag=True, help="Only refusals and errors (status != 200).")
@click.option("--follow", is_flag=True, help="Keep printing new decisions as they come.")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=0.25, show_default=True,
              help="Polling period of --follow, in seconds.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (with --follow: one JSON object per decision per line).")
def decisions(endpoint: str | None, last: int, denied: bool, follow: bool, interval: float,
              as_json: bool) -> None:
    """Recent ZAP decisions from the daemon's in-memory ring (no passwords)."""
    with _client(endpoint) as client:
        result = client.request({"command": "decisions", "last": last, "denied": denied})
        if not follow:
            if as_json:
                _emit_json(result)
            else:
                for item in items_of(result):
                    click.echo(decision_line(item))
            return
        cursor = int(result.get("cursor", 0))
        items = items_of(result)
        try:
            with _sigterm_as_interrupt():
                while True:
                    for item in items:
                        if as_json:
                            _emit_json(item)
                        else:
                            click.echo(decision_line(item))
                    sys.stdout.flush()
                    time.sleep(interval)
                    result = client.request({"command": "decisions", "after": cursor,
                                             "last": 100_000, "denied": denied})
                    cursor = int(result.get("cursor", cursor))
                    items = items_of(result)
        except KeyboardInterrupt:
            return


# --- top ------------------------------------------------------------------------------------

@click.command(epilog="""\b
Examples:
  curvecert top
  curvecert top --interval 2 | tee serve-auth.log      # plain lines when not a terminal
Ctrl-C or SIGTERM ends it (exit 0). Docs: docs/operations.md""")
@click.option("--endpoint", metavar="EP", help=_ENDPOINT_HELP)
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Refresh period in seconds.")
@click.option("--once", is_flag=True, help="Print one plain view and exit.")
def top(endpoint: str | None, interval: float, once: bool) -> None:
    """A live view of serve-auth: decisions per second by status, last denials, stores."""
    from curvecert.cli import opstop

    with _client(endpoint) as client:
        try:
            with _sigterm_as_interrupt():
                opstop.run(client, interval=interval, once=once,
                           live=sys.stdout.isatty() and not once)
        except KeyboardInterrupt:
            return


# --- serve-auth's side (called by `curvecert serve-auth`) -----------------------------------

def operations_for(zap_endpoint: str | None, control: str | None, metrics_at: str | None,
                   allow_remote: bool) -> tuple[Any, Any]:
    """`(Operations, metrics HTTP server or None)` for `serve-auth`'s options.

    `control`: `ipc://PATH`, `none`, or None (derived from the ZAP endpoint; skipped with
    a warning if it cannot be bound). Raises `ConfigError`/`OperationalError` for a bad or
    unusable `--control` / `--metrics`.
    """
    import prometheus_client

    from curvecert.errors import ConfigError
    from curvecert.serve import metrics
    from curvecert.serve.live import Operations

    required = control is not None
    if control is not None and control.lower() == "none":
        endpoint = None
    elif control is not None:
        if not control.startswith("ipc://") or len(control) <= len("ipc://"):
            raise ConfigError(f"--control {control!r}: expected ipc://PATH or none")
        endpoint = control
    else:
        endpoint = control_endpoint_for(zap_endpoint, cfgmod.default_zap_endpoint())
    ops = Operations(endpoint, required=required)
    server = None
    if metrics_at is not None:
        host, port = metrics.parse_listen(metrics_at, allow_remote=allow_remote)
        registry = prometheus_client.CollectorRegistry()
        registry.register(metrics.CurvecertCollector(ops.metrics_sources()))
        server, where = metrics.serve_http(host, port, registry)
        ops.metrics_address = f"http://{where}/metrics"
    return ops, server
