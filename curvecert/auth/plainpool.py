"""PLAIN password checks off the request path: one bounded pool for every KDF run.

Why: a hashed password check costs tens of milliseconds of CPU (argon2id, scrypt), and
unknown users pay it too (`curvecert.auth.pwtable`). Run on a ZAP handler's own thread,
400 anonymous wrong-password logins delayed a valid CURVE handshake by 10-13 s and made
`serve-auth` answer known CURVE clients 500. Here a check that needs a KDF becomes a
`Pending` decision (`curvecert.auth.policy`), like a provider call, and the thread and
asyncio authenticators and `serve-auth` hand it to this process-wide pool:

- `workers` threads (default: half the CPUs, at least one) at a lower CPU priority
  (nice 10, per thread on Linux), so PLAIN work leaves CPU to the handlers; every other
  request (CURVE, NULL, cached or clear-text PLAIN) is answered meanwhile;
- at most `queue` checks waiting (default 32 per worker). A PLAIN request arriving with
  the queue full is answered **500** at once (RFC 27 "internal error"): the server did
  not judge the credentials, so 400 ("denied") would be a false verdict, counted as a
  failed login by whoever watches the log. libzmq retries neither: the client sees the
  handshake fail and reconnects after its reconnect interval;
- a check still queued `PLAIN_TIMEOUT` seconds after it arrived is answered 500 and never
  started (libzmq's own handshake timeout, ZMQ_HANDSHAKE_IVL, is 30 s).

`decide`/`respond` (the synchronous core) still run the check inline.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from curvecert.auth.pending import Provider
from curvecert.auth.providers import WorkerPool
from curvecert.errors import ConfigError
from curvecert.formats import zap

__all__ = [
    "DEFAULT_QUEUE_PER_WORKER",
    "PLAIN_TIMEOUT",
    "configure",
    "default_workers",
    "hash_pool",
    "busy",
    "password_provider",
]

#: Seconds a PLAIN check may wait and run before its request is answered 500.
PLAIN_TIMEOUT = 5.0
#: Queue bound per worker thread when `configure` is not given one.
DEFAULT_QUEUE_PER_WORKER = 32

_lock = threading.Lock()
_pool: WorkerPool | None = None


def default_workers() -> int:
    """Half the CPUs, at least one: the handlers keep the other half."""
    return max(1, (os.cpu_count() or 2) // 2)


def hash_pool() -> WorkerPool:
    """The process-wide pool for KDF checks (threads start on first use)."""
    global _pool
    with _lock:
        if _pool is None:
            workers = default_workers()
            _pool = WorkerPool(workers, "curvecert-plain",
                               max_queue=workers * DEFAULT_QUEUE_PER_WORKER, nice=10)
        return _pool


def configure(*, workers: int | None = None, queue: int | None = None) -> None:
    """Change the pool's bounds (at once, for calls queued from now on): `workers` >= 1
    threads, at most `queue` >= 0 checks waiting. Raises `ConfigError` otherwise."""
    if workers is not None and (type(workers) is not int or workers < 1):
        raise ConfigError("the PLAIN pool needs at least one worker")
    if queue is not None and (type(queue) is not int or queue < 0):
        raise ConfigError("the PLAIN queue bound must be 0 or more")
    pool = hash_pool()
    with pool._cond:  # the same lock `run` takes
        if workers is not None:
            pool.max_workers = workers
        if queue is not None:
            pool.max_queue = queue


def _check(source: Any, request: zap.ZapRequest) -> object:
    user, password = request.credentials
    return source.check(user.decode("utf-8"), password)


def busy() -> bool:
    """True when the queue is full right now: a new PLAIN check would be refused (500)."""
    pool = _pool
    return pool is not None and pool.full


def password_provider(source: Any) -> Provider:
    """A provider that runs `source.check` in `hash_pool()` (made per request: a few
    microseconds, next to a KDF's milliseconds)."""
    return Provider(functools.partial(_check, source),  # type: ignore[arg-type]
                    name="password check",
                    timeout=PLAIN_TIMEOUT, pool=hash_pool())
