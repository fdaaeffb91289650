"""Serving two server keys at once: the overlap period of a key rotation (docs/rotation.md).

libzmq gives a socket exactly one CURVE key pair (`ZMQ_CURVE_SECRETKEY`), and a client
pins exactly one server key (`ZMQ_CURVE_SERVERKEY`), so one endpoint cannot answer
handshakes for two keys. During a rotation curvecert therefore binds one front socket per
key, each on its own endpoint: the current key where clients connect today, the next key
on a second endpoint (another port, or another address on the same port). A client moves
by changing its server key *and* endpoint together; nothing else changes for it.

`GatewayGroup` runs one `Gateway` per key (each with its own context and authenticator,
all answering with the same live policy) and presents the interface the daemon uses for a
single gateway. `load_server_cert` reads a server's secret certificate from a path or a
secret reference (`curvecert.certs.secretsource`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import TracebackType

from curvecert.auth.decision import Decision
from curvecert.auth.policy import Policy
from curvecert.certs import secretsource
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError
from curvecert.serve.config import GatewayConfig
from curvecert.serve.gateway import Gateway

__all__ = ["GatewayGroup", "gateway_from_config", "load_server_cert"]


def load_server_cert(ref: str | os.PathLike[str], what: str) -> Certificate:
    """The secret certificate at a path or secret reference (`env:`, `fd:`, `cred:` ...).

    Raises `ConfigError`/`CertificateError`/`OperationalError`; messages never hold the key.
    """
    cert = secretsource.load_secret(os.fspath(ref))
    if not cert.has_secret:  # pragma: no cover - load_secret refuses public certificates
        raise ConfigError(f"{os.fspath(ref)}: the {what} must be a secret certificate")
    return cert


class GatewayGroup:
    """Several gateways with one back end and one policy: one front socket per server key.

    Same interface as `Gateway` for `start`, `stop`, `set_policy`, `describe` and `stats`;
    `gateways[0]` serves the current key, `gateways[1]` (if any) the next one.
    """

    def __init__(self, gateways: Sequence[Gateway]):
        """Group already-built gateways (at least one)."""
        if not gateways:
            raise ConfigError("a gateway group needs at least one gateway")
        self.gateways = list(gateways)

    @property
    def authenticator(self) -> object:
        """The first gateway's authenticator (the current key's front)."""
        return self.gateways[0].authenticator

    @property
    def authenticators(self) -> list[object]:
        """Every front's authenticator (for metrics hooks), current key first."""
        return [g.authenticator for g in self.gateways]

    @property
    def front_endpoint(self) -> str | None:
        """The current key's bound front endpoint."""
        return self.gateways[0].front_endpoint

    @property
    def front_endpoints(self) -> list[str | None]:
        """Every bound front endpoint, current key first."""
        return [g.front_endpoint for g in self.gateways]

    def describe(self) -> str:
        """`gateway FRONT [+ FRONT2] -> BACK (pattern)`."""
        first = self.gateways[0]
        fronts = " + ".join(str(g.front_endpoint or g.front) for g in self.gateways)
        return f"gateway {fronts} -> {first.back} ({first.pattern})"

    def start(self) -> GatewayGroup:
        """Start every gateway; if one cannot bind, stop those already started and raise."""
        started: list[Gateway] = []
        try:
            for g in self.gateways:
                g.start()
                started.append(g)
        except BaseException:
            for g in started:
                g.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every gateway (safe to call twice)."""
        for g in self.gateways:
            g.stop()

    def set_policy(self, policy: Policy) -> None:
        """Use `policy` for later handshakes on every front."""
        for g in self.gateways:
            g.set_policy(policy)

    def stats(self) -> dict[str, int]:
        """Relay counters summed over the fronts, plus `current_front_in_msgs` and
        `next_front_in_msgs`: messages received on each key's front (during a rotation,
        the first stops growing once every client has switched)."""
        total: dict[str, int] = {}
        for role, g in zip(("current", "next"), self.gateways, strict=False):
            counters = g.stats()
            for name, value in counters.items():
                total[name] = total.get(name, 0) + value
            total[f"{role}_front_in_msgs"] = counters.get("front_in_msgs", 0)
        return total

    def __enter__(self) -> GatewayGroup:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def gateway_from_config(cfg: GatewayConfig, policy: Policy, *,
                        on_decision: Callable[[Decision], None] | None = None
                        ) -> Gateway | GatewayGroup:
    """The gateway of a `[gateway]` table: a plain `Gateway` for one key, a `GatewayGroup`
    when `next-front`/`next-server-cert` add a second key (rotation overlap)."""
    cert = load_server_cert(cfg.server_cert, "gateway's server certificate")
    first = Gateway(cfg.front, cfg.back, cfg.pattern, cert, policy, domain=cfg.domain,
                    on_decision=on_decision)
    next_front = getattr(cfg, "next_front", None)
    next_cert = getattr(cfg, "next_server_cert", None)
    if next_front is None or next_cert is None:
        return first
    cert2 = load_server_cert(next_cert, "gateway's next server certificate")
    if cert2.public_key == cert.public_key:
        raise ConfigError("gateway: next-server-cert holds the same key as server-cert")
    second = Gateway(next_front, cfg.back, cfg.pattern, cert2, policy, domain=cfg.domain,
                     on_decision=on_decision)
    return GatewayGroup([first, second])
