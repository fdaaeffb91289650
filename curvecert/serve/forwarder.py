"""`ZapForwarder`: the small in-process piece that lets a separate daemon answer ZAP.

Why it exists: libzmq sends ZAP requests only to `inproc://zeromq.zap.01` in the server
socket's own context, so an authenticator in another process (`curvecert serve-auth`)
never sees them unless something inside the application relays them. That something
must be careful in two ways:

- **Bind first.** A CURVE server with no ZAP handler bound accepts every client. The
  forwarder binds the ZAP endpoint in `start()` (which returns only once it is bound),
  so start it *before* the application binds its server sockets.
- **Fail closed, and fast.** A handler that never answers stalls each handshake for
  libzmq's 30 s `ZMQ_HANDSHAKE_IVL`. When the daemon does not answer within `timeout`
  (0.5 s by default) the forwarder replies `500` itself ("authenticator unreachable"),
  so an outage denies promptly and never admits.

It is an RFC 27 proxy handler: a ROUTER faces libzmq's ZAP clients and the whole
message, routing envelope included, goes up a DEALER to the daemon, which returns the
envelope unchanged. libzmq always uses request id `1`, so replies are matched by
envelope, never by request id; the forwarder adds one frame of its own (a sequence
number) in front of the envelope so a reply that arrives after its deadline is
recognised and dropped instead of answering a later request.

When a request times out and nothing at all came back from the daemon meanwhile, the
DEALER is closed and opened afresh: requests queued toward a dead daemon are discarded
(they would otherwise be replayed when it returns) and every request still waiting is
denied at once. Reconnection is libzmq's; the forwarder recovers when the daemon returns.
While the daemon is away each handshake is denied after the deadline (a client told 500
stops retrying in libzmq 4.3 until the application reconnects it).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import zmq

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError

__all__ = ["DEFAULT_TIMEOUT", "UNREACHABLE_TEXT", "ZAP_ENDPOINT", "ForwarderStats",
           "ZapForwarder"]

_logger = logging.getLogger(__name__)

#: RFC 27: the in-process endpoint libzmq sends ZAP requests to.
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: Seconds the daemon has to answer before the forwarder denies by itself (≤ 1 s).
DEFAULT_TIMEOUT = 0.5
#: Status text of the forwarder's own 500 reply.
UNREACHABLE_TEXT = b"authenticator unreachable"

_VERSION = b"1.0"
# RFC 27 status codes a reply may carry; anything else from upstream becomes our own 500.
_STATUSES = frozenset((b"200", b"300", b"400", b"500"))
_REPLY_FRAMES = 6  # version, request id, status, text, user id, metadata
_SEQ_LEN = 8
_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
# pyzmq's send_multipart costs ~18 µs for a 10-frame ZAP message, mostly enum arithmetic
# in the Python layer; the Cython send it ends in costs ~2 µs. The relay is on the
# handshake path, so it calls that directly.
_raw_send = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket).send


def _send_frames(sock: zmq.Socket[Any], frames: list[bytes], flags: int = 0) -> None:
    """`sock.send_multipart(frames, flags)` without the per-frame Python overhead."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _raw_send(sock, frame, (_MORE if i < last else 0) | flags)


@dataclass(frozen=True)
class ForwarderStats:
    """Counters of one forwarder since it started."""

    forwarded: int
    """Requests relayed to the daemon."""
    answered: int
    """Replies from the daemon relayed back to libzmq."""
    timed_out: int
    """Requests the forwarder denied itself because no reply came within the deadline."""
    unreachable: int
    """Requests denied at once because the queue toward the daemon was full."""
    late: int
    """Replies that arrived after their deadline and were dropped."""
    malformed: int
    """Requests without an envelope (dropped) or bad replies from upstream (denied)."""


