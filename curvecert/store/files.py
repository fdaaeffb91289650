"""One file of a store: which names are read, how a file is opened, read and judged.

What is read (CZMQ's and pyzmq's stores, both):

- every regular file in the directory and its sub-directories, whatever its name (CZMQ),
  which includes pyzmq's `*.key`; symbolic links to files are followed (Kubernetes mounts
  are made of them), symbolic links to directories are not (loops; watchers cannot see
  into them);
- skipped: names starting with `.` (dot-files and dot-directories, so Kubernetes'
  `..data` and `..<timestamp>` are never read twice), `*_secret` (CZMQ and pyzmq secret
  files), and editor or tool temporaries `*~`, `*.swp`, `*.swo`, `*.swx`, `*.tmp`, `#*#`.

What is trusted: a regular file that parses as a certificate (the full ZPL grammar,
`curvecert.formats.zpl`) with a usable public key (not all zero, not a small-order point:
`curvecert.certs.keys.weak_public_key`) and no secret key. Anything else becomes a
`StoreFinding` and is never trusted: a file that does not parse, a file holding a secret
key or a weak key, a file that cannot be read, a file over `MAX_FILE_SIZE`, a FIFO,
socket or device (never opened).

Modes (sshd's StrictModes): a file group or others can write is a `writable-file`
finding, a warning by default; with `strict` it is an error and the file is not trusted.

A file is opened with `O_NONBLOCK` (a FIFO swapped in between listing and opening must
not hang the reader) and `fstat`-ed before anything is read from it. Symbolic links to
files are followed on purpose (Kubernetes volumes), so `O_NOFOLLOW` does not apply here.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct

from curvecert.certs.fileio import file_kind
from curvecert.certs.keys import weak_public_key
from curvecert.errors import CertificateError, CurvecertError, ZplSyntaxError
from curvecert.formats.sanitize import is_safe, unsafe_summary
from curvecert.store.fastparse import SECRET_REASON, encode_meta, fast_parse, parse_public
from curvecert.store.state import Scanned, StoreFinding, make_finding, make_record

__all__ = ["CZMQ_METADATA_LIMIT", "MAX_FILE_SIZE", "FileReader", "is_ignored_name",
           "lookup_steps", "parse_data", "sig_of", "writable_message"]

_logger = logging.getLogger(__name__)

#: A certificate file is a few hundred bytes; anything over this is refused unread.
MAX_FILE_SIZE = 1 << 20
#: CZMQ 4.2 zauth copies metadata into a fixed 512-byte buffer (CZMQ.md, zauth): warn above.
CZMQ_METADATA_LIMIT = 512

# O_NONBLOCK: a FIFO swapped in between readdir and open must not hang the scan.
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0))
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


def writable_message(what: str, path: str, mode: int, *, strict: bool) -> str:
    """The text of a `writable-*` finding: who can write, what it means, how to fix it."""
    perm = stat.S_IMODE(mode)
    who = " and ".join(w for bit, w in ((0o020, "group"), (0o002, "others")) if perm & bit)
    verdict = ("not trusted (strict modes)" if strict
               else "whoever can write it can make the store trust their key")
    return f"{what} has mode {perm:04o}: {who} can write it; {verdict}. Run: chmod go-w {path}"


class FileReader:
    """Reads files of one store directory into scan results; counts the files it parsed.

    With `strict` (sshd's StrictModes) a file that group or others can write is an error
    and is not trusted; without it, such a file is trusted with a warning.
    """

    def __init__(self, dir_b: bytes, *, strict: bool = False):
        """`dir_b`: the store directory (absolute, as bytes)."""
        self._dir_b = dir_b
        self.strict = strict
        self.parsed = 0  #: files parsed so far (tests use it to prove the stat cache works)

    def special(self, path: bytes, rel: bytes) -> Scanned | None:
        """A directory entry that is not a plain regular file: classify it before opening.

        A symbolic link to a regular file is read; to a directory, or dangling: None. A
        FIFO, socket or device is never opened: it is an error finding (issue 12).
        """
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            return (rel, None, None, None, (make_finding(
                self._dir_b, rel, "unreadable", f"cannot stat: {exc.strerror or exc}"),))
        if stat.S_ISREG(st.st_mode):
            return self.read(path, rel)
        if stat.S_ISDIR(st.st_mode):
            return None
        return (rel, sig_of(st), None, None, (make_finding(
            self._dir_b, rel, "not-regular-file",
            f"{file_kind(st.st_mode)}, not a regular file; never read or trusted"),))

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
                return (rel, sig_of(st), None, None, (make_finding(
                    dir_b, rel, "not-regular-file",
                    f"{file_kind(st.st_mode)}, not a regular file; never trusted"),))
            sig = sig_of(st)
            writable = st.st_mode & 0o022
            if writable and self.strict:
                return (rel, sig, None, None, (make_finding(
                    dir_b, rel, "writable-file", writable_message(
                        "file", os.fsdecode(path), st.st_mode, strict=True)),))
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
        notes: tuple[StoreFinding, ...] = ()
        if writable:
            notes = (make_finding(dir_b, rel, "writable-file", writable_message(
                "file", os.fsdecode(path), st.st_mode, strict=False), severity="warning"),)
        return parse_data(dir_b, rel, sig, data, notes)


def parse_data(dir_b: bytes, rel: bytes, sig: bytes, data: bytes,
               notes: tuple[StoreFinding, ...] = ()) -> Scanned:
    """Parse the bytes of one store file (or etcd value) named `rel` into a scan result.

    `sig` is the 32-byte change signature the record keeps (a file's stat signature; for
    etcd, the value's revisions); `notes` are warnings already known about it. Bad content
    is never raised: it becomes an error finding about `dir_b/rel`.
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
    weak = weak_public_key(key)
    if weak is not None:
        return (rel, sig, None, None, (make_finding(
            dir_b, rel, "weak-key", f"public-key is {weak}; never trusted"),))
    blob, dropped = encode_meta(items) if items else (b"", [])
    problems = notes
    if dropped:
        problems += (make_finding(
            dir_b, rel, "metadata-dropped",
            "metadata not sent in ZAP replies (reserved, duplicate after mapping to a "
            f"ZMTP name, or too large): {', '.join(dropped)}", severity="warning"),)
    problems += unsafe_findings(dir_b, rel, items)
    if len(blob) > CZMQ_METADATA_LIMIT:
        problems += (make_finding(
            dir_b, rel, "czmq-metadata-overflow",
            f"metadata encodes to {len(blob)} bytes; CZMQ's zauth corrupts its heap above "
            f"{CZMQ_METADATA_LIMIT} (fine for curvecert)", severity="warning"),)
    record = make_record(sig, rel, blob)
    # sig None: it is the record's first bytes (no second object kept during a scan)
    return (rel, None, key, record, problems)


def unsafe_findings(dir_b: bytes, rel: bytes,
                    items: list[tuple[str, str]] | None) -> tuple[StoreFinding, ...]:
    """Metadata or a file name with control, format or line-separator characters (issue
    12): a warning each, by code point and position (`sanitize.unsafe_summary`)."""
    out: tuple[StoreFinding, ...] = ()
    checks = [("the file name", os.fsdecode(os.path.basename(rel)))]
    checks += [(f"metadata item {i + 1} ({part})", text) for i, (name, value)
               in enumerate(items or ()) for part, text in (("name", name), ("value", value))]
    for what, text in checks:
        if is_safe(text):
            continue
        out += (make_finding(dir_b, rel, "unsafe-text", f"{what} holds "
                             f"{unsafe_summary(text)}; shown escaped by curvecert, raw by "
                             "other tools", severity="warning"),)
    return out


def directory_finding(dir_b: bytes, rel: bytes, mode: int, *,
                      strict: bool) -> StoreFinding | None:
    """A `writable-directory` finding when group/others can write the store (sub-)directory.

    Whoever can write a directory can add a file to it, so every key below it is theirs
    to choose (sshd's StrictModes refuses such directories). The sticky bit does not
    help: it stops deleting others' files, not adding new ones.
    """
    if not mode & 0o022:
        return None
    path = os.fsdecode(os.path.join(dir_b, rel) if rel else dir_b)
    what = "sub-directory" if rel else "store directory"
    return make_finding(dir_b, rel, "writable-directory",
                        writable_message(what, path, mode, strict=strict),
                        severity="error" if strict else "warning")


def parent_findings(directory: str, *, strict: bool) -> list[StoreFinding]:
    """`writable-parent` findings for the directories a lookup of the store goes through.

    A directory others can write (without the sticky bit) lets them rename the store away
    and put their own in its place; that includes each directory holding a symbolic link
    on the way (`/srv/app/current -> releases/7`: whoever can write `/srv/app` can point
    `current` at a store of their own). Nearest first.
    """
    out: list[StoreFinding] = []
    for path in reversed(dict.fromkeys(d for d, _name, _link in lookup_steps(directory))):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o022 and not mode & stat.S_ISVTX:
            out.append(StoreFinding(path, None, "writable-parent", writable_message(
                "a directory above the store", path, mode, strict=strict),
                "error" if strict else "warning"))
    return out


def lookup_steps(directory: str) -> list[tuple[str, str, bool]]:
    """How the kernel looks `directory` up: `(dir, name, is_link)` for each name read,
    in order, symbolic links followed (at most 40, its ELOOP limit). The path is taken
    as `os.path.abspath` leaves it, as the store does."""
    out: list[tuple[str, str, bool]] = []
    parts = os.path.abspath(directory).split("/")[::-1]  # a stack: next component last
    head, hops = "/", 0
    while parts:
        part = parts.pop()
        if part in ("", "."):
            continue
        if part == "..":
            head = os.path.dirname(head)
            continue
        here = os.path.join(head, part)
        try:
            target = os.readlink(here) if hops < 40 else None
        except OSError:  # not a link (or gone): go down into it
            target = None
        out.append((head, part, target is not None))
        if target is None:
            head = here
            continue
        hops += 1
        head = "/" if target.startswith("/") else head
        parts.extend(target.split("/")[::-1])
    return out
