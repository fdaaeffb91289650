"""A small ctypes wrapper over the real libczmq (Debian `libczmq4`), for interop tests.

The tests use the C library itself, not a re-implementation, so "CZMQ reads what we write"
and "we read what CZMQ writes" are checked against the code CZMQ programs actually run.
Only the handful of functions the tests need are declared.

`load_czmq()` returns None when the library is absent; `require_czmq()` turns that into a
pytest skip with a clear reason, or a failure when `CURVECERT_REQUIRE_CZMQ` is set (CI
installs libczmq4 and sets it, so there the interop tests can never be skipped silently).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

__all__ = ["Czmq", "CzmqCert", "CzmqNode", "czmq_fixture", "load_czmq", "require_czmq"]

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p

#: Environment variable that turns "libczmq missing" from a skip into a failure.
REQUIRE_ENV = "CURVECERT_REQUIRE_CZMQ"


@dataclass(frozen=True)
class CzmqCert:
    """What CZMQ holds for one certificate: Z85 keys and metadata (as text)."""

    public_txt: str
    secret_txt: str
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def has_secret(self) -> bool:
        """CZMQ's notion: a secret that is not forty zeros (its "no secret" value)."""
        return self.secret_txt != "0" * 40


@dataclass(frozen=True)
class CzmqNode:
    """One zconfig node as plain data: `(name, value, children)`."""

    name: str
    value: str
    children: tuple[CzmqNode, ...] = ()


