"""`Rechecker`: is the peer behind a message's User-Id still admitted by the live policy?

Why: ZAP runs once per connection, so removing a key from a store refuses the *next*
handshake while an open connection keeps talking. libzmq cannot close one peer of a
bound socket, but every message it delivers carries the connection's ZAP User-Id (the
`"User-Id"` frame property, RFC 27), so a receiver can drop messages from peers that
would no longer be admitted.

Hot path: `allowed(user_id)` is one dict lookup. A relay that feeds the handshakes it saw
(`admit`) can skip even that: `armed` is True only while a User-Id admitted earlier is no
longer allowed, i.e. while a revoked peer may still be connected. The answer per User-Id
is computed once (a key lookup in the live snapshot) and cached until the policy is replaced
(`set_policy`) or one of the domain's watched stores publishes a new snapshot (a
`CertStore.on_reload` callback empties the cache), so a removal takes effect as soon as
the store has rescanned.

What counts as allowed, for the domain's `DomainPolicy`:

- a CURVE User-Id (40 Z85 characters): the store still trusts the key; `UnsafeAllowAny`
  and provider-decided CURVE keys stay allowed (a provider cannot be asked cheaply);
- an empty User-Id (NULL): NULL is still allowed in the domain;
- any other User-Id (PLAIN user name): PLAIN is still configured and, when the password
  source lists its users, the user is listed (a changed password does not revoke: the
  old one was checked at the handshake, and passwords are never kept here).

Address filters are not re-applied (a connection's address does not change). Any error
while checking counts as not allowed (fail closed). A key whose certificate has a validity
period (`not-before`/`not-after`) is allowed only inside it; `next_change` is the earliest
`not-after` among the cached answers, and `expire_due()` empties the cache once it has
passed, so an expiry cuts off an open connection like a removal does (issue 16).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from curvecert.auth.keylookup import KeyChain, UnsafeAllowAny
from curvecert.auth.pending import Provider
from curvecert.auth.policy import Policy
from curvecert.certs import validity
from curvecert.formats import z85

__all__ = ["MAX_ADMITTED", "RecheckMixin", "Rechecker", "user_id_of"]

#: Distinct admitted User-Ids tracked for `armed`; beyond this every message is checked
#: (re-scanning more on each store reload would cost the reload thread too much).
MAX_ADMITTED = 10_000


def user_id_of(frame_or_user_id: Any) -> str:
    """The User-Id of a received `zmq.Frame` (its `"User-Id"` property; `""` when the
    connection has none), or the value itself as text (bytes are read as UTF-8)."""
    if isinstance(frame_or_user_id, str):
        return frame_or_user_id
    if isinstance(frame_or_user_id, (bytes, bytearray, memoryview)):
        return bytes(frame_or_user_id).decode("utf-8", "replace")
    get = getattr(frame_or_user_id, "get", None)
    if get is None:
        raise TypeError("expected a zmq.Frame (received with copy=False) or a User-Id")
    try:
        value = get("User-Id")
    except Exception:  # no metadata on this frame (e.g. inproc without ZAP)
        return ""
    return value if isinstance(value, str) else str(value or "")


class Rechecker:
    """Answers "still allowed?" for User-Ids of one ZAP domain under a swappable policy."""

    def __init__(self, policy: Policy, domain: str = ""):
        """Check against `policy`'s entry for `domain` (`""` falls back to `"*"`)."""
        self.domain = domain
        self._lock = threading.Lock()
        self._hooked: set[int] = set()
        self._cache: dict[str, bool] = {}
        self.routes: dict[bytes, bool] = {}
        """Verdicts by ROUTER routing id (one connection, one User-Id), for relays; emptied
        with the rest of the cache."""
        self.invalidations = 0
        """How often the cache was emptied (tests and benchmarks wait on it)."""
        self._admitted: set[str] = set()
        self._overflow = False
        self.armed = False
        """True while some User-Id admitted earlier (see `admit`) is no longer allowed:
        only then must a relay look at every message. Without `admit` calls it stays
        False, so callers that do not feed admissions use `allowed` directly."""
        self.next_change = math.inf
        """Earliest `not-after` (epoch seconds) behind a cached "allowed"; inf if none."""
        self.policy = policy
        self._hook(policy)

    def expire_due(self, now: float | None = None) -> bool:
        """Empty the cache if a cached "allowed" has expired by `now`; True if it did."""
        if self.next_change == math.inf:
            return False
        if (time.time() if now is None else now) < self.next_change:
            return False
        self.invalidate()
        return True

    def set_policy(self, policy: Policy) -> None:
        """Check against `policy` from now on."""
        self.policy = policy
        self._hook(policy)
        self.invalidate()

    def invalidate(self, *_: object) -> None:
        """Forget every cached answer (called on store reloads), then re-arm."""
        self.next_change = math.inf
        self._cache = {}
        self.routes = {}
        self.invalidations += 1
        with self._lock:  # serialised with `admit`, so neither overwrites the other's verdict
            self.armed = self._overflow or any(not self.allowed(uid) for uid in self._admitted)

    def admit(self, user_id: str) -> None:
        """Note a User-Id the ZAP handler just admitted (it may now be connected).

        Added before it is checked, so a store change racing with the handshake is seen
        either here or by the next `invalidate`'s scan.
        """
        with self._lock:
            if self._overflow:
                return
            self._admitted.add(user_id)
            if len(self._admitted) > MAX_ADMITTED:  # too many to re-scan on every reload:
                self._overflow = self.armed = True  # check every message from now on
                self._admitted.clear()
            elif not self.allowed(user_id):
                self.armed = True

    def allowed(self, user_id: str) -> bool:
        """True while `user_id` would still be admitted; a dict lookup when cached."""
        cache = self._cache
        ok = cache.get(user_id)
        if ok is None:
            # store into the dict read *before* deciding: a reload meanwhile replaces it,
            # so a verdict from the old snapshot is never kept
            ok = cache[user_id] = self._decide(user_id)
        return ok

    def _hook(self, policy: Policy) -> None:
        dp = policy.for_domain(self.domain)
        if dp is None:
            return
        items = dp.curve.lookups if isinstance(dp.curve, KeyChain) else (dp.curve,)
        with self._lock:
            for item in items:
                callbacks = getattr(item, "on_reload", None)
                if isinstance(callbacks, list) and id(item) not in self._hooked:
                    self._hooked.add(id(item))
                    callbacks.append(self.invalidate)

    def _decide(self, user_id: str) -> bool:
        try:
            return self._decide_unsafe(user_id)
        except Exception:
            return False

    def _decide_unsafe(self, user_id: str) -> bool:
        dp = self.policy.for_domain(self.domain)
        if dp is None:
            return False
        if not user_id:
            return dp.null
        key = None
        if len(user_id) == 40:
            try:
                key = z85.decode(user_id)
            except ValueError:
                key = None
        if key is not None and len(key) == 32 and dp.curve is not None:
            curve = dp.curve
            if isinstance(curve, (UnsafeAllowAny, Provider)):
                return True
            entry = curve.lookup(key)
            if entry is not None:
                start, end = validity.window(getattr(entry, "metadata", b"") or b"")
                now = time.time()
                if not start <= now < end:
                    return False
                if end < self.next_change:
                    self.next_change = end
                return True
        plain = dp.plain
        if plain is None:
            return False
        users = getattr(plain, "users", None)
        if isinstance(plain, Provider) or not callable(users):
            return True
        return user_id in users()


