"""ZAP decisions as a pure function: `decide(request, policy) -> Decision`.

Why a separate, socket-free layer: the decision is where security lives, so it must be
testable as a plain table (request in, decision out), and the same function must serve the
embedded authenticator, the asyncio one, the daemon and the forwarder. Nothing here touches
a socket or a thread; the only I/O is what a configured password file or key lookup does.

The rules, in the order they are applied (docs/authenticator.md has the full story):

1. Global address filter (`Policy.addresses`), for every domain and mechanism.
2. Domain: the request's ZAP domain selects `Policy.domains[domain]`; a domain without its
   own policy falls back to `"*"` — which really matches any domain, the empty one
   included (pyzmq's `'*'` only matches the empty domain). No policy and no `"*"` → 400.
   A named domain's policy replaces the fallback completely (no field-by-field merging).
3. The domain policy's own address filter.
4. The mechanism: NULL allowed only when the domain says so; PLAIN checked against a
   password source or a provider; CURVE checked against a key lookup (Ironhouse), a
   provider, or `UnsafeAllowAny` (Stonehouse, named as unsafe); a known key whose
   certificate carries `not-before`/`not-after` (`curvecert.certs.validity`) is refused
   outside that period, judged by the clock at each request; any other mechanism
   (GSSAPI, ...) only through a provider configured for it.

Address filters: an entry is an IPv4/IPv6 address, a CIDR range, or an ipc peer pattern
`localhost:UID:GID:PID` (each part a number or `*`). IPv4-mapped IPv6 addresses
(`::ffff:a.b.c.d`, what a dual-stack listener reports for IPv4 clients) match their IPv4
entries and vice versa. A non-empty allow list rejects every address not on it; a deny
list rejects the addresses on it; deny wins over allow (so `allow 10.0.0.0/8` plus
`deny 10.0.0.66` works). CZMQ ignores its deny list once an allow list exists: curvecert's
rule only ever rejects more.

Statuses (RFC 27): 200 with a User-Id (CURVE: the client's Z85 key; PLAIN: the user name)
and, for a key found in a store, the certificate's metadata; 400 for every denial; 500
when the request is malformed or a lookup, password source or provider raises. Never 300:
libzmq answers it by closing silently and the client reconnects (and asks again) forever.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable

from curvecert.auth.passwords import CheckResult, StaticPasswords
from curvecert.certs import validity
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, ZapError
from curvecert.formats import z85, zap, zmtp

__all__ = [
    "ANY_DOMAIN",
    "DEFAULT_PROVIDER_TIMEOUT",
    "AddressFilter",
    "Decision",
    "DomainPolicy",
    "Grant",
    "KeyChain",
    "KeyEntry",
    "KeyLookup",
    "PasswordCheck",
    "Pending",
    "Policy",
    "Provider",
    "ProviderResult",
    "ResultCache",
    "StaticKeys",
    "UnsafeAllowAny",
    "answer",
    "decide",
    "encode",
    "prepare",
    "resolve",
    "respond",
    "run_inline",
]

_logger = logging.getLogger(__name__)

#: The fallback domain: used for every ZAP domain that has no policy of its own.
ANY_DOMAIN = "*"


# --- interfaces of the things a policy consults ---------------------------------------------

@runtime_checkable
class KeyEntry(Protocol):
    """What a key lookup returns for a known key: the ZAP metadata blob to send back."""

    @property
    def metadata(self) -> bytes:
        """ZMTP-encoded metadata (may be empty)."""


@runtime_checkable
class KeyLookup(Protocol):
    """A CURVE key source: `lookup(32-byte key)` → an entry, or None for an unknown key.

    `curvecert.CertStore` implements it; so does `StaticKeys`. Lookups must be fast and
    must not block on I/O: the authenticator answers one request at a time.
    """

    def lookup(self, key: bytes, /) -> KeyEntry | None:
        """The entry for `key`, or None."""


@runtime_checkable
class PasswordCheck(Protocol):
    """A PLAIN password source: `curvecert.PasswordFile` or `StaticPasswords`."""

    def check(self, user: str, password: bytes, /) -> CheckResult:
        """Check one login."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A provider's "yes", with the User-Id and ZMTP metadata to return (both optional).

    An empty `user_id` means the default: the Z85 key for CURVE, the user name for PLAIN.
    """

    user_id: str | bytes = b""
    metadata: bytes | Mapping[str, str] = b""


ProviderResult = bool | Grant | None


#: Seconds a provider may take before its request is answered 500 (libzmq's own handshake
#: timeout, ZMQ_HANDSHAKE_IVL, is 30 s; a lookup slower than a second is a broken backend).
DEFAULT_PROVIDER_TIMEOUT = 1.0


def _is_async_callable(callback: object) -> bool:
    """True for `async def` functions, bound methods, partials and objects whose `__call__`
    is one (what `inspect.iscoroutinefunction` alone misses)."""
    if inspect.iscoroutinefunction(callback):
        return True
    call = getattr(callback, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and not inspect.isfunction(callback) \
        and inspect.iscoroutinefunction(call)


class ResultCache:
    """Positive provider answers, remembered per identical request for `ttl` seconds.

    Only "allow" results (`True` or a `Grant`) are kept: a key or user added to the backend
    works at once, errors and timeouts are always asked again, and a denial is never
    remembered. The price is that a revoked key or password keeps working for up to `ttl`
    seconds. The cache key is an HMAC-SHA256 (under a per-process random key) of every
    request field except the request id, so a PLAIN password is never held in clear and a
    result for one address, domain or server socket never answers another. At most
    `max_entries` are kept (expired ones are dropped first, then the oldest). Thread-safe.
    """

    __slots__ = ("_clock", "_entries", "_key", "_lock", "max_entries", "ttl")

    def __init__(self, ttl: float, max_entries: int = 1024, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`ttl` > 0 seconds; `max_entries` >= 1; `clock` gives seconds (monotonic)."""
        if not ttl > 0 or max_entries < 1:
            raise ConfigError("a provider cache needs ttl > 0 and max_entries >= 1")
        self.ttl = float(ttl)
        self.max_entries = int(max_entries)
        self._clock = clock
        self._entries: dict[bytes, tuple[float, ProviderResult]] = {}
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ResultCache ttl={self.ttl}s {len(self._entries)}/{self.max_entries}>"

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, request: zap.ZapRequest) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (request.domain.encode("utf-8"), request.address.encode("utf-8"),
                     request.identity, request.mechanism.encode("ascii"), *request.credentials):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def get(self, request: zap.ZapRequest) -> ProviderResult:
        """The remembered answer for `request`, or None (unknown or expired)."""
        hit = self._entries.get(self._digest(request))
        if hit is None or hit[0] <= self._clock():
            return None
        return hit[1]

    def put(self, request: zap.ZapRequest, result: ProviderResult) -> None:
        """Remember `result` if it allows; anything else is ignored."""
        if not (result is True or isinstance(result, Grant)):
            return
        digest = self._digest(request)
        now = self._clock()
        with self._lock:
            entries = self._entries
            if digest not in entries and len(entries) >= self.max_entries:
                for k in [k for k, (expiry, _) in entries.items() if expiry <= now]:
                    del entries[k]
                while len(entries) >= self.max_entries:
                    del entries[next(iter(entries))]
            entries.pop(digest, None)  # re-insert: the dict order is the age order
            entries[digest] = (now + self.ttl, result)

    def clear(self) -> None:
        """Forget everything (e.g. after revoking a key in the backend)."""
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True, slots=True)
class Provider:
    """A decision callback for one mechanism in one domain: `callback(request)`.

    It returns `True` or a `Grant` to allow, `False`/`None` to deny; an exception becomes a
    500 reply. `callback` may be an `async def` function (or return an awaitable). `name`
    appears in logs.

    How it runs depends on the transport (`curvecert.auth.providers`): the thread and asyncio
    authenticators run a plain callback in a small pool of worker threads and an async one
    on an event loop, and answer other requests meanwhile; a call that has not finished
    after `timeout` seconds is answered 500 (the call itself is abandoned, never killed).
    `inline=True` runs a plain callback directly on the authenticator's thread or loop
    instead: fastest, but a call that never returns then wedges the authenticator, so only
    use it for code that cannot block (a dict lookup). `cache` remembers allow results for
    a bounded time (`ResultCache`). `decide` (the synchronous core) calls the callback
    directly and cannot run async ones (500).
    """

    callback: Callable[[zap.ZapRequest], ProviderResult | Awaitable[ProviderResult]]
    name: str = "provider"
    timeout: float = DEFAULT_PROVIDER_TIMEOUT
    cache: ResultCache | None = field(default=None, compare=False)
    inline: bool = False
    is_async: bool = field(init=False, default=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.callback):
            raise ConfigError(f"provider {self.name!r}: the callback is not callable")
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout < 1e6):
            raise ConfigError(f"provider {self.name!r}: timeout must be a positive number "
                              "of seconds")
        is_async = _is_async_callable(self.callback)
        if is_async and self.inline:
            raise ConfigError(f"provider {self.name!r}: an async callback cannot be inline")
        object.__setattr__(self, "is_async", is_async)

    def __call__(self, request: zap.ZapRequest) -> ProviderResult | Awaitable[ProviderResult]:
        """Run the callback."""
        return self.callback(request)


