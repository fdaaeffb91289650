"""The `serve-auth` configuration: a TOML file (or command-line options) as plain values.

Why a separate, pure layer: the daemon re-reads this file on SIGHUP and must keep its old
policy when the new file is wrong, so parsing has to be complete and strict *before*
anything live is touched. Every unknown key, wrong type or bad value raises
`ConfigError` naming the file and the key (`/etc/curvecert/serve-auth.toml: domains.app.
allow[2]: ...`); a typo never silently turns into "allow everything".

This module only parses, into the frozen dataclasses of `curvecert.serve.configtypes`
(re-exported here). Turning them into a live policy
(watched stores, password files) is `curvecert.serve.livepolicy.build_policy`. Relative
paths in a file are resolved against the file's directory.

The reference, with a sample, is docs/serve-auth.md ("Configuration file"). Validation is
complete: every numeric option is finite and within `LIMITS`, text has no NUL and a bounded
length, nesting that defeats the TOML reader is a `ConfigError` too.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from curvecert import store
from curvecert.certs.fileio import read_bytes
from curvecert.errors import ConfigError, CurvecertError
from curvecert.serve.configtypes import (
    BACKLOG,
    CURVE_MODES,
    GATEWAY_PATTERNS,
    LOG_FORMATS,
    MECHANISMS,
    DaemonConfig,
    DomainConfig,
    GatewayConfig,
    ServerConfig,
)
from curvecert.serve.tomlreader import (
    LIMITS,
    MAX_ITEMS,
    MAX_TEXT,
    TableReader,
    in_range,
    range_text,
)
from curvecert.store.etcdurl import EtcdOptions, is_etcd_url, parse_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "BACKLOG",
    "CURVE_MODES",
    "GATEWAY_PATTERNS",
    "LOG_FORMATS",
    "MECHANISMS",
    "DaemonConfig",
    "DomainConfig",
    "GatewayConfig",
    "ServerConfig",
    "LIMITS",
    "MAX_ITEMS",
    "MAX_TEXT",
    "in_range",
    "range_text",
    "check_address",
    "check_endpoint",
    "check_paths",
    "default_store_dir",
    "default_zap_endpoint",
    "load",
    "parse",
    "validate",
]

_TRANSPORTS = ("ipc", "tcp")
#: A ZAP domain is at most 255 octets on the wire (RFC 27 strings).
MAX_DOMAIN = 255
#: Largest configuration file read.
MAX_FILE = 1 << 20


# --- defaults ----------------------------------------------------------------------------

def default_store_dir(env: Mapping[str, str] | None = None) -> Path:
    """The store the CLI uses without `--store` (shared with `curvecert store`):
    `$CURVECERT_STORE`, else `$XDG_CONFIG_HOME/curvecert/store` (`~/.config/...`)."""
    return Path(store.default_directory(env))


def default_zap_endpoint(env: Mapping[str, str] | None = None) -> str:
    """`ipc://$XDG_RUNTIME_DIR/curvecert/zap.sock`, else `ipc:///tmp/curvecert-<uid>/zap.sock`."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return f"ipc://{runtime}/curvecert/zap.sock"
    return f"ipc:///tmp/curvecert-{os.getuid()}/zap.sock"


# --- checks shared with the CLI ------------------------------------------------------------

def check_address(text: str, *, where: str) -> str:
    """Validate an allow/deny entry; return it.

    An entry is an IPv4/IPv6 address, a CIDR network, or an ipc peer pattern
    `localhost:UID:GID:PID` whose parts are numbers or `*` (libzmq reports ipc clients
    that way), as `curvecert.auth.policy` reads them.
    """
    parts = text.strip().split(":")
    if len(parts) == 4 and parts[0] == "localhost":
        if all(p == "*" or (p.isdigit() and p.isascii()) for p in parts[1:]):
            return text
    else:
        try:
            ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            pass
        else:
            return text
    raise ConfigError(f"{where}: {text!r} is not an IP address, a CIDR network or an ipc "
                      "peer pattern (localhost:UID:GID:PID, parts may be *)")


