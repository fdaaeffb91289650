"""`Gateway`: Ironhouse in front of an unmodified ZeroMQ application.

Why: an application in any language that only speaks plain ZeroMQ on a local socket can
be reached from the network through a gateway that owns the CURVE-secured front socket
(with its own server certificate), authenticates every peer with a curvecert policy (an
`Authenticator` on the gateway's own context) and relays messages to the application's
plain socket on loopback or ipc. The application changes nothing but its bind address.

Shapes (`pattern`), the front always bound with CURVE, the back connecting to the app:

| pattern | remote peers | front | back | application socket (binds) |
| --- | --- | --- | --- | --- |
| `push-pull` | PUSH | PULL | PUSH | PULL |
| `router-dealer` | REQ / DEALER | ROUTER | DEALER | REP / ROUTER |
| `pub-sub` | PUB (publishers) | XSUB | XPUB | SUB |
| `pub-sub-out` | SUB (subscribers) | XPUB | XSUB | PUB |

Messages are relayed by `curvecert.serve.gatewayrelay.GatewayRelay` on a thread of its own,
which drops front messages from peers the live policy no longer admits (revocation that
reaches open connections); `stop()` sends it `TERMINATE` over a control socket, so it
ends promptly. ZAP metadata (`User-Id`) belongs to the front connection and does not
travel through a relay: an application behind a gateway sees the gateway, not the client
(put identity in the payload if it needs it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from curvecert.auth.authenticator import Authenticator
from curvecert.auth.decision import Decision
from curvecert.auth.policy import Policy
from curvecert.auth.recheck import Rechecker
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats.zap import ZapRequest
from curvecert.serve.config import BACKLOG, GATEWAY_PATTERNS, GatewayConfig
from curvecert.serve.gatewayrelay import GatewayRelay

__all__ = ["PATTERNS", "Gateway"]

_logger = logging.getLogger(__name__)

#: pattern -> (front socket type, back socket type)
PATTERNS: dict[str, tuple[int, int]] = {
    "push-pull": (zmq.PULL, zmq.PUSH),
    "router-dealer": (zmq.ROUTER, zmq.DEALER),
    "pub-sub": (zmq.XSUB, zmq.XPUB),
    "pub-sub-out": (zmq.XPUB, zmq.XSUB),
}
assert set(PATTERNS) == set(GATEWAY_PATTERNS)


class Gateway:
    """A CURVE-secured front socket relayed to an application's plain socket.

    `Gateway(front, back, pattern, server_cert, policy)`; `start()` binds the front (raises
    `OperationalError` if it cannot) and returns once relaying; `stop()` ends the relay and
    the authenticator. `set_policy()` swaps the policy for later handshakes.
    """

    def __init__(self, front: str, back: str, pattern: str, server_cert: Certificate,
                 policy: Policy, *, domain: str = "",
                 on_decision: Callable[[Decision], None] | None = None):
        """Prepare; nothing is bound until `start()`."""
        if pattern not in PATTERNS:
            raise ConfigError(f"gateway pattern {pattern!r} is not one of "
                              f"{', '.join(PATTERNS)}")
        if not server_cert.has_secret:
            raise ConfigError("the gateway's server certificate must include its secret key")
        self.front = front
        self.back = back
        self.pattern = pattern
        self.domain = domain
        self._cert = server_cert
        self.context: zmq.Context[Any] = zmq.Context()
        # revocation (issue 15): admitted User-Ids arm the relay's per-message check
        self.rechecker = Rechecker(policy, domain)
        admit, sink = self.rechecker.admit, on_decision

        def hook(request: ZapRequest | None, decision: Decision) -> None:
            if decision.status == "200":
                admit(decision.user_id.decode("utf-8", "replace"))
            if sink is not None:
                sink(decision)
        self.authenticator = Authenticator(self.context, policy, log_decisions=False,
                                           on_decision=hook)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._control: zmq.Socket[Any] | None = None
        self._control_addr = f"inproc://curvecert-gateway-{os.getpid()}-{id(self):x}"
        self._relay: GatewayRelay | None = None
        self.front_endpoint: str | None = None
        """The front's bound endpoint (a wildcard port resolved), after `start()`."""

    @classmethod
    def from_config(cls, cfg: GatewayConfig, policy: Policy, *,
                    on_decision: Callable[[Decision], None] | None = None) -> Gateway:
        """A gateway from a `[gateway]` table (the server certificate is loaded here)."""
        from curvecert.certs.secretsource import load_secret  # a path or env:/fd:/cred:

        cert = load_secret(os.fspath(cfg.server_cert))
        return cls(cfg.front, cfg.back, cfg.pattern, cert, policy, domain=cfg.domain,
                   on_decision=on_decision)

    def describe(self) -> str:
        """`gateway FRONT -> BACK (pattern)`, for logs and the readiness line."""
        return f"gateway {self.front_endpoint or self.front} -> {self.back} ({self.pattern})"

    def set_policy(self, policy: Policy) -> None:
        """Use `policy` for every later handshake on the front socket."""
        self.authenticator.set_policy(policy)
        self.rechecker.set_policy(policy)

    def start(self) -> Gateway:
        """Start the authenticator, bind the front, connect the back, start relaying."""
        self.authenticator.start()  # before the front binds: CURVE without ZAP admits all
        control = self.context.socket(zmq.PAIR)
        control.linger = 0
        control.bind(self._control_addr)
        self._control = control
        self._thread = threading.Thread(target=self._run, name="curvecert-gateway",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            self._shutdown()
            raise OperationalError(f"gateway cannot bind {self.front} / connect "
                                   f"{self.back}: {self._error}") from self._error
        _logger.info("%s: relaying", self.describe())
        return self

    def _run(self) -> None:
        front_type, back_type = PATTERNS[self.pattern]
        front = self.context.socket(front_type)
        back = self.context.socket(back_type)
        pipe = self.context.socket(zmq.PAIR)
        for s in (front, back, pipe):
            s.linger = 0
        try:
            front.setsockopt(zmq.BACKLOG, BACKLOG)
            self._cert.apply_server(front)
            if self.domain:
                front.zap_domain = self.domain.encode("utf-8")
            front.bind(self.front)
            self.front_endpoint = front.last_endpoint.decode()
            back.connect(self.back)
            pipe.connect(self._control_addr)
        except (zmq.ZMQError, ValueError) as exc:
            self._error = exc
            for s in (front, back, pipe):
                s.close(linger=0)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._relay = GatewayRelay(front, back, pipe, self.rechecker, gated=True)
            self._relay.run()
        except zmq.ZMQError as exc:  # pragma: no cover - context torn down under us
            if exc.errno != zmq.ETERM:
                _logger.exception("gateway relay failed")
        finally:
            for s in (front, back, pipe):
                s.close(linger=0)

    def stats(self) -> dict[str, int]:
        """Message counters of the relay (`GatewayRelay.stats`), dropped ones included."""
        relay = self._relay
        return relay.stats() if relay is not None else {}

    def stop(self) -> None:
        """Stop relaying and authenticating; safe to call twice; never hangs."""
        thread, control = self._thread, self._control
        if thread is not None and control is not None:
            try:
                control.send(b"TERMINATE", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            thread.join(5.0)
            if thread.is_alive():  # pragma: no cover
                _logger.error("gateway relay did not stop within 5 s")
        self._thread = None
        self._shutdown()

    def _shutdown(self) -> None:
        if self._control is not None:
            self._control.close(linger=0)
            self._control = None
        self.authenticator.stop()
        self.context.destroy(linger=0)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
