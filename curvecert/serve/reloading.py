"""What a `serve-auth` reload does, mixed into `curvecert.serve.daemon.Daemon`.

A reload loads the configuration and opens its stores (`_build`, run off the main loop by
`curvecert.serve.reloader.Reloader`), then swaps the new policy in on the loop (`_apply`).
Any failure at all, a `RecursionError` from a hostile configuration included, keeps the
running policy and is logged and counted (`_reload_failed`). Endpoints, the ipc group,
the server certificate and the gateway are kept: changing them needs a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from curvecert.errors import CurvecertError
from curvecert.serve.config import DaemonConfig
from curvecert.serve.livepolicy import LivePolicy, build_policy
from curvecert.serve.systemd import sd_notify

__all__ = ["Reloading"]

_logger = logging.getLogger("curvecert.serve.daemon")


class Reloading:
    """The reload steps of the daemon (see the module docstring)."""

    _loader: Callable[[], DaemonConfig]
    ops: Any
    counters: dict[str, int]
    config: DaemonConfig | None
    _live: LivePolicy | None
    _gateway: Any
    generation: int

    def reload(self) -> bool:
        """Re-read the configuration and swap in a new policy, in the calling thread; keep
        the old policy on any error (`run()` builds reloads off its loop instead)."""
        began = time.monotonic()
        self._notify_reloading()
        try:
            built = self._build()
        except Exception as exc:  # RecursionError from a hostile config too
            self._reload_failed(exc, began)
            return False
        self._apply(built, began)
        return True

    def _notify_reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def _build(self) -> tuple[DaemonConfig, LivePolicy]:
        """Load the configuration and open its stores (may block; runs off the loop)."""
        cfg = self._loader()
        return cfg, build_policy(cfg.domains, etcd=cfg.etcd)

    def _reloaded(self, done: tuple[Any, BaseException | None, float]) -> None:
        """Apply (or report) a reload built by the background `Reloader`."""
        built, error, began = done
        if error is not None or built is None:
            self._reload_failed(error or RuntimeError("no result"), began)
            return
        try:
            self._apply(built, began)
        except Exception as exc:  # pragma: no cover - defensive: keep serving
            built[1].close()
            self._reload_failed(exc, began)

    def _reload_failed(self, exc: BaseException, began: float) -> None:
        why = str(exc) if isinstance(exc, CurvecertError) else \
            f"{type(exc).__name__}: {str(exc)[:200]}"
        if self.ops is not None:
            self.ops.reloaded(False, time.monotonic() - began, why)
        self.counters["reload_errors"] += 1
        _logger.error("reload failed, keeping the previous policy: %s", why)
        sd_notify("READY=1\nSTATUS=reload failed; previous policy kept")

    def _apply(self, built: tuple[DaemonConfig, LivePolicy], began: float) -> None:
        cfg, live = built
        old = self.config
        assert old is not None
        for what in ("zap_endpoint", "ipc_group", "server", "gateway", "next_zap_endpoint"):
            if getattr(old, what) != getattr(cfg, what):
                _logger.warning("reload: %s changed; restart serve-auth to apply it",
                                what.replace("_", "-"))
        self.config = DaemonConfig(domains=cfg.domains, zap_endpoint=old.zap_endpoint,
                                   ipc_group=old.ipc_group, log_format=cfg.log_format,
                                   log_stream=cfg.log_stream,
                                   stats_interval=old.stats_interval, server=old.server,
                                   gateway=old.gateway,
                                   next_zap_endpoint=old.next_zap_endpoint, path=cfg.path,
                                   etcd=cfg.etcd)
        previous, self._live = self._live, live
        if self._gateway is not None:
            self._gateway.set_policy(live.policy)
        if previous is not None:
            previous.close()
        self.counters["reloads"] += 1
        self.generation += 1
        if self.ops is not None:
            self.ops.reloaded(True, time.monotonic() - began)
        _logger.info("configuration reloaded: %d domain(s)", len(cfg.domains))
        sd_notify("READY=1\nSTATUS=configuration reloaded")
