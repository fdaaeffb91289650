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

Where the parts live: address rules in `curvecert.auth.addresses`, key sources in
`curvecert.auth.keylookup`, provider calls and their cache in `curvecert.auth.pending`, the
decision value, its statuses (RFC 27: 200, 400, 500, never 300) and the reply encoding in
`curvecert.auth.decision`, password sources in `curvecert.auth.passwords`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from curvecert.auth import plainpool
from curvecert.auth.addresses import AddressFilter
from curvecert.auth.decision import (
    Decision,
    allow,
    check_metadata,
    deny,
    encode,
    error,
    key_text,
    malformed,
    subject_of,
)
from curvecert.auth.keylookup import KeyChain, KeyLookup, UnsafeAllowAny
from curvecert.auth.pending import Pending, Provider, run_inline
from curvecert.auth.pwtable import CheckResult, StaticPasswords
from curvecert.certs import validity
from curvecert.errors import ConfigError, ZapError
from curvecert.formats import zap

__all__ = [
    "ANY_DOMAIN",
    "DomainPolicy",
    "PasswordCheck",
    "Policy",
    "answer",
    "decide",
    "prepare",
    "resolve",
    "respond",
]

_logger = logging.getLogger(__name__)

#: The fallback domain: used for every ZAP domain that has no policy of its own.
ANY_DOMAIN = "*"