class UnsafeAllowAny:
    """Stonehouse: accept ANY CURVE client key. Encrypted, but nobody is authenticated.

    Set per domain, on purpose, with this deliberately alarming name; the authenticator
    logs a warning whenever a policy containing it is installed.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "UnsafeAllowAny()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnsafeAllowAny)

    def __hash__(self) -> int:
        return hash(UnsafeAllowAny)


@dataclass(frozen=True, slots=True)
class _Entry:
    metadata: bytes


class StaticKeys:
    """An in-memory, immutable `KeyLookup`: `{32-byte key: entry}`.

    Build it from certificates (their metadata becomes ZAP metadata, names mapped to legal
    ZMTP names and sizes bounded by `curvecert.formats.zmtp.encode_lenient`) or from bare keys.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[bytes, KeyEntry] | None = None) -> None:
        """Copy `entries`; every key must be 32 bytes."""
        table = dict(entries or {})
        for key in table:
            if len(key) != 32:
                raise ConfigError(f"CURVE keys are 32 bytes, got {len(key)}")
        self._entries: Mapping[bytes, KeyEntry] = table

    @classmethod
    def from_certificates(cls, certs: Iterable[Certificate]) -> StaticKeys:
        """Keys and metadata of `certs` (the first of duplicate keys wins)."""
        table: dict[bytes, KeyEntry] = {}
        for cert in certs:
            blob, _dropped = zmtp.encode_lenient(cert.meta)
            table.setdefault(cert.public_key, _Entry(blob))
        return cls(table)

    @classmethod
    def from_keys(cls, keys: Iterable[bytes | str]) -> StaticKeys:
        """Bare keys (raw or Z85), no metadata."""
        from curvecert.certs.keys import decode_key

        empty = _Entry(b"")
        return cls({decode_key(k, what="client key"): empty for k in keys})

    def lookup(self, key: bytes, /) -> KeyEntry | None:
        """The entry for `key`, or None."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<StaticKeys {len(self._entries)} keys>"


class KeyChain:
    """Several key lookups as one (e.g. two store directories): the first hit wins."""

    __slots__ = ("lookups",)

    def __init__(self, lookups: Iterable[KeyLookup]) -> None:
        """Keep `lookups` in order; each must have a `lookup` method."""
        self.lookups = tuple(lookups)
        for item in self.lookups:
            if not isinstance(item, KeyLookup):
                raise ConfigError(f"{item!r} is not a key lookup (no lookup method)")

    def lookup(self, key: bytes, /) -> KeyEntry | None:
        """The first entry any lookup has for `key`, or None."""
        for item in self.lookups:
            entry = item.lookup(key)
            if entry is not None:
                return entry
        return None

    def __repr__(self) -> str:
        return f"<KeyChain {list(self.lookups)!r}>"


# --- addresses ------------------------------------------------------------------------------

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


# --- policies -------------------------------------------------------------------------------

CurveSource = KeyLookup | UnsafeAllowAny | Provider
PlainSource = PasswordCheck | Provider


@dataclass(frozen=True)
class DomainPolicy:
    """What one ZAP domain accepts. Every mechanism is denied unless configured here.

    - `null`: allow NULL (Strawhouse: combine with an address filter);
    - `plain`: a `PasswordCheck` (`PasswordFile`, `StaticPasswords`) or a `Provider`;
    - `curve`: a `KeyLookup` (Ironhouse; a list of them is chained), a `Provider`, or
      `UnsafeAllowAny()`;
    - `others`: `{mechanism: Provider}` for anything else (e.g. `"GSSAPI"`);
    - `addresses`: this domain's own `AddressFilter` (on top of the policy-wide one).
    """

    null: bool = False
    plain: PlainSource | None = None
    curve: CurveSource | None = None
    others: Mapping[str, Provider] = field(default_factory=lambda: MappingProxyType({}))
    addresses: AddressFilter = field(default_factory=AddressFilter)

    def __post_init__(self) -> None:
        if self.plain is not None and not isinstance(self.plain, (Provider, PasswordCheck)):
            if isinstance(self.plain, Mapping):
                object.__setattr__(self, "plain", StaticPasswords(self.plain))
            else:
                raise ConfigError("plain must be a PasswordFile, StaticPasswords, a mapping "
                                  "or a Provider")
        if isinstance(self.curve, (list, tuple)):
            object.__setattr__(self, "curve", KeyChain(self.curve) if self.curve else None)
        if self.curve is not None and not isinstance(
                self.curve, (Provider, UnsafeAllowAny, KeyLookup)):
            raise ConfigError("curve must be a KeyLookup (e.g. CertStore), a Provider or "
                              "UnsafeAllowAny()")
        others = dict(self.others)
        for mech, provider in others.items():
            if not isinstance(provider, Provider):
                raise ConfigError(f"the {mech} handler must be a Provider")
        object.__setattr__(self, "others", MappingProxyType(others))

    @property
    def unsafe(self) -> bool:
        """True when CURVE accepts any key here."""
        return isinstance(self.curve, UnsafeAllowAny)


@dataclass(frozen=True)
class Policy:
    """Every domain's `DomainPolicy` plus the policy-wide address filter. Immutable:
    change it with the `with_*` methods, which return new policies (the authenticator
    swaps its reference atomically).
    """

    domains: Mapping[str, DomainPolicy] = field(default_factory=lambda: MappingProxyType({}))
    addresses: AddressFilter = field(default_factory=AddressFilter)

    def __post_init__(self) -> None:
        domains = dict(self.domains)
        for name, dp in domains.items():
            if not isinstance(name, str) or len(name.encode("utf-8")) > zap.MAX_TEXT:
                raise ConfigError(f"bad ZAP domain name {name!r}")
            if not isinstance(dp, DomainPolicy):
                raise ConfigError(f"domain {name!r}: expected a DomainPolicy")
        object.__setattr__(self, "domains", MappingProxyType(domains))

    def for_domain(self, domain: str) -> DomainPolicy | None:
        """The policy for `domain`: its own, else the `"*"` fallback, else None."""
        domains = self.domains
        dp = domains.get(domain)
        return dp if dp is not None else domains.get(ANY_DOMAIN)

    def with_domain(self, name: str, policy: DomainPolicy) -> Policy:
        """A copy with `name`'s policy replaced."""
        return Policy({**self.domains, name: policy}, self.addresses)

    def update_domain(self, name: str, **changes: object) -> Policy:
        """A copy where `name`'s policy (created empty if missing) has `changes` applied."""
        current = self.domains.get(name, DomainPolicy())
        return self.with_domain(name, replace(current, **changes))  # type: ignore[arg-type]

    def with_addresses(self, addresses: AddressFilter) -> Policy:
        """A copy with the policy-wide address filter replaced."""
        return Policy(self.domains, addresses)

    @property
    def unsafe_domains(self) -> list[str]:
        """Domains whose CURVE policy is `UnsafeAllowAny`."""
        return [name for name, dp in self.domains.items() if dp.unsafe]


