"""`curvecert serve-auth`: run the ZAP authenticator daemon and/or a CURVE gateway.

The command only turns options (or a TOML file) into a `DaemonConfig`, wires signals to
the daemon's flags, and renders the decision log: rich text on a terminal, or one JSON
object per line with `--log-format json` (an audit stream). Everything else lives in
`curvecert.serve.daemon` and `curvecert.serve.gateway`; docs/serve-auth.md is the reference.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from curvecert.auth.records import format_fields
from curvecert.errors import ConfigError
from curvecert.formats.sanitize import escape, field, json_line
from curvecert.serve import config as cfgmod
from curvecert.serve.config import DaemonConfig, DomainConfig, GatewayConfig, ServerConfig
from curvecert.store.etcdurl import is_etcd_url, parse_url

__all__ = ["serve_auth"]

_STATUS_STYLE = {"200": "green", "300": "yellow", "400": "red", "500": "bold red"}
_MARK = {"200": "✓", "300": "~", "400": "✗", "500": "✗"}


def _options_config(*, stores: tuple[str, ...], zap_endpoint: str | None,
                    allow: tuple[str, ...], deny: tuple[str, ...], passwords: str | None,
                    allow_any: bool, null: bool, domain: str, ipc_group: str | None,
                    server_cert: str | None, forwarders: str | None, front: str | None,
                    back: str | None, pattern: str | None, next_front: str | None = None,
                    next_server_cert: str | None = None,
                    next_zap_endpoint: str | None = None,
                    strict_modes: bool = False) -> DaemonConfig:
    """A configuration from command-line options (defaults documented in --help)."""
    for a in allow:
        cfgmod.check_address(a, where="--allow")
    for d in deny:
        cfgmod.check_address(d, where="--deny")
    store_paths: tuple[Path | str, ...] = tuple(
        str(parse_url(s)) if is_etcd_url(s) else Path(s).expanduser() for s in stores)
    if not store_paths and not allow_any:
        store_paths = (cfgmod.default_store_dir(),)
    for p in store_paths:
        if isinstance(p, Path) and not p.is_dir():
            raise ConfigError(f"{p}: the certificate store does not exist (create it with "
                              "`curvecert store add`, or give --store DIR)")
    mechs: list[str] = ["CURVE"]
    if passwords:
        mechs.append("PLAIN")
    if null:
        mechs.append("NULL")
    dom = DomainConfig(name=domain, stores=() if allow_any else store_paths,
                       curve="unsafe-allow-any" if allow_any else "store",
                       passwords=Path(passwords) if passwords else None,
                       allow=allow, deny=deny, mechanisms=tuple(mechs),
                       strict_modes=strict_modes)
    gateway = None
    if front is not None:
        if back is None or pattern is None or server_cert is None:
            raise click.UsageError("--front needs --back, --pattern and --server-cert")
        cfgmod.check_endpoint(front, where="--front")
        cfgmod.check_endpoint(back, where="--back", bind=False)
        if next_front is not None:
            cfgmod.check_endpoint(next_front, where="--next-front")
            if next_server_cert is None:
                raise click.UsageError("--next-front needs --next-server-cert")
        gateway = GatewayConfig(front=front, back=back, pattern=pattern,
                                server_cert=Path(server_cert),
                                domain="" if domain == "*" else domain,
                                next_front=next_front,
                                next_server_cert=Path(next_server_cert)
                                if next_front is not None and next_server_cert else None)
    elif back is not None or pattern is not None or next_front is not None:
        raise click.UsageError("--back, --pattern and --next-front need --front")
    if zap_endpoint is None and gateway is None:
        zap_endpoint = cfgmod.default_zap_endpoint()
    if zap_endpoint is not None:
        cfgmod.check_endpoint(zap_endpoint, where="--zap-endpoint")
    server = None
    if zap_endpoint is not None and zap_endpoint.startswith("tcp://"):
        if server_cert is None or forwarders is None:
            raise click.UsageError("a tcp:// --zap-endpoint needs --server-cert (the daemon's "
                                   "secret certificate) and --forwarders DIR (the store of "
                                   "admitted forwarder certificates)")
        next_cert = None
        if next_zap_endpoint is not None:
            if next_server_cert is None:
                raise click.UsageError("--next-zap-endpoint needs --next-server-cert")
            next_cert = Path(next_server_cert)
        server = ServerConfig(cert=Path(server_cert), forwarders=Path(forwarders),
                              next_cert=next_cert, strict_modes=strict_modes)
    elif forwarders is not None:
        raise click.UsageError("--forwarders only applies to a tcp:// --zap-endpoint")
    if next_server_cert is not None and next_front is None and next_zap_endpoint is None:
        raise click.UsageError("--next-server-cert needs --next-front (gateway) or "
                               "--next-zap-endpoint (tcp:// ZAP endpoint)")
    cfg = DaemonConfig(domains=(dom,), zap_endpoint=zap_endpoint, ipc_group=ipc_group,
                       server=server, gateway=gateway, next_zap_endpoint=next_zap_endpoint)
    cfgmod.validate(cfg)
    return cfg


class _DecisionLog:
    """Renders decision and counter records as text lines or JSON lines.

    Both carry the fields of `curvecert.auth.records` under the same names whatever the
    outcome; every value from the wire goes through `curvecert.formats.sanitize`, so one
    record is always one line (docs/serve-auth.md, "Decision records").
    """

    def __init__(self, fmt: str, stream_name: str):
        self.fmt = fmt
        self.stream: IO[str] = sys.stdout if stream_name == "stdout" else sys.stderr
        self._console: Any = None
        if fmt == "text":
            from curvecert.cli import render

            self._console = render.console(stderr=stream_name != "stdout")

    def decision(self, record: Mapping[str, Any]) -> None:
        if self.fmt == "json":
            self._json({"event": "decision", **record})
            return
        from rich.text import Text

        status = str(record["status"])
        stamp = time.strftime("%H:%M:%S", time.localtime(float(record["time"])))
        line = Text()
        line.append(f"{stamp} ")
        line.append(_MARK.get(status, "?"), style=_STATUS_STYLE.get(status, ""))
        line.append(f" {format_fields(record)}")
        self._console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stats(self, record: Mapping[str, Any]) -> None:
        if self.fmt == "json":
            self._json({"event": "stats", "time": round(time.time(), 3), **record})
            return
        parts = " ".join(f"{k}={field(str(v))}" for k, v in record.items())
        self._console.print(f"curvecert: INFO: stats: {parts}", highlight=False,
                            markup=False, style="dim", soft_wrap=True)

    def _json(self, obj: Mapping[str, Any]) -> None:
        try:
            self.stream.write(json_line(obj) + "\n")
            self.stream.flush()
        except BrokenPipeError:  # the reader went away; keep serving
            pass


def _check_secret_modes(config: DaemonConfig) -> None:
    """The secret certificates the daemon will use are private (`cli.keys.require_private`)."""
    from curvecert.certs import secretsource
    from curvecert.cli.keys import require_private

    for part in (config.server, config.gateway):
        for attr in ("cert", "next_cert", "server_cert", "next_server_cert"):
            ref = getattr(part, attr, None)
            if ref is not None:
                scheme, rest = secretsource.split(str(ref))
                if scheme == "file":
                    require_private(rest)


@click.command(epilog="""\b
Examples:
  curvecert serve-auth                                   # default store and endpoint
  curvecert serve-auth --store ./clients --zap-endpoint ipc:///run/app/zap.sock
  curvecert serve-auth --config /etc/curvecert/serve-auth.toml --log-format json
  curvecert serve-auth --front 'tcp://*:5555' --back tcp://127.0.0.1:6000 \\
      --pattern push-pull --server-cert gateway_secret --store ./clients
  curvecert serve-auth --front 'tcp://*:5555' --server-cert env:GW_SECRET \\
      --next-front 'tcp://*:5556' --next-server-cert gateway.next_secret \\
      --back tcp://127.0.0.1:6000 --pattern push-pull    # rotation overlap
