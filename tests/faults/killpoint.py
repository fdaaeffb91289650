"""Run the `curvecert` CLI and SIGKILL it just before its Nth file-system call in `fileio`.

    python -m tests.faults.killpoint ARGS...        # like `python -m curvecert ARGS...`

Every file curvecert writes goes through `curvecert.certs.fileio` (`atomic_write`) or, for
batches, `curvecert.store.bulk`, so wrapping those modules' `os` calls (open, fchmod, write,
fsync, close, replace, rename, link, unlink) enumerates every step of every write. With
`CURVECERT_KILL_TRACE=FILE` each call is
appended to FILE as one line (`op path-or-fd`); with `CURVECERT_KILL_AT=N` (N >= 1) the
process sends itself SIGKILL immediately before call N, which is a real `kill -9` at an
exact point of the write (no handler runs, no buffer is flushed, no `finally` executes).
"""

from __future__ import annotations

import os
import signal
import sys
import types
from typing import Any

__all__ = ["OPS", "main"]

OPS = ("open", "fchmod", "write", "fsync", "close", "replace", "rename", "link", "unlink")


def _instrument(kill_at: int, trace_path: str | None) -> None:
    import curvecert.certs.fileio as fileio
    import curvecert.store.bulk as bulk

    real = os
    trace_fd = real.open(trace_path, real.O_WRONLY | real.O_CREAT | real.O_APPEND, 0o600) \
        if trace_path else -1
    count = [0]

    class _Os(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    proxy = _Os("os")

    def wrap(op: str) -> Any:
        fn = getattr(real, op)

        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if trace_fd >= 0:
                what = args[0] if args else ""
                if isinstance(what, (str, bytes)):
                    what = os.path.basename(os.fsdecode(what))
                real.write(trace_fd, f"{op} {what}\n".encode())
            if count[0] == kill_at:
                real.kill(real.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)

        return call

    for op in OPS:
        setattr(proxy, op, wrap(op))
    fileio.os = proxy  # type: ignore[attr-defined]
    bulk.os = proxy  # type: ignore[attr-defined]


def main() -> None:
    """Instrument `curvecert.certs.fileio`, then run the CLI with `sys.argv[1:]`."""
    _instrument(int(os.environ.get("CURVECERT_KILL_AT", "0")),
                os.environ.get("CURVECERT_KILL_TRACE"))
    from curvecert.cli import main as cli_main

    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
