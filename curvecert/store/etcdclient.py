"""Talking to etcd: etcd3gw clients over the v3 JSON gateway, one per member, with failover.

Why etcd3gw and not only its high-level methods: its `get`, `put`, `delete` and
`transaction` cover unary calls, but the store needs three things etcd3gw does not give:
the response header's revision (to start a watch right after a paginated read), a watch
that reports its own end and etcd's compaction notice (etcd3gw's `watch` drops
`compact_revision`/`canceled` and never tells its caller that the stream ended), and
user/password authentication (no `auth/authenticate` call). So every unary call goes
through etcd3gw's `post()` on the gateway's JSON API, and the watch streams through the
client's own `requests` session and URL (`session.post(get_url("/watch"), stream=True)`):
same TLS settings, same API-path discovery (`/v3/` from etcd 3.4, `/v3beta/` on 3.3).

Member failover: calls go to the member that last answered; on a connection error or a
timeout the next member is tried, each once per call. When none answers the call raises
`EtcdUnavailable`. Keys and values are bytes (base64 on the wire, as the gateway wants).
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from etcd3gw import client as etcd3gw_client
from etcd3gw import exceptions as etcd3gw_exceptions

from curvecert.errors import OperationalError, StoreError
from curvecert.store.etcdurl import EtcdOptions, EtcdUrl

__all__ = ["EtcdClient", "EtcdUnavailable", "KeyValue", "WatchCompacted", "WatchEvent",
           "prefix_end"]

_logger = logging.getLogger(__name__)

#: Keys per page of the initial read (a certificate is ~300 bytes: ~1 MB per page in JSON,
#: under etcd's default 1.5 MiB request limit and the gateway's message limit).
PAGE = 2000


class EtcdUnavailable(OperationalError):
    """No etcd member answered (connection refused, timed out, or no quorum)."""


class WatchCompacted(StoreError):
    """The watch's start revision was compacted away; `compact_revision` says where history
    begins now. The caller must read the whole prefix again."""

    def __init__(self, compact_revision: int):
        super().__init__(f"watch start revision compacted (history starts at "
                         f"{compact_revision})")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One etcd key: name, value, and the revisions etcd keeps for it."""

    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A PUT (with the new value) or a DELETE of one key, at `kv.mod_revision`."""

    deleted: bool
    kv: KeyValue


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's convention)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(base64.b64decode(item.get("key", "")),
                    base64.b64decode(item.get("value", "")),
                    int(item.get("mod_revision", 0)), int(item.get("create_revision", 0)),
                    int(item.get("version", 0)))


def _revision(result: dict[str, Any]) -> int:
    return int(result.get("header", {}).get("revision", 0))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (etcd3gw_exceptions.ConnectionFailedError, ConnectionError)):
        return "connection failed"
    if isinstance(exc, (etcd3gw_exceptions.ConnectionTimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and not isinstance(exc, etcd3gw_exceptions.Etcd3Exception):
        return type(exc).__name__
    detail = getattr(exc, "detail_text", None)
    text = detail if isinstance(detail, str) and detail else (str(exc) or type(exc).__name__)
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


class EtcdClient:
    """Unary calls and watches against the members of one `EtcdUrl` (thread-safe calls)."""

    def __init__(self, url: EtcdUrl, options: EtcdOptions | None = None):
        """Prepare one etcd3gw client per member; nothing is sent until the first call."""
        self.url = url
        self.options = options or EtcdOptions()
        tls = url.tls or self.options.tls
        self._members = [
            etcd3gw_client(host=host, port=port, protocol="https" if tls else "http",
                           ca_cert=self.options.ca, cert_cert=self.options.cert,
                           cert_key=self.options.key, timeout=self.options.timeout)
            for host, port in url.endpoints]
        if self.options.ca is not None:
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA
            # (psf/requests#3829): with a CA of our own, ignore the environment entirely
            for member in self._members:
                member.session.trust_env = False
        self._current = 0
        self._lock = threading.Lock()
        self._token: str | None = None

    # --- unary calls ----------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to the gateway's `path` (e.g. `kv/range`) on a live member.

        Raises `EtcdUnavailable` when no member answers, `StoreError` when etcd refuses.
        """
        errors: list[str] = []
        n = len(self._members)
        start = self._current
        for i in range(n):
            index = (start + i) % n
            member = self._members[index]
            try:
                result = self._post(member, path, body)
            except (etcd3gw_exceptions.ConnectionFailedError,
                    etcd3gw_exceptions.ConnectionTimeoutError,
                    etcd3gw_exceptions.ApiVersionDiscoveryFailedError) as exc:
                errors.append(f"{member.host}:{member.port}: {_describe(exc)}")
                continue
            except etcd3gw_exceptions.Etcd3Exception as exc:
                raise StoreError(f"{self.url}: etcd refused {path}: {_describe(exc)}") \
                    from None
            self._current = index
            return result
        raise EtcdUnavailable(f"{self.url}: no etcd member answered ({'; '.join(errors)})")

    def _post(self, member: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.options.user is not None and self._token is None:
            self._authenticate(member)
        try:
            result: dict[str, Any] = member.post(member.get_url(path), json=body)
        except etcd3gw_exceptions.Etcd3Exception as exc:
            if self.options.user is None or "token" not in (exc.detail_text or ""):
                raise
            self._authenticate(member)  # the token expired (etcd's simple tokens do)
            result = member.post(member.get_url(path), json=body)
        return result

    def _authenticate(self, member: Any) -> None:
        """Get a token for user/password (etcd `auth/authenticate`); every session sends it."""
        body = {"name": self.options.user, "password": self.options.password or ""}
        try:
            result = member.post(member.get_url("auth/authenticate"), json=body)
        except etcd3gw_exceptions.Etcd3Exception as exc:
            if isinstance(exc, (etcd3gw_exceptions.ConnectionFailedError,
                                etcd3gw_exceptions.ConnectionTimeoutError)):
                raise
            raise StoreError(f"{self.url}: etcd refused the login of user "
                             f"{self.options.user!r}") from None
        with self._lock:
            self._token = str(result.get("token", ""))
            for m in self._members:
                m.session.headers["Authorization"] = self._token

    def header_revision(self, key_prefix: bytes) -> int:
        """A linearizable (quorum) read of the prefix's size; returns the cluster revision.

        Cheap (count only); fails with `EtcdUnavailable` when there is no quorum.
        """
        result = self.call("kv/range", {"key": _b64(key_prefix),
                                        "range_end": _b64(prefix_end(key_prefix)),
                                        "count_only": True})
        return _revision(result)

    def get(self, key: bytes) -> tuple[int, KeyValue | None]:
        """`(revision, the key's value or None)`."""
        result = self.call("kv/range", {"key": _b64(key)})
        kvs = result.get("kvs") or []
        return _revision(result), (_kv(kvs[0]) if kvs else None)

    def range_prefix(self, key_prefix: bytes, *, page: int = PAGE
                     ) -> tuple[int, list[KeyValue]]:
        """Every key under `key_prefix` at ONE revision: `(revision, kvs)` (`range_pages`)."""
        revision, out = 0, []
        for page_revision, kvs in self.range_pages(key_prefix, page=page):
            revision = page_revision
            out.extend(kvs)
        return revision, out

    def range_pages(self, key_prefix: bytes, *, page: int = PAGE
                    ) -> Iterator[tuple[int, list[KeyValue]]]:
        """`(revision, page of kvs)` for every key under `key_prefix`, in key order.

        The first page fixes the revision; later pages ask for that revision, so together
        they are one consistent snapshot even while others write. A helper thread fetches
        the next page while the caller works on the current one (etcd's gateway then
        encodes while curvecert parses); errors are raised in the caller.
        """
        pages: queue.Queue[tuple[int, list[KeyValue]] | BaseException | None] = \
            queue.Queue(maxsize=2)
        done = threading.Event()

        def put(item: tuple[int, list[KeyValue]] | BaseException | None) -> bool:
            while not done.is_set():
                try:
                    pages.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def fetch() -> None:
            body: dict[str, Any] = {"key": _b64(key_prefix),
                                    "range_end": _b64(prefix_end(key_prefix)), "limit": page}
            revision = 0
            try:
                while True:
                    result = self.call("kv/range", body)
                    if not revision:
                        revision = _revision(result)
                        body["revision"] = revision
                    kvs = [_kv(item) for item in result.get("kvs") or []]
                    if not put((revision, kvs)):
                        return
                    if not result.get("more") or not kvs:
                        put(None)
                        return
                    body["key"] = _b64(kvs[-1].key + b"\0")
            except BaseException as exc:  # handed to the caller's thread
                put(exc)

        thread = threading.Thread(target=fetch, name="curvecert-etcd-read", daemon=True)
        thread.start()
        try:
            while True:
                item = pages.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            done.set()

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, int]:
        """One transaction; `(succeeded, revision)`. Keys in the dicts must be base64."""
        result = self.call("kv/txn", {"compare": compare, "success": success,
                                      "failure": failure or []})
        return bool(result.get("succeeded")), _revision(result)

    # --- watch ----------------------------------------------------------------------------

    def watch(self, key_prefix: bytes, start_revision: int, stop: threading.Event,
              handle: list[Any]) -> Iterator[tuple[int, list[WatchEvent]]]:
        """Stream `(header revision, events)` for the prefix from `start_revision`.

        The first item (no events) comes when the watch is established. Raises
        `WatchCompacted` when etcd cancels the watch because `start_revision` was
        compacted, `EtcdUnavailable` when no member accepts the watch or the stream ends
        (member gone). `handle[0]` is set to the open response so another thread can
        `abort(handle)` it; `stop` being set ends the iteration quietly.
        """
        body: dict[str, Any] = {"create_request": {"key": _b64(key_prefix),
                                   "range_end": _b64(prefix_end(key_prefix)),
                                   "start_revision": start_revision}}
        n = len(self._members)
        errors: list[str] = []
        for i in range(n):
            index = (self._current + i) % n
            member = self._members[index]
            try:
                if self.options.user is not None:  # a fresh token: a watch may outlive one
                    self._authenticate(member)
                resp = member.session.post(member.get_url("watch"), json=body, stream=True,
                                           timeout=(self.options.timeout, None))
            except (OSError, etcd3gw_exceptions.Etcd3Exception) as exc:
                errors.append(f"{member.host}:{member.port}: {_describe(exc)}")
                continue
            if resp.status_code != 200:
                errors.append(f"{member.host}:{member.port}: HTTP {resp.status_code}")
                if resp.status_code == 401:
                    self._token = None
                resp.close()
                continue
            handle[:] = [resp]
            try:
                yield from self._stream(resp, stop)
            finally:
                resp.close()
            if stop.is_set():
                return
            raise EtcdUnavailable(f"{self.url}: the watch stream from "
                                  f"{member.host}:{member.port} ended")
        raise EtcdUnavailable(f"{self.url}: no etcd member accepted a watch "
                              f"({'; '.join(errors)})")

    @staticmethod
    def _stream(resp: Any, stop: threading.Event) -> Iterator[tuple[int, list[WatchEvent]]]:
        try:
            for line in resp.iter_lines(chunk_size=None):
                if stop.is_set():
                    return
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise EtcdUnavailable(f"watch error: {message['error']}")
                result = message.get("result", {})
                compact = int(result.get("compact_revision", 0) or 0)
                if compact:
                    raise WatchCompacted(compact)
                if result.get("canceled"):
                    raise EtcdUnavailable(f"watch canceled: {result.get('cancel_reason', '')}")
                events = [WatchEvent(ev.get("type") == "DELETE", _kv(ev["kv"]))
                          for ev in result.get("events") or []]
                yield _revision(result), events
        except (OSError, ValueError) as exc:
            if stop.is_set():
                return
            raise EtcdUnavailable(f"watch stream broken: {type(exc).__name__}") from None

    @staticmethod
    def abort(handle: list[Any]) -> None:
        """Break an open watch stream from another thread (shuts its socket down)."""
        for resp in list(handle):
            try:
                fd = resp.raw._fp.fileno()
                sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except Exception:  # already closed, or not a socket any more
                _logger.debug("aborting the watch stream failed", exc_info=True)
