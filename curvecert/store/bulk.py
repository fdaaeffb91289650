"""Bulk import and export: many public keys in, a whole store out, one barrier per batch.

Import sources (`read_sources`): certificate files, directories (read with the store's own
rules: `*_secret`, dot-files and temporaries skipped), tar archives (plain or compressed,
from a file or a stream) and JSON lines, one object per line:
`{"public_key": "<40 Z85 characters>", "metadata": {"name": "alice", ...}}`.

Writing (`import_certificates`): every certificate is first written to a hidden temporary
(`.NAME.<random>.tmp`, which no store scan reads) with mode 0644, without an fsync each;
then one `syncfs` makes all their bytes durable at once, the temporaries are renamed to
their final names (`<hex key>.key`), and one fsync of the directory makes the renames
durable (up to 8 files, an fsync each replaces the `syncfs`). So a batch costs two
barriers instead of one per file, and no file a scan reads
is ever partial: a process killed at any point leaves whole certificates and, at worst,
hidden temporaries (`curvecert verify` reports them as stale). Where `syncfs` is missing,
each temporary is fsynced instead (slower, as durable).

Export (`export_tar`, `export_jsonl`): the trusted certificates as the files they are
(tar), or as the JSON lines `read_sources` imports.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import logging
import os
import secrets
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Literal

from curvecert.certs import certfile
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import (
    PUBLIC_DIR_MODE,
    PUBLIC_MODE,
    abandon_write,
    commit_write,
    ensure_directory,
    fsync_dir,
    prepare_write,
    read_bytes,
)
from curvecert.errors import CertificateError, CurvecertError, FileExists, OperationalError
from curvecert.formats import z85
from curvecert.store.commands import refuse_weak_key, store_filename
from curvecert.store.files import MAX_FILE_SIZE, is_ignored_name
from curvecert.store.scan import scan
from curvecert.store.snapshot import Snapshot

__all__ = ["ImportItem", "Source", "detect_format", "export_jsonl", "export_tar",
           "import_certificates", "read_sources"]

_logger = logging.getLogger(__name__)

Format = Literal["auto", "cert", "tar", "jsonl"]
#: (label for messages, certificate) as read from a source.
Source = tuple[str, Certificate]
State = Literal["added", "unchanged", "replaced", "skipped"]
_PROGRESS_EVERY = 256
#: Up to this many files, each is fsynced instead of one syncfs for the batch.
_FEW = 8


@dataclass(frozen=True)
class ImportItem:
    """What became of one imported certificate: `state` is added, unchanged, replaced or
    skipped (its key is already trusted from another file: `note` says which)."""

    label: str
    path: str
    public_key: str
    fingerprint: str
    state: State
    note: str = ""


# --- reading sources ----------------------------------------------------------------------

def detect_format(data: bytes) -> Literal["cert", "tar", "jsonl"]:
    """Guess what `data` is: a tar archive (plain, gzip, bzip2, xz), JSON lines, or a
    certificate (anything else, for the certificate parser to judge)."""
    if data[:2] == b"\x1f\x8b" or data[:3] == b"BZh" or data[:6] == b"\xfd7zXZ\x00" or (
            len(data) >= 262 and data[257:262] == b"ustar"):
        return "tar"
    if data.lstrip()[:1] == b"{":
        return "jsonl"
    return "cert"


def _jsonl(data: bytes, label: str) -> Iterator[Source]:
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{label}:{number}"
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            raise CertificateError("not a JSON object", path=label, line=number) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("public_key"), str):
            raise CertificateError('expected {"public_key": "<Z85>", "metadata": {...}}',
                                   path=label, line=number)
        meta = obj.get("metadata", {})
        if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise CertificateError('"metadata" must map names to strings', path=label,
                                   line=number)
        if not z85.is_key_text(obj["public_key"]):
            raise CertificateError('"public_key" is not 40 Z85 characters', path=label,
                                   line=number)
        try:
            cert = Certificate(z85.decode(obj["public_key"]), meta=meta)
        except CurvecertError as exc:
            raise CertificateError(str(exc), path=label, line=number) from None
        yield where, cert


def _tar(data: bytes, label: str) -> Iterator[Source]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                name = member.name
                if not member.isfile() or any(is_ignored_name(p) for p in name.split("/")):
                    continue  # links, devices, directories, secrets, temporaries
                if member.size > MAX_FILE_SIZE:
                    raise CertificateError(f"larger than {MAX_FILE_SIZE} bytes",
                                           path=f"{label}:{name}")
                fh = archive.extractfile(member)
                if fh is None:
                    continue
                yield from _one(fh.read(), f"{label}:{name}")
    except tarfile.TarError as exc:
        raise OperationalError(f"{label}: not a readable tar archive: {exc}") from None


def _one(data: bytes, label: str) -> Iterator[Source]:
    cert = Certificate.parse(data, path=label)
    yield label, cert


#: Findings that make a directory given to `read_sources` an error: a file that does not
#: parse, is not a regular file, is too large or holds an unusable key. (Skipped by name
#: as in a store: dot-files, *_secret, temporaries; a repeated key is imported once.)
_BAD_INPUT = frozenset({"unparsable", "invalid-certificate", "not-regular-file", "too-large",
                        "weak-key", "unreadable-directory"})


def _directory(path: str) -> Iterator[Source]:
    snap = scan(path, log_findings=False)
    if not snap.healthy:
        raise OperationalError(snap.problem or f"{path}: cannot read the directory")
    bad = sorted((f for f in snap.findings if f.code in _BAD_INPUT),
                 key=lambda f: (f.path, f.line or 0))
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CertificateError(f"{first.message} [{first.code}]{more}", path=first.path,
                               line=first.line)
    if not len(snap):
        raise OperationalError(f"no certificates in {path}")
    for entry in snap:
        yield entry.file, Certificate.load(entry.file)


def read_sources(names: Iterable[str], *, fmt: Format = "auto",
                 stdin: IO[bytes] | None = None) -> Iterator[Source]:
    """Certificates from files, directories, tar archives or JSON lines (`-`: `stdin`).

    `fmt` forces how files and stdin are read ("auto" guesses: `detect_format`).
    Raises `CertificateError`/`ZplSyntaxError` naming `path[:line]` for bad input (in a
    directory too: a file that does not parse or is not a regular file) and
    `OperationalError` for what cannot be read (a FIFO is refused at once) or a directory
    without any certificate.
    """
    for name in names:
        if name == "-":
            if stdin is None:
                raise OperationalError("-: no standard input")
            data = stdin.read()
            label = "<stdin>"
        elif os.path.isdir(name):
            yield from _directory(name)
            continue
        else:
            limit = MAX_FILE_SIZE if fmt == "cert" else 1 << 32
            data = read_bytes(name, limit=limit)
            label = name
        kind = detect_format(data) if fmt == "auto" else fmt
        if kind == "tar":
            yield from _tar(data, label)
        elif kind == "jsonl":
            yield from _jsonl(data, label)
        else:
            yield from _one(data, label)


# --- writing ------------------------------------------------------------------------------

def _syncfs() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name, use_errno=True).syncfs  # Linux >= 2.6.39
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


_SYNCFS = _syncfs()


def _plan(directory: str, certs: Iterable[Source], snap: Snapshot,
          force: bool) -> tuple[list[tuple[str, Certificate, str]], list[ImportItem]]:
    """Decide what to write; raise before anything is written (`FileExists`, weak keys)."""
    todo: list[tuple[str, Certificate, str]] = []
    done: list[ImportItem] = []
    seen: dict[bytes, str] = {}
    for label, cert in certs:
        refuse_weak_key(cert.public_key, label)
        public = cert.public_only()
        name = store_filename(public.public_key)
        path = os.path.join(directory, name)
        if public.public_key in seen:
            done.append(ImportItem(label, path, public.public_txt, public.fingerprint,
                                   "skipped", f"same key as {seen[public.public_key]}"))
            continue
        seen[public.public_key] = label
        present = snap.lookup(public.public_key)
        if present is not None and present.relpath != name:
            done.append(ImportItem(label, present.file, public.public_txt,
                                   public.fingerprint, "skipped",
                                   f"already trusted from {present.file}"))
            continue
        if present is not None or os.path.lexists(path):
            try:
                existing = Certificate.load(path)
                same = (existing.public_key == public.public_key and not existing.has_secret
                        and list(existing.meta.items()) == list(public.meta.items()))
            except CurvecertError:
                same = False
            if same:
                done.append(ImportItem(label, path, public.public_txt, public.fingerprint,
                                       "unchanged"))
                continue
            if not force:
                raise FileExists(path)
        todo.append((label, public, path))
    return todo, done


def _write_few(directory: str, todo: list[tuple[str, Certificate, str]], force: bool) -> None:
    """A few files: `fileio`'s atomic write each (an fsync per file is cheaper than
    flushing the whole file system), then one directory fsync."""
    temps: list[tuple[str, str]] = []
    try:
        for _label, cert, path in todo:
            data = certfile.dump(cert, secret=False).encode("utf-8")
            temps.append((prepare_write(path, data, mode=PUBLIC_MODE), path))
        while temps:
            tmp, path = temps.pop(0)
            commit_write(tmp, path, overwrite=force)
    finally:
        for tmp, _path in temps:
            abandon_write(tmp)
    fsync_dir(directory)


def _write_batch(directory: str, todo: list[tuple[str, Certificate, str]],
                 progress: Callable[[int, int], None] | None) -> None:
    """Many files: temporaries without an fsync each, one syncfs, renames, one fsync."""
    assert _SYNCFS is not None
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise OperationalError(f"{directory}: cannot open: {exc.strerror or exc}") from exc
    temps: list[tuple[str, str]] = []
    where = directory
    try:
        total = len(todo)
        for i, (_label, cert, path) in enumerate(todo):
            where = path
            name = os.path.basename(path)
            tmp = f".{name}.{secrets.token_hex(6)}.tmp"
            view = memoryview(certfile.dump(cert, secret=False).encode("utf-8"))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         PUBLIC_MODE, dir_fd=dfd)
            temps.append((tmp, name))
            try:
                os.fchmod(fd, PUBLIC_MODE)  # the umask may have taken bits away
                while view:  # a short write (a size limit, a full disk) is no success
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            if progress is not None and i % _PROGRESS_EVERY == 0:
                progress(i, total)
        where = directory
        if _SYNCFS(dfd) != 0:  # barrier 1: the bytes of every temporary
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        for n, (tmp, name) in enumerate(temps):
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            temps[n] = ("", name)
        os.fsync(dfd)  # barrier 2: every rename
        if progress is not None:
            progress(total, total)
    except OSError as exc:
        for tmp, _name in temps:
            if tmp:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
        written = sum(1 for t, _n in temps if not t)
        raise OperationalError(f"{where}: cannot write: {exc.strerror or exc}; {written} of "
                               f"{len(todo)} certificates written") from exc
    finally:
        os.close(dfd)


def import_certificates(store_dir: str | os.PathLike[str], certs: Iterable[Source], *,
                        force: bool = False, snapshot: Snapshot | None = None,
                        progress: Callable[[int, int], None] | None = None
                        ) -> list[ImportItem]:
    """Store the PUBLIC part of every certificate in `certs`, durably, in one batch.

    Everything is checked first; nothing is written when any key is weak
    (`InvalidKey`) or a different stored file would be replaced without `force`
    (`FileExists`). A key already trusted from another file is skipped. `progress(done,
    total)` is called every few hundred files. Returns one `ImportItem` per certificate,
    in input order of the written ones after the others. Raises `OperationalError` for
    I/O failures; temporaries are then removed.
    """
    directory = os.path.abspath(os.fspath(store_dir))
    snap = snapshot if snapshot is not None else (
        scan(directory, log_findings=False) if os.path.isdir(directory)
        else Snapshot.empty(directory))
    todo, done = _plan(directory, certs, snap, force)
    if not todo:
        return done
    ensure_directory(directory, mode=PUBLIC_DIR_MODE)
    if _SYNCFS is None or len(todo) <= _FEW:
        _write_few(directory, todo, force)
    else:
        _write_batch(directory, todo, progress)
    for label, cert, path in todo:
        state: State = "replaced" if force and snap.lookup(cert.public_key) else "added"
        done.append(ImportItem(label, path, cert.public_txt, cert.fingerprint, state))
    _logger.info("%s: imported %d certificates", directory, len(todo))
    return done


# --- export -------------------------------------------------------------------------------

def _public_files(snap: Snapshot) -> Iterator[tuple[str, bytes]]:
    for entry in snap:
        yield entry.relpath, read_bytes(entry.file, limit=MAX_FILE_SIZE)


def export_tar(snap: Snapshot, out: IO[bytes]) -> int:
    """Write the trusted certificate files of `snap` as a tar stream; return the count."""
    count = 0
    with tarfile.open(fileobj=out, mode="w|") as archive:
        for rel, data in _public_files(snap):
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = PUBLIC_MODE
            archive.addfile(info, io.BytesIO(data))
            count += 1
    return count


def export_jsonl(snap: Snapshot, out: IO[bytes]) -> int:
    """Write one JSON object per trusted certificate (`read_sources` reads it back)."""
    count = 0
    for rel, data in _public_files(snap):
        cert = Certificate.parse(data, path=os.path.join(snap.directory, rel))
        line = {"public_key": cert.public_txt, "fingerprint": cert.fingerprint,
                "path": rel, "metadata": dict(cert.meta)}
        out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        count += 1
    return count
