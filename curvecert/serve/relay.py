"""The forwarder's relay loop: libzmq's ZAP requests up to the daemon, replies back down.

It is an RFC 27 proxy handler: a ROUTER faces libzmq's ZAP clients and the whole
message, routing envelope included, goes up a DEALER to the daemon, which returns the
envelope unchanged. libzmq always uses request id `1`, so replies are matched by
envelope, never by request id; the relay adds one frame of its own (a sequence number)
in front of the envelope so a reply that arrives after its deadline is recognised and
dropped instead of answering a later request.

When a request times out and nothing at all came back from the daemon meanwhile, the
DEALER is closed and opened afresh: requests queued toward a dead daemon are discarded
(they would otherwise be replayed when it returns) and every request still waiting is
denied at once. Reconnection is libzmq's; the relay recovers when the daemon returns.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from curvecert.auth.wire import send_frames

__all__ = ["DEFAULT_TIMEOUT", "UNREACHABLE_TEXT", "ForwarderStats", "Relay"]

_logger = logging.getLogger("curvecert.serve.forwarder")

#: Seconds the daemon has to answer before the forwarder denies by itself (≤ 1 s).
DEFAULT_TIMEOUT = 0.5
#: Status text of the forwarder's own 500 reply.
UNREACHABLE_TEXT = b"authenticator unreachable"

_VERSION = b"1.0"
# RFC 27 status codes a reply may carry; anything else from upstream becomes our own 500.
_STATUSES = frozenset((b"200", b"300", b"400", b"500"))
_REPLY_FRAMES = 6  # version, request id, status, text, user id, metadata
_SEQ_LEN = 8
_NOBLOCK = int(zmq.NOBLOCK)

Pending = collections.OrderedDict[bytes, tuple[list[bytes], bytes, float]]


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


class Relay:
    """The relay's state (counters, outage tracking) and its loop; one per forwarder.

    `loop(front, back, control, open_backend)` runs until `control` is readable (stop) and
    returns the DEALER in use; `open_backend()` makes a fresh DEALER to the daemon.
    """

    def __init__(self, endpoint: str, timeout: float) -> None:
        """Prepare the counters for a link to `endpoint` with a `timeout` s deadline."""
        self.endpoint = endpoint
        self.timeout = timeout
        self._lock = threading.Lock()
        self.forwarded = 0
        self.answered = 0
        self.timed_out = 0
        self.unreachable = 0
        self.late = 0
        self.malformed = 0
        self.resets = 0
        self._outage_since: float | None = None
        self._outage_denied = 0
        self._outage_logged = 0.0
        self._link_error = ""
        self._link_logged = 0.0

    @property
    def stats(self) -> ForwarderStats:
        """A consistent copy of the counters."""
        with self._lock:
            return ForwarderStats(self.forwarded, self.answered, self.timed_out,
                                  self.unreachable, self.late, self.malformed)

    def loop(self, front: zmq.Socket[Any], back: zmq.Socket[Any] | None,
             control: zmq.Socket[Any], open_backend: Callable[[], zmq.Socket[Any]]
             ) -> tuple[zmq.Socket[Any] | None, bool]:
        """Relay until `control` is readable; returns `(DEALER or None, terminated)`.

        `terminated` is True when the context is terminating (ETERM). Nothing else ends
        the loop: a failure while relaying one request denies it, a failure around it
        (polling, a link that cannot be reopened: EMFILE, `ZMQ_MAX_SOCKETS`) is logged
        and retried while every request is denied 500, so the ZAP endpoint stays bound
        and answered.
        """
        # seq -> (envelope, request id, deadline); insertion order == deadline order.
        self._pending: Pending = collections.OrderedDict()
        self._counter = itertools.count(1)
        self._back = back
        self._open = open_backend
        self._retry_at = 0.0
        self._last_heard = time.monotonic()
        self._poller = zmq.Poller()
        self._poller.register(front, zmq.POLLIN)
        self._poller.register(control, zmq.POLLIN)
        if back is not None:
            self._poller.register(back, zmq.POLLIN)
        failures = 0
        while True:
            try:
                if self._step(front, control):
                    return self._back, False
                failures = 0
            except zmq.ContextTerminated:
                return self._back, True
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    _logger.error("ZAP forwarder: %s: %s (retrying; the ZAP endpoint stays "
                                  "bound and denies meanwhile)", type(exc).__name__, exc)
                time.sleep(min(0.5, 0.001 * failures))

    def _step(self, front: zmq.Socket[Any], control: zmq.Socket[Any]) -> bool:
        """One wait and what it brought; True when asked to stop."""
        pending = self._pending
        now = time.monotonic()
        wait_ms: int | None = None
        if pending:
            first_deadline = next(iter(pending.values()))[2]
            wait_ms = max(0, int((first_deadline - now) * 1000) + 1)
        if self._back is None:
            if now >= self._retry_at:
                self._reopen()
            if self._back is None:
                retry_ms = max(0, int((self._retry_at - now) * 1000) + 1)
                wait_ms = retry_ms if wait_ms is None else min(wait_ms, retry_ms)
        events = dict(self._poller.poll(wait_ms))
        if control in events:
            control.recv()
            # Deny whatever is still waiting: the daemon's late answers go nowhere now.
            for envelope, request_id, _ in pending.values():
                self._deny(front, envelope, request_id)
            pending.clear()
            return True
        back = self._back
        if back is not None and back in events:
            self._last_heard = time.monotonic()
            if self._outage_since is not None:
                _logger.warning("authenticator at %s answers again (%d request(s) denied "
                                "meanwhile)", self.endpoint, self._outage_denied)
                self._outage_since = None
            self._relay_replies(front, back, pending)
        if front in events:
            self._relay_requests(front, pending)
        self._expire(front)
        return False

    def _expire(self, front: zmq.Socket[Any]) -> None:
        """Deny requests past their deadline; reset a link that said nothing meanwhile."""
        pending = self._pending
        now = time.monotonic()
        silent_timeout = False
        while pending:
            seq, (envelope, request_id, deadline) = next(iter(pending.items()))
            if deadline > now:
                break
            del pending[seq]
            with self._lock:
                self.timed_out += 1
            if self._last_heard < deadline - self.timeout:
                silent_timeout = True
            self._warn_outage(now)
            self._deny(front, envelope, request_id)
        if silent_timeout:
            # The daemon said nothing for a whole deadline: treat the link as dead.
            # Queued requests are discarded with the socket; waiting ones are denied.
            for envelope, request_id, _ in pending.values():
                with self._lock:
                    self.timed_out += 1
                self._deny(front, envelope, request_id)
            pending.clear()
            self._drop_back()
            self.resets += 1
            self._reopen()
            self._last_heard = time.monotonic()

    def _drop_back(self) -> None:
        back, self._back = self._back, None
        if back is not None:
            self._poller.unregister(back)
            back.close(linger=0)

    def _reopen(self) -> None:
        """Open a fresh link; on failure (EMFILE, ...) stay without one and retry later."""
        try:
            back = self._open()
        except zmq.ContextTerminated:
            raise
        except Exception as exc:
            now = time.monotonic()
            self._retry_at = now + 0.1
            text = str(exc)
            if text != self._link_error or now - self._link_logged >= 10.0:
                self._link_error, self._link_logged = text, now
                _logger.error("cannot open the link to the authenticator at %s (%s): denying "
                              "until it can be opened", self.endpoint, exc)
            return
        self._link_error = ""
        self._poller.register(back, zmq.POLLIN)
        self._back = back

    def _relay_requests(self, front: zmq.Socket[Any], pending: Pending) -> None:
        while True:
            try:
                frames = front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                split = frames.index(b"")
            except ValueError:
                with self._lock:
                    self.malformed += 1
                _logger.warning("dropped a ZAP request without a routing envelope")
                continue
            envelope = frames[:split]
            body = frames[split + 1:]
            request_id = body[1] if len(body) > 1 else b""
            try:
                self._forward(front, frames, envelope, body, request_id, pending)
            except zmq.ContextTerminated:
                raise
            except Exception as exc:  # anything at all: this request is denied, not lost
                _logger.error("relaying a ZAP request failed (%s): denied",
                              type(exc).__name__)
                self._deny(front, envelope, request_id)

    def _forward(self, front: zmq.Socket[Any], frames: list[bytes], envelope: list[bytes],
                 body: list[bytes], request_id: bytes, pending: Pending) -> None:
        if not body or body[0] != _VERSION:
            # RFC 27: a bad version is an internal error; no need to ask the daemon.
            with self._lock:
                self.malformed += 1
            self._reply(front, envelope, request_id, b"500", b"unsupported ZAP version")
            return
        if self._back is None:  # try at once: the daemon may have come up meanwhile
            self._reopen()
        back = self._back
        if back is None:  # no link right now (it could not be opened): deny at once
            with self._lock:
                self.unreachable += 1
            self._warn_outage(time.monotonic())
            self._deny(front, envelope, request_id)
            return
        seq = next(self._counter).to_bytes(_SEQ_LEN, "big")
        try:
            send_frames(back, [seq, *frames], _NOBLOCK)
        except zmq.Again:  # the queue toward the daemon is full
            with self._lock:
                self.unreachable += 1
            _logger.warning("authenticator at %s is not keeping up: denied", self.endpoint)
            self._deny(front, envelope, request_id)
            return
        pending[seq] = (envelope, request_id, time.monotonic() + self.timeout)
        with self._lock:
            self.forwarded += 1

    def _relay_replies(self, front: zmq.Socket[Any], back: zmq.Socket[Any],
                       pending: Pending) -> None:
        while True:
            try:
                frames = back.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            entry = pending.pop(frames[0], None) if frames else None
            if entry is None:
                with self._lock:
                    self.late += 1
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
                    self.malformed += 1
                _logger.error("malformed reply from the authenticator at %s: denied",
                              self.endpoint)
                self._reply(front, envelope, request_id, b"500",
                            b"malformed reply from the authenticator")
                continue
            with self._lock:  # counted first, so a caller that got the reply sees it
                self.answered += 1
            try:
                send_frames(front, [*envelope, b"", *body])
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
            send_frames(front, [*envelope, b"", _VERSION, request_id, status, text, b"", b""])
        except zmq.ZMQError:  # the peer (a handshake) is gone; nothing to answer
            pass
