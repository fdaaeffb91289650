"""Address rules for ZAP requests: allow and deny lists of IP addresses, CIDR ranges and
ipc peer patterns (`AddressFilter`).

An entry is an IPv4/IPv6 address, a CIDR range, or an ipc peer pattern
`localhost:UID:GID:PID` (each part a number or `*`). IPv4-mapped IPv6 addresses
(`::ffff:a.b.c.d`, what a dual-stack listener reports for IPv4 clients) match their IPv4
entries and vice versa. A non-empty allow list rejects every address not on it; a deny
list rejects the addresses on it; deny wins over allow (so `allow 10.0.0.0/8` plus
`deny 10.0.0.66` works). CZMQ ignores its deny list once an allow list exists: curvecert's
rule only ever rejects more. Pure: no I/O, no sockets.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from curvecert.errors import ConfigError

__all__ = ["AddressFilter"]

_IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class _IpcPattern:
    uid: int | None
    gid: int | None
    pid: int | None

    def matches(self, peer: tuple[int, int, int]) -> bool:
        return all(want is None or want == got
                   for want, got in zip((self.uid, self.gid, self.pid), peer, strict=True))


def _ipc_parts(text: str, *, pattern: bool) -> tuple[int | None, ...] | None:
    parts = text.split(":")
    if len(parts) != 4 or parts[0] != "localhost":
        return None
    out: list[int | None] = []
    for part in parts[1:]:
        if pattern and part == "*":
            out.append(None)
        elif part.isdigit() and part.isascii():
            out.append(int(part))
        else:
            return None
    return tuple(out)


def _parse_rule(entry: str) -> _IPNet | _IpcPattern:
    text = entry.strip()
    ipc = _ipc_parts(text, pattern=True)
    if ipc is not None:
        return _IpcPattern(*ipc)
    try:
        net: _IPNet = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{entry!r} is not an IP address, a CIDR range or an ipc peer "
                          "pattern (localhost:UID:GID:PID, parts may be *)") from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        # ::ffff:a.b.c.d/n is the IPv4 range a.b.c.d/(n-96)
        v4 = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        net = ipaddress.IPv4Network(f"{v4}/{net.prefixlen - 96}", strict=False)
    return net


@functools.lru_cache(maxsize=4096)
def _parse_peer(address: str) -> _IPAddr | tuple[int, int, int] | None:
    """The ZAP address frame as an IP address (IPv4-mapped → IPv4) or ipc peer ids."""
    if address.startswith("localhost:"):
        ipc = _ipc_parts(address, pattern=False)
        return (ipc[0], ipc[1], ipc[2]) if ipc is not None else None  # type: ignore[return-value]
    try:
        ip: _IPAddr = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class _RuleSet:
    entries: tuple[str, ...] = ()
    hosts: frozenset[tuple[int, int]] = frozenset()        # (version, int) of /32 and /128
    nets: tuple[_IPNet, ...] = ()
    ipc: tuple[_IpcPattern, ...] = ()

    @classmethod
    def build(cls, entries: Iterable[str]) -> _RuleSet:
        texts = tuple(dict.fromkeys(entries))
        hosts: set[tuple[int, int]] = set()
        nets: list[_IPNet] = []
        ipc: list[_IpcPattern] = []
        for text in texts:
            rule = _parse_rule(text)
            if isinstance(rule, _IpcPattern):
                ipc.append(rule)
            elif rule.num_addresses == 1:
                hosts.add((rule.version, int(rule.network_address)))
            else:
                nets.append(rule)
        return cls(texts, frozenset(hosts), tuple(nets), tuple(ipc))

    def matches(self, address: str) -> bool:
        peer = _parse_peer(address)
        if peer is None:
            return False
        if isinstance(peer, tuple):
            return any(p.matches(peer) for p in self.ipc)
        if (peer.version, int(peer)) in self.hosts:
            return True
        return any(peer.version == net.version and peer in net for net in self.nets)

    def __bool__(self) -> bool:
        return bool(self.entries)


@dataclass(frozen=True)
class AddressFilter:
    """Allow and deny lists of addresses, CIDR ranges and ipc peer patterns.

    `check(address)` returns None when the address passes, else the denial reason.
    A non-empty allow list rejects every address not on it; the deny list rejects the
    addresses on it, even when they are also allowed.
    """

    allow_rules: _RuleSet = field(default_factory=_RuleSet)
    deny_rules: _RuleSet = field(default_factory=_RuleSet)

    @classmethod
    def of(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> AddressFilter:
        """A filter from entry texts; a bad entry raises `ConfigError`."""
        return cls(_RuleSet.build(allow), _RuleSet.build(deny))

    @property
    def allow(self) -> tuple[str, ...]:
        """Allow-list entries as given."""
        return self.allow_rules.entries

    @property
    def deny(self) -> tuple[str, ...]:
        """Deny-list entries as given."""
        return self.deny_rules.entries

    def with_allow(self, *entries: str) -> AddressFilter:
        """A copy with `entries` added to the allow list."""
        return AddressFilter(_RuleSet.build((*self.allow, *entries)), self.deny_rules)

    def with_deny(self, *entries: str) -> AddressFilter:
        """A copy with `entries` added to the deny list."""
        return AddressFilter(self.allow_rules, _RuleSet.build((*self.deny, *entries)))

    def check(self, address: str) -> str | None:
        """None if `address` passes, else `"address not allowed"` / `"address denied"`."""
        if self.allow_rules.entries and not self.allow_rules.matches(address):
            return "address not allowed"
        if self.deny_rules.entries and self.deny_rules.matches(address):
            return "address denied"
        return None

    def __bool__(self) -> bool:
        return bool(self.allow_rules.entries or self.deny_rules.entries)

