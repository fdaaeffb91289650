"""The daemon's live policy: a `Policy` plus the watched stores and password files it reads.

Why apart from the daemon: a reload builds a complete new `LivePolicy` from the
configuration before anything is swapped, so a bad file leaves the running one alone; the
gateway and the daemon's ZAP service share it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from curvecert.auth.addresses import AddressFilter
from curvecert.auth.keylookup import KeyChain, KeyLookup, UnsafeAllowAny
from curvecert.auth.passwords import PasswordFile
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.serve.config import DomainConfig
from curvecert.store.backend import StoreBackend, open_store
from curvecert.store.etcdurl import EtcdOptions

__all__ = ["LivePolicy", "build_policy"]

_logger = logging.getLogger("curvecert.serve.daemon")


@dataclass
class LivePolicy:
    """A policy plus the live parts (watched stores, password files) it reads from."""

    policy: Policy
    stores: list[StoreBackend] = field(default_factory=list)
    passwords: list[PasswordFile] = field(default_factory=list)

    def close(self) -> None:
        """Stop the store watchers (the policy must no longer be in use)."""
        for store in self.stores:
            try:
                store.stop()
            except Exception:  # pragma: no cover - best effort on shutdown
                _logger.exception("stopping a certificate store watcher failed")


def build_policy(domains: tuple[DomainConfig, ...], *,
                 etcd: EtcdOptions | None = None) -> LivePolicy:
    """Open the stores and password files of `domains` and build one `Policy`.

    Everything is opened before anything is returned: on any error the watchers started
    so far are stopped and the error is raised, so a reload either fully succeeds or
    leaves the running policy alone.
    """
    live = LivePolicy(policy=Policy())
    try:
        built: dict[str, DomainPolicy] = {}
        for dom in domains:
            stores = []
            for directory in dom.stores:
                # a directory or an etcd:// URL (which has no file modes: strict_modes
                # applies to directories only)
                store = open_store(directory, etcd=etcd, strict_modes=dom.strict_modes)
                live.stores.append(store)
                stores.append(store)
            passwords = None
            if dom.passwords is not None:
                passwords = PasswordFile(dom.passwords)
                live.passwords.append(passwords)
            built[dom.name] = _domain_policy(dom, stores, passwords)
        live.policy = Policy(built)
    except BaseException:
        live.close()
        raise
    return live


def _domain_policy(dom: DomainConfig, stores: list[StoreBackend],
                   passwords: PasswordFile | None) -> DomainPolicy:
    mechs = dom.mechanisms
    curve: UnsafeAllowAny | KeyLookup | None = None
    if mechs is None or "CURVE" in mechs:
        if dom.curve == "unsafe-allow-any":
            _logger.warning("domain %r: CURVE accepts ANY client key (unsafe-allow-any): "
                            "traffic is encrypted but nobody is authenticated", dom.name)
            curve = UnsafeAllowAny()
        elif len(stores) == 1:
            curve = stores[0]
        elif stores:
            curve = KeyChain(stores)
    plain = passwords if mechs is None or "PLAIN" in mechs else None
    return DomainPolicy(null=mechs is not None and "NULL" in mechs, plain=plain, curve=curve,
                        addresses=AddressFilter.of(dom.allow, dom.deny), user_id=dom.user_id)