@runtime_checkable
class PasswordCheck(Protocol):
    """A PLAIN password source: `curvecert.PasswordFile` or `StaticPasswords`.

    A source may also have `quick(user, password) -> CheckResult | None`: the answer
    when it costs no KDF, else None. Checks that are not answered by `quick` (all of
    them for a source without it) run in `curvecert.auth.plainpool`'s bounded pool.
    """

    def check(self, user: str, password: bytes, /) -> CheckResult:
        """Check one login."""



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
    - `addresses`: this domain's own `AddressFilter` (on top of the policy-wide one);
    - `user_id`: False sends an empty User-Id frame in this domain's 200 replies (the
      decision log still names the user or key). libzmq 4.3 drops the connection of a
      REQ server whose ZAP reply carries a non-empty User-Id (issue 11), and a server
      that never reads `zmq.Frame.get("User-Id")` loses nothing.
    """

    null: bool = False
    plain: PlainSource | None = None
    curve: CurveSource | None = None
    others: Mapping[str, Provider] = field(default_factory=lambda: MappingProxyType({}))
    addresses: AddressFilter = field(default_factory=AddressFilter)
    user_id: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, bool):
            raise ConfigError("user_id must be True or False")
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



def _miss_reason(source: object) -> str:
    """"unknown key", saying so when a store that could not be read is why (fail closed:
    an unreadable store trusts nothing, and an operator should not hunt for a key)."""
    for item in source.lookups if isinstance(source, KeyChain) else (source,):
        if getattr(item, "healthy", True) is False:
            problem = getattr(item, "problem", None) or "cannot be read"
            return f"unknown key (store unavailable: {problem})"
    return "unknown key"


def _decide_curve(request: zap.ZapRequest, source: CurveSource) -> Decision | Pending:
    key = request.credentials[0]
    if isinstance(source, UnsafeAllowAny):
        text = key_text(key)
        return allow(request, text.encode("ascii"), b"", "unsafe allow-any", text)
    if isinstance(source, Provider):
        return Pending(source, request)
    try:
        entry = source.lookup(key)
    except Exception as exc:  # a failing store must not wedge or kill the handler
        return error(request, f"key lookup failed: {type(exc).__name__}", key_text(key))
    text = key_text(key)
    if entry is None:
        return deny(request, _miss_reason(source), text)
    try:
        meta = check_metadata(entry.metadata)
    except (ZapError, AttributeError, TypeError) as exc:
        return error(request, f"bad metadata for key: {exc}", text)
    if meta.find(b"not-") >= 0:  # not-before/-after: checked against the clock, per request
        start, end = validity.window(meta)
        now = time.time()
        if not start <= now < end:
            period = validity.from_zmtp(meta)
            why = period.refusal(now) if period is not None else None
            return deny(request, why or "certificate not valid now", text)
    return allow(request, text.encode("ascii"), meta, "known key", text)


_PW_OK = CheckResult.OK


def _decide_plain(request: zap.ZapRequest, source: PlainSource) -> Decision | Pending:
    if isinstance(source, Provider):
        return Pending(source, request)
    raw_user, password = request.credentials
    try:
        user = raw_user.decode("utf-8")
    except UnicodeDecodeError:
        return deny(request, "user name is not UTF-8", raw_user.decode("utf-8", "replace"))
    quick = getattr(source, "quick", None)
    try:
        # What needs no KDF is answered here; the rest waits for a worker
        # (`curvecert.auth.plainpool`), so PLAIN floods never delay CURVE or NULL.
        result = quick(user, password) if quick is not None else None
    except Exception as exc:
        return error(request, f"password check failed: {type(exc).__name__}", user)
    if result is None:
        if plainpool.busy():  # refused here: no call, no future, no wake-up under a flood
            return error(request, "password check: queue full", user)
        return Pending(plainpool.password_provider(source), request)
    if result is _PW_OK:
        return allow(request, raw_user, b"", "password ok", user)
    if result is CheckResult.UNAVAILABLE:  # a broken file is a system failure: 500
        return error(request, result.reason, user)
    return deny(request, result.reason if isinstance(result, CheckResult) else "denied",
                user)


def resolve(request: zap.ZapRequest, policy: Policy) -> Decision | Pending:
    """Apply every rule that needs no provider call: a `Decision`, or a `Pending` call."""
    address = request.address
    why = policy.addresses.check(address)
    if why is not None:
        return deny(request, why)
    dp = policy.for_domain(request.domain)
    if dp is None:
        return deny(request, "no policy for domain")
    why = dp.addresses.check(address)
    if why is not None:
        return deny(request, why)
    outcome = _by_mechanism(request, dp)
    if not dp.user_id:  # the domain asks for an empty User-Id frame in its replies
        if type(outcome) is Pending:
            return replace(outcome, send_user_id=False)
        return outcome._replace(send_user_id=False)  # type: ignore[union-attr]
    return outcome


def _by_mechanism(request: zap.ZapRequest, dp: DomainPolicy) -> Decision | Pending:
    mech = request.mechanism
    if mech == "CURVE":
        if dp.curve is None:
            return deny(request, "CURVE not configured for domain",
                        key_text(request.credentials[0]))
        return _decide_curve(request, dp.curve)
    if mech == "PLAIN":
        if dp.plain is None:
            return deny(request, "PLAIN not configured for domain", subject_of(request))
        return _decide_plain(request, dp.plain)
    if mech == "NULL":
        if dp.null:
            return allow(request, b"", b"", "NULL allowed", "")
        return deny(request, "NULL not allowed for domain")
    provider = dp.others.get(mech)
    if provider is None:
        return deny(request, f"mechanism {mech} not configured", subject_of(request))
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
        return error(request, f"internal error: {type(exc).__name__}")
    if isinstance(outcome, Decision):
        return outcome
    return run_inline(outcome)


def prepare(policy: Policy, frames: list[bytes]
            ) -> tuple[zap.ZapRequest | None, Decision | Pending]:
    """Parse one request and apply every rule that needs no provider call; never raises.

    Returns `(request or None, decision)` or `(request, Pending)`; a request that does not
    parse is a 500 decision (`request` is then None). Hand the decision to `encode`.
    """
    try:
        request = zap.parse_request(frames)
    except Exception as exc:  # ZapError, or frames of the wrong type
        return None, malformed(frames, exc)
    try:
        return request, resolve(request, policy)
    except Exception as exc:  # defensive: a bug here must still fail closed
        _logger.exception("decision failed")
        return request, error(request, f"internal error: {type(exc).__name__}")



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
