"""`Operations`: what `serve-auth` knows about itself, for the control channel and metrics.

The daemon passes one `Operations` object in and calls four small hooks:

- `attach(daemon, zap_socket)` once its sockets are bound (the control socket is bound
  here, as a `ZapService` like the ZAP socket: same permission-safe ipc bind; a monitor
  on the ZAP socket counts forwarder connections);
- `sockets()` to add to its poller, and `serve(events)` after each poll (answers control
  requests, reads monitor events; never raises);
- `record(decision, record, seconds)` per decision (a ring append and a few counter
  increments: the hot path);
- `reloaded(ok, seconds, error)` after each reload attempt.

It then implements `ControlState` (`status()`, `live_policy()`) and feeds
`curvecert.serve.metrics` (`metrics_sources()`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from curvecert.auth.decision import Decision
from curvecert.auth.policy import Policy
from curvecert.auth.stats import DecisionStats
from curvecert.errors import OperationalError
from curvecert.serve.control import (
    DEFAULT_RING,
    ControlHandler,
    DecisionRing,
    check_runtime_dir,
    iso_time,
    policy_stores,
    store_summary,
)
from curvecert.serve.metrics import Sources
from curvecert.serve.service import ZapService

__all__ = ["Operations"]

_logger = logging.getLogger(__name__)
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


class Operations:
    """The daemon's self-knowledge: decision ring, counters, reloads, control socket."""

    def __init__(self, control_endpoint: str | None, *, required: bool = True,
                 ring_size: int = DEFAULT_RING):
        """`control_endpoint` is `ipc://PATH`, or None for no control channel. When it was
        not asked for explicitly (`required=False`), a control socket that cannot be bound
        (in use by another daemon, unsafe directory) is logged and skipped."""
        self.control_endpoint = control_endpoint
        self.control_required = required
        self.ring = DecisionRing(ring_size)
        self.zap_stats = DecisionStats()
        """Decisions of the daemon's ZAP socket (the main thread counts them)."""
        self.gateway_stats = DecisionStats()
        """Decisions of the gateway's authenticator (its thread counts them)."""
        self.reloads = {"ok": 0, "error": 0, "last_time": time.time(), "last_duration": 0.0}
        self.last_reload_error: str | None = None
        self.connected = 0
        self.seen = 0
        self.metrics_address: str | None = None
        self.started = time.time()
        self._daemon: Any = None
        self._control: ZapService | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._zap_socket: zmq.Socket[Any] | None = None
        self._handler = ControlHandler(self)

    # --- hooks ----------------------------------------------------------------------------

    def attach(self, daemon: Any, zap_socket: zmq.Socket[Any] | None) -> None:
        """Bind the control socket (a `ZapService`: same permission-safe ipc bind as the
        ZAP socket) and watch `zap_socket`'s connections.

        Raises `OperationalError` when the control socket cannot be bound or its directory
        is unsafe (group/other-writable, someone else's).
        """
        self._daemon = daemon
        self.started = time.time()
        if self.control_endpoint is not None:
            try:
                check_runtime_dir(self.control_endpoint[len("ipc://"):])
                service = ZapService(daemon.context, self.control_endpoint)
                service.bind()
            except OperationalError as exc:
                if self.control_required:
                    raise
                _logger.warning("no control channel: %s (give --control ipc://PATH)", exc)
                self.control_endpoint = None
            else:
                self._control = service
        if zap_socket is not None:
            self._zap_socket = zap_socket
            self._monitor = zap_socket.get_monitor_socket(_MONITOR_EVENTS)

    def sockets(self) -> list[zmq.Socket[Any]]:
        """Sockets the daemon polls for us."""
        control = self._control.socket if self._control is not None else None
        return [s for s in (control, self._monitor) if s is not None]

    def serve(self, events: Mapping[Any, int]) -> None:
        """Answer control requests and read connection events that are ready."""
        control = self._control
        if control is not None and control.socket in events:
            control.serve_ready(self._handler.respond)
        if self._monitor is not None and self._monitor in events:
            self._read_monitor(self._monitor)

    def record(self, decision: Decision, record: Mapping[str, Any],
               seconds: float | None) -> None:
        """One decision: into the ring, and counted (ZAP when `seconds` is given, else
        the gateway's, whose authenticator counts latency itself)."""
        self.ring.append(record)
        if seconds is not None:
            self.zap_stats.record(decision, seconds)

    def reloaded(self, ok: bool, seconds: float, error: str | None = None) -> None:
        """After a reload attempt (`error` is a one-line reason)."""
        self.reloads["ok" if ok else "error"] += 1
        self.reloads["last_duration"] = seconds
        if ok:
            self.reloads["last_time"] = time.time()
        self.last_reload_error = None if ok else error

    def close(self) -> None:
        """Close our sockets (the daemon removes the control socket file)."""
        if self._monitor is not None:
            if self._zap_socket is not None:
                try:
                    self._zap_socket.disable_monitor()
                except zmq.ZMQError:
                    pass
            self._monitor.close(linger=0)
            self._monitor = None
        if self._control is not None:
            self._control.close()  # also removes the socket file
            self._control = None

    # --- serving ------------------------------------------------------------------------

    def _read_monitor(self, mon: zmq.Socket[Any]) -> None:
        while True:
            try:
                event = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            except Exception as exc:  # a malformed monitor message: ignore it
                _logger.debug("unreadable monitor event: %s", type(exc).__name__)
                continue
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.connected += 1
                self.seen += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = max(0, self.connected - 1)

    # --- ControlState -------------------------------------------------------------------

    def live_policy(self) -> Policy:
        """The policy answering requests now."""
        daemon = self._daemon
        policy = daemon.live_policy() if daemon is not None else None
        return policy if policy is not None else Policy()

    def decisions_by_mechanism(self) -> dict[str, dict[str, int]]:
        """ZAP and gateway decisions since start, `{mechanism: {status: n}}`."""
        out: dict[str, dict[str, int]] = {}
        for stats in (self.zap_stats, self.gateway_stats):
            for mech, row in stats.by_mechanism().items():
                acc = out.setdefault(mech, {})
                for status, n in row.items():
                    acc[status] = acc.get(status, 0) + n
        return out

    def status(self) -> dict[str, Any]:
        """The `status` result (schema `curvecert/schemas/status.json`)."""
        daemon = self._daemon
        policy = self.live_policy()
        problems: list[str] = []
        findings: list[dict[str, Any]] = []
        by_domain: dict[str, list[dict[str, Any]]] = {}
        for domain, store in policy_stores(policy):
            summary = store_summary(store)
            by_domain.setdefault(domain, []).append(summary)
            if not summary["healthy"]:
                problems.append(f"store {summary['path']}: {summary['problem']}")
            findings.extend(f.to_dict() for f in store.snapshot.findings)
        if self.last_reload_error is not None:
            problems.append(f"last reload failed: {self.last_reload_error}")
        domains = []
        cfg = getattr(daemon, "config", None)
        for dom in getattr(cfg, "domains", ()):
            mechs = list(dom.mechanisms) if dom.mechanisms is not None else ["CURVE", "PLAIN"]
            domains.append({"name": dom.name, "mechanisms": mechs, "curve": dom.curve,
                            "stores": by_domain.get(dom.name, [])})
        stats = daemon.stats() if daemon is not None else {}
        described = daemon.describe() if daemon is not None else []
        gateway = next((d for d in described if d.startswith("gateway ")), None)
        zap = next((d for d in described if not d.startswith("gateway ")), None)
        out: dict[str, Any] = {
            "healthy": not problems, "problems": problems, "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3), "time": iso_time(time.time()),
            "started": iso_time(self.started),
            "generation": int(getattr(daemon, "generation", 0)),
            "endpoints": {"zap": zap, "control": self.control_endpoint,
                          "gateway": gateway, "metrics": self.metrics_address},
            "domains": domains, "findings": findings,
            "decisions": self.decisions_by_mechanism(),
            "forwarders": {"connected": self.connected, "seen": self.seen,
                           "refused": int(stats.get("forwarders_refused", 0))},
        }
        relayed = {k[len("gateway_"):]: int(v) for k, v in stats.items()
                   if k.startswith("gateway_") and isinstance(v, int)}
        if relayed:
            out["gateway"] = relayed
        return out

    def metrics_sources(self) -> Sources:
        """What `curvecert.serve.metrics.CurvecertCollector` reads for the daemon."""
        def gateway() -> dict[str, int]:
            stats = self._daemon.stats() if self._daemon is not None else {}
            return {"relayed_front": int(stats.get("gateway_back_out_msgs", 0)),
                    "relayed_back": int(stats.get("gateway_front_out_msgs", 0)),
                    "dropped_revoked": int(stats.get("gateway_dropped_revoked", 0))}

        return Sources(stats=[self.zap_stats, self.gateway_stats], policy=self.live_policy,
                       reloads=lambda: self.reloads, gateway=gateway)
