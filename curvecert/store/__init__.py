"""The trust store: immutable snapshots keyed by public key, scanning, add/remove, watching.

`from curvecert import store` gives the whole public surface of the package:

- `store.scan(directory)` -> `Snapshot` (`lookup`, iteration, `findings`, `healthy`);
  `Scanner` for repeated and incremental scans (`curvecert.store.scan`);
- `add_certificate`, `remove`, `resolve`, `store_filename`, `default_directory`
  (`curvecert.store.commands`);
- `CertStore`, the watched live store (`curvecert.store.watch`; imported on first use,
  since it loads watchdog).

Modules: `snapshot` (data model), `files` (what a store file is and how it is read),
`fastparse` (the certificate parser), `scan`, `commands`, `watch`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curvecert.store.commands import (
    add_certificate,
    default_directory,
    remove,
    resolve,
    store_filename,
)
from curvecert.store.fastparse import parse_public
from curvecert.store.files import CZMQ_METADATA_LIMIT, MAX_FILE_SIZE, is_ignored_name
from curvecert.store.scan import ScanCancelled, Scanner, scan
from curvecert.store.snapshot import Entry, Severity, Snapshot, StoreFinding

if TYPE_CHECKING:
    from curvecert.store.watch import CertStore

__all__ = [
    "CZMQ_METADATA_LIMIT",
    "MAX_FILE_SIZE",
    "CertStore",
    "Entry",
    "ScanCancelled",
    "Scanner",
    "Severity",
    "Snapshot",
    "StoreFinding",
    "add_certificate",
    "default_directory",
    "is_ignored_name",
    "parse_public",
    "remove",
    "resolve",
    "scan",
    "store_filename",
]


def __getattr__(name: str) -> Any:
    """`CertStore` on first use (keeps watchdog out of processes that only scan)."""
    if name == "CertStore":
        from curvecert.store.watch import CertStore

        return CertStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
