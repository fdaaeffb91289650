"""One file of a store: which names are read, how a file is opened, read and judged.

What is read (CZMQ's and pyzmq's stores, both):

- every regular file in the directory and its sub-directories, whatever its name (CZMQ),
  which includes pyzmq's `*.key`; symbolic links to files are followed (Kubernetes mounts
  are made of them), symbolic links to directories are not (loops; watchers cannot see
  into them);
- skipped: names starting with `.` (dot-files and dot-directories, so Kubernetes'
  `..data` and `..<timestamp>` are never read twice), `*_secret` (CZMQ and pyzmq secret
  files), and editor or tool temporaries `*~`, `*.swp`, `*.swo`, `*.swx`, `*.tmp`, `#*#`.

What is trusted: a file that parses as a certificate (the full ZPL grammar,
`curvecert.formats.zpl`) with a valid public key and no secret key. Anything else becomes a
`StoreFinding` and is never trusted: a file that does not parse, a file holding a secret
key, a file that cannot be read, a file over `MAX_FILE_SIZE`.

A file is opened with `O_NONBLOCK` (a FIFO swapped in between listing and opening must
not hang the reader) and `fstat`-ed before anything is read from it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct

from curvecert.errors import CertificateError, CurvecertError, ZplSyntaxError
from curvecert.store.fastparse import SECRET_REASON, encode_meta, fast_parse, parse_public
from curvecert.store.snapshot import Scanned, Severity, StoreFinding, make_record

__all__ = ["CZMQ_METADATA_LIMIT", "MAX_FILE_SIZE", "FileReader", "is_ignored_name",
           "make_finding", "parse_data", "sig_of"]

_logger = logging.getLogger(__name__)

#: A certificate file is a few hundred bytes; anything over this is refused unread.
MAX_FILE_SIZE = 1 << 20
#: CZMQ 4.2 zauth copies metadata into a fixed 512-byte buffer (CZMQ.md, zauth): warn above.
CZMQ_METADATA_LIMIT = 512

# O_NONBLOCK: a FIFO swapped in between readdir and open must not hang the scan.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
SKIP_SUFFIXES = (b"_secret", b"~", b".swp", b".swo", b".swx", b".tmp")
_M64 = (1 << 64) - 1
_SIG = struct.Struct("<QQQQ").pack


def is_ignored_name(name: str | bytes) -> bool:
    """True for a directory entry the store skips: dot-names, `*_secret`, editor temporaries."""
    b = os.fsencode(name)
    return (not b or b[0] == 0x2E or b.endswith(SKIP_SUFFIXES)
            or (len(b) > 1 and b[0] == 0x23 and b[-1] == 0x23))


def sig_of(st: os.stat_result) -> bytes:
    """The stat signature `(inode, size, mtime_ns, ctime_ns)` packed in 32 bytes."""
    try:
        return _SIG(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except struct.error:  # a time before 1970 or after 2554: keep the low 64 bits
        return _SIG(st.st_ino & _M64, st.st_size & _M64, st.st_mtime_ns & _M64,
                    st.st_ctime_ns & _M64)


def make_finding(dir_b: bytes, rel: bytes, code: str, message: str, *,
                 line: int | None = None, severity: Severity = "error") -> StoreFinding:
    """A finding about `rel` (relative to the store directory `dir_b`)."""
    return StoreFinding(os.fsdecode(os.path.join(dir_b, rel)), line or None, code, message,
                        severity)


class FileReader:
    """Reads files of one store directory into scan results; counts the files it parsed."""

    def __init__(self, dir_b: bytes):
        """`dir_b`: the store directory (absolute, as bytes)."""
        self._dir_b = dir_b
        self.parsed = 0  #: files parsed so far (tests use it to prove the stat cache works)

    def read(self, path: bytes, rel: bytes) -> Scanned | None:
        """Open, stat, read and parse one file; None if it is not a regular file (any more)."""
        dir_b = self._dir_b
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None  # vanished, or a dangling/looping link: nothing to trust
            return (rel, None, None, None, (make_finding(
                dir_b, rel, "unreadable", f"cannot open: {exc.strerror or exc}"),))
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000:  # not S_ISREG (inlined: hot loop)
                if stat.S_ISDIR(st.st_mode):
                    _logger.debug("%s: symbolic link to a directory; not followed",
                                  os.fsdecode(path))
                return None
            sig = sig_of(st)
            if st.st_size > MAX_FILE_SIZE:
                return (rel, sig, None, None, (make_finding(
                    dir_b, rel, "too-large",
                    f"{st.st_size} bytes; a certificate is far smaller "
                    f"(limit {MAX_FILE_SIZE})"),))
            # Ask for the size fstat gave (+1 to see growth): a 1 MiB request would make
            # every read allocate and free a 1 MiB buffer, which costs more than the parse.
            data = os.read(fd, st.st_size + 1)
            if len(data) > st.st_size:  # growing under us: read the rest, still capped
                chunks = [data]
                size = len(data)
                while size <= MAX_FILE_SIZE:
                    more = os.read(fd, 65536)
                    if not more:
                        break
                    chunks.append(more)
                    size += len(more)
                data = b"".join(chunks)
                if size > MAX_FILE_SIZE:
                    return (rel, sig, None, None, (make_finding(
                        dir_b, rel, "too-large", f"larger than {MAX_FILE_SIZE} bytes"),))
        except OSError as exc:
            return (rel, None, None, None, (make_finding(
                dir_b, rel, "unreadable", f"cannot read: {exc.strerror or exc}"),))
        finally:
            os.close(fd)
        self.parsed += 1
        return parse_data(dir_b, rel, sig, data)


def parse_data(dir_b: bytes, rel: bytes, sig: bytes, data: bytes) -> Scanned:
    """Parse the bytes of one store file (or etcd value) named `rel` into a scan result.

    `sig` is the 32-byte change signature the record keeps (a file's stat signature; for
    etcd, the value's revisions). Bad content is never raised: it becomes an error finding
    about `dir_b/rel`.
    """
    fast = None
    try:
        fast = fast_parse(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    try:
        if fast is None:
            fast = parse_public(data, path=os.fsdecode(os.path.join(dir_b, rel)))
        key, items = fast
    except ZplSyntaxError as exc:
        return (rel, sig, None, None, (make_finding(
            dir_b, rel, "unparsable", exc.reason, line=exc.line),))
    except CertificateError as exc:
        code = "secret-key" if exc.reason == SECRET_REASON else "invalid-certificate"
        return (rel, sig, None, None, (make_finding(
            dir_b, rel, code, exc.reason, line=exc.line),))
    except CurvecertError as exc:  # any other parser complaint: still only a finding
        return (rel, sig, None, None, (make_finding(dir_b, rel, "invalid-certificate",
                                                    str(exc)),))
    blob, dropped = encode_meta(items) if items else (b"", [])
    problems: tuple[StoreFinding, ...] = ()
    if dropped:
        problems = (make_finding(
            dir_b, rel, "metadata-dropped",
            "metadata not sent in ZAP replies (reserved, duplicate after mapping to a "
            f"ZMTP name, or too large): {', '.join(dropped)}", severity="warning"),)
    if len(blob) > CZMQ_METADATA_LIMIT:
        problems += (make_finding(
            dir_b, rel, "czmq-metadata-overflow",
            f"metadata encodes to {len(blob)} bytes; CZMQ's zauth corrupts its heap above "
            f"{CZMQ_METADATA_LIMIT} (fine for curvecert)", severity="warning"),)
    record = make_record(sig, rel, blob)
    # sig None: it is the record's first bytes (no second object kept during a scan)
    return (rel, None, key, record, problems)
