"""Changing a store directory: `add_certificate`, `resolve` (what a selector names), `remove`.

Every file is written whole or not at all (`curvecert.certs.fileio.atomic_write`) under the
name `store_filename` gives, which CZMQ and pyzmq both read. `resolve` turns what a user
typed (a key, a fingerprint, a path, a metadata name) into the files that stop the key from
being trusted; `remove` resolves every selector before deleting anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from curvecert.certs import certfile, keys
from curvecert.certs.cert import Certificate
from curvecert.certs.fileio import (
    PUBLIC_DIR_MODE,
    PUBLIC_MODE,
    atomic_write,
    ensure_directory,
)
from curvecert.errors import (
    AmbiguousMatch,
    CurvecertError,
    FileExists,
    InvalidKey,
    OperationalError,
    StoreError,
)
from curvecert.formats import z85
from curvecert.store.scan import scan
from curvecert.store.snapshot import Snapshot

__all__ = ["add_certificate", "default_directory", "refuse_weak_key", "remove", "resolve",
           "store_filename"]

_logger = logging.getLogger(__name__)


def store_filename(public_key: bytes) -> str:
    """The file name `add_certificate` uses: the key in lower-case hex plus `.key`.

    Unique per key, safe on every file system (no `/`, no leading `.`, case-insensitive
    safe), and ending in `.key` so pyzmq's `load_certificates` reads the store too.
    """
    if len(public_key) != keys.KEY_LEN:
        raise InvalidKey(f"a public key is {keys.KEY_LEN} bytes, got {len(public_key)}")
    return public_key.hex() + ".key"


def default_directory(env: Mapping[str, str] | None = None) -> str:
    """`$CURVECERT_STORE`, else `$XDG_CONFIG_HOME/curvecert/store` (`~/.config/...`)."""
    env = os.environ if env is None else env
    explicit = env.get("CURVECERT_STORE", "")
    if explicit:
        return explicit
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "curvecert", "store")


def refuse_weak_key(public_key: bytes, label: str) -> None:
    """Raise `InvalidKey` naming `label` when no store may trust `public_key`.

    All zero (CZMQ's "no key") and the other Curve25519 points of small order
    (`curvecert.certs.keys.weak_public_key`): the scanner never trusts them either.
    """
    why = keys.weak_public_key(public_key)
    if why is not None:
        raise InvalidKey(f"{label}: the public key is {why}; not stored")


def add_certificate(store_dir: str | os.PathLike[str], cert: Certificate, *,
                    force: bool = False) -> str:
    """Write the PUBLIC part of `cert` into the store as `<hex key>.key`; return its path.

    The secret key is never written. The directory is created if needed, mode 0755
    whatever the umask. If the file exists with the same key and metadata nothing is
    written; if it differs it is replaced only with `force` (else `FileExists`). Raises
    `InvalidKey` for a key no store trusts (all zero, small order: `refuse_weak_key`) and
    `CertificateError` for metadata that cannot be written so that CZMQ reads it back.
    """
    refuse_weak_key(cert.public_key, cert.public_txt)
    directory = os.fspath(store_dir)
    path = os.path.join(directory, store_filename(cert.public_key))
    public = cert.public_only()
    data = certfile.dump(public, secret=False).encode("utf-8")
    if os.path.lexists(path):
        try:
            existing = Certificate.load(path)
        except CurvecertError:
            existing = None
        if (existing is not None and not existing.has_secret
                and existing.public_key == public.public_key
                and list(existing.meta.items()) == list(public.meta.items())):
            _logger.info("%s: already in the store, unchanged", path)
            return path
        if not force:
            raise FileExists(path)
    ensure_directory(directory, mode=PUBLIC_DIR_MODE)
    atomic_write(path, data, mode=PUBLIC_MODE, overwrite=force)
    _logger.info("%s: stored public certificate %s", path, public.public_txt)
    return path


def _describe(rel: str, key: bytes | None, meta: Mapping[str, str] | None) -> str:
    if key is None:
        return f"{rel} (not a trusted certificate)"
    name = (meta or {}).get("name")
    extra = f"  name={name!r}" if name is not None else ""
    return f"{z85.encode(key)}  {keys.fingerprint(key)}  {rel}{extra}"


def resolve(snapshot: Snapshot, selector: str, *,
            cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """The store files (paths relative to the store) that removing `selector` deletes.

    `selector` is, in this order: a Z85 public key or a fingerprint `SHA256:...` (every
    file carrying that key, duplicates included, so the key really stops being trusted);
    otherwise any of a path to a file in the store (relative to the store or to `cwd`, or
    absolute: that file), a path to a certificate file elsewhere (every store file with
    its key), and a metadata `name` (every store file with that certificate's key).
    Raises `AmbiguousMatch` when these designate more than one certificate, `StoreError`
    when they designate none. Nothing is changed here.
    """
    if not snapshot.healthy:
        raise StoreError(snapshot.problem or "the store cannot be read")
    certs: dict[bytes, list[tuple[str, dict[str, str]]]] = {}
    for rel, key, meta, _trusted in snapshot.candidates():
        certs.setdefault(key, []).append((rel, meta))
    files: dict[str, bytes | None] = {rel: key for rel, key, _e in snapshot.files()}

    def files_of(key: bytes) -> list[str]:
        return sorted(rel for rel, _m in certs.get(key, []))

    if z85.is_key_text(selector):
        key = z85.decode(selector)
        if key not in certs:
            raise StoreError(f"no certificate in the store has the public key {selector}")
        return files_of(key)
    if selector.startswith("SHA256:"):
        for key in certs:
            if keys.fingerprint(key) == selector:
                return files_of(key)
        raise StoreError(f"no certificate in the store has the fingerprint {selector}")

    units: dict[str, tuple[str, set[str]]] = {}  # identity -> (description, files)

    def add(ident: str, desc: str, rels: Iterable[str]) -> None:
        old = units.get(ident)
        units[ident] = (old[0] if old else desc, (old[1] if old else set()) | set(rels))

    notes: list[str] = []
    directory = snapshot.directory
    base = os.fspath(cwd) if cwd is not None else os.getcwd()
    seen: set[str] = set()
    for candidate in (os.path.join(directory, selector), os.path.join(base, selector)):
        full = os.path.normpath(os.path.abspath(candidate))
        if full in seen or not os.path.lexists(full):
            continue
        seen.add(full)
        rel = os.path.relpath(full, directory)
        if rel != os.curdir and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            if rel in files:
                file_key = files[rel]
                if file_key is None:
                    add(f"file:{rel}", _describe(rel, None, None), [rel])
                else:
                    meta = next((m for r, m in certs[file_key] if r == rel), {})
                    add(f"key:{file_key.hex()}", _describe(rel, file_key, meta), [rel])
            else:
                notes.append(f"{full} is not a certificate file the store reads")
            continue
        if not os.path.isfile(full):
            continue
        try:
            cert = Certificate.load(full)
        except CurvecertError as exc:
            notes.append(f"{full} is not a certificate file ({exc})")
            continue
        if cert.public_key in certs:
            add(f"key:{cert.public_key.hex()}",
                _describe(files_of(cert.public_key)[0], cert.public_key, cert.meta),
                files_of(cert.public_key))
        else:
            notes.append(f"the certificate in {full} ({cert.public_txt}) is not in the store")
    for key, items in certs.items():
        for rel, meta in items:
            if meta.get("name") == selector:
                add(f"key:{key.hex()}", _describe(rel, key, meta), files_of(key))
    if not units:
        why = "; ".join(notes) if notes else "not a key, fingerprint, store file or name"
        raise StoreError(f"nothing in the store matches {selector!r}: {why}")
    if len(units) > 1:
        raise AmbiguousMatch(selector, sorted(desc for desc, _f in units.values()))
    return sorted(next(iter(units.values()))[1])


def remove(store_dir: str | os.PathLike[str], selectors: Iterable[str] | str, *,
           snapshot: Snapshot | None = None,
           cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Delete the store files that `selectors` designate; return their paths.

    Every selector is resolved first (see `resolve`); if any is ambiguous or matches
    nothing, the error is raised and NOTHING is removed.
    """
    if isinstance(selectors, str):
        selectors = [selectors]
    snap = snapshot if snapshot is not None else scan(store_dir)
    targets: list[str] = []
    for sel in selectors:
        for rel in resolve(snap, sel, cwd=cwd):
            if rel not in targets:
                targets.append(rel)
    removed: list[str] = []
    for rel in targets:
        path = os.path.join(snap.directory, rel)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OperationalError(f"{path}: cannot remove: {exc.strerror or exc}; removed so "
                                   f"far: {', '.join(removed) or 'nothing'}") from exc
        _logger.info("%s: removed from the store", path)
        removed.append(path)
    return removed
