"""Shared helpers of the load benchmark: limits, /proc sampling, the 100k-key cache.

The key cache is expensive to build (100k keypairs and 100k certificate files), so it is
written once into a directory outside the checkout and reused while its marker file says
it is complete for the requested size. It holds:

- `store/`: one public certificate per trusted key, as `curvecert store add` names them;
- `trusted.bin`: the raw keypairs of those certificates (32-byte public key then 32-byte
  secret key, 64 bytes a record, mode 0600), which the client workers use;
- `complete`: the number of keys, written last.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["DEFAULT_CACHE", "ROOT", "cpu_s", "ensure_cache", "fd_count", "heap_kb",
           "malloc_trim", "percentile", "raise_nofile", "read_keypairs", "rss_kb"]

DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / f"curvecert-load-cache-{os.getuid()}"
_RECORD = 64


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size of `pid` in KiB (VmRSS from /proc/PID/status); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def fd_count(pid: int | str = "self") -> int:
    """Number of open file descriptors of `pid` (entries in /proc/PID/fd); -1 if gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds used so far by `pid` (all its threads); 0.0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    return libc


_LIBC = _libc()


def heap_kb() -> dict[str, int]:
    """This process's malloc heap (all arenas, glibc): KiB in use and KiB free but kept.

    RSS counts freed memory that malloc keeps for reuse; a leak shows as growth of
    `in_use`, fragmentation as growth of `free`. Python objects: `sys.getallocatedblocks`.
    """
    out = {"py_blocks": sys.getallocatedblocks()}
    if _LIBC is not None:
        m = _LIBC.mallinfo2()
        out["malloc_in_use_kb"] = (m.uordblks + m.hblkhd) // 1024
        out["malloc_free_kb"] = m.fordblks // 1024
    return out


def malloc_trim() -> bool:
    """Ask glibc to give free heap memory back to the system; False when unavailable."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


def percentile(histogram: dict[int, int], q: float) -> int | None:
    """The `q` quantile (0..1) of a {value: count} histogram, or None when it is empty."""
    total = sum(histogram.values())
    if not total:
        return None
    want = q * (total - 1)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > want:
            return value
    return max(histogram)


def _write_store(store: Path, pairs: Iterable[tuple[bytes, bytes]]) -> None:
    from curvecert import store as storemod
    from curvecert.certs import certfile
    from curvecert.certs.cert import Certificate

    store.mkdir(parents=True, exist_ok=True)
    for i, (pub, _sec) in enumerate(pairs):
        cert = Certificate.from_public(pub, [("name", f"load-{i:06d}")])
        (store / storemod.store_filename(pub)).write_text(certfile.dump(cert, secret=False))


def ensure_cache(cache: Path, n: int, log: bool = True) -> tuple[Path, Path]:
    """The (store directory, keypair file) for `n` trusted keys, built if missing."""
    import shutil

    import zmq

    from curvecert.formats import z85

    store, blob, marker = cache / "store", cache / "trusted.bin", cache / "complete"
    try:
        if int(marker.read_text()) == n and blob.stat().st_size == n * _RECORD:
            return store, blob
    except (OSError, ValueError):
        pass
    if log:
        print(f"building the {n}-key cache in {cache} (once) ...", file=sys.stderr, flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, mode=0o700)
    pairs = []
    for _ in range(n):
        pub_txt, sec_txt = zmq.curve_keypair()
        pairs.append((z85.decode(pub_txt.decode("ascii")), z85.decode(sec_txt.decode("ascii"))))
    fd = os.open(blob, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        for pub, sec in pairs:
            fh.write(pub + sec)
    _write_store(store, pairs)
    marker.write_text(str(n))
    return store, blob


def read_keypairs(blob: Path, start: int = 0, stop: int | None = None
                  ) -> list[tuple[bytes, bytes]]:
    """Keypairs `[start:stop]` from the cache's keypair file, as (public, secret) bytes."""
    with open(blob, "rb") as fh:
        fh.seek(start * _RECORD)
        data = fh.read(-1 if stop is None else (stop - start) * _RECORD)
    return [(data[i:i + 32], data[i + 32:i + 64]) for i in range(0, len(data), _RECORD)]
