"""Provider calls as data: `Provider` (a decision callback), its result types (`Grant`),
its bounded result cache (`ResultCache`) and `Pending`, a decision waiting for a call.

`curvecert.auth.policy.resolve` returns a `Pending` when a rule needs a provider; the
synchronous `run_inline` calls it right here, while the authenticators hand it to
`curvecert.auth.providers` (worker threads, an event loop, deadlines). Either way the
provider's answer becomes a `Decision` through the same `Pending.finish`/`fail`/`expire`.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from curvecert.auth.decision import (
    Decision,
    allow,
    check_metadata,
    check_user_id,
    deny,
    error,
    subject_of,
)
from curvecert.auth.pwtable import CheckResult
from curvecert.errors import ConfigError, OperationalError, ZapError
from curvecert.formats import zap

__all__ = [
    "DEFAULT_PROVIDER_TIMEOUT",
    "Busy",
    "Grant",
    "Pending",
    "Provider",
    "ProviderResult",
    "ResultCache",
    "run_inline",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """A provider's "yes", with the User-Id and ZMTP metadata to return (both optional).

    An empty `user_id` means the default: the Z85 key for CURVE, the user name for PLAIN.
    """

    user_id: str | bytes = b""
    metadata: bytes | Mapping[str, str] = b""


ProviderResult = bool | Grant | None


class Busy(OperationalError):
    """A bounded worker pool refused a call: its queue is full. The request is answered
    500 at once (RFC 27 "internal error"), naming the pool, never a credential."""


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
    a bounded time (`ResultCache`). `pool` gives a blocking callback a worker pool of its
    own (a `curvecert.auth.providers.WorkerPool`, e.g. with a bounded queue) instead of
    the authenticator's shared one; a full queue raises `Busy`, answered 500. `decide`
    (the synchronous core) calls the callback directly and cannot run async ones (500).
    """

    callback: Callable[[zap.ZapRequest], ProviderResult | Awaitable[ProviderResult]]
    name: str = "provider"
    timeout: float = DEFAULT_PROVIDER_TIMEOUT
    cache: ResultCache | None = field(default=None, compare=False)
    inline: bool = False
    pool: Any = field(default=None, compare=False)
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


@dataclass(frozen=True, slots=True)
class Pending:
    """A decision that needs a `Provider` call: run `provider(request)`, then `finish` it.

    `decide` does this synchronously; an asyncio or deadline-bound caller
    (`curvecert.auth.providers`) runs the provider its own way and still shares every other
    rule: `cached()` first, then `finish(result)`, `fail(exc)` or `expire()`.
    """

    provider: Provider
    request: zap.ZapRequest
    send_user_id: bool = True

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
        subject = subject_of(request)
        who = f"{self.provider.name}"
        if result is True or isinstance(result, Grant):
            try:
                default = (subject.encode("utf-8") if request.mechanism != "NULL" else b"")
                uid, meta = default, b""
                if isinstance(result, Grant):
                    uid = check_user_id(result.user_id) if result.user_id else default
                    meta = check_metadata(result.metadata)
            except (ZapError, ValueError, TypeError) as exc:
                return error(request, f"{who} returned a bad grant: {exc}", subject)
            return allow(request, uid, meta, f"{who} allowed", subject,
                         send_user_id=self.send_user_id)
        if result is False or result is None:
            return deny(request, f"{who} denied", subject)
        if isinstance(result, CheckResult):  # a password source's answer, same as inline
            if result is CheckResult.OK:
                return allow(request, subject.encode("utf-8"), b"", "password ok", subject,
                             send_user_id=self.send_user_id)
            if result is CheckResult.UNAVAILABLE:
                return error(request, result.reason, subject)
            return deny(request, result.reason, subject)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited here: close it rather than leak a warning
            return error(request, f"{who} returned an awaitable to a synchronous caller",
                         subject)
        return error(request, f"{who} returned {type(result).__name__}, not bool/Grant",
                     subject)

    def fail(self, exc: BaseException) -> Decision:
        """The decision when the provider raised (or timed out): 500, fail closed.

        Only the exception's type is named: a careless provider may put a credential in
        its message (`Busy` is ours: its message is named too).
        """
        if isinstance(exc, Busy):
            return error(self.request, f"{self.provider.name}: {exc}", subject_of(self.request))
        return error(self.request, f"{self.provider.name} failed: "
                     f"{type(exc).__name__}", subject_of(self.request))

    def expire(self) -> Decision:
        """The decision when the provider did not answer within its `timeout`: 500."""
        return error(self.request, f"{self.provider.name} did not answer within "
                     f"{self.provider.timeout:g}s", subject_of(self.request))


def run_inline(pending: Pending) -> Decision:
    """Call `pending`'s provider right here (cache first); never raises."""
    hit = pending.cached()
    if hit is not None:
        return hit
    if pending.provider.is_async:
        return error(pending.request, f"{pending.provider.name} is async: it needs the "
                     "thread or asyncio authenticator", subject_of(pending.request))
    try:
        result = pending.provider(pending.request)
    except Exception as exc:
        return pending.fail(exc)
    return pending.finish(result)