\b
Signals: SIGHUP reloads the configuration (a bad one is refused and the old one kept);
SIGTERM and SIGINT stop cleanly (exit 0) and remove the ipc socket file.
Docs: docs/serve-auth.md""")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML configuration (several domains); excludes the policy options.")
@click.option("--store", "stores", multiple=True, type=click.Path(file_okay=False),
              help="Trusted client certificate directory or etcd://HOST:PORT[,...]/PREFIX "
                   "(repeatable; docs/etcd.md). "
                   "Default: $CURVECERT_STORE, else ~/.config/curvecert/store.")
@click.option("--strict-modes", is_flag=True,
              help="Do not trust certificate files or store directories that group/others "
                   "can write (like sshd's StrictModes; default: trusted with a warning), "
                   "in the --store directories and in --forwarders. etcd:// stores ignore "
                   "it. In a --config file: `strict-modes = true` per domain, and in "
                   "[server] for the forwarders store.")
@click.option("--zap-endpoint", metavar="EP",
              help="ipc://PATH or tcp://HOST:PORT for forwarders. Default: "
                   "ipc://$XDG_RUNTIME_DIR/curvecert/zap.sock, else "
                   "ipc:///tmp/curvecert-UID/zap.sock.")
@click.option("--allow", multiple=True, metavar="ADDR",
              help="Only admit these addresses/CIDR ranges (repeatable).")
@click.option("--deny", multiple=True, metavar="ADDR",
              help="Never admit these addresses/CIDR ranges (repeatable; wins over --allow).")
@click.option("--passwords", type=click.Path(dir_okay=False),
              help="Password file for PLAIN (see `curvecert passwd`).")
@click.option("--curve-allow-any", "allow_any", is_flag=True,
              help="UNSAFE: accept any CURVE client key (encryption without authentication).")
@click.option("--null", "null", is_flag=True,
              help="Admit NULL-mechanism clients (address filtering only).")
@click.option("--domain", default="*", show_default=True,
              help="ZAP domain the options apply to ('*' = every domain).")
@click.option("--ipc-group", metavar="GROUP",
              help="Let GROUP use the ipc socket (mode 0660 instead of 0600).")
@click.option("--server-cert", metavar="FILE|SOURCE", type=click.Path(path_type=str),
              help="Secret certificate of the daemon (tcp:// endpoint) or of the gateway; "
                   "a path or env:NAME, fd:N, cred:NAME (docs/security.md).")
@click.option("--next-server-cert", metavar="FILE|SOURCE", type=click.Path(path_type=str),
              help="Rotation overlap: a second server key, served on --next-front and/or "
                   "--next-zap-endpoint (docs/rotation.md).")
@click.option("--next-front", metavar="EP",
              help="Gateway: where the --next-server-cert key is served (a second endpoint).")
@click.option("--next-zap-endpoint", metavar="EP",
              help="tcp:// ZAP endpoint for forwarders that use the --next-server-cert key.")
@click.option("--forwarders", type=click.Path(file_okay=False),
              help="Store of forwarder certificates admitted on a tcp:// --zap-endpoint.")
@click.option("--front", metavar="EP", help="Gateway: CURVE-secured endpoint to bind.")
@click.option("--back", metavar="EP", help="Gateway: the application's plain endpoint.")
@click.option("--pattern", type=click.Choice(cfgmod.GATEWAY_PATTERNS),
              help="Gateway shape (see docs/serve-auth.md).")
@click.option("--log-format", type=click.Choice(cfgmod.LOG_FORMATS),
              help="Decision log: rich text (default) or one JSON object per decision.")
@click.option("--log-stream", type=click.Choice(["stdout", "stderr"]),
              help="Where the decision log goes (default stderr).")
@click.option("--stats-interval", type=click.FloatRange(min=0, max=86400), metavar="SECONDS",
              help="Log counters every SECONDS (0 = never, else 1 to 86400).")
@click.option("--control", metavar="EP",
              help="Control socket for status/trusted/decisions/top: ipc://PATH, or 'none'. "
                   "Default: control.sock next to the ZAP socket (docs/operations.md).")
@click.option("--metrics", "metrics_at", metavar="HOST:PORT",
              help="Serve Prometheus /metrics on HOST:PORT (loopback only unless "
                   "--metrics-allow-remote; docs/metrics.md).")
@click.option("--metrics-allow-remote", is_flag=True,
              help="Allow a non-loopback --metrics address (no authentication on /metrics).")
def serve_auth(config_file: str | None, stores: tuple[str, ...], zap_endpoint: str | None,
               allow: tuple[str, ...], deny: tuple[str, ...], passwords: str | None,
               allow_any: bool, null: bool, domain: str, ipc_group: str | None,
               server_cert: str | None, forwarders: str | None, front: str | None,
               back: str | None, pattern: str | None, log_format: str | None,
               log_stream: str | None, stats_interval: float | None,
               control: str | None = None, metrics_at: str | None = None,
               metrics_allow_remote: bool = False, next_server_cert: str | None = None,
               next_front: str | None = None, next_zap_endpoint: str | None = None,
               strict_modes: bool = False) -> None:
    """Answer ZAP requests for forwarders, and/or run a CURVE gateway, until stopped."""
    from curvecert.serve.daemon import Daemon

    root_logger = logging.getLogger("curvecert")
    if root_logger.level == logging.WARNING and not os.environ.get("CURVECERT_LOGLEVEL"):
        root_logger.setLevel(logging.INFO)  # a daemon reports reloads and start-up (-q: less)
    overrides: dict[str, Any] = {}
    if log_format is not None:
        overrides["log_format"] = log_format
    if log_stream is not None:
        overrides["log_stream"] = log_stream
    if stats_interval is not None:
        if not cfgmod.in_range("stats-interval", stats_interval):
            raise click.BadParameter(f"{stats_interval:g}: must be "
                                     f"{cfgmod.range_text('stats-interval')} (seconds)",
                                     param_hint="--stats-interval")
        overrides["stats_interval"] = stats_interval

    loader: Callable[[], DaemonConfig]
    if config_file is not None:
        policy_opts = {"--store": stores, "--allow": allow, "--deny": deny,
                       "--passwords": passwords, "--curve-allow-any": allow_any,
                       "--null": null, "--front": front, "--back": back,
                       "--pattern": pattern, "--forwarders": forwarders,
                       "--zap-endpoint": zap_endpoint, "--ipc-group": ipc_group,
                       "--server-cert": server_cert, "--next-server-cert": next_server_cert,
                       "--next-front": next_front, "--next-zap-endpoint": next_zap_endpoint,
                       "--strict-modes": strict_modes}
        used = [name for name, value in policy_opts.items() if value]
        if used or domain != "*":
            clash = ", ".join(used) or "--domain"
            raise click.UsageError(f"--config cannot be combined with {clash} "
                                   "(put those settings in the file)")
        path = config_file

        def loader() -> DaemonConfig:
            return replace(cfgmod.load(path), **overrides)
    else:
        opts_cfg = replace(_options_config(
            stores=stores, zap_endpoint=zap_endpoint, allow=allow, deny=deny,
            passwords=passwords, allow_any=allow_any, null=null, domain=domain,
            ipc_group=ipc_group, server_cert=server_cert, forwarders=forwarders, front=front,
            back=back, pattern=pattern, next_front=next_front,
            next_server_cert=next_server_cert, next_zap_endpoint=next_zap_endpoint,
            strict_modes=strict_modes),
            **overrides)

        def loader() -> DaemonConfig:
            return opts_cfg

    first = loader()
    _check_secret_modes(first)
    if any(d.curve == "unsafe-allow-any" for d in first.domains):
        click.echo("curvecert: WARNING: CURVE accepts ANY client key "
                   "(unsafe-allow-any): traffic is encrypted but nobody is authenticated",
                   err=True)
    log = _DecisionLog(first.log_format, first.log_stream)

    from curvecert.cli.ops import operations_for  # control channel and metrics (issue 15)

    ops, metrics_server = operations_for(first.zap_endpoint, control, metrics_at,
                                         metrics_allow_remote)

    starting = True  # until ready: SIGTERM/SIGINT end start-up at once (a secret wait)

    def ready(where: str) -> None:
        nonlocal starting
        starting = False  # from here on a stop signal only asks run() to return
        extras = [f"control {ops.control_endpoint}" if ops.control_endpoint else "",
                  f"metrics {ops.metrics_address}" if ops.metrics_address else ""]
        if any(extras):
            click.echo("curvecert: INFO: " + escape(", ".join(e for e in extras if e)),
                       err=True)
        click.echo(f"curvecert: INFO: ready on {escape(where)}", err=True)
        sys.stderr.flush()

    daemon = Daemon(lambda: first if daemon.config is None else loader(),
                    on_decision=log.decision, on_stats=log.stats, on_ready=ready, ops=ops)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()
        if starting:  # start() may be waiting on a secret (fd:, bounded): end it now
            raise KeyboardInterrupt

    def on_hup(signum: int, frame: FrameType | None) -> None:
        daemon.request_reload()

    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                 (signal.SIGHUP, on_hup))}
    previous_fd = signal.set_wakeup_fd(daemon.wakeup_fd(), warn_on_full_buffer=False)
    try:
        daemon.start()
        daemon.run()
    finally:
        signal.set_wakeup_fd(previous_fd)
        daemon.close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"curvecert: INFO: stopped (pid {os.getpid()})", err=True)
