"""`GatewayRelay`: the gateway's message loop, with a per-message "still allowed?" check.

Why not `zmq_proxy`: the C proxy cannot look at a message's metadata, so a client whose key
was removed keeps talking until it disconnects (ZAP runs once per connection). This loop
reads the `User-Id` property of each front message and drops it when
`curvecert.auth.recheck.Rechecker` says the peer would no longer be admitted.

Cost: for a ROUTER front the verdict is cached per routing id (one connection, one
User-Id), so the hot path reads the routing id as bytes and does one dict lookup; other
front types read the first frame without copying to reach its properties. Both caches are
emptied when the policy or a store changes. Frames are moved with pyzmq's compiled backend
calls (see `curvecert.auth.authenticator.fast_io`), in batches after each poll.

Control: the PAIR `pipe` accepts `TERMINATE`; counters are plain attributes read by
`Gateway.stats()`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import zmq

from curvecert.auth.recheck import Rechecker
from curvecert.formats.sanitize import field

__all__ = ["BATCH", "GatewayRelay"]

_logger = logging.getLogger("curvecert.serve.gateway")

#: Messages moved per socket per poll before looking at the other sockets.
BATCH = 512
_BACKEND = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket)
_recv = _BACKEND.recv
_send = _BACKEND.send
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)


class GatewayRelay:
    """Moves messages front <-> back until `TERMINATE` arrives on `pipe`.

    `rechecker=None` relays everything (no revocation check; the benchmark's baseline).
    With `gated=True` the caller feeds every admitted User-Id to `rechecker.admit` (the
    gateway's authenticator does), and messages are only checked while
    `rechecker.armed`, i.e. while a peer admitted earlier is no longer allowed.
    """

    def __init__(self, front: zmq.Socket[Any], back: zmq.Socket[Any], pipe: zmq.Socket[Any],
                 rechecker: Rechecker | None = None, *, gated: bool = False):
        """Relay between bound/connected sockets owned by the calling thread."""
        self.front, self.back, self.pipe = front, back, pipe
        self.rechecker = rechecker
        self.gated = gated
        self.routed = front.type == zmq.ROUTER
        self.front_in = 0  # counted before the message is sent on, so a reader that saw it
        self.back_out = 0  # arrive never sees a count that does not include it yet
        self.back_in = 0
        self.dropped = 0
        self._logged: set[str] = set()
        self._logged_at = -1

    def stats(self) -> dict[str, int]:
        """Message counters: relayed each way and dropped (revoked)."""
        return {"front_in_msgs": self.front_in, "back_out_msgs": self.back_out,
                "back_in_msgs": self.back_in, "front_out_msgs": self.back_in,
                "dropped_revoked": self.dropped}

    def run(self) -> None:
        """Relay until `TERMINATE` (or the context ends)."""
        poller = zmq.Poller()
        for sock in (self.front, self.back, self.pipe):
            poller.register(sock, zmq.POLLIN)
        front, back, pipe = self.front, self.back, self.pipe
        checker, gated = self.rechecker, self.gated
        while True:
            timeout = None
            if checker is not None and checker.next_change != math.inf:
                # a certificate expires then: wake up and re-check (issue 16)
                timeout = max(0, int((checker.next_change - time.time()) * 1000) + 1)
            events = dict(poller.poll(timeout))
            if timeout is not None:
                checker.expire_due()  # type: ignore[union-attr]
            if pipe in events and pipe.recv() == b"TERMINATE":
                return
            if front in events:
                if checker is None or (gated and not checker.armed):
                    self._forward()
                else:
                    self._front_checked(checker)
            if back in events:
                self._return()

    # Frames are moved without copying, and `Frame.more` replaces a getsockopt(RCVMORE) per
    # frame (it costs as much as the rest of the relay step).

    def _forward(self) -> None:
        """Front to back, unchecked: up to `BATCH` whole messages."""
        src, dst = self.front, self.back
        for _ in range(BATCH):
            try:
                part = _recv(src, _NOBLOCK, False)
            except zmq.Again:
                return
            self.front_in += 1
            self.back_out += 1
            while part.more:
                _send(dst, part, _MORE)
                part = _recv(src, 0, False)
            _send(dst, part, 0)

    def _return(self) -> None:
        """Back to front (replies, subscriptions): up to `BATCH` whole messages."""
        src, dst = self.back, self.front
        for _ in range(BATCH):
            try:
                part = _recv(src, _NOBLOCK, False)
            except zmq.Again:
                return
            self.back_in += 1
            while part.more:
                _send(dst, part, _MORE)
                part = _recv(src, 0, False)
            _send(dst, part, 0)

    def _front_checked(self, checker: Rechecker) -> None:
        front, back = self.front, self.back
        routed = self.routed
        for _ in range(BATCH):
            try:
                first = _recv(front, _NOBLOCK, False)
            except zmq.Again:
                return
            parts = [first]
            if routed:  # the routing id names the connection: cache per connection
                routes = checker.routes
                route = first.bytes
                ok = routes.get(route)
                if ok is None and first.more:
                    body = _recv(front, 0, False)
                    parts.append(body)
                    ok = routes[route] = checker.allowed(_user_id(body))
            else:
                ok = checker.allowed(_user_id(first))
            self.front_in += 1
            part = parts[-1]
            while part.more:
                part = _recv(front, 0, False)
                parts.append(part)
            if not ok:
                self._drop(checker, parts)
                continue
            last = len(parts) - 1
            self.back_out += 1
            for i, part in enumerate(parts):
                _send(back, part, _MORE if i < last else 0)

    def _drop(self, checker: Rechecker, parts: list[Any]) -> None:
        self.dropped += 1
        if self._logged_at != checker.invalidations:
            self._logged, self._logged_at = set(), checker.invalidations
        uid = _user_id(parts[1] if self.routed and len(parts) > 1 else parts[0])
        if uid not in self._logged:
            self._logged.add(uid)
            _logger.warning("gateway: dropping messages from user_id=%s: no longer allowed "
                            "by the policy (revoked while connected)", field(uid))


def _user_id(frame: Any) -> str:
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP metadata on this connection
        return ""
    return value if isinstance(value, str) else ""