# --- decisions ------------------------------------------------------------------------------

class Decision(NamedTuple):
    """The outcome for one request: what to reply, and a loggable `reason`.

    `subject` names who asked (PLAIN user name, CURVE Z85 key, GSSAPI principal) and is
    safe to log; no field ever holds a password or a secret key. (An immutable named
    tuple: one is built per handshake, and it is four times cheaper than a frozen
    dataclass.)
    """

    status: str
    text: str
    user_id: bytes = b""
    metadata: bytes = b""
    reason: str = ""
    mechanism: str = "?"
    domain: str = ""
    address: str = ""
    subject: str = ""

    @property
    def allowed(self) -> bool:
        """True for a 200."""
        return self.status == "200"

    def reply(self, request_id: bytes) -> list[bytes]:
        """The RFC 27 reply frames for this decision."""
        return zap.encode_reply(request_id, self.status, self.text, self.user_id,
                                self.metadata)


def _deny(request: zap.ZapRequest, reason: str, subject: str = "") -> Decision:
    text = (reason[:1].upper() + reason[1:])[:zap.MAX_TEXT]
    return Decision("400", text, b"", b"", reason,
                    request.mechanism, request.domain, request.address, subject)


def _error(request: zap.ZapRequest, reason: str, subject: str = "") -> Decision:
    return Decision("500", "Internal error", b"", b"", reason, request.mechanism,
                    request.domain, request.address, subject)


