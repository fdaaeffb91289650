"""`Authenticator`: the embedded ZAP handler, a thread answering `inproc://zeromq.zap.01`.

Why another one: CZMQ's zauth aborts the process on a malformed request and ignores ZAP
domains; pyzmq's ThreadAuthenticator logs PLAIN passwords, has one global "allow any",
dies silently when a credentials callback raises (every later handshake then hangs) and
its `stop()` can block forever. This one:

- only moves frames: `curvecert.policy.respond` (pure, never raises) turns each request
  into a reply, so malformed input, a raising key lookup or a broken provider gets a 500
  and the loop carries on;
- swaps an immutable `Policy` reference on every configuration change (thread-safe, no
  locks on the hot path);
- blocks in a plain `recv` on the ZAP socket, exactly like the simplest REP loop (no
  poller on the hot path); `stop()` wakes it with a one-frame message carrying a random
  128-bit token only this object knows, so it returns as soon as the thread has closed
  its socket (bounded by a join timeout); it is idempotent;
- logs one line per decision on the `curvecert.audit` logger (ALLOWED/DENIED at INFO,
  500s at WARNING), formatted only when that level is enabled, never with a password or a
  secret key; keeps counters; calls an optional `on_decision(request, decision)` hook
  after the reply has been sent.

libzmq looks the ZAP endpoint up in the server socket's own context, so there is one
authenticator per context (a second `start()` in the same context fails with a clear
`OperationalError`).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import zmq

from curvecert.errors import ConfigError, OperationalError
from curvecert.passwords import PasswordFile
from curvecert.policy import (
    ANY_DOMAIN,
    Decision,
    DomainPolicy,
    KeyLookup,
    PasswordCheck,
    Policy,
    Provider,
    ProviderResult,
    UnsafeAllowAny,
    answer,
    respond,
)
from curvecert.zap import ZAP_ENDPOINT, ZapRequest

__all__ = ["AUDIT_LOGGER", "ZAP_ENDPOINT", "Authenticator", "DecisionHook", "answer",
           "format_decision", "respond"]

_logger = logging.getLogger(__name__)
#: Decision lines go to this logger so they can be routed apart from operational logs.
AUDIT_LOGGER = "curvecert.audit"
_audit = logging.getLogger(AUDIT_LOGGER)

DecisionHook = Callable[[ZapRequest | None, Decision], None]

_OUTCOME = {"200": "allowed", "300": "errors", "400": "denied", "500": "errors"}
_LABEL = {"200": "ALLOWED", "400": "DENIED"}


def _clean(text: str) -> str:
    """Text from the wire made safe for a log line (no newlines, no spaces, no controls)."""
    if text.isprintable() and " " not in text and text:
        return text
    return repr(text) if text else '""'


def format_decision(decision: Decision) -> str:
    """The log line for one decision, in the spirit of zauth's verbose mode.

    `ALLOWED (CURVE) domain=global address=127.0.0.1 user_id=<Z85 key> reason=known key`;
    denials read `DENIED (PLAIN) ... user=alice status=400 reason=wrong password`. Only
    public values appear: user names, public keys, addresses, domains, reasons.
    """
    label = _LABEL.get(decision.status, "ERROR")
    parts = [f"{label} ({decision.mechanism})", f"domain={_clean(decision.domain)}",
             f"address={_clean(decision.address)}"]
    if decision.status == "200":
        parts.append(f"user_id={_clean(decision.user_id.decode('utf-8', 'replace'))}")
    elif decision.subject:
        what = "key" if decision.mechanism == "CURVE" else "user"
        parts.append(f"{what}={_clean(decision.subject)}")
    if decision.status != "200":
        parts.append(f"status={decision.status}")
    parts.append(f"reason={decision.reason}")
    return " ".join(parts)


class Authenticator:
    """The ZAP handler for one zmq context; start it before binding server sockets.

    ```python
    with Authenticator(ctx) as auth:
        auth.allow("127.0.0.1")
        auth.configure_curve(store="authorized_clients/")
        server = ctx.socket(zmq.ROUTER); server_cert.apply_server(server); ...
    ```

    Every `configure_*`/`allow`/`deny` call builds a new immutable `Policy` and swaps it in;
    it may be called before or after `start()`, from any thread. Domains: `"*"` (the
    default) is the fallback for every ZAP domain without its own policy; a named domain's
    policy replaces the fallback completely. `allow`/`deny` without `domain` apply to every
    domain.
    """

    def __init__(self, context: zmq.Context[Any] | None = None, policy: Policy | None = None,
                 *, log_decisions: bool = True, on_decision: DecisionHook | None = None,
                 ) -> None:
        """Prepare (not start) an authenticator for `context` (default: the global one)."""
        self.context: zmq.Context[Any] = context if context is not None \
            else zmq.Context.instance()
        self._policy = policy if policy is not None else Policy()
        self.log_decisions = log_decisions
        self.on_decision = on_decision
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._token: bytes | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._owned: dict[str, Any] = {}  # domain -> CertStore we created and must stop
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.requests = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Authenticator {state} domains={sorted(self._policy.domains)}>"

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the handler thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, timeout: float = 10.0) -> Authenticator:
        """Bind `inproc://zeromq.zap.01` and start answering; returns once bound.

        Raises `OperationalError` if the endpoint is taken (another handler in this
        context) or the thread does not come up within `timeout` seconds.
        """
        with self._lock:
            if self.running:
                return self
            self._ready.clear()
            self._start_error = None
            token = secrets.token_bytes(16)
            thread = threading.Thread(target=self._run, args=(token,),
                                      name="curvecert-authenticator", daemon=True)
            thread.start()
            if not self._ready.wait(timeout):
                raise OperationalError(f"the authenticator did not start within {timeout}s")
            if self._start_error is not None:
                thread.join(timeout)
                err = self._start_error
                hint = (" (another ZAP handler is already bound in this context; there is "
                        "one per context)") if getattr(err, "errno", None) == errno.EADDRINUSE \
                    else ""
                raise OperationalError(f"cannot bind {ZAP_ENDPOINT}: {err}{hint}") from err
            self._thread, self._token = thread, token
            _logger.info("authenticator started on %s", ZAP_ENDPOINT)
            self._warn_unsafe(self._policy)
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop answering and unbind; idempotent, never blocks longer than `timeout`.

        Also stops certificate stores this authenticator opened from a directory.
        """
        with self._lock:
            thread, token = self._thread, self._token
            self._thread = self._token = None
            owned = list(self._owned.values())
            self._owned.clear()
        deadline = time.monotonic() + timeout
        if thread is not None and thread.is_alive():
            self._wake(token)
            if thread is not threading.current_thread():  # stop() from the hook: no join
                thread.join(timeout)
                if thread.is_alive():
                    _logger.error("the authenticator thread did not stop within %ss", timeout)
        for store in owned:
            _stop_quietly(store, max(0.1, deadline - time.monotonic()))
        if thread is not None:
            _logger.info("authenticator stopped")

    def _wake(self, token: bytes | None) -> None:
        """Send the stop token to our own REP socket (a DEALER needs the empty delimiter)."""
        if token is None:
            return
        try:
            sock = self.context.socket(zmq.DEALER)
        except zmq.ZMQError:  # the context is terminated: the thread has left on ETERM
            return
        try:
            sock.linger = 0
            sock.connect(ZAP_ENDPOINT)
            sock.send_multipart([b"", token], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        finally:
            sock.close(linger=0)

    def __enter__(self) -> Authenticator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the thread ---------------------------------------------------------------------

    def _run(self, token: bytes) -> None:
        zsock: zmq.Socket[Any] | None = None
        try:
            zsock = self.context.socket(zmq.REP)
            zsock.linger = 0
            # libzmq's own ZAP pipes have no HWM; do the same for other in-process clients,
            # so a burst never makes REP drop a reply (REP drops when a pipe is full).
            zsock.sndhwm = zsock.rcvhwm = 0
            zsock.bind(ZAP_ENDPOINT)
        except Exception as exc:
            self._start_error = exc
            if zsock is not None:
                zsock.close(linger=0)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(zsock, token)
        except Exception:  # pragma: no cover - the loop catches everything it expects
            _logger.exception("authenticator loop failed; ZAP requests are no longer answered")
        finally:
            try:
                zsock.unbind(ZAP_ENDPOINT)  # synchronous for inproc: start() may bind again
            except zmq.ZMQError:
                pass
            zsock.close(linger=0)

    def _loop(self, zsock: zmq.Socket[Any], token: bytes) -> None:
        recv, send = zsock.recv_multipart, zsock.send_multipart
        failures = 0
        while True:
            try:
                frames = recv()
            except zmq.ContextTerminated:
                return
            except zmq.ZMQError as exc:
                if exc.errno == errno.EINTR:
                    continue
                failures += 1
                _logger.error("receiving a ZAP request failed: %s", exc)
                if failures > 100:
                    return
                continue
            if len(frames) == 1 and frames[0] == token:  # stop(): nobody else knows it
                return
            request, decision, reply = respond(self._policy, frames)
            try:
                send(reply)
            except zmq.ContextTerminated:
                return
            except zmq.ZMQError as exc:
                _logger.error("cannot send a ZAP reply: %s", exc)
            self._after(request, decision)

    def _after(self, request: ZapRequest | None, decision: Decision) -> None:
        """Counters, the decision log line and the hook, after the reply has gone out."""
        self.requests += 1
        status = decision.status
        self._counts[decision.mechanism, status] += 1
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
            raise ConfigError("set_policy needs a curvecert.policy.Policy")
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

    def configure_null(self, domain: str = ANY_DOMAIN, *, allowed: bool = True) -> None:
        """Allow (or stop allowing) NULL clients in `domain` (Strawhouse).

        libzmq only asks ZAP about NULL clients when the server socket sets a ZAP domain.
        """
        self._update(domain, null=allowed)

    def configure_plain(self, domain: str = ANY_DOMAIN, passwords: str | os.PathLike[str]
                        | PasswordCheck | Mapping[str, str] | None = None) -> None:
        """Check PLAIN logins in `domain` against a password file path, a `PasswordFile`,
        a `{user: password}` mapping, or any `PasswordCheck`; None turns PLAIN off.

        A path is loaded now (errors raise) and then re-checked for changes.
        """
        source: Any = passwords
        if isinstance(passwords, (str, os.PathLike)):
            source = PasswordFile(passwords)
        self._update(domain, plain=source)
        _logger.info("PLAIN for domain %r: %r", domain, source)

    def configure_curve(self, domain: str = ANY_DOMAIN,
                        store: str | os.PathLike[str] | KeyLookup | None = None) -> None:
        """Accept the CURVE clients whose keys `store` knows (Ironhouse) in `domain`.

        `store` is a directory (opened as a watched `curvecert.CertStore`, stopped with
        this authenticator), a `CertStore` or any `KeyLookup`; None turns CURVE off.
        """
        source: Any = store
        opened = None
        if isinstance(store, (str, os.PathLike)):
            opened = _open_store(store)
            source = opened
        try:
            self._update(domain, curve=source)
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

    def configure_curve_unsafe_allow_any(self, domain: str = ANY_DOMAIN) -> None:
        """Stonehouse: accept ANY CURVE client key in `domain`. Logged as a warning: the
        traffic is encrypted, but nobody is authenticated.
        """
        self._update(domain, curve=UnsafeAllowAny())
        self._warn_unsafe(self._policy, [domain])

    def configure_provider(self, mechanism: str,
                           callback: Callable[[ZapRequest], ProviderResult],
                           domain: str = ANY_DOMAIN, *, name: str | None = None) -> None:
        """Let `callback(request)` decide `mechanism` ("CURVE", "PLAIN", "GSSAPI", ...) in
        `domain`: True or a `Grant` allows, False/None denies, an exception is a 500.
        """
        provider = Provider(callback, name or str(getattr(callback, "__name__", "provider")))
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

    def _warn_unsafe(self, policy: Policy, domains: list[str] | None = None) -> None:
        for name in domains if domains is not None else policy.unsafe_domains:
            _logger.warning("UNSAFE: CURVE allow-any in ZAP domain %r: any client key is "
                            "accepted (Stonehouse); clients are encrypted but not "
                            "authenticated", name)


def _open_store(directory: str | os.PathLike[str]) -> Any:
    try:
        from curvecert.watch import CertStore
    except ImportError as exc:  # pragma: no cover - the store ships with curvecert
        raise ConfigError("curvecert.watch.CertStore is not available; pass a KeyLookup "
                          "instead of a directory") from exc
    store = CertStore(directory, watch=True)
    store.start()
    return store


def _stop_quietly(store: Any, timeout: float = 5.0) -> None:
    try:
        store.stop(timeout)
    except Exception:
        _logger.exception("stopping %r failed", store)
