"""`Authenticator`: the embedded ZAP handler, a thread answering `inproc://zeromq.zap.01`.

Why another one: CZMQ's zauth aborts the process on a malformed request and ignores ZAP
domains; pyzmq's ThreadAuthenticator logs PLAIN passwords, has one global "allow any",
dies silently when a credentials callback raises (every later handshake then hangs) and
its `stop()` can block forever. This one:

- only moves frames: `curvecert.auth.policy.prepare`/`encode` (pure, never raise) turn each
  request into a reply, so malformed input, a raising key lookup or a broken provider gets
  a 500 and the loop carries on;
- swaps an immutable `Policy` reference on every configuration change (thread-safe, no
  locks on the hot path);
- binds a ROUTER socket, so several requests can be in flight: a request that needs a
  provider (a database lookup, ...) is handed to `curvecert.auth.providers` (a small pool of
  daemon worker threads for blocking callbacks, a private event loop for async ones) and
  answered when the call completes or, at its deadline, with a 500, while other requests
  are answered meanwhile. With no provider call in flight the thread blocks in a plain
  `recv` (no poller on the hot path); with some, it polls the socket and a wake-up pipe
  until the nearest deadline;
- `stop()` wakes it with a one-frame message carrying a random 128-bit token only this
  object knows, answers the requests still waiting for a provider with 500, and returns
  as soon as the thread has closed its socket (bounded by a join timeout); it is
  idempotent;
- logs one line per decision on the `curvecert.audit` logger (ALLOWED/DENIED at INFO,
  500s at WARNING), formatted only when that level is enabled, never with a password or a
  secret key; keeps counters; calls an optional `on_decision(request, decision)` hook
  after the reply has been sent.

`BaseAuthenticator` holds everything but the transport (policy, configuration methods,
counters, logging, hook); `curvecert.auth.aio.AsyncioAuthenticator` is the same on an asyncio
loop. libzmq looks the ZAP endpoint up in the server socket's own context, so there is one
authenticator per context (a second `start()` in the same context fails with a clear
`OperationalError`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import itertools
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, NamedTuple

import zmq

from curvecert.auth.passwords import PasswordFile
from curvecert.auth.policy import (
    ANY_DOMAIN,
    DEFAULT_PROVIDER_TIMEOUT,
    Decision,
    DomainPolicy,
    KeyLookup,
    PasswordCheck,
    Pending,
    Policy,
    Provider,
    ProviderResult,
    ResultCache,
    UnsafeAllowAny,
    answer,
    encode,
    prepare,
    respond,
)
from curvecert.auth.providers import DEFAULT_WORKERS, ProviderRunner, resolve_now, settle
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats.zap import ZAP_ENDPOINT, ZapRequest, split_envelope

__all__ = ["AUDIT_LOGGER", "ZAP_ENDPOINT", "Authenticator", "BaseAuthenticator",
           "DecisionAdjust", "DecisionHook", "ProviderCallback", "answer", "fast_io",
           "format_decision", "respond"]

_logger = logging.getLogger(__name__)
#: Decision lines go to this logger so they can be routed apart from operational logs.
AUDIT_LOGGER = "curvecert.audit"
_audit = logging.getLogger(AUDIT_LOGGER)

DecisionHook = Callable[[ZapRequest | None, Decision], None]
#: A last word on every decision for a parsed request (e.g. a custom User-Id), see
#: `BaseAuthenticator.adjust`.
DecisionAdjust = Callable[[ZapRequest, Decision], Decision]
ProviderCallback = Callable[[ZapRequest], ProviderResult | Awaitable[ProviderResult]]

_OUTCOME = {"200": "allowed", "300": "errors", "400": "denied", "500": "errors"}
_LABEL = {"200": "ALLOWED", "400": "DENIED"}


def _clean(text: str) -> str:
    """Text from the wire made safe for a log line (no newlines, no spaces, no controls)."""
    if text.isprintable() and " " not in text and text:
        return text
    return repr(text) if text else '""'


def fast_io(sock: zmq.Socket[Any]) -> tuple[Callable[[int], list[bytes]],
                                            Callable[[list[bytes]], None]]:
    """`(recv_multipart(flags), send_multipart(frames))` for `sock`, minus pyzmq's Python layer.

    pyzmq's `Socket.send` and `send_multipart` are Python wrappers (per-frame type checks,
    routing-id and group support) around the compiled backend; for an 8-frame ZAP exchange
    they cost about 3x the libzmq calls themselves. Frames here are always `bytes`, so the
    handlers call the backend's `send`/`recv`/`get` directly. Falls back to the public
    methods if the backend does not have them.
    """
    base = getattr(zmq, "backend", None)
    base_socket = getattr(base, "Socket", None)
    b_send = getattr(base_socket, "send", None)
    b_recv = getattr(base_socket, "recv", None)
    b_get = getattr(base_socket, "get", None)
    if not (isinstance(sock, base_socket) if isinstance(base_socket, type) else False) \
            or b_send is None or b_recv is None or b_get is None:
        def recv_sugar(flags: int = 0) -> list[bytes]:
            return sock.recv_multipart(flags)

        def send_sugar(frames: list[bytes]) -> None:
            sock.send_multipart(frames)

        return recv_sugar, send_sugar
    rcvmore, sndmore = zmq.RCVMORE, zmq.SNDMORE

    def recv_multipart(flags: int = 0) -> list[bytes]:
        parts = [b_recv(sock, flags)]
        while b_get(sock, rcvmore):
            parts.append(b_recv(sock, flags))
        return parts

    def send_multipart(frames: list[bytes]) -> None:
        last = len(frames) - 1
        for i in range(last):
            b_send(sock, frames[i], sndmore)
        b_send(sock, frames[last], 0)

    return recv_multipart, send_multipart


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


class BaseAuthenticator:
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
        """`adjust`, then the reply frames (see `curvecert.auth.policy.encode`)."""
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
        this authenticator), an `etcd://HOST:PORT[,...]/PREFIX` URL (an `EtcdStore`, options
        from `CURVECERT_ETCD_*`), a `CertStore` or any `KeyLookup`; None turns CURVE off.
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
        `curvecert.auth.policy.ResultCache`). `inline=True` runs a plain callback on the
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


class _Call(NamedTuple):
    """A request waiting for its provider (thread transport)."""

    envelope: list[bytes]
    request: ZapRequest
    pending: Pending
    frames: list[bytes]
    deadline: float
    future: concurrent.futures.Future[Any]


class Authenticator(BaseAuthenticator):
    """The ZAP handler for one zmq context, in a thread; start it before binding servers.

    ```python
    with Authenticator(ctx) as auth:
        auth.allow("127.0.0.1")
        auth.configure_curve(store="authorized_clients/")
        server = ctx.socket(zmq.ROUTER); server_cert.apply_server(server); ...
    ```

    Configuration: see `BaseAuthenticator`. `context` may be a `zmq.Context` or a
    `zmq.asyncio.Context` (the handler's own socket is always a plain one).
    """

    def __init__(self, context: zmq.Context[Any] | None = None, policy: Policy | None = None,
                 *, log_decisions: bool = True, on_decision: DecisionHook | None = None,
                 max_workers: int = DEFAULT_WORKERS) -> None:
        """Prepare (not start) an authenticator for `context` (default: the global one)."""
        super().__init__(context, policy, log_decisions=log_decisions,
                         on_decision=on_decision, max_workers=max_workers)
        self._thread: threading.Thread | None = None
        self._token: bytes | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._runner: ProviderRunner | None = None
        self._done: collections.deque[tuple[int, concurrent.futures.Future[Any]]] = \
            collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_w: int | None = None
        self._in_flight = 0
        self._call_ids = itertools.count(1)  # never reused, also across restarts

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the handler thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def in_flight(self) -> int:
        """Requests waiting for a provider right now."""
        return self._in_flight

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
            self._runner = ProviderRunner(self.max_workers)
            thread = threading.Thread(target=self._run, args=(token, self._runner),
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

        Requests still waiting for a provider are answered 500 first. Also stops
        certificate stores this authenticator opened from a directory. A blocking provider
        call that never returns keeps its (daemon) worker thread, nothing else.
        """
        with self._lock:
            thread, token, runner = self._thread, self._token, self._runner
            self._thread = self._token = None
            self._runner = None
        deadline = time.monotonic() + timeout
        if thread is not None and thread.is_alive():
            self._wake(token)
            if thread is not threading.current_thread():  # stop() from the hook: no join
                thread.join(timeout)
                if thread.is_alive():
                    _logger.error("the authenticator thread did not stop within %ss", timeout)
        if runner is not None:
            runner.close(max(0.1, min(2.0, deadline - time.monotonic())))
        self._stop_owned(max(0.1, deadline - time.monotonic()))
        if thread is not None:
            _logger.info("authenticator stopped")

    def _wake(self, token: bytes | None) -> None:
        """Send the stop token to our own ZAP socket (a DEALER needs the empty delimiter)."""
        if token is None:
            return
        try:
            sock = self.context.socket(zmq.DEALER, socket_class=zmq.Socket)
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

    def _run(self, token: bytes, runner: ProviderRunner) -> None:
        zsock: zmq.Socket[Any] | None = None
        rfd = wfd = -1
        try:
            zsock = self.context.socket(zmq.ROUTER, socket_class=zmq.Socket)
            zsock.linger = 0
            # libzmq's own ZAP pipes have no HWM; do the same for other in-process clients,
            # so a burst never makes the ROUTER drop a reply (it drops when a pipe is full).
            zsock.sndhwm = zsock.rcvhwm = 0
            zsock.bind(ZAP_ENDPOINT)
            rfd, wfd = os.pipe()
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
        except Exception as exc:
            self._start_error = exc
            if zsock is not None:
                zsock.close(linger=0)
            for fd in (rfd, wfd):
                if fd >= 0:
                    os.close(fd)
            self._ready.set()
            return
        with self._wake_lock:
            self._wake_w = wfd
            self._done.clear()
        self._ready.set()
        try:
            self._loop(zsock, token, runner, rfd)
        except Exception:  # pragma: no cover - the loop catches everything it expects
            _logger.exception("authenticator loop failed; ZAP requests are no longer answered")
        finally:
            with self._wake_lock:  # no late provider may write to a recycled descriptor
                self._wake_w = None
            os.close(rfd)
            os.close(wfd)
            try:
                zsock.unbind(ZAP_ENDPOINT)  # synchronous for inproc: start() may bind again
            except zmq.ZMQError:
                pass
            zsock.close(linger=0)

    def _poke(self) -> None:
        """Wake the handler thread (called from provider threads when a call completes)."""
        with self._wake_lock:
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"\0")
                except OSError:  # the pipe is full: the thread has wake-ups queued anyway
                    pass

    def _loop(self, zsock: zmq.Socket[Any], token: bytes, runner: ProviderRunner,
              rfd: int) -> None:
        recv, send = fast_io(zsock)
        calls: dict[int, _Call] = {}
        poller = zmq.Poller()
        poller.register(zsock, zmq.POLLIN)
        poller.register(rfd, zmq.POLLIN)
        failures = 0
        try:
            while True:
                try:
                    if calls:
                        frames = self._wait(recv, zsock, poller, rfd, calls, send)
                        if frames is None:
                            continue
                    else:
                        frames = recv(0)
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
                # ROUTER: [routing id, b"", request...] from libzmq and REQ/DEALER clients
                if len(frames) > 2 and not frames[1]:
                    envelope, body = frames[:2], frames[2:]
                else:
                    split = split_envelope(frames)
                    if split is None:
                        _logger.debug("dropped a ZAP message without a routing envelope")
                        continue
                    envelope, body = split
                if len(body) == 1 and body[0] == token:  # stop(): nobody else knows it
                    return
                request, outcome = prepare(self._policy, body)
                if type(outcome) is Pending:
                    now = resolve_now(outcome)
                    if now is None:
                        self._dispatch(next(self._call_ids), envelope, body, outcome, runner,
                                       calls)
                        continue
                    outcome = now
                self._reply(send, envelope, request, outcome, body)  # type: ignore[arg-type]
        except zmq.ContextTerminated:
            return
        finally:
            for call in list(calls.values()):  # stopping: nobody will answer them later
                call.future.cancel()
                decision = call.pending.fail(OperationalError("authenticator stopped"))
                try:
                    self._reply(send, call.envelope, call.request, decision, call.frames)
                except zmq.ZMQError:
                    pass
            calls.clear()
            self._in_flight = 0

    def _reply(self, send: Callable[..., Any], envelope: list[bytes],
               request: ZapRequest | None, decision: Decision, frames: list[bytes]) -> None:
        decision, reply = self._final(request, decision, frames)
        try:
            send(envelope + reply)
        except zmq.ContextTerminated:
            raise
        except zmq.ZMQError as exc:
            _logger.error("cannot send a ZAP reply: %s", exc)
        self._after(request, decision)

    def _dispatch(self, call_id: int, envelope: list[bytes], frames: list[bytes],
                  pending: Pending, runner: ProviderRunner, calls: dict[int, _Call]) -> None:
        """Start a provider call; its completion wakes the loop through the pipe."""
        fut = runner.call(pending)
        calls[call_id] = _Call(envelope, pending.request, pending, frames,
                               time.monotonic() + pending.provider.timeout, fut)
        self._in_flight = len(calls)
        done = self._done

        def completed(f: concurrent.futures.Future[Any]) -> None:
            done.append((call_id, f))
            self._poke()

        fut.add_done_callback(completed)

    def _wait(self, recv: Callable[[int], list[bytes]], zsock: zmq.Socket[Any],
              poller: zmq.Poller, rfd: int, calls: dict[int, _Call],
              send: Callable[..., Any]) -> list[bytes] | None:
        """With provider calls in flight: wait for a request, a completion or a deadline;
        answer completed and expired calls; return a request's frames if one is ready."""
        nearest = min(call.deadline for call in calls.values())
        wait_ms = max(0, math.ceil((nearest - time.monotonic()) * 1000))
        events = dict(poller.poll(wait_ms)) if wait_ms > 0 or not self._done else {}
        if rfd in events:
            try:
                while os.read(rfd, 4096):
                    pass
            except BlockingIOError:
                pass
        done = self._done
        while done:
            call_id, fut = done.popleft()
            call = calls.get(call_id)
            # else: answered 500 at its deadline already, or a late completion from before
            # a restart (the future's identity tells them apart from a reused id)
            if call is not None and call.future is fut:
                del calls[call_id]
                self._reply(send, call.envelope, call.request, settle(call.pending, fut),
                            call.frames)
        now = time.monotonic()
        for call_id in [i for i, c in calls.items() if c.deadline <= now]:
            call = calls.pop(call_id)
            call.future.cancel()  # a queued call never starts; a running one is abandoned
            self._reply(send, call.envelope, call.request, settle(call.pending, None),
                        call.frames)
        self._in_flight = len(calls)
        if zsock in events:
            try:
                return recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
        return None


def _open_store(directory: str | os.PathLike[str]) -> Any:
    """A started live store: a watched directory, or an `etcd://` URL (issue 17)."""
    from curvecert.store.backend import open_store

    return open_store(directory)


def _stop_quietly(store: Any, timeout: float = 5.0) -> None:
    try:
        store.stop(timeout)
    except Exception:
        _logger.exception("stopping %r failed", store)
