"""`BaseAuthenticator`: what every curvecert ZAP handler shares except its transport.

The policy (an immutable `Policy` swapped on every configuration call), the configuration
methods (`allow`, `deny`, `configure_*`), counters, the decision log on the
`curvecert.audit` logger and the `on_decision` hook. The thread transport is
`curvecert.auth.authenticator.Authenticator`, the asyncio one
`curvecert.auth.aio.AsyncioAuthenticator`; the pyzmq mirror in `curvecert.compat` builds
on both.

Decision lines are formatted only when their level is enabled and never carry a password
or a secret key: ALLOWED/DENIED at INFO, 500s at WARNING.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import zmq

from curvecert.auth.decision import Decision, encode
from curvecert.auth.keylookup import KeyLookup, UnsafeAllowAny
from curvecert.auth.passwords import PasswordFile
from curvecert.auth.pending import DEFAULT_PROVIDER_TIMEOUT, Provider, ProviderResult, ResultCache
from curvecert.auth.policy import ANY_DOMAIN, DomainPolicy, PasswordCheck, Policy
from curvecert.auth.providers import DEFAULT_WORKERS
from curvecert.auth.recheck import RecheckMixin
from curvecert.auth.records import decision_fields, format_fields
from curvecert.auth.stats import DecisionStats
from curvecert.errors import ConfigError
from curvecert.formats.zap import ZapRequest

__all__ = ["AUDIT_LOGGER", "BaseAuthenticator", "DecisionAdjust", "DecisionHook",
           "ProviderCallback", "format_decision"]

_logger = logging.getLogger("curvecert.auth.authenticator")
#: Decision lines go to this logger so they can be routed apart from operational logs.
AUDIT_LOGGER = "curvecert.audit"
_audit = logging.getLogger(AUDIT_LOGGER)

DecisionHook = Callable[[ZapRequest | None, Decision], None]
#: A last word on every decision for a parsed request (e.g. a custom User-Id), see
#: `BaseAuthenticator.adjust`.
DecisionAdjust = Callable[[ZapRequest, Decision], Decision]
ProviderCallback = Callable[[ZapRequest], ProviderResult | Awaitable[ProviderResult]]

_OUTCOME = {"200": "allowed", "300": "errors", "400": "denied", "500": "errors"}


def format_decision(decision: Decision) -> str:
    """The audit log line for one decision (fields: `curvecert.auth.records`).

    `ALLOWED (CURVE) status=200 domain="" address=127.0.0.1 user_id=<Z85 key> cert_name=alice
    fingerprint=SHA256:... reason=known key`; every outcome has the same fields. Only
    public values appear: user names, public keys, addresses, domains, reasons.
    """
    return format_fields(decision_fields(decision))


class BaseAuthenticator(RecheckMixin):
    """Everything an authenticator has except its transport: the policy and the
    configuration methods that change it, counters, the decision log and the hook.

    Every `configure_*`/`allow`/`deny` call builds a new immutable `Policy` and swaps it in;
    it may be called before or after `start()`, from any thread. Domains: `"*"` (the
    default) is the fallback for every ZAP domain without its own policy; a named domain's
    policy replaces the fallback completely. `allow`/`deny` without `domain` apply to every
    domain.
    """

    #: Optional last word on each decision for a parsed request, applied before the reply
    #: is encoded (the pyzmq compatibility layer's `curve_user_id` uses it). An exception
    #: in it is a 500.
    adjust: DecisionAdjust | None = None
    #: Decision counters for Prometheus (`curvecert.serve.metrics.register` sets it);
    #: None: nothing is counted beyond `counters`.
    metrics: DecisionStats | None = None
    _t0 = 0.0  # time.monotonic() when the request being answered arrived (transports set it)

    def __init__(self, context: zmq.Context[Any] | None = None, policy: Policy | None = None,
                 *, log_decisions: bool = True, on_decision: DecisionHook | None = None,
                 max_workers: int = DEFAULT_WORKERS) -> None:
        """Prepare (not start) an authenticator for `context` (default: the global one).

        `max_workers` bounds the threads that run blocking providers.
        """
        self.context: zmq.Context[Any] = context if context is not None \
            else zmq.Context.instance()
        self._policy = policy if policy is not None else Policy()
        self.log_decisions = log_decisions
        self.on_decision = on_decision
        self.max_workers = max_workers
        self._lock = threading.RLock()
        self._owned: dict[str, Any] = {}  # domain -> CertStore we created and must stop
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.requests = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state} domains={sorted(self._policy.domains)}>"

    @property
    def running(self) -> bool:
        """True while requests are being answered."""
        raise NotImplementedError

    def _stop_owned(self, timeout: float) -> None:
        """Stop the certificate stores this authenticator opened from a directory."""
        with self._lock:
            owned = list(self._owned.values())
            self._owned.clear()
        deadline = time.monotonic() + timeout
        for store in owned:
            _stop_quietly(store, max(0.1, deadline - time.monotonic()))

    # --- per decision -------------------------------------------------------------------

    def _final(self, request: ZapRequest | None, decision: Decision, frames: list[bytes]
               ) -> tuple[Decision, list[bytes]]:
        """`adjust`, then the reply frames (see `curvecert.auth.decision.encode`)."""
        adjust = self.adjust
        if adjust is not None and request is not None:
            try:
                decision = adjust(request, decision)
            except Exception as exc:
                _logger.warning("adjusting a decision failed: %s", type(exc).__name__)
                decision = Decision("500", "Internal error", b"", b"",
                                    f"adjust failed: {type(exc).__name__}",
                                    decision.mechanism, decision.domain, decision.address,
                                    decision.subject)
        return encode(request, decision, frames)

    def _after(self, request: ZapRequest | None, decision: Decision) -> None:
        """Counters, the decision log line and the hook, after the reply has gone out."""
        self.requests += 1
        status = decision.status
        self._counts[decision.mechanism, status] += 1
        stats = self.metrics
        if stats is not None:
            stats.record(decision, time.monotonic() - self._t0)
        if self.log_decisions:
            level = logging.INFO if status in ("200", "400") else logging.WARNING
            if _audit.isEnabledFor(level):
                _audit.log(level, "%s", format_decision(decision))
        hook = self.on_decision
        if hook is not None:
            try:
                hook(request, decision)
            except Exception:  # a broken audit sink must not stop authentication
                _logger.exception("on_decision hook failed")

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """Decisions so far: `{mechanism: {"allowed": n, "denied": n, "errors": n}}`.

        Malformed requests count under their mechanism frame when it names one, else `"?"`.
        """
        out: dict[str, dict[str, int]] = {}
        for (mech, status), n in list(self._counts.items()):
            row = out.setdefault(mech, {"allowed": 0, "denied": 0, "errors": 0})
            row[_OUTCOME.get(status, "errors")] += n
        return out

    # --- configuration ------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy in force (an immutable value)."""
        return self._policy

    def set_policy(self, policy: Policy) -> None:
        """Replace the whole policy; requests already being decided finish with the old one."""
        if not isinstance(policy, Policy):
            raise ConfigError("set_policy needs a curvecert.auth.policy.Policy")
        with self._lock:
            self._policy = policy
        self._warn_unsafe(policy)

    def _update(self, domain: str, **changes: Any) -> None:
        with self._lock:
            self._policy = self._policy.update_domain(domain, **changes)

    def allow(self, *addresses: str, domain: str | None = None) -> None:
        """Admit only these addresses/CIDR ranges/ipc patterns (everything else is denied).

        Without `domain` the entries apply to every domain; with one, to that domain's
        policy only. A bad entry raises `ConfigError`.
        """
        with self._lock:
            if domain is None:
                self._policy = self._policy.with_addresses(
                    self._policy.addresses.with_allow(*addresses))
            else:
                current = self._policy.domains.get(domain, DomainPolicy())
                self._update(domain, addresses=current.addresses.with_allow(*addresses))
        _logger.info("allow %s (%s)", ", ".join(addresses),
                     "every domain" if domain is None else f"domain {domain!r}")

    def deny(self, *addresses: str, domain: str | None = None) -> None:
        """Refuse these addresses/CIDR ranges/ipc patterns (deny wins over allow)."""
        with self._lock:
            if domain is None:
                self._policy = self._policy.with_addresses(
                    self._policy.addresses.with_deny(*addresses))
            else:
                current = self._policy.domains.get(domain, DomainPolicy())
                self._update(domain, addresses=current.addresses.with_deny(*addresses))
        _logger.info("deny %s (%s)", ", ".join(addresses),
                     "every domain" if domain is None else f"domain {domain!r}")

    def configure_null(self, domain: str = ANY_DOMAIN, *, allowed: bool = True,
                       user_id: bool | None = None) -> None:
        """Allow (or stop allowing) NULL clients in `domain` (Strawhouse).

        libzmq only asks ZAP about NULL clients when the server socket sets a ZAP domain.
        `user_id=False` (on every `configure_*`) sends an empty User-Id in the domain's
        200 replies (`DomainPolicy.user_id`); None leaves the setting as it is.
        """
        self._update(domain, null=allowed, **_user_id(user_id))

    def configure_plain(self, domain: str = ANY_DOMAIN, passwords: str | os.PathLike[str]
                        | PasswordCheck | Mapping[str, str] | None = None, *,
                        user_id: bool | None = None) -> None:
        """Check PLAIN logins in `domain` against a password file path, a `PasswordFile`,
        a `{user: password}` mapping, or any `PasswordCheck`; None turns PLAIN off.

        A path is loaded now (errors raise) and then re-checked for changes.
        """
        source: Any = passwords
        if isinstance(passwords, (str, os.PathLike)):
            source = PasswordFile(passwords)
        self._update(domain, plain=source, **_user_id(user_id))
        _logger.info("PLAIN for domain %r: %r", domain, source)

    def configure_curve(self, domain: str = ANY_DOMAIN,
                        store: str | os.PathLike[str] | KeyLookup | None = None, *,
                        user_id: bool | None = None, strict_modes: bool = False) -> None:
        """Accept the CURVE clients whose keys `store` knows (Ironhouse) in `domain`.

        `store` is a directory (opened as a watched `curvecert.CertStore`, stopped with
        this authenticator), a `CertStore` or any `KeyLookup`; None turns CURVE off.
        `strict_modes=True` (sshd's StrictModes) opens a directory store so that files,
        sub-directories and a store directory that group/others can write are not
        trusted (without it they are trusted with a WARNING). It applies only when
        `store` is a path; `etcd://` URLs ignore it (no file modes), and a `CertStore`
        passed in keeps its own setting.
        """
        source: Any = store
        opened = None
        if isinstance(store, (str, os.PathLike)):
            opened = _open_store(store, strict_modes=strict_modes)
            source = opened
        try:
            self._update(domain, curve=source, **_user_id(user_id))
        except BaseException:
            if opened is not None:
                _stop_quietly(opened)
            raise
        with self._lock:
            old = self._owned.pop(domain, None)
            if opened is not None:
                self._owned[domain] = opened
        if old is not None:
            _stop_quietly(old)
        _logger.info("CURVE for domain %r: %r", domain, source)

    def configure_curve_unsafe_allow_any(self, domain: str = ANY_DOMAIN, *,
                                         user_id: bool | None = None) -> None:
        """Stonehouse: accept ANY CURVE client key in `domain`. Logged as a warning: the
        traffic is encrypted, but nobody is authenticated.
        """
        self._update(domain, curve=UnsafeAllowAny(), **_user_id(user_id))
        self._warn_unsafe(self._policy, [domain])

    def configure_provider(self, mechanism: str, callback: ProviderCallback,
                           domain: str = ANY_DOMAIN, *, name: str | None = None,
                           timeout: float = DEFAULT_PROVIDER_TIMEOUT, cache_ttl: float = 0.0,
                           cache_max: int = 1024, inline: bool = False) -> Provider:
        """Let `callback(request)` decide `mechanism` ("CURVE", "PLAIN", "GSSAPI", ...) in
        `domain`: True or a `Grant` allows, False/None denies, an exception is a 500.

        `callback` may be a plain function or an `async def` one; it reads the
        credentials from `request.credentials` (CURVE: the client's 32-byte key; PLAIN:
        user name and password bytes). It runs off the handler (see
        `curvecert.auth.providers`) and is answered 500 after `timeout` seconds. `cache_ttl` >
        0 remembers allow results for that long (at most `cache_max` entries, see
        `curvecert.auth.pending.ResultCache`). `inline=True` runs a plain callback on the
        handler itself, without a deadline: only for code that cannot block. Returns
        the installed `Provider` (its `.cache` can be cleared).
        """
        cache = ResultCache(cache_ttl, cache_max) if cache_ttl > 0 else None
        provider = Provider(callback, name or str(getattr(callback, "__name__", "provider")),
                            timeout=timeout, cache=cache, inline=inline)
        mech = mechanism.upper()
        if mech == "CURVE":
            self._update(domain, curve=provider)
        elif mech == "PLAIN":
            self._update(domain, plain=provider)
        elif mech == "NULL":
            raise ConfigError("NULL has no credentials: use configure_null and allow/deny")
        else:
            with self._lock:
                current = self._policy.domains.get(domain, DomainPolicy())
                self._update(domain, others={**current.others, mech: provider})
        _logger.info("%s for domain %r: provider %r (timeout %gs%s)", mech, domain,
                     provider.name, timeout,
                     f", cache {cache_ttl:g}s" if cache is not None else "")
        return provider

    def _warn_unsafe(self, policy: Policy, domains: list[str] | None = None) -> None:
        for name in domains if domains is not None else policy.unsafe_domains:
            _logger.warning("UNSAFE: CURVE allow-any in ZAP domain %r: any client key is "
                            "accepted (Stonehouse); clients are encrypted but not "
                            "authenticated", name)



def _user_id(user_id: bool | None) -> dict[str, bool]:
    """The `DomainPolicy.user_id` change a `configure_*(user_id=...)` asks for (None: none)."""
    return {} if user_id is None else {"user_id": user_id}


def _open_store(directory: str | os.PathLike[str], *, strict_modes: bool = False) -> Any:
    """A started live store: a watched directory, or an `etcd://` URL (issue 17)."""
    from curvecert.store.backend import open_store

    return open_store(directory, strict_modes=strict_modes)


def _stop_quietly(store: Any, timeout: float = 5.0) -> None:
    try:
        store.stop(timeout)
    except Exception:
        _logger.exception("stopping %r failed", store)