def check_endpoint(text: str, *, where: str, bind: bool = True) -> str:
    """Validate an `ipc://` or `tcp://` endpoint; return it."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in _TRANSPORTS or not rest:
        raise ConfigError(f"{where}: {text!r} is not an ipc://PATH or tcp://HOST:PORT endpoint")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not (port.isdigit() or (bind and port == "*")):
            raise ConfigError(f"{where}: {text!r} needs a host and a port (tcp://HOST:PORT)")
    return text


# --- parsing -----------------------------------------------------------------------------

def _secret_ref(reader: TableReader, key: str) -> Path | None:
    """A secret certificate setting: a path (resolved like other paths) or a secret
    reference (`env:NAME`, `fd:N`, `cred:NAME`, kept as written; `curvecert.certs.
    secretsource`). `file:PATH` is a path."""
    value = reader.get(key, str)
    if value is None:
        return None
    scheme, sep, rest = value.partition(":")
    if sep and scheme in ("env", "fd", "cred"):
        return Path(value)
    return reader.resolve(rest if sep and scheme == "file" else value)


def _domain(name: str, table: Mapping[str, Any], where: str, base: Path | None) -> DomainConfig:
    r = TableReader(table, where, base)
    stores = tuple(str(parse_url(s)) if is_etcd_url(s) else r.resolve(s)
                   for s in r.strings("stores"))
    curve = r.choice("curve", CURVE_MODES, "store")
    passwords = r.path("passwords")
    allow = tuple(check_address(a, where=f"{where}.allow") for a in r.strings("allow"))
    deny = tuple(check_address(a, where=f"{where}.deny") for a in r.strings("deny"))
    user_id: bool = r.get("user-id", bool, True)
    strict_modes: bool = r.get("strict-modes", bool, False)
    mechs: tuple[str, ...] | None = None
    if "mechanisms" in table:
        mechs = tuple(m.upper() for m in r.strings("mechanisms"))
        for m in mechs:
            if m not in MECHANISMS:
                raise ConfigError(f"{where}.mechanisms: {m!r} is not one of "
                                  f"{', '.join(MECHANISMS)}")
    else:
        r.used.add("mechanisms")
    r.finish()
    if "CURVE" in (mechs or ()) and curve == "store" and not stores:
        raise ConfigError(f"{where}: CURVE is enabled but no `stores` are given "
                          "(every client would be refused)")
    if "PLAIN" in (mechs or ()) and passwords is None:
        raise ConfigError(f"{where}: PLAIN is enabled but no `passwords` file is given")
    return DomainConfig(name=name, stores=stores, curve=curve, passwords=passwords,
                        allow=allow, deny=deny, mechanisms=mechs, user_id=user_id,
                        strict_modes=strict_modes)


def parse(text: str, *, path: str | os.PathLike[str] | None = None) -> DaemonConfig:
    """Parse a `serve-auth` TOML document; raise `ConfigError` naming the file and key."""
    where_file = os.fspath(path) if path is not None else "<config>"
    base = Path(where_file).resolve().parent if path is not None else None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where_file}: not valid TOML: {exc}") from exc
    except (RecursionError, MemoryError) as exc:  # a value nested thousands deep
        raise ConfigError(f"{where_file}: not valid TOML: nested too deep") from exc
    try:
        return _parse(data, base, Path(where_file) if path is not None else None)
    except ConfigError as exc:
        raise ConfigError(f"{where_file}: {exc}") from exc
    except (RecursionError, MemoryError, TypeError, ValueError, ArithmeticError) as exc:
        # Defence in depth: any other failure on hostile input is a refusal, not a crash.
        raise ConfigError(f"{where_file}: invalid configuration ({type(exc).__name__})") \
            from exc


def _parse(data: Mapping[str, Any], base: Path | None, path: Path | None) -> DaemonConfig:
    r = TableReader(data, "", base)
    zap = r.get("zap-endpoint", str)
    if zap is not None:
        check_endpoint(zap, where="zap-endpoint")
    ipc_group = r.get("ipc-group", str)
    log_format = r.choice("log-format", LOG_FORMATS, "text")
    log_stream = r.choice("log-stream", ("stdout", "stderr"), "stderr")
    stats = r.number("stats-interval", 0.0)

    domains: list[DomainConfig] = []
    table = r.table_of("domains") or {}
    for name, dom in table.items():
        if len(name.encode("utf-8", "surrogatepass")) > MAX_DOMAIN or "\x00" in name:
            raise ConfigError(f"domains.{_toml_key(name[:40])}: a ZAP domain is at most "
                              f"{MAX_DOMAIN} octets, without NUL (RFC 27)")
        if not isinstance(dom, dict):
            raise ConfigError(f"domains.{name!r}: expected a table ([domains.{name!r}])")
        domains.append(_domain(name, dom, f"domains.{_toml_key(name)}", base))

    server = None
    st = r.table_of("server")
    if st is not None:
        sr = TableReader(st, "server", base)
        cert, forwarders = _secret_ref(sr, "cert"), sr.path("forwarders")
        next_cert = _secret_ref(sr, "next-cert")
        strict = sr.get("strict-modes", bool, False)
        sr.finish()
        if cert is None or forwarders is None:
            raise ConfigError("server: needs both `cert` (the daemon's secret certificate) "
                              "and `forwarders` (a store of forwarder certificates)")
        server = ServerConfig(cert=cert, forwarders=forwarders, next_cert=next_cert,
                              strict_modes=strict)

    gateway = None
    gt = r.table_of("gateway")
    if gt is not None:
        gr = TableReader(gt, "gateway", base)
        front = gr.get("front", str)
        back = gr.get("back", str)
        pattern = gr.choice("pattern", GATEWAY_PATTERNS, "push-pull")
        server_cert = _secret_ref(gr, "server-cert")
        domain = gr.get("domain", str, "")
        if len(domain.encode("utf-8", "surrogatepass")) > MAX_DOMAIN:
            raise ConfigError(f"gateway.domain: a ZAP domain is at most {MAX_DOMAIN} octets")
        next_front = gr.get("next-front", str)
        next_server_cert = _secret_ref(gr, "next-server-cert")
        gr.finish()
        if (next_front is None) != (next_server_cert is None):
            raise ConfigError("gateway: `next-front` and `next-server-cert` go together")
        if next_front is not None:
            check_endpoint(next_front, where="gateway.next-front")
        if front is None or back is None or server_cert is None:
            raise ConfigError("gateway: needs `front`, `back` and `server-cert`")
        check_endpoint(front, where="gateway.front")
        check_endpoint(back, where="gateway.back", bind=False)
        gateway = GatewayConfig(front=front, back=back, pattern=pattern,
                                server_cert=server_cert, domain=domain,
                                next_front=next_front, next_server_cert=next_server_cert)
    next_zap = r.get("next-zap-endpoint", str)
    if next_zap is not None:
        check_endpoint(next_zap, where="next-zap-endpoint")
    etcd = _etcd_options(r.table_of("etcd"), base)
    r.finish()
    cfg = DaemonConfig(domains=tuple(domains), zap_endpoint=zap, ipc_group=ipc_group,
                       log_format=log_format, log_stream=log_stream, stats_interval=stats,
                       server=server, gateway=gateway, next_zap_endpoint=next_zap, path=path,
                       etcd=etcd)
    validate(cfg)
    return cfg


def _etcd_options(table: Mapping[str, Any] | None, base: Path | None) -> EtcdOptions | None:
    """The `[etcd]` table over the `CURVECERT_ETCD_*` environment (docs/etcd.md)."""
    if table is None:
        return None
    er = TableReader(table, "etcd", base)
    files = {name: er.path(name) for name in ("ca", "cert", "key")}
    user = er.get("user", str)
    password_file = er.path("password-file")
    staleness = er.get("staleness", float)
    er.finish()
    options = EtcdOptions.from_env().with_password_file(password_file)
    return options.merged(**{k: str(v) for k, v in files.items() if v is not None},
                          user=user, staleness=staleness)


def validate(cfg: DaemonConfig) -> None:
    """Cross-field checks shared by files and command-line options."""
    if not cfg.domains:
        raise ConfigError("no domains are configured ([domains.NAME] tables)")
    if cfg.zap_endpoint is None and cfg.gateway is None:
        raise ConfigError("nothing to serve: give `zap-endpoint` and/or a [gateway] table")
    if cfg.zap_endpoint is not None and cfg.zap_endpoint.startswith("tcp://") \
            and cfg.server is None:
        raise ConfigError(f"zap-endpoint {cfg.zap_endpoint}: a tcp:// endpoint carries "
                          "passwords and keys; it needs a [server] table (`cert`, "
                          "`forwarders`) so forwarders connect over CURVE")
    if cfg.ipc_group is not None and not (cfg.zap_endpoint or "").startswith("ipc://"):
        raise ConfigError("ipc-group: only applies to an ipc:// zap-endpoint")
    if cfg.server is not None and not (cfg.zap_endpoint or "").startswith("tcp://"):
        raise ConfigError("server: only applies to a tcp:// zap-endpoint (forwarders on ipc "
                          "reach the daemon through the socket file)")
    if not in_range("stats-interval", cfg.stats_interval):
        raise ConfigError(f"stats-interval: {cfg.stats_interval!r} is out of range; expected "
                          f"{range_text('stats-interval')}")
    if cfg.next_zap_endpoint is not None and not (
            cfg.next_zap_endpoint.startswith("tcp://") and cfg.server is not None
            and cfg.server.next_cert is not None
            and (cfg.zap_endpoint or "").startswith("tcp://")):
        raise ConfigError("next-zap-endpoint: a second tcp:// endpoint for a key rotation; "
                          "it needs a tcp:// zap-endpoint and [server] next-cert")
    if cfg.server is not None and cfg.server.next_cert is not None \
            and cfg.next_zap_endpoint is None:
        raise ConfigError("server.next-cert: needs `next-zap-endpoint` (where the next key "
                          "is served)")


def _toml_key(name: str) -> str:
    bare = name and all(c.isalnum() or c in "-_" for c in name)
    return name if bare else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_paths(cfg: DaemonConfig) -> None:
    """Start-up checks on the disk: every store named by a domain is a directory.

    A store missing from a configuration file is an error at start (and a refused reload
    on SIGHUP, which keeps the running policy), as `--store DIR` is on the command line.
    Raises `ConfigError` naming the file and the key.
    """
    where_file = f"{cfg.path}: " if cfg.path is not None else ""
    for dom in cfg.domains:
        for i, directory in enumerate(dom.stores):
            if isinstance(directory, str):  # an etcd:// URL: followed live, fails closed
                continue
            if not directory.is_dir():
                raise ConfigError(f"{where_file}domains.{_toml_key(dom.name)}.stores[{i}]: "
                                  f"{directory}: the certificate store does not exist or is "
                                  "not a directory")


def load(path: str | os.PathLike[str]) -> DaemonConfig:
    """Read, parse and check a configuration file (`parse`, then `check_paths`).

    The file must be a regular file of at most `MAX_FILE` bytes (a FIFO or a device is
    refused at once, never waited on). Raises `ConfigError` naming the file and the key.
    """
    try:
        data = read_bytes(path, limit=MAX_FILE, what="a configuration file")
    except CurvecertError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot read: not UTF-8 text") from exc
    cfg = parse(text, path=path)
    check_paths(cfg)
    return cfg
