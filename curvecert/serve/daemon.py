"""The `serve-auth` engine: one process owns the policy and answers forwarded ZAP requests.

Why a daemon at all: ZAP is in-process (libzmq asks `inproc://zeromq.zap.01` in the server
socket's own context), so each application needs a ZAP handler; the daemon lets many
processes share one policy (watched stores, password files, address lists, domains) while
each keeps only a tiny fail-closed `ZapForwarder`.

Pieces: `curvecert.serve.service.ZapService` (the listening socket and its file
permissions), `curvecert.serve.livepolicy` (stores and password files behind one
`Policy`), `curvecert.serve.systemd.sd_notify`; this module drives them.

Lifecycle (`Daemon.run` in the main thread): signal handlers only call `request_stop()` /
`request_reload()`, which set a flag and write one byte to a wake-up socket pair polled
with the ZAP socket, so the loop reacts at once and does no work inside a handler. A
reload re-reads the configuration, builds a complete new policy and swaps it in; a bad
file keeps the old policy and logs why.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from curvecert.auth.authenticator import Authenticator
from curvecert.auth.decision import Decision, encode
from curvecert.auth.deferred import DeferredCalls
from curvecert.auth.pending import Pending
from curvecert.auth.policy import Policy, prepare
from curvecert.auth.providers import resolve_now
from curvecert.auth.records import decision_fields
from curvecert.certs.cert import Certificate
from curvecert.serve.config import BACKLOG, DaemonConfig, DomainConfig
from curvecert.serve.livepolicy import LivePolicy, build_policy
from curvecert.serve.reloader import Reloader
from curvecert.serve.reloading import Reloading
from curvecert.serve.service import FORWARDER_DOMAIN, ZapService, ipc_path
from curvecert.serve.systemd import sd_notify

__all__ = [
    "BACKLOG",
    "FORWARDER_DOMAIN",
    "Daemon",
    "LivePolicy",
    "ZapService",
    "build_policy",
    "ipc_path",
    "sd_notify",
]

_logger = logging.getLogger(__name__)


Sink = Callable[[Mapping[str, Any]], None]


class Daemon(Reloading):
    """`serve-auth`: a ZAP service (and optionally a gateway) driven by one configuration.

    `loader()` returns the configuration; it is called once at `start()` and again on every
    `request_reload()`. `on_decision(record)` receives one mapping per decision (time,
    domain, address, mechanism, status, user_id, reason; never a credential) and
    `on_stats(record)` the counters every `stats_interval` seconds. Run with:

        daemon = Daemon(loader, on_decision=...)
        daemon.start()            # binds; raises OperationalError / ConfigError
        try:
            daemon.run()          # until request_stop()
        finally:
            daemon.close()
    """

    def __init__(self, loader: Callable[[], DaemonConfig], *,
                 on_decision: Sink | None = None, on_stats: Sink | None = None,
                 on_ready: Callable[[str], None] | None = None, ops: Any = None):
        """Prepare; nothing is opened until `start()`.

        `ops` is an optional `curvecert.serve.live.Operations` (control channel, decision
        ring, metrics counters), called through a few hooks.
        """
        self.ops = ops
        self._loader = loader
        self._on_decision = on_decision
        self._on_stats = on_stats
        self._on_ready = on_ready
        self.config: DaemonConfig | None = None
        self.context: zmq.Context[Any] = zmq.Context()
        self._live: LivePolicy | None = None
        self._service: ZapService | None = None
        self._next_service: ZapService | None = None
        """The rotation overlap's second tcp:// endpoint (`next-zap-endpoint`), if any."""
        self._forwarder_auth: Authenticator | None = None
        self._forwarder_policy: LivePolicy | None = None
        self._gateway: Any = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._reloader: Reloader[tuple[DaemonConfig, LivePolicy]] = Reloader(self._build,
                                                                            self._wake)
        self._reloader.discard = lambda built: built[1].close()
        self._wake_r, self._wake_w = socket.socketpair()
        # PLAIN checks and providers answered later, off this loop (curvecert.auth.plainpool)
        self._deferred = DeferredCalls(self._wake)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.counters: dict[str, int] = {"requests": 0, "200": 0, "300": 0, "400": 0,
                                         "500": 0, "reloads": 0, "reload_errors": 0}
        self._counter_lock = threading.Lock()
        self.generation = 0
        """Incremented after every successful reload (tests wait on it)."""
        self.started_at = 0.0

    # --- control (safe from signal handlers and other threads) --------------------------

    def request_stop(self) -> None:
        """Ask `run()` to return; only sets a flag and wakes the loop."""
        self._stop.set()
        self._wake()

    def wakeup_fd(self) -> int:
        """A non-blocking fd for `signal.set_wakeup_fd`.

        Signals may land on any thread (store readers run several), and Python runs its handlers
        only in the main thread between bytecodes; while `run()` blocks in `poll` nothing
        would run them. With this fd as the wakeup fd, the C-level handler writes a byte
        that wakes the poll, and the Python handler runs right after.
        """
        return self._wake_w.fileno()

    def request_reload(self) -> None:
        """Ask `run()` to reload the configuration; only sets a flag and wakes the loop."""
        self._reload.set()
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the pipe is full: the loop is already awake
            pass

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Load the configuration, open the policy, bind the sockets, announce readiness."""
        cfg = self._loader()
        self.config = cfg
        self._live = build_policy(cfg.domains, etcd=cfg.etcd)
        ops = self.ops
        if cfg.zap_endpoint is not None:
            server_cert = None
            if cfg.zap_endpoint.startswith("tcp://"):
                assert cfg.server is not None  # config.validate guarantees it
                server_cert = _load_secret_cert(str(cfg.server.cert), "daemon certificate")
                self._forwarder_policy = build_policy((DomainConfig(
                    name=FORWARDER_DOMAIN, stores=(cfg.server.forwarders,),
                    mechanisms=("CURVE",), strict_modes=cfg.server.strict_modes),))
                self._forwarder_auth = Authenticator(
                    self.context, self._forwarder_policy.policy, log_decisions=False,
                    on_decision=lambda _request, decision: self._record_forwarder(decision))
                self._forwarder_auth.start()
            elif ipc_path(cfg.zap_endpoint) is not None:
                # ipc is CURVE too, with a key made for this run and published next to the
                # socket: forwarders pin it, so an impostor on the path never gets a request
                # (curvecert.serve.runtime). Access itself is the socket file's permissions.
                server_cert = Certificate.new()
            self._service = ZapService(self.context, cfg.zap_endpoint,
                                       ipc_group=cfg.ipc_group, server_cert=server_cert)
            self._service.bind()
            if cfg.next_zap_endpoint is not None and cfg.server is not None \
                    and cfg.server.next_cert is not None:  # docs/rotation.md
                self._next_service = ZapService(
                    self.context, cfg.next_zap_endpoint,
                    server_cert=_load_secret_cert(str(cfg.server.next_cert),
                                                  "daemon's next certificate"))
                self._next_service.bind()
        if cfg.gateway is not None:
            from curvecert.serve.overlap import gateway_from_config

            self._gateway = gateway_from_config(cfg.gateway, self._live.policy,
                                                on_decision=self._record)
            self._gateway.start()
            if ops is not None:  # a rotation overlap has one authenticator per front
                for auth in getattr(self._gateway, "authenticators",
                                    [self._gateway.authenticator]):
                    auth.metrics = ops.gateway_stats
        if ops is not None:
            ops.attach(self, self._service.socket if self._service is not None else None)
        self.started_at = time.monotonic()
        where = ", ".join(self.describe())
        if self._on_ready is not None:
            self._on_ready(where)
        sd_notify(f"READY=1\nSTATUS=serving on {where}\nMAINPID={os.getpid()}")

    def describe(self) -> list[str]:
        """Human-readable list of what is being served."""
        out = []
        if self._service is not None:
            out.append(self._service.bound or self._service.endpoint)
        if self._next_service is not None:
            out.append(self._next_service.bound or self._next_service.endpoint)
        if self._gateway is not None:
            out.append(self._gateway.describe())
        return out

    def run(self) -> None:
        """Serve until `request_stop()`; handles reloads and periodic counters."""
        poller = zmq.Poller()
        if self._service is not None and self._service.socket is not None:
            poller.register(self._service.socket, zmq.POLLIN)
        if self._next_service is not None and self._next_service.socket is not None:
            poller.register(self._next_service.socket, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        ops = self.ops
        for extra in ops.sockets() if ops is not None else ():
            poller.register(extra, zmq.POLLIN)
        cfg = self.config
        assert cfg is not None
        interval = cfg.stats_interval
        next_stats = time.monotonic() + interval if interval > 0 else None
        while not self._stop.is_set():
            timeout = None
            if next_stats is not None:
                timeout = max(0, int((next_stats - time.monotonic()) * 1000) + 1)
            later = self._deferred.timeout()
            if later is not None:
                ms = int(later * 1000) + 1 if later > 0 else 0
                timeout = ms if timeout is None else min(timeout, ms)
            events = dict(poller.poll(timeout))
            self._answer_due(self._deferred.due())
            if self._wake_r.fileno() in events:
                self._drain_wake()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                self._notify_reloading()
                self._reloader.request()  # built off the loop: a stuck reload stalls nothing
            done = self._reloader.take()
            if done is not None:
                self._reloaded(done)
            if self._service is not None and self._service.socket in events:
                self._service.serve_routed(functools.partial(self._respond, self._service))
            if self._next_service is not None and self._next_service.socket in events:
                self._next_service.serve_routed(
                    functools.partial(self._respond, self._next_service))
            if ops is not None:
                ops.serve(events)
            if next_stats is not None and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + interval
                if self._on_stats is not None:
                    self._on_stats(self.stats())
        sd_notify("STOPPING=1")

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        """Stop everything, remove the ipc socket file, and free the context.

        Bounded: a reload still being built is abandoned (its thread is a daemon thread),
        the gateway and authenticator threads are joined with timeouts.
        """
        self._reloader.close()
        if self.ops is not None:
            self.ops.close()
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        self._answer_due(self._deferred.close())
        if self._service is not None:
            self._service.close()
            self._service = None
        if self._next_service is not None:
            self._next_service.close()
            self._next_service = None
        if self._forwarder_auth is not None:
            self._forwarder_auth.stop()
            self._forwarder_auth = None
        for live in (self._live, self._forwarder_policy):
            if live is not None:
                live.close()
        self._live = self._forwarder_policy = None
        self.context.destroy(linger=0)
        self._wake_r.close()
        self._wake_w.close()

    # --- answering ----------------------------------------------------------------------

    def _respond(self, service: ZapService, envelope: list[bytes], body: list[bytes]
                 ) -> list[bytes] | None:
        live = self._live
        assert live is not None
        began = time.monotonic()
        request, outcome = prepare(live.policy, body)
        if type(outcome) is Pending:
            now = resolve_now(outcome)
            if now is None:
                self._deferred.start((service, envelope, request, body, began), outcome)
                return None
            outcome = now
        decision, reply = encode(request, outcome, body)  # type: ignore[arg-type]
        self._record(decision, time.monotonic() - began)
        return reply

    def _answer_due(self, due: list[tuple[Any, Pending, Decision]]) -> None:
        for (service, envelope, request, body, began), _pending, outcome in due:
            decision, reply = encode(request, outcome, body)
            service.send(envelope, reply)  # a closed service drops it
            self._record(decision, time.monotonic() - began)

    def live_policy(self) -> Policy | None:
        """The policy answering ZAP requests right now (None before `start()`)."""
        live = self._live
        return live.policy if live is not None else None

    def _record(self, decision: Decision, seconds: float | None = None) -> None:
        # Called from the main loop and from the gateway's authenticator thread.
        record = _decision_record(decision)
        if self.ops is not None:
            self.ops.record(decision, record, seconds)
        with self._counter_lock:
            self.counters["requests"] += 1
            if decision.status in self.counters:
                self.counters[decision.status] += 1
        if self._on_decision is not None:
            try:
                self._on_decision(record)
            except Exception:  # a broken log sink must not stop answering
                _logger.exception("decision log failed")

    def _record_forwarder(self, decision: Decision) -> None:
        if decision.status != "200":
            _logger.warning("refused a forwarder connection from %s (key %s): %s",
                            decision.address, decision.subject or "?", decision.reason)
        with self._counter_lock:
            key = "forwarders_admitted" if decision.status == "200" else "forwarders_refused"
            self.counters[key] = self.counters.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        """Counters since start (requests by status, reloads) and the uptime."""
        with self._counter_lock:
            out: dict[str, Any] = dict(self.counters)
        out["uptime_s"] = round(time.monotonic() - self.started_at, 1)
        if self._service is not None:
            out["dropped"] = self._service.dropped
        if self._gateway is not None:
            out.update({f"gateway_{k}": v for k, v in self._gateway.stats().items()})
        return out


def _decision_record(decision: Decision) -> dict[str, Any]:
    """`time` plus the audit fields of `curvecert.auth.records`; never a secret."""
    return {"time": round(time.time(), 6), **decision_fields(decision)}


def _load_secret_cert(path: str, what: str) -> Certificate:
    from curvecert.serve.overlap import load_server_cert  # a path or env:/fd:/cred:

    return load_server_cert(path, what)
