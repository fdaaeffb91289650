"""`Relay`: the gateway's message loop, with a per-message "still allowed?" check.

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
from typing import Any

import zmq

from curvecert.auth.recheck import Rechecker
from curvecert.formats.sanitize import field

__all__ = ["BATCH", "Relay"]

_logger = logging.getLogger("curvecert.serve.gateway")

#: Messages moved per socket per poll before looking at the other sockets.
BATCH = 512
_BACKEND = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket)
_recv = _BACKEND.recv
_send = _BACKEND.send
_get = _BACKEND.get
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)


class Relay:
    """Moves messages front <-> back until `TERMINATE` arrives on `pipe`.

    `rechecker=None` relays everything (no revocation check; the benchmark's baseline).
    """

    def __init__(self, front: zmq.Socket[Any], back: zmq.Socket[Any], pipe: zmq.Socket[Any],
                 rechecker: Rechecker | None = None):
        """Relay between bound/connected sockets owned by the calling thread."""
        self.front, self.back, self.pipe = front, back, pipe
        self.rechecker = rechecker
        self.routed = front.type == zmq.ROUTER
        self.front_in = 0
        self.back_out = 0
        self.back_in = 0
        self.front_out = 0
        self.dropped = 0
        self._logged: set[str] = set()
        self._logged_at = -1

    def stats(self) -> dict[str, int]:
        """Message counters: relayed each way and dropped (revoked)."""
        return {"front_in_msgs": self.front_in, "back_out_msgs": self.back_out,
                "back_in_msgs": self.back_in, "front_out_msgs": self.front_out,
                "dropped_revoked": self.dropped}

    def run(self) -> None:
        """Relay until `TERMINATE` (or the context ends)."""
        poller = zmq.Poller()
        for sock in (self.front, self.back, self.pipe):
            poller.register(sock, zmq.POLLIN)
        front, back, pipe = self.front, self.back, self.pipe
        while True:
            events = dict(poller.poll())
            if pipe in events and pipe.recv() == b"TERMINATE":
                return
            if front in events:
                self._front_batch()
            if back in events:
                self.back_in += self._move(back, front)

    def _move(self, src: zmq.Socket[Any], dst: zmq.Socket[Any]) -> int:
        n = 0
        while n < BATCH:
            try:
                part = _recv(src, _NOBLOCK)
            except zmq.Again:
                break
            while _get(src, _RCVMORE):
                _send(dst, part, _MORE)
                part = _recv(src, 0)
            _send(dst, part, 0)
            n += 1
        if src is self.back:
            self.front_out += n
        else:
            self.back_out += n
        return n

    def _front_batch(self) -> None:
        checker = self.rechecker
        if checker is None:
            self.front_in += self._move(self.front, self.back)
            return
        front, back = self.front, self.back
        routed = self.routed
        for _ in range(BATCH):
            try:
                if routed:
                    first: Any = _recv(front, _NOBLOCK)
                    routes = checker.routes
                    ok = routes.get(first)
                    if ok is None:
                        body = _recv(front, 0, False)  # a Frame: its properties
                        uid = _user_id(body)
                        ok = routes[first] = checker.allowed(uid)
                        parts: list[Any] = [first, body]
                    else:
                        parts = [first]
                else:
                    first = _recv(front, _NOBLOCK, False)
                    uid = _user_id(first)
                    ok = checker.allowed(uid)
                    parts = [first]
            except zmq.Again:
                return
            self.front_in += 1
            while _get(front, _RCVMORE):
                parts.append(_recv(front, 0))
            if not ok:
                self._drop(parts, routed)
                continue
            last = len(parts) - 1
            for i, part in enumerate(parts):
                _send(back, part, _MORE if i < last else 0)
            self.back_out += 1

    def _drop(self, parts: list[Any], routed: bool) -> None:
        self.dropped += 1
        checker = self.rechecker
        assert checker is not None
        if self._logged_at != checker.invalidations:
            self._logged, self._logged_at = set(), checker.invalidations
        frame = parts[1] if routed and len(parts) > 1 else parts[0]
        uid = _user_id(frame) if isinstance(frame, zmq.Frame) else "?"
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