def _allow(request: zap.ZapRequest, user_id: bytes, metadata: bytes, reason: str,
           subject: str) -> Decision:
    return Decision("200", "OK", user_id, metadata, reason, request.mechanism,
                    request.domain, request.address, subject)


# Z85 of client keys: the same clients reconnect, so a bounded cache saves ~3 us a time.
_key_text = functools.lru_cache(maxsize=4096)(z85.encode)
# Metadata blobs already checked to parse (a store returns the same blobs again and again).
_META_OK: dict[bytes, None] = {}
_META_CACHE = 4096


def _subject(request: zap.ZapRequest) -> str:
    mech = request.mechanism
    if mech == "CURVE":
        return _key_text(request.credentials[0])
    if mech == "PLAIN":
        return request.credentials[0].decode("utf-8", "replace")
    if mech == "GSSAPI":
        return request.credentials[0].decode("utf-8", "replace")[:zap.MAX_TEXT]
    return ""


def _metadata_ok(blob: object) -> bytes:
    """`blob` if it is a valid ZMTP metadata blob of sane size, else raise `ZapError`."""
    if type(blob) is bytes and (not blob or blob in _META_OK):
        return blob  # the common case: empty, or a blob seen before
    if isinstance(blob, Mapping):
        return zmtp.encode(blob)
    if not isinstance(blob, (bytes, bytearray)):
        raise ZapError("metadata must be bytes")
    blob = bytes(blob)
    if not blob or blob in _META_OK:
        return blob
    if len(blob) > zmtp.MAX_METADATA:
        raise ZapError(f"metadata is {len(blob)} bytes (at most {zmtp.MAX_METADATA})")
    zmtp.decode(blob)  # libzmq fails the handshake on metadata that does not parse
    if len(_META_OK) >= _META_CACHE:
        _META_OK.clear()
    _META_OK[blob] = None
    return blob