class Czmq:
    """The functions of libczmq the tests call, with Python types at the edges."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        sig: dict[str, tuple[object, list[object] | None]] = {
            "zcert_new": (_vp, []),
            "zcert_new_from": (_vp, [ctypes.c_char_p, ctypes.c_char_p]),
            "zcert_destroy": (None, [ctypes.POINTER(_vp)]),
            "zcert_load": (_vp, [_cp]),
            "zcert_save": (ctypes.c_int, [_vp, _cp]),
            "zcert_save_public": (ctypes.c_int, [_vp, _cp]),
            "zcert_save_secret": (ctypes.c_int, [_vp, _cp]),
            "zcert_public_txt": (_cp, [_vp]),
            "zcert_secret_txt": (_cp, [_vp]),
            "zcert_meta": (_cp, [_vp, _cp]),
            "zcert_meta_keys": (_vp, [_vp]),
            "zlist_first": (_vp, [_vp]),
            "zlist_next": (_vp, [_vp]),
            "zlist_destroy": (None, [ctypes.POINTER(_vp)]),
            "zchunk_new": (_vp, [ctypes.c_char_p, ctypes.c_size_t]),
            "zchunk_destroy": (None, [ctypes.POINTER(_vp)]),
            "zconfig_chunk_load": (_vp, [_vp]),
            "zconfig_load": (_vp, [_cp]),
            "zconfig_destroy": (None, [ctypes.POINTER(_vp)]),
            "zconfig_child": (_vp, [_vp]),
            "zconfig_next": (_vp, [_vp]),
            "zconfig_name": (_vp, [_vp]),
            "zconfig_value": (_vp, [_vp]),
            "zcertstore_new": (_vp, [_cp]),
            "zcertstore_lookup": (_vp, [_vp, _cp]),
            "zcertstore_destroy": (None, [ctypes.POINTER(_vp)]),
            "zactor_new": (_vp, [_vp, _vp]),
            "zactor_destroy": (None, [ctypes.POINTER(_vp)]),
            "zsock_new": (_vp, [ctypes.c_int]),
            "zsock_destroy": (None, [ctypes.POINTER(_vp)]),
            "zsock_bind": (ctypes.c_int, [_vp, _cp]),
            "zsock_wait": (ctypes.c_int, [_vp]),
            "zsock_set_curve_server": (None, [_vp, ctypes.c_int]),
            "zsock_set_zap_domain": (None, [_vp, _cp]),
            "zsock_set_sndtimeo": (None, [_vp, ctypes.c_int]),
            "zsock_set_rcvtimeo": (None, [_vp, ctypes.c_int]),
            "zstr_send": (ctypes.c_int, [_vp, _cp]),
            "zstr_recv": (_vp, [_vp]),
            "zstr_free": (None, [ctypes.POINTER(_vp)]),
            "zcert_apply": (None, [_vp, _vp]),
        }
        for name, (restype, argtypes) in sig.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        # zcert_set_meta (self, name, format, ...) is variadic: declare no argtypes and
        # always pass the value through "%s" so it is never read as a printf format.
        lib.zcert_set_meta.restype = None
        # zstr_sendx (dest, string, ...) is variadic too, ending with NULL.
        lib.zstr_sendx.restype = ctypes.c_int

    # --- certificates -------------------------------------------------------------------

    @contextmanager
    def _cert(self, handle: int | None) -> Iterator[int]:
        if not handle:
            raise ValueError("libczmq returned NULL")
        try:
            yield handle
        finally:
            ptr = _vp(handle)
            self.lib.zcert_destroy(ctypes.byref(ptr))

    def _read(self, handle: int) -> CzmqCert:
        meta: dict[str, str] = {}
        keys = _vp(self.lib.zcert_meta_keys(handle))
        try:
            item = self.lib.zlist_first(keys)
            while item:
                name = ctypes.string_at(item)
                value = self.lib.zcert_meta(handle, name)
                meta[name.decode("utf-8")] = (value or b"").decode("utf-8")
                item = self.lib.zlist_next(keys)
        finally:
            self.lib.zlist_destroy(ctypes.byref(keys))
        return CzmqCert(self.lib.zcert_public_txt(handle).decode("ascii"),
                        self.lib.zcert_secret_txt(handle).decode("ascii"), meta)

    def load_cert(self, path: str | os.PathLike[str]) -> CzmqCert | None:
        """`zcert_load(path)`: None when CZMQ refuses the file (it gives no reason)."""
        handle = self.lib.zcert_load(os.fsencode(path))
        if not handle:
            return None
        with self._cert(handle) as h:
            return self._read(h)

    def make_cert(self, path: str | os.PathLike[str], meta: Mapping[str, str] | None = None,
                  *, keys: tuple[bytes, bytes] | None = None) -> CzmqCert:
        """`zcert_new` (or `zcert_new_from(keys)`) + `zcert_set_meta` + `zcert_save(path)`."""
        if keys is None:
            handle = self.lib.zcert_new()
        else:
            handle = self.lib.zcert_new_from(keys[0], keys[1])
        with self._cert(handle) as h:
            for name, value in (meta or {}).items():
                self.lib.zcert_set_meta(_vp(h), name.encode("utf-8"), b"%s",
                                        value.encode("utf-8"))
            rc = self.lib.zcert_save(h, os.fsencode(path))
            if rc != 0:
                raise OSError(f"zcert_save({path}) returned {rc}")
            return self._read(h)

    # --- zconfig ------------------------------------------------------------------------

    def _tree(self, node: int) -> tuple[CzmqNode, ...]:
        out: list[CzmqNode] = []
        child = self.lib.zconfig_child(node)
        while child:
            name = ctypes.string_at(self.lib.zconfig_name(child)).decode("utf-8", "replace")
            vptr = self.lib.zconfig_value(child)
            value = ctypes.string_at(vptr).decode("utf-8", "replace") if vptr else ""
            out.append(CzmqNode(name, value, self._tree(child)))
            child = self.lib.zconfig_next(child)
        return tuple(out)

    def parse_zpl(self, data: bytes) -> tuple[CzmqNode, ...] | None:
        """`zconfig_chunk_load` on `data`: the top-level nodes, or None when CZMQ rejects it."""
        chunk = _vp(self.lib.zchunk_new(data, len(data)))
        try:
            root = self.lib.zconfig_chunk_load(chunk)
        finally:
            self.lib.zchunk_destroy(ctypes.byref(chunk))
        if not root:
            return None
        ptr = _vp(root)
        try:
            return self._tree(root)
        finally:
            self.lib.zconfig_destroy(ctypes.byref(ptr))

    def parse_zpl_logged(self, data: bytes) -> tuple[tuple[CzmqNode, ...] | None, list[str]]:
        """`parse_zpl`, plus the lines CZMQ logged meanwhile (`E (zconfig): (LINE) ...`).

        CZMQ reports parse errors only by printing them, so stdout and stderr are pointed
        at a temporary file for the call (C stdio is flushed before and after).
        """
        libc = ctypes.CDLL(None)
        libc.fflush(None)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        with tempfile.TemporaryFile() as log:
            try:
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                try:
                    tree = self.parse_zpl(data)
                finally:
                    libc.fflush(None)
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").splitlines()
        return tree, lines

    @staticmethod
    def error_line(log: list[str]) -> int | None:
        """The line number in CZMQ's first `E (zconfig): (N) ...` message, if any."""
        for entry in log:
            m = re.search(r"E \(zconfig\): \((\d+)\)", entry)
            if m:
                return int(m.group(1))
        return None

    # --- zcertstore ---------------------------------------------------------------------

    def store_has(self, directory: str | os.PathLike[str], public_txt: str) -> bool:
        """Build `zcertstore_new(directory)` and ask `zcertstore_lookup(public_txt)`."""
        store = _vp(self.lib.zcertstore_new(os.fsencode(directory)))
        if not store:
            raise OSError(f"zcertstore_new({directory}) returned NULL")
        try:
            return bool(self.lib.zcertstore_lookup(store, public_txt.encode("ascii")))
        finally:
            self.lib.zcertstore_destroy(ctypes.byref(store))


    # --- servers: zsock + zauth (Ironhouse) ----------------------------------------------

    @contextmanager
    def ironhouse_server(self, socket_type: int, server_secret: str | os.PathLike[str],
                         store: str | os.PathLike[str], *, requests: int = 0,
                         replies: list[bytes] | None = None) -> Iterator[str]:
        """A CZMQ server as CZMQ's own Ironhouse example builds it: a `zauth` actor that
        allows the CURVE clients whose certificates are in `store`, and a `zsock` of
        `socket_type` (a libzmq type number) with the server certificate applied, bound
        to a loopback port. Yields the endpoint; tears both down (auth last).

        With `requests` (a REQ server), a thread sends up to that many text requests
        (`job-1`, ...), each once a peer takes it and after the reply to the previous one
        arrived, and appends each reply to `replies`."""
        lib = self.lib
        auth = _vp(lib.zactor_new(ctypes.cast(lib.zauth, _vp), None))
        if not auth:
            raise OSError("zactor_new(zauth) returned NULL")
        sock = _vp()
        stop = threading.Event()
        thread: threading.Thread | None = None
        try:
            if lib.zstr_sendx(auth, b"CURVE", os.fsencode(store), None) != 0:
                raise OSError("zauth: CURVE command not sent")
            lib.zsock_wait(auth)
            sock = _vp(lib.zsock_new(socket_type))
            if not sock:
                raise OSError(f"zsock_new({socket_type}) returned NULL")
            with self._cert(lib.zcert_load(os.fsencode(server_secret))) as cert:
                lib.zcert_apply(cert, sock)
            lib.zsock_set_zap_domain(sock, b"global")
            lib.zsock_set_curve_server(sock, 1)
            port = lib.zsock_bind(sock, b"tcp://127.0.0.1:*")
            if port < 0:
                raise OSError("zsock_bind failed")
            if requests:
                thread = threading.Thread(target=self._requester, name="czmq-req-server",
                                          args=(sock, requests, replies, stop))
                thread.start()
            yield f"tcp://127.0.0.1:{port}"
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=10)
            if sock:
                lib.zsock_destroy(ctypes.byref(sock))
            lib.zactor_destroy(ctypes.byref(auth))


    def _requester(self, sock: _vp, requests: int, replies: list[bytes] | None,
                   stop: threading.Event) -> None:
        """The REQ server's loop: short send/receive timeouts so `stop` is seen."""
        lib = self.lib
        lib.zsock_set_sndtimeo(sock, 20)
        lib.zsock_set_rcvtimeo(sock, 20)
        for i in range(requests):
            while lib.zstr_send(sock, f"job-{i + 1}".encode()) != 0:
                if stop.is_set():
                    return
            reply = _vp()
            while not reply:
                if stop.is_set():
                    return
                reply = _vp(lib.zstr_recv(sock))
            if replies is not None:
                replies.append(ctypes.string_at(reply))
            lib.zstr_free(ctypes.byref(reply))


_cached: list[Czmq | None] = []


def load_czmq() -> Czmq | None:
    """The wrapper over libczmq, or None when the library cannot be loaded here."""
    if _cached:
        return _cached[0]
    result: Czmq | None = None
    for name in (ctypes.util.find_library("czmq"), "libczmq.so.4"):
        if not name:
            continue
        try:
            result = Czmq(ctypes.CDLL(name))
            break
        except (OSError, AttributeError):
            continue
    _cached.append(result)
    return result


def require_czmq() -> Czmq:
    """The wrapper, or skip (fail under `CURVECERT_REQUIRE_CZMQ`) when libczmq is absent."""
    czmq = load_czmq()
    if czmq is None:
        reason = ("libczmq (Debian package libczmq4) is not installed; the CZMQ "
                  "interoperability tests need the real library")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_ENV} is set", pytrace=False)
        pytest.skip(reason)
    return czmq


@pytest.fixture(scope="session")
def czmq_fixture() -> Czmq:
    """Pytest fixture form of `require_czmq()`; import it as `czmq` in a test module."""
    return require_czmq()
