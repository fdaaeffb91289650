"""The `serve-auth` configuration's values: frozen dataclasses and the fixed vocabularies.

Pure data, no parsing: `curvecert.serve.config` fills these from a TOML file or from
command-line options, and re-exports every name here, so `config.DomainConfig` and
`configtypes.DomainConfig` are the same class. The reference is docs/serve-auth.md
("Configuration file").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curvecert.store.etcdurl import EtcdOptions

__all__ = ["BACKLOG", "CURVE_MODES", "GATEWAY_PATTERNS", "LOG_FORMATS", "MECHANISMS",
           "DaemonConfig", "DomainConfig", "GatewayConfig", "ServerConfig"]

#: How a domain treats CURVE clients: only keys in its stores, or (named unsafe) any key.
CURVE_MODES = ("store", "unsafe-allow-any")
#: ZAP mechanisms a domain may admit (RFC 27; GSSAPI is not supported by curvecert).
MECHANISMS = ("NULL", "PLAIN", "CURVE")
#: Decision log formats.
LOG_FORMATS = ("text", "json")
#: Listen backlog for the daemon's and the gateway's sockets. libzmq's default (100)
#: overflows on a burst of a few hundred connects and SYN retries then add ~1 s.
BACKLOG = 4096
#: Gateway shapes (docs/serve-auth.md "Gateway").
GATEWAY_PATTERNS = ("push-pull", "router-dealer", "pub-sub", "pub-sub-out")

@dataclass(frozen=True)
class DomainConfig:
    """What one ZAP domain admits."""

    name: str
    """The ZAP domain; `"*"` is the fallback for every domain without its own table
    (libzmq sends `""` for sockets without `ZMQ_ZAP_DOMAIN`)."""
    stores: tuple[Path | str, ...] = ()
    """Directories of trusted client public certificates (CURVE), or `etcd://` URLs (str)."""
    curve: str = "store"
    """`store` (only keys in `stores`) or `unsafe-allow-any` (any CURVE key; insecure)."""
    passwords: Path | None = None
    """A `curvecert passwd` file for PLAIN."""
    allow: tuple[str, ...] = ()
    """Addresses or CIDR networks that may connect; empty = any (unless denied)."""
    deny: tuple[str, ...] = ()
    """Addresses or CIDR networks that may never connect."""
    mechanisms: tuple[str, ...] | None = None
    """Mechanisms admitted; None = those the settings above imply (CURVE with stores or
    `unsafe-allow-any`, PLAIN with a password file; NULL only when listed)."""
    user_id: bool = True
    """`user-id = false`: 200 replies carry an empty User-Id (for libzmq 4.3 REQ servers)."""
    strict_modes: bool = False
    """`strict-modes = true` (sshd's StrictModes): certificate files, sub-directories and
    store directories that group/others can write are not trusted (without it they are
    trusted and logged at WARNING). `etcd://` stores have no file modes and ignore it."""


@dataclass(frozen=True)
class ServerConfig:
    """The daemon's own identity for a `tcp://` ZAP endpoint, and who may forward to it."""

    cert: Path
    """The daemon's secret certificate (CURVE server)."""
    forwarders: Path
    """A store directory of the public certificates of admitted forwarders."""
    next_cert: Path | None = None
    """A second secret certificate served on `next-zap-endpoint` (rotation overlap)."""
    strict_modes: bool = False
    """`strict-modes = true`: StrictModes for the forwarders store (as for a domain's)."""


@dataclass(frozen=True)
class GatewayConfig:
    """A CURVE-secured front socket relayed to an application's plain local socket."""

    front: str
    """Where remote peers connect, e.g. `tcp://*:5555` (CURVE server)."""
    back: str
    """The application's plain socket the gateway connects to, e.g. `tcp://127.0.0.1:6000`."""
    pattern: str
    """One of `GATEWAY_PATTERNS`."""
    server_cert: Path
    """The gateway's secret certificate."""
    domain: str = ""
    """ZAP domain set on the front socket (chooses the policy domain)."""
    next_front: str | None = None
    """A second front endpoint, served with `next_server_cert` (rotation overlap)."""
    next_server_cert: Path | None = None
    """The next key's secret certificate (docs/rotation.md)."""


@dataclass(frozen=True)
class DaemonConfig:
    """Everything `serve-auth` runs from."""

    domains: tuple[DomainConfig, ...]
    zap_endpoint: str | None = None
    """Where forwarders send ZAP requests; None = no ZAP endpoint (gateway only)."""
    ipc_group: str | None = None
    """Group allowed to use an ipc endpoint (socket file 0660 instead of 0600)."""
    log_format: str = "text"
    log_stream: str = "stderr"
    """Where JSON decision lines go: `stdout` or `stderr`."""
    stats_interval: float = 0.0
    """Seconds between counter log lines; 0 = never, otherwise 1 to 86400 (`LIMITS`)."""
    server: ServerConfig | None = None
    gateway: GatewayConfig | None = None
    next_zap_endpoint: str | None = None
    """A second tcp:// ZAP endpoint served with `server.next_cert` (rotation overlap)."""
    path: Path | None = field(default=None, compare=False)
    """The file this came from, if any (for messages and SIGHUP reloads)."""
    etcd: EtcdOptions | None = None
    """How to reach etcd for `etcd://` stores (`[etcd]` table); None = from the environment."""
