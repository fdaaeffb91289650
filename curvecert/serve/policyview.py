"""What a live policy holds, as plain data for `status`, `trusted`, `decisions` and metrics.

Read-only views of the policy the daemon answers with: its stores (directory or etcd) with
their health, size and next expiry, the keys they trust, and the certificate behind a key.
Nothing here touches a socket; `curvecert.serve.control` and `curvecert.serve.metrics` use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from curvecert.auth.keylookup import KeyChain
from curvecert.auth.policy import Policy
from curvecert.certs import keys
from curvecert.certs.validity import format_time
from curvecert.errors import CurvecertError
from curvecert.formats import z85

__all__ = ["certificate_of", "etcd_summary", "is_etcd_store", "policy_stores", "store_summary",
           "trusted_entries"]


def policy_stores(policy: Policy) -> Iterator[tuple[str, Any]]:
    """`(domain, store)` for every watched certificate store a policy reads from.

    A store is anything with `directory` and `snapshot` (a `CertStore`); key chains are
    walked, other key lookups and providers are skipped.
    """
    for name, dp in policy.domains.items():
        lookups: Iterable[Any] = dp.curve.lookups if isinstance(dp.curve, KeyChain) \
            else (dp.curve,)
        for item in lookups:
            if hasattr(item, "snapshot") and hasattr(item, "directory"):
                yield name, item


def is_etcd_store(store: Any) -> bool:
    """True for a live etcd store (`curvecert.store.etcd.EtcdStore`), told by its attributes
    so that directory-only processes never import the etcd modules."""
    return all(hasattr(store, a) for a in ("revision", "cluster_revision", "staleness",
                                           "reconnects", "full_reads"))


def etcd_summary(store: Any) -> dict[str, Any]:
    """The etcd state of a live etcd store (issue 17): revision, lag_seconds (None before
    the first confirmation), staleness_seconds (the bound), connected, reconnects,
    full_reads."""
    lag = store.lag
    return {"revision": int(store.revision),
            "lag_seconds": None if lag is None else round(float(lag), 3),
            "staleness_seconds": float(store.staleness), "connected": bool(store.connected),
            "reconnects": int(store.reconnects), "full_reads": int(store.full_reads)}


def store_summary(store: Any) -> dict[str, Any]:
    """Health and size of one store: path, backend, certificates, healthy, problem,
    generation, finding_count, next_expiry; for an etcd store also `etcd_summary`."""
    snap = store.snapshot
    soonest = getattr(snap, "next_expiry", None)  # issue 16: the earliest not-after to come
    etcd = is_etcd_store(store)
    out = {"path": store.directory, "backend": "etcd" if etcd else "directory",
           "certificates": len(snap), "healthy": snap.healthy,
           "problem": snap.problem, "generation": snap.generation,
           "finding_count": len(snap.findings),
           "next_expiry": None if soonest is None else format_time(soonest)}
    if etcd:
        out.update(etcd_summary(store))
    return out


def trusted_entries(policy: Policy, domain: str | None = None) -> list[dict[str, Any]]:
    """Every key the live snapshots trust (of one domain, or all), sorted by domain, file."""
    out = []
    for name, store in policy_stores(policy):
        if domain is not None and name != domain:
            continue
        for entry in store.snapshot:
            meta = entry.meta
            out.append({"domain": name, "name": meta.get("name"), "public_key": entry.public_txt,
                        "fingerprint": entry.fingerprint, "path": entry.file, "metadata": meta})
    out.sort(key=lambda e: (e["domain"], e["path"]))
    return out


def certificate_of(policy: Policy, domain: str, key_text: str) -> dict[str, Any]:
    """`{"name", "fingerprint"}` for a Z85 key under the live policy (name None if unknown)."""
    try:
        key = z85.decode(key_text)
    except (CurvecertError, ValueError):
        return {"name": None, "fingerprint": None}
    if len(key) != 32:
        return {"name": None, "fingerprint": None}
    name = None
    dp = policy.for_domain(domain)
    lookup = getattr(dp, "curve", None)
    try:
        entry = lookup.lookup(key) if lookup is not None and hasattr(lookup, "lookup") else None
        if entry is not None and hasattr(entry, "meta"):
            name = entry.meta.get("name")
    except Exception:  # a failing lookup only costs the name
        name = None
    return {"name": name, "fingerprint": keys.fingerprint(key)}