class RecheckMixin:
    """`still_allowed` for authenticators (mixed into `BaseAuthenticator`).

    Needs `self._policy` (the policy in force) and `self._lock`; keeps one `Rechecker` per
    ZAP domain asked about, re-pointed at the current policy when it has been replaced.
    """

    _policy: Policy
    _lock: Any
    _rechecks: dict[str, Rechecker]

    def still_allowed(self, frame_or_user_id: Any, domain: str = "") -> bool:
        """True while the peer that sent `frame_or_user_id` would still be admitted.

        `frame_or_user_id` is a `zmq.Frame` received with `copy=False` (its `"User-Id"`
        property is read) or the User-Id itself (Z85 key for CURVE, user name for PLAIN,
        `""` for NULL); `domain` is the server socket's ZAP domain. One dict lookup once
        the answer for that User-Id is cached; the cache is emptied when the policy or a
        watched store changes. See `Rechecker` for what is re-checked, and
        docs/authenticator.md for what libzmq cannot do (close one peer).
        """
        rechecks: dict[str, Rechecker] | None = getattr(self, "_rechecks", None)
        if rechecks is None:
            rechecks = {}
            self._rechecks = rechecks
        checker = rechecks.get(domain)
        policy = self._policy
        if checker is None or checker.policy is not policy:
            with self._lock:
                checker = rechecks.get(domain)
                if checker is None:
                    checker = rechecks[domain] = Rechecker(policy, domain)
                elif checker.policy is not policy:
                    checker.set_policy(policy)
        if checker.next_change != math.inf:  # a cached answer may have expired meanwhile
            checker.expire_due()
        return checker.allowed(user_id_of(frame_or_user_id))