def _check_endpoint(endpoint: str, server_key: bytes | None, cert: Certificate | None) -> None:
    scheme = endpoint.partition("://")[0]
    if scheme not in ("ipc", "tcp", "inproc"):
        raise ConfigError(f"ZAP forwarding endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")
    if (server_key is None) != (cert is None):
        raise ConfigError("a CURVE-secured forwarding link needs both the daemon's server key "
                          "and the forwarder's own secret certificate")
    if scheme == "tcp" and server_key is None:
        raise ConfigError(f"{endpoint}: a tcp:// link to the authenticator carries PLAIN "
                          "passwords and client keys; give server_key= and cert= (CURVE) "
                          "or use ipc://")
    if cert is not None and not cert.has_secret:
        raise ConfigError("the forwarder's certificate must include its secret key")


class ZapForwarder:
    """Relay this context's ZAP requests to a `curvecert serve-auth` daemon; deny on outage.

    `ZapForwarder(context, "ipc:///run/curvecert/zap.sock").start()` before the
    application binds its server sockets. For a `tcp://` daemon pass the daemon's public
    key as `server_key` and the forwarder's own secret certificate as `cert` (the daemon
    admits forwarders by key). `timeout` (seconds, default 0.5) is how long the daemon
    has to answer before the forwarder replies 500 itself. `stop()` (or leaving the
    `with` block) unbinds and joins the thread; it never blocks on the daemon.
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, *,
                 timeout: float = DEFAULT_TIMEOUT, server_key: bytes | str | None = None,
                 cert: Certificate | None = None, zap_endpoint: str = ZAP_ENDPOINT):
        """Prepare a forwarder; nothing is bound until `start()`."""
        if not 0 < timeout <= 30:
            raise ConfigError(f"forwarder timeout must be in (0, 30] seconds, got {timeout}")
        key = keys.decode_key(server_key, what="daemon server key") if server_key else None
        _check_endpoint(endpoint, key, cert)
        self.context = context
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.zap_endpoint = zap_endpoint
        self._server_key = key
        self._cert = cert
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._control_addr = f"inproc://curvecert-forwarder-{os.getpid()}-{id(self):x}"
        self._control: zmq.Socket[Any] | None = None
        self._lock = threading.Lock()
        self._forwarded = 0
        self._answered = 0
        self._timed_out = 0
        self._unreachable = 0
        self._late = 0
        self._malformed = 0
        self._resets = 0
        self._outage_since: float | None = None
        self._outage_denied = 0
        self._outage_logged = 0.0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> ZapForwarder:
        """Bind the ZAP endpoint and start relaying; returns once bound (raises if not).

        Raises `OperationalError` if the ZAP endpoint is already bound in this context
        (another authenticator or forwarder holds it).
        """
        if self._thread is not None:
            raise OperationalError("this ZapForwarder is already started")
        control = self.context.socket(zmq.PAIR)
        control.linger = 0
        control.bind(self._control_addr)
        self._control = control
        self._thread = threading.Thread(target=self._run, name="curvecert-zap-forwarder",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            control.close(linger=0)
            self._control = None
            err = self._start_error
            raise OperationalError(f"cannot bind the ZAP endpoint {self.zap_endpoint}: {err} "
                                   "(is another authenticator running in this context?)"
                                   ) from err
        _logger.info("ZAP forwarder bound %s, relaying to %s (deadline %.2fs)",
                     self.zap_endpoint, self.endpoint, self.timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop relaying, unbind the ZAP endpoint and join the thread; safe to call twice."""
        thread, control = self._thread, self._control
        if thread is None or control is None:
            return
        try:
            control.send(b"STOP", zmq.NOBLOCK)
        except zmq.ZMQError:  # the thread is gone already
            pass
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - the loop never blocks for long
            _logger.error("ZAP forwarder thread did not stop within %.1fs", timeout)
        control.close(linger=0)
        self._thread = None
        self._control = None

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ZapForwarder:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def stats(self) -> ForwarderStats:
        """A consistent copy of the counters."""
        with self._lock:
            return ForwarderStats(self._forwarded, self._answered, self._timed_out,
                                  self._unreachable, self._late, self._malformed)

    @property
    def forwarded(self) -> int:
        """Requests relayed to the daemon."""
        return self._forwarded

    @property
    def answered(self) -> int:
        """Replies relayed back from the daemon."""
        return self._answered

    @property
    def timed_out(self) -> int:
        """Requests denied by the forwarder because the daemon did not answer in time."""
        return self._timed_out

    @property
    def resets(self) -> int:
        """How many times the link to the daemon was reopened after a silent timeout."""
        return self._resets

    # --- the relay thread ---------------------------------------------------------------

    def _open_backend(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(zmq.DEALER)
        sock.linger = 0
        # Requests queue while the link is (re)connecting, so a forwarder started a moment
        # before the daemon is reachable does not deny its first clients. A queue toward a
        # dead daemon is thrown away with the socket after a silent deadline (see _loop).
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 1000
        sock.sndhwm = sock.rcvhwm = 100_000  # a burst of handshakes must not hit the HWM
        if self.endpoint.startswith("tcp://"):
            sock.heartbeat_ivl = 1000
            sock.heartbeat_timeout = 3000
        if self._cert is not None and self._server_key is not None:
            self._cert.apply_client(sock, self._server_key)
        sock.connect(self.endpoint)
        return sock

    def _run(self) -> None:
        front = self.context.socket(zmq.ROUTER)
        front.linger = 0
        try:
            front.bind(self.zap_endpoint)
            control = self.context.socket(zmq.PAIR)
            control.linger = 0
            control.connect(self._control_addr)
            back = self._open_backend()
        except (zmq.ZMQError, ValueError) as exc:
            front.close(linger=0)
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            back = self._loop(front, back, control)
        except Exception:  # pragma: no cover - a bug; never leave libzmq waiting silently
            _logger.exception("ZAP forwarder failed; the ZAP endpoint is now unbound and "
                              "CURVE servers in this context would ACCEPT ALL clients")
        finally:
            try:  # unbinding inproc is synchronous: a new handler may bind at once
                front.unbind(self.zap_endpoint)
            except zmq.ZMQError:
                pass
            front.close(linger=0)
            back.close(linger=0)
            control.close(linger=0)

    def _loop(self, front: zmq.Socket[Any], back: zmq.Socket[Any],
              control: zmq.Socket[Any]) -> zmq.Socket[Any]:
        # seq -> (envelope, request id, deadline); insertion order == deadline order.
        pending: collections.OrderedDict[bytes, tuple[list[bytes], bytes, float]] = \
            collections.OrderedDict()
        counter = itertools.count(1)
        last_heard = time.monotonic()
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        while True:
            wait_ms: int | None = None
            if pending:
                first_deadline = next(iter(pending.values()))[2]
                wait_ms = max(0, int((first_deadline - time.monotonic()) * 1000) + 1)
            events = dict(poller.poll(wait_ms))
            if control in events:
                control.recv()
                # Deny whatever is still waiting: nobody will answer it after we unbind.
                for envelope, request_id, _ in pending.values():
                    self._deny(front, envelope, request_id)
                return back
            if back in events:
                last_heard = time.monotonic()
                if self._outage_since is not None:
                    _logger.warning("authenticator at %s answers again (%d request(s) denied "
                                    "meanwhile)", self.endpoint, self._outage_denied)
                    self._outage_since = None
                self._relay_replies(front, back, pending)
            if front in events:
                self._relay_requests(front, back, pending, counter)
            now = time.monotonic()
            silent_timeout = False
            while pending:
                seq, (envelope, request_id, deadline) = next(iter(pending.items()))
                if deadline > now:
                    break
                del pending[seq]
                with self._lock:
                    self._timed_out += 1
                if last_heard < deadline - self.timeout:
                    silent_timeout = True
                self._warn_outage(now)
                self._deny(front, envelope, request_id)
            if silent_timeout:
                # The daemon said nothing for a whole deadline: treat the link as dead.
                # Queued requests are discarded with the socket; waiting ones are denied.
                for envelope, request_id, _ in pending.values():
                    with self._lock:
                        self._timed_out += 1
                    self._deny(front, envelope, request_id)
                pending.clear()
                poller.unregister(back)
                back.close(linger=0)
                back = self._open_backend()
                poller.register(back, zmq.POLLIN)
                last_heard = time.monotonic()
                self._resets += 1

    def _relay_requests(self, front: zmq.Socket[Any], back: zmq.Socket[Any],
                        pending: collections.OrderedDict[bytes, tuple[list[bytes], bytes, float]],
                        counter: itertools.count[int]) -> None:
        while True:
            try:
                frames = front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                split = frames.index(b"")
            except ValueError:
                with self._lock:
                    self._malformed += 1
                _logger.warning("dropped a ZAP request without a routing envelope")
                continue
            envelope = frames[:split]
            body = frames[split + 1:]
            request_id = body[1] if len(body) > 1 else b""
            if not body or body[0] != _VERSION:
                # RFC 27: a bad version is an internal error; no need to ask the daemon.
                with self._lock:
                    self._malformed += 1
                self._reply(front, envelope, request_id, b"500", b"unsupported ZAP version")
                continue
            seq = next(counter).to_bytes(_SEQ_LEN, "big")
            try:
                _send_frames(back, [seq, *frames], _NOBLOCK)
            except zmq.ZMQError:  # EAGAIN: the queue toward the daemon is full
                with self._lock:
                    self._unreachable += 1
                _logger.warning("authenticator at %s is not keeping up: denied", self.endpoint)
                self._deny(front, envelope, request_id)
                continue
            pending[seq] = (envelope, request_id, time.monotonic() + self.timeout)
            with self._lock:
                self._forwarded += 1

    def _relay_replies(self, front: zmq.Socket[Any], back: zmq.Socket[Any],
                       pending: collections.OrderedDict[bytes, tuple[list[bytes], bytes,
                                                                      float]]) -> None:
        while True:
            try:
                frames = back.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            entry = pending.pop(frames[0], None) if frames else None
            if entry is None:
                with self._lock:
                    self._late += 1
                _logger.debug("dropped a late or unknown reply from the authenticator")
                continue
            envelope, request_id, _ = entry
            rest = frames[1:]
            try:
                split = rest.index(b"")
            except ValueError:
                split = -1
            body = rest[split + 1:] if split >= 0 else []
            if (split < 0 or rest[:split] != envelope or len(body) != _REPLY_FRAMES
                    or body[0] != _VERSION or body[1] != request_id
                    or body[2] not in _STATUSES):
                with self._lock:
                    self._malformed += 1
                _logger.error("malformed reply from the authenticator at %s: denied",
                              self.endpoint)
                self._reply(front, envelope, request_id, b"500",
                            b"malformed reply from the authenticator")
                continue
            with self._lock:  # counted first, so a caller that got the reply sees it
                self._answered += 1
            try:
                _send_frames(front, [*envelope, b"", *body])
            except zmq.ZMQError:  # the handshake went away meanwhile
                pass

    def _warn_outage(self, now: float) -> None:
        """Log an outage once when it starts and then at most every 10 s (no log floods)."""
        if self._outage_since is None:
            self._outage_since = now
            self._outage_denied = 0
            self._outage_logged = 0.0
        self._outage_denied += 1
        if now - self._outage_logged >= 10.0:
            self._outage_logged = now
            _logger.warning("authenticator at %s did not answer within %.2fs: denying "
                            "(%d request(s) so far)", self.endpoint, self.timeout,
                            self._outage_denied)

    def _deny(self, front: zmq.Socket[Any], envelope: list[bytes], request_id: bytes) -> None:
        self._reply(front, envelope, request_id, b"500", UNREACHABLE_TEXT)

    @staticmethod
    def _reply(front: zmq.Socket[Any], envelope: list[bytes], request_id: bytes,
               status: bytes, text: bytes) -> None:
        # RFC 27 reply: version, request id, status, text, user id (empty unless 200), metadata
        try:
            _send_frames(front, [*envelope, b"", _VERSION, request_id, status, text, b"", b""])
        except zmq.ZMQError:  # the peer (a handshake) is gone; nothing to answer
            pass