def _user_id(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > zap.MAX_TEXT:
        raise ZapError(f"user id is {len(raw)} bytes (at most {zap.MAX_TEXT})")
    return raw


@dataclass(frozen=True, slots=True)
class Pending:
    """A decision that needs a `Provider` call: run `provider(request)`, then `finish` it.

    `decide` does this synchronously; an asyncio or deadline-bound caller
    (`curvecert.auth.providers`) runs the provider its own way and still shares every other
    rule: `cached()` first, then `finish(result)`, `fail(exc)` or `expire()`.
    """

    provider: Provider
    request: zap.ZapRequest

    def cached(self) -> Decision | None:
        """The decision from the provider's cache, or None when it must be called."""
        cache = self.provider.cache
        if cache is None:
            return None
        result = cache.get(self.request)
        if result is None:
            return None
        decision = self._finish(result)
        return decision._replace(reason=f"{decision.reason} (cached)")

    def finish(self, result: object) -> Decision:
        """Turn the provider's result into a decision (a bad result is a 500); an allow is
        remembered in the provider's cache, if it has one."""
        decision = self._finish(result)
        cache = self.provider.cache
        if cache is not None and decision.status == "200":
            cache.put(self.request, result)  # type: ignore[arg-type]
        return decision

    def _finish(self, result: object) -> Decision:
        request = self.request
        subject = _subject(request)
        who = f"{self.provider.name}"
        if result is True or isinstance(result, Grant):
            try:
                default = (subject.encode("utf-8") if request.mechanism != "NULL" else b"")
                uid, meta = default, b""
                if isinstance(result, Grant):
                    uid = _user_id(result.user_id) if result.user_id else default
                    meta = _metadata_ok(result.metadata)
            except (ZapError, ValueError, TypeError) as exc:
                return _error(request, f"{who} returned a bad grant: {exc}", subject)
            return _allow(request, uid, meta, f"{who} allowed", subject)
        if result is False or result is None:
            return _deny(request, f"{who} denied", subject)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited here: close it rather than leak a warning
            return _error(request, f"{who} returned an awaitable to a synchronous caller",
                          subject)
        return _error(request, f"{who} returned {type(result).__name__}, not bool/Grant",
                      subject)

    def fail(self, exc: BaseException) -> Decision:
        """The decision when the provider raised (or timed out): 500, fail closed.

        Only the exception's type is named: a careless provider may put a credential in
        its message.
        """
        return _error(self.request, f"{self.provider.name} failed: "
                      f"{type(exc).__name__}", _subject(self.request))

    def expire(self) -> Decision:
        """The decision when the provider did not answer within its `timeout`: 500."""
        return _error(self.request, f"{self.provider.name} did not answer within "
                      f"{self.provider.timeout:g}s", _subject(self.request))


def _decide_curve(request: zap.ZapRequest, source: CurveSource) -> Decision | Pending:
    key = request.credentials[0]
    if isinstance(source, UnsafeAllowAny):
        text = _key_text(key)
        return _allow(request, text.encode("ascii"), b"", "unsafe allow-any", text)
    if isinstance(source, Provider):
        return Pending(source, request)
    try:
        entry = source.lookup(key)
    except Exception as exc:  # a failing store must not wedge or kill the handler
        return _error(request, f"key lookup failed: {type(exc).__name__}", _key_text(key))
    text = _key_text(key)
    if entry is None:
        return _deny(request, "unknown key", text)
    try:
        meta = _metadata_ok(entry.metadata)
    except (ZapError, AttributeError, TypeError) as exc:
        return _error(request, f"bad metadata for key: {exc}", text)
    if meta.find(b"not-") >= 0:  # not-before/-after: checked against the clock, per request
        start, end = validity.window(meta)
        now = time.time()
        if not start <= now < end:
            period = validity.from_zmtp(meta)
            why = period.refusal(now) if period is not None else None
            return _deny(request, why or "certificate not valid now", text)
    return _allow(request, text.encode("ascii"), meta, "known key", text)


_PW_OK = CheckResult.OK


def _decide_plain(request: zap.ZapRequest, source: PlainSource) -> Decision | Pending:
    if isinstance(source, Provider):
        return Pending(source, request)
    raw_user, password = request.credentials
    try:
        user = raw_user.decode("utf-8")
    except UnicodeDecodeError:
        return _deny(request, "user name is not UTF-8", raw_user.decode("utf-8", "replace"))
    try:
        result = source.check(user, password)
    except Exception as exc:
        return _error(request, f"password check failed: {type(exc).__name__}", user)
    if result is _PW_OK:
        return _allow(request, raw_user, b"", "password ok", user)
    if result is CheckResult.UNAVAILABLE:  # a broken file is a system failure: 500
        return _error(request, result.reason, user)
    return _deny(request, result.reason if isinstance(result, CheckResult) else "denied",
                 user)


def resolve(request: zap.ZapRequest, policy: Policy) -> Decision | Pending:
    """Apply every rule that needs no provider call: a `Decision`, or a `Pending` call."""
    address = request.address
    why = policy.addresses.check(address)
    if why is not None:
        return _deny(request, why)
    dp = policy.for_domain(request.domain)
    if dp is None:
        return _deny(request, "no policy for domain")
    why = dp.addresses.check(address)
    if why is not None:
        return _deny(request, why)
    mech = request.mechanism
    if mech == "CURVE":
        if dp.curve is None:
            return _deny(request, "CURVE not configured for domain",
                         _key_text(request.credentials[0]))
        return _decide_curve(request, dp.curve)
    if mech == "PLAIN":
        if dp.plain is None:
            return _deny(request, "PLAIN not configured for domain", _subject(request))
        return _decide_plain(request, dp.plain)
    if mech == "NULL":
        if dp.null:
            return _allow(request, b"", b"", "NULL allowed", "")
        return _deny(request, "NULL not allowed for domain")
    provider = dp.others.get(mech)
    if provider is None:
        return _deny(request, f"mechanism {mech} not configured", _subject(request))
    return Pending(provider, request)


def decide(request: zap.ZapRequest, policy: Policy) -> Decision:
    """Decide one request; a provider is called synchronously (the one place it is called
    in this module), without a deadline; an async provider cannot run here (500). Never
    raises: internal failures become 500 decisions.
    """
    try:
        outcome = resolve(request, policy)
    except Exception as exc:  # defensive: a bug here must still fail closed
        _logger.exception("decision failed")
        return _error(request, f"internal error: {type(exc).__name__}")
    if isinstance(outcome, Decision):
        return outcome
    return run_inline(outcome)


def run_inline(pending: Pending) -> Decision:
    """Call `pending`'s provider right here (cache first); never raises."""
    hit = pending.cached()
    if hit is not None:
        return hit
    if pending.provider.is_async:
        return _error(pending.request, f"{pending.provider.name} is async: it needs the "
                      "thread or asyncio authenticator", _subject(pending.request))
    try:
        result = pending.provider(pending.request)
    except Exception as exc:
        return pending.fail(exc)
    return pending.finish(result)


_STATUS = {"200": b"200", "400": b"400", "500": b"500"}  # never 300 (module docstring)
_TEXT = {"OK": b"OK", "Internal error": b"Internal error"}


def _malformed(frames: list[bytes], exc: Exception) -> Decision:
    return Decision("500", "Malformed request", b"", b"", f"malformed request: {exc}",
                    zap.mechanism_hint(frames), "", "", "")


def prepare(policy: Policy, frames: list[bytes]
            ) -> tuple[zap.ZapRequest | None, Decision | Pending]:
    """Parse one request and apply every rule that needs no provider call; never raises.

    Returns `(request or None, decision)` or `(request, Pending)`; a request that does not
    parse is a 500 decision (`request` is then None). Hand the decision to `encode`.
    """
    try:
        request = zap.parse_request(frames)
    except Exception as exc:  # ZapError, or frames of the wrong type
        return None, _malformed(frames, exc)
    try:
        return request, resolve(request, policy)
    except Exception as exc:  # defensive: a bug here must still fail closed
        _logger.exception("decision failed")
        return request, _error(request, f"internal error: {type(exc).__name__}")


def encode(request: zap.ZapRequest | None, decision: Decision, frames: list[bytes]
           ) -> tuple[Decision, list[bytes]]:
    """The reply frames for `decision` (and the decision actually sent); never raises.

    `frames` is the request as received: a malformed one (`request` None) is answered with
    `curvecert.formats.zap.fallback_reply`, echoing its request id when usable. A decision whose
    reply cannot be encoded (an over-long user id from a hook) becomes a 500.
    """
    if request is None:
        return decision, zap.fallback_reply(frames, "500", decision.text)
    status = _STATUS.get(decision.status)
    user_id = decision.user_id
    if status is not None and len(user_id) <= zap.MAX_TEXT and type(user_id) is bytes:
        # Decisions built here already satisfy RFC 27's rules (texts and user ids are
        # bounded where they are made); skip `encode_reply`'s re-checks on the hot path.
        text = _TEXT.get(decision.text)
        if text is None:
            text = decision.text.encode("utf-8")[:zap.MAX_TEXT]
        return decision, [zap.VERSION, request.request_id, status, text, user_id,
                          decision.metadata]
    try:
        return decision, decision.reply(request.request_id)
    except Exception as exc:
        decision = _error(request, f"cannot encode reply: {exc}", decision.subject)
        return decision, zap.fallback_reply(frames, "500", decision.text)


def respond(policy: Policy, frames: list[bytes]
            ) -> tuple[zap.ZapRequest | None, Decision, list[bytes]]:
    """One request in, `(request or None, decision, reply frames)` out; never raises.

    A provider is called synchronously (`run_inline`). A request that does not parse gets
    a 500 (`request` is then None) with the request id echoed when usable (see
    `curvecert.formats.zap.fallback_reply`). The reply is always six well-formed frames.
    """
    request, outcome = prepare(policy, frames)
    if type(outcome) is Pending:
        outcome = run_inline(outcome)
    decision, reply = encode(request, outcome, frames)  # type: ignore[arg-type]
    return request, decision, reply


def answer(policy: Policy, frames: list[bytes]) -> list[bytes]:
    """Frames of one request in, frames of its reply out; never raises."""
    return respond(policy, frames)[2]
