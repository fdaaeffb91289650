"""pyzmq's `zmq.auth.base`: `Authenticator` and its configuration methods, over curvecert.

Why a mixin: pyzmq's configuration calls (`allow`, `deny`, `configure_plain`,
`configure_curve`, `configure_curve_callback`, `configure_gssapi`, the `curve_user_id`
hook) are translated once, here, into curvecert `Policy` changes, and the thread and
asyncio classes (`curvecert.compat.thread`, `curvecert.compat.asyncio`) put them on
curvecert's own transports. Kept from pyzmq because changing them would break working
applications for no safety gain: NULL clients are allowed unless an address list refuses
them, `allow` and `deny` cannot be mixed (`ValueError`), a PLAIN password dict is used by
reference (later changes apply), a callback's result counts by truthiness, NULL clients
get the User-Id "anonymous", and `curve_user_id` can be overridden, even on a running
authenticator. Everything else is
curvecert's behaviour; docs/migrating-from-zmq-auth.md lists each difference.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import os
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any

import zmq

from curvecert.auth.base import BaseAuthenticator
from curvecert.auth.decision import Decision
from curvecert.auth.endpoint import ZapLease, acquire
from curvecert.auth.keylookup import KeyLookup
from curvecert.auth.pending import DEFAULT_PROVIDER_TIMEOUT, Grant, Pending, ProviderResult
from curvecert.auth.policy import ANY_DOMAIN, DomainPolicy, PasswordCheck, prepare
from curvecert.auth.providers import DEFAULT_WORKERS, WorkerPool, run_pending
from curvecert.auth.pwtable import CheckResult
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats import z85
from curvecert.formats.zap import ZapRequest

__all__ = ["CURVE_ALLOW_ANY", "VERSION", "Authenticator"]

_logger = logging.getLogger(__name__)

#: pyzmq: the `location` that means "any client key" (not a domain).
CURVE_ALLOW_ANY = "*"
#: pyzmq: the ZAP version it accepts and sends (RFC 27).
VERSION = b"1.0"


class _LivePasswords:
    """A `PasswordCheck` over the caller's own `{user: password}` dict, read on each login
    (pyzmq keeps the dict by reference, so later changes apply); compares in constant time.
    """

    __slots__ = ("_encoding", "_passwords")

    def __init__(self, passwords: Mapping[Any, Any], encoding: str) -> None:
        self._passwords = passwords
        self._encoding = encoding

    def __repr__(self) -> str:  # never the passwords
        return f"<pyzmq password dict, {len(self._passwords)} users>"

    def check(self, user: str, password: bytes) -> CheckResult:
        """Check one PLAIN login against the dict as it is now."""
        try:
            stored = self._passwords.get(user)
            if stored is None:
                stored = self._passwords.get(user.encode(self._encoding))
        except Exception:  # a strange mapping: a system failure, not a wrong password
            return CheckResult.UNAVAILABLE
        if stored is None:
            return CheckResult.UNKNOWN_USER
        want = stored.encode(self._encoding) if isinstance(stored, str) else bytes(stored)
        return CheckResult.OK if hmac.compare_digest(want, password) \
            else CheckResult.BAD_PASSWORD


def _truthy(result: object) -> ProviderResult:
    """pyzmq counts a callback's result by truthiness; a curvecert `Grant` passes through."""
    return result if isinstance(result, Grant) else bool(result)


async def _await_truthy(awaitable: Awaitable[object]) -> ProviderResult:
    return _truthy(await awaitable)


def _callback_domain(request: ZapRequest) -> str:
    # pyzmq hands the callback '*' for the empty domain, the domain itself otherwise
    return request.domain or ANY_DOMAIN


def _key_z85(request: ZapRequest) -> bytes:
    return z85.encode(request.credentials[0]).encode("ascii")


