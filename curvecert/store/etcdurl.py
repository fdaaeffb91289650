"""Naming an etcd store: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` and its connection options.

Pure code (no I/O except reading a password file on request), so it is shared by the CLI,
the daemon's TOML and `configure_curve(store=...)`.

The URL: scheme `etcd` (plain HTTP to etcd's JSON gateway) or `etcds` (HTTPS); one or more
members as `HOST:PORT` (a host name, an IPv4 address or a bracketed IPv6 address; the port
defaults to 2379, etcd's client port) separated by commas; then the key prefix. Each
certificate is one key `PREFIX/<64 hex digits of the public key>`. The prefix is one or
more `/`-separated segments of `A-Z a-z 0-9 . _ ~ -` (no empty, `.` or `..` segment), so
the same text names the same keys on every host. Giving a CA or client certificate in the
options turns TLS on for an `etcd://` URL too.

The options (`EtcdOptions`) never travel on a command line with their secret: the password
comes from `CURVECERT_ETCD_PASSWORD` or a file (`CURVECERT_ETCD_PASSWORD_FILE`,
`--etcd-password-file`, TOML `password-file`), and is hidden from `repr`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from curvecert.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_STALENESS",
    "ENV_PASSWORD",
    "EtcdOptions",
    "EtcdUrl",
    "is_etcd_url",
    "parse_url",
]

#: etcd's registered client port.
DEFAULT_PORT = 2379
#: Seconds an etcd store keeps answering from its last snapshot while etcd cannot be reached.
DEFAULT_STALENESS = 30.0
#: Environment variable holding the etcd password (never put it on a command line).
ENV_PASSWORD = "CURVECERT_ETCD_PASSWORD"  # noqa: S105 - a variable name, not a secret

_SCHEMES = ("etcd", "etcds")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+\Z")


def is_etcd_url(text: object) -> bool:
    """True when `text` is a string that names an etcd store (starts with `etcd[s]://`)."""
    return isinstance(text, str) and text.startswith(("etcd://", "etcds://"))


@dataclass(frozen=True)
class EtcdUrl:
    """A parsed etcd store URL: members, key prefix, and whether TLS is asked for."""

    endpoints: tuple[tuple[str, int], ...]
    """`(host, port)` of each member, in the order given (IPv6 hosts without brackets)."""
    prefix: str
    """The key prefix without leading or trailing `/` (keys are `prefix/<hex key>`)."""
    tls: bool = False
    """True for `etcds://`."""

    @property
    def key_prefix(self) -> bytes:
        """The bytes every certificate key starts with: `prefix/`."""
        return self.prefix.encode("ascii") + b"/"

    def key_for(self, public_key: bytes) -> bytes:
        """The etcd key of a 32-byte public key: `prefix/<lower-case hex>`."""
        return self.key_prefix + public_key.hex().encode("ascii")

    def __str__(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"{'etcds' if self.tls else 'etcd'}://{hosts}/{self.prefix}"


def _endpoint(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"{url}: {text!r}: unclosed '[' in an IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{url}: {host!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{url}: {text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = text.partition(":")
        if sep and not port_text:
            raise ConfigError(f"{url}: {text!r}: empty port")
        if not _HOST.match(host):
            raise ConfigError(f"{url}: {host!r} is not a host name or IPv4 address")
    if not port_text:
        return host, DEFAULT_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{url}: {port_text!r} is not a port number (1-65535)")
    return host, int(port_text)


def parse_url(url: str) -> EtcdUrl:
    """Parse `etcd[s]://HOST[:PORT][,HOST[:PORT]...]/PREFIX`; raise `ConfigError` saying why.

    `str(parse_url(u))` is the canonical form (every port written out).
    """
    if not isinstance(url, str):
        raise ConfigError(f"{url!r} is not an etcd URL")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(f"{url}: an etcd store is etcd://HOST:PORT[,HOST:PORT...]/PREFIX")
    authority, slash, path = rest.partition("/")
    if not authority:
        raise ConfigError(f"{url}: no etcd member given (etcd://HOST:PORT/PREFIX)")
    endpoints = tuple(_endpoint(part, url) for part in authority.split(","))
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError(f"{url}: a member is listed twice")
    prefix = path.rstrip("/")
    if not slash or not prefix:
        raise ConfigError(f"{url}: no key prefix (etcd://HOST:PORT/PREFIX, e.g. /curvecert)")
    for segment in prefix.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise ConfigError(f"{url}: prefix segment {segment!r}: use A-Z a-z 0-9 . _ ~ - "
                              "(no empty, '.' or '..' segment)")
    return EtcdUrl(endpoints, prefix, tls=scheme == "etcds")


@dataclass(frozen=True)
class EtcdOptions:
    """How to reach etcd beyond the URL: TLS files, user/password, the staleness bound.

    `staleness` (seconds) is how long a live store keeps answering from its last snapshot
    once it cannot confirm that snapshot with etcd; after that it fails closed (trusts no
    key) until etcd answers again. `timeout` bounds every request (seconds).
    """

    ca: str | None = None
    """CA bundle that signed the members' certificates (turns TLS on)."""
    cert: str | None = None
    """Client certificate (PEM) for etcd's `--client-cert-auth`."""
    key: str | None = None
    """The client certificate's private key (PEM)."""
    user: str | None = None
    """etcd user name (etcd's `auth enable`)."""
    password: str | None = field(default=None, repr=False)
    """The user's password; from the environment or a file, never from argv."""
    staleness: float = DEFAULT_STALENESS
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.staleness < math.inf and 0 < self.timeout < math.inf):
            raise ConfigError("etcd staleness and timeout must be positive, finite numbers "
                              "of seconds")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("etcd: a client certificate needs both `cert` and `key`")
        if self.password is not None and self.user is None:
            raise ConfigError("etcd: a password is given but no user")

    @property
    def tls(self) -> bool:
        """True when a CA or client certificate is configured."""
        return self.ca is not None or self.cert is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EtcdOptions:
        """Options from `CURVECERT_ETCD_{CA,CERT,KEY,USER,PASSWORD,PASSWORD_FILE,STALENESS}`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in ("ca", "cert", "key", "user"):
            value = env.get(f"CURVECERT_ETCD_{name.upper()}")
            if value:
                values[name] = value
        if env.get(ENV_PASSWORD):
            values["password"] = env[ENV_PASSWORD]
        elif env.get("CURVECERT_ETCD_PASSWORD_FILE"):
            values["password"] = read_password(env["CURVECERT_ETCD_PASSWORD_FILE"])
        if env.get("CURVECERT_ETCD_STALENESS"):
            try:
                values["staleness"] = float(env["CURVECERT_ETCD_STALENESS"])
            except ValueError:
                raise ConfigError("CURVECERT_ETCD_STALENESS: not a number of seconds") from None
        return cls(**values)

    def with_password_file(self, path: str | os.PathLike[str] | None) -> EtcdOptions:
        """A copy whose password is read from `path` (None: unchanged)."""
        return self if path is None else replace(self, password=read_password(path))

    def merged(self, **changes: Any) -> EtcdOptions:
        """A copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def read_password(path: str | os.PathLike[str]) -> str:
    """The first line of a password file (trailing newline removed); `ConfigError` if unreadable.

    Only the path appears in errors, never the content.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{os.fspath(path)}: cannot read the etcd password: {reason}") \
            from None
    password = line.rstrip("\r\n")
    if not password:
        raise ConfigError(f"{os.fspath(path)}: the etcd password file is empty")
    return password