class Authenticator(BaseAuthenticator):
    """pyzmq's `zmq.auth.Authenticator`: the configuration API, plus pyzmq's manual mode.

    Used directly it behaves like pyzmq's base class: `start()` binds `zap_socket` (a
    ROUTER here, where pyzmq's is a REP) and nothing answers until the application feeds
    each request to
    `await handle_zap_message(auth.zap_socket.recv_multipart())`. Most applications want
    `curvecert.compat.thread.ThreadAuthenticator` or
    `curvecert.compat.asyncio.AsyncioAuthenticator` instead.

    `encoding` decodes nothing on the wire (ZAP text is UTF-8); it encodes `str` values
    of the PLAIN password dict and of `curve_user_id`'s result. `log` receives this
    layer's configuration messages; decisions are logged on `curvecert.audit`.
    """

    #: Seconds a `configure_curve_callback` callback may take before its request is
    #: answered 500 (pyzmq has no deadline; change it per call with `timeout=`).
    provider_timeout: float = DEFAULT_PROVIDER_TIMEOUT
    zap_socket: zmq.Socket[Any] | None

    def __init__(self, context: zmq.Context[Any] | None = None, encoding: str = "utf-8",
                 log: Any = None, *, max_workers: int = DEFAULT_WORKERS) -> None:
        """Prepare (not start) the authenticator for `context` (default: the global one)."""
        BaseAuthenticator.__init__(self, context, max_workers=max_workers)
        self._compat_init(encoding, log)
        self._manual_pool: WorkerPool | None = None
        self._manual_lease: ZapLease | None = None

    def _compat_init(self, encoding: str, log: Any) -> None:
        self.encoding = encoding
        self.log: logging.Logger = log if log is not None else _logger
        self.zap_socket = None
        self._used_allow = self._used_deny = False
        self._update(ANY_DOMAIN)  # pyzmq: NULL clients are allowed unless an address is refused
        self.adjust = self._pyzmq_user_id

    # --- pyzmq's manual mode ------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return self.zap_socket is not None

    def is_alive(self) -> bool:
        """pyzmq: whether requests are being answered."""
        return self.running

    def start(self) -> None:
        """pyzmq's base `start()`: bind `zap_socket`; the caller answers requests.

        `zap_socket` is the context's guarded ZAP socket (`curvecert.auth.endpoint`): a
        ROUTER, so each message read from it starts with its routing envelope, which
        `handle_zap_message` uses to route the reply. `stop()` never unbinds it.
        """
        if self.zap_socket is not None:
            return
        self._manual_lease = acquire(self.context)
        self.zap_socket = self._manual_lease.socket

    def stop(self) -> None:
        """pyzmq's base `stop()`; idempotent. The endpoint stays bound: a deny-all
        responder answers 500 until the context terminates (close servers first)."""
        lease, self._manual_lease = self._manual_lease, None
        self.zap_socket = None
        if lease is not None:
            lease.release()
        pool, self._manual_pool = self._manual_pool, None
        if pool is not None:
            pool.shutdown()
        self._stop_owned(5.0)

    def _get_manual_pool(self) -> WorkerPool:
        if self._manual_pool is None:
            self._manual_pool = WorkerPool(self.max_workers, "curvecert-compat-provider")
        return self._manual_pool

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        """Decide one request read from `zap_socket` and send the reply on it (pyzmq's
        manual mode). Never raises for bad input: malformed requests get a 500."""
        sock = self.zap_socket
        if sock is None:
            raise OperationalError("start() the authenticator before handling requests")
        envelope: list[bytes] = []
        if len(msg) > 2 and not msg[1]:  # read from the ROUTER: [routing id, b"", body...]
            envelope, msg = list(msg[:2]), list(msg[2:])
        request, outcome = prepare(self._policy, msg)
        if isinstance(outcome, Pending):
            outcome = await run_pending(outcome, self._get_manual_pool)
        decision, reply = self._final(request, outcome, msg)
        sock.send_multipart(envelope + reply)
        self._after(request, decision)

    # --- configuration ------------------------------------------------------------------

    def _update(self, domain: str, **changes: Any) -> None:
        """As curvecert's, except that a domain created here allows NULL (pyzmq)."""
        with self._lock:
            current = self._policy.domains.get(domain)
            if current is None:
                current = DomainPolicy(null=True)
            self._policy = self._policy.with_domain(domain, replace(current, **changes))

    def allow(self, *addresses: str, domain: str | None = None) -> None:
        """Admit only these addresses (curvecert also takes CIDR ranges and ipc patterns,
        and matches IPv4-mapped IPv6 forms); raises `ValueError` after `deny` (pyzmq)."""
        if self._used_deny:
            raise ConfigError("Only use allow or deny, not both")
        super().allow(*addresses, domain=domain)
        self._used_allow = self._used_allow or bool(addresses)

    def deny(self, *addresses: str, domain: str | None = None) -> None:
        """Refuse these addresses; raises `ValueError` after `allow` (pyzmq)."""
        if self._used_allow:
            raise ConfigError("Only use allow or deny, not both")
        super().deny(*addresses, domain=domain)
        self._used_deny = self._used_deny or bool(addresses)

    def configure_plain(self, domain: str = ANY_DOMAIN, passwords: Mapping[Any, Any] | str
                        | os.PathLike[str] | PasswordCheck | None = None, *,
                        user_id: bool | None = None) -> None:
        """PLAIN logins in `domain` checked against `passwords`.

        A dict is used by reference, as pyzmq does: later changes to it apply (an empty
        dict is installed too, unlike pyzmq). `None` changes nothing (pyzmq). curvecert's
        password file paths and `PasswordFile` objects work as well.
        """
        if passwords is None:
            self.log.debug("configure_plain(%r, None): nothing changed", domain)
            return
        source: Any = passwords
        if isinstance(passwords, Mapping):
            source = _LivePasswords(passwords, self.encoding)
        super().configure_plain(domain, source, user_id=user_id)

    def configure_curve(self, domain: str = ANY_DOMAIN,  # type: ignore[override]
                        location: str | os.PathLike[str] | KeyLookup = ".", *,
                        strict_modes: bool = False) -> None:
        """CURVE clients in `domain` checked against the public certificates in directory
        `location`, or any key with `location=CURVE_ALLOW_ANY` (for this domain only).

        The directory is watched (`curvecert.CertStore`): adding or removing a file takes
        effect without calling this again (calling it again is harmless).
        `strict_modes=True` (a curvecert extension) refuses files and store directories
        that group/others can write, as `curvecert.Authenticator.configure_curve` does.
        """
        if isinstance(location, str) and location == CURVE_ALLOW_ANY:
            self.configure_curve_unsafe_allow_any(domain)
            return
        super().configure_curve(domain, location, strict_modes=strict_modes)

    def configure_curve_callback(self, domain: str = ANY_DOMAIN,
                                 credentials_provider: Any = None, *,
                                 timeout: float | None = None, cache_ttl: float = 0.0,
                                 inline: bool = False) -> None:
        """CURVE clients in `domain` decided by `credentials_provider.callback(domain,
        key)`: `domain` is the request's (`'*'` for the empty one), `key` the client's
        Z85 public key as bytes; a truthy result allows. The callback may be `async def`
        or return an awaitable.

        It runs off the handler (a worker thread, or the event loop for async ones) and
        is answered 500 after `timeout` seconds (default `provider_timeout`, 1 s); an
        exception is a 500 as well. `cache_ttl` > 0 remembers allows for that long;
        `inline=True` runs a plain callback on the handler itself (no deadline).
        """
        if credentials_provider is None:
            raise ConfigError(f"configure_curve_callback({domain!r}): credentials_provider "
                              "is None (pyzmq only logs this)")
        callback = getattr(credentials_provider, "callback", None)
        if not callable(callback):
            raise ConfigError("credentials_provider needs a callback(domain, key) method")
        cb: Any = callback
        lookup: Any
        if inspect.iscoroutinefunction(cb):
            async def lookup(request: ZapRequest) -> ProviderResult:
                return _truthy(await cb(_callback_domain(request), _key_z85(request)))
        else:
            def lookup(request: ZapRequest) -> Any:
                result = cb(_callback_domain(request), _key_z85(request))
                if inspect.isawaitable(result):
                    return _await_truthy(result)
                return _truthy(result)
        name = f"{type(credentials_provider).__name__}.callback"
        self.configure_provider("CURVE", lookup, domain, name=name,
                                timeout=self.provider_timeout if timeout is None else timeout,
                                cache_ttl=cache_ttl, inline=inline)

    def configure_gssapi(self, domain: str = ANY_DOMAIN, location: str | None = None) -> None:
        """Allow GSSAPI clients in `domain`, User-Id = their principal.

        pyzmq allows GSSAPI everywhere even without this call; curvecert refuses a
        mechanism that was not configured, so call it if you use GSSAPI.
        """
        def gssapi(request: ZapRequest) -> bool:
            return True  # libzmq has authenticated the principal already

        self.configure_provider("GSSAPI", gssapi, domain, name="gssapi", inline=True)

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The User-Id of an allowed CURVE client: its Z85 public key. Override it (on the
        class or the instance) to map keys to names, as in pyzmq."""
        return z85.encode(client_public_key)

    def _pyzmq_user_id(self, request: ZapRequest, decision: Decision) -> Decision:
        """pyzmq's User-Ids: `curve_user_id(key)` for CURVE, "anonymous" for NULL."""
        if decision.status != "200":
            return decision
        if request.mechanism == "NULL":
            return decision if decision.user_id else decision._replace(user_id=b"anonymous")
        if request.mechanism != "CURVE":
            return decision
        fn = self.curve_user_id
        if getattr(fn, "__func__", None) is Authenticator.curve_user_id:
            return decision  # the default: curvecert's User-Id is the Z85 key already
        user_id = fn(request.credentials[0])
        raw = user_id.encode(self.encoding) if isinstance(user_id, str) else bytes(user_id)
        return decision._replace(user_id=raw)
