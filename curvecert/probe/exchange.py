"""The live half of a round trip with a server that sends first (a REQ socket).

For most servers a successful handshake is the answer. A REQ socket bound as a server is
different: libzmq 4.3 completes its handshake (both monitors show `HANDSHAKE_SUCCEEDED`)
and then, when the ZAP reply carried a non-empty User-Id, drops the connection as soon as
the first message from the client arrives. Its REQ session accepts only an empty
delimiter frame first and refuses the User-Id frame that libzmq puts in front of that
message. The server's request goes out; the reply is lost, and a strict REQ socket then
waits for it for ever.

So, after the handshake, `req_round_trip` waits on the probe's ROUTER socket for the
server's request, answers it with an empty reply, and watches what follows until the
deadline: a second request (the first reply was taken), a `DISCONNECTED` (it was not), or
nothing. Every request that arrives is answered. `curvecert.probe.wire.Exchange` records
the result.

The server is not trusted. The probe's socket refuses frames over
`curvecert.probe.wire.MAX_FRAME`, but libzmq keeps the frames of a multipart message
until its last one arrives and has no limit on their number, so a server that never ends a
message could fill the probe's memory until the deadline. While it waits, `req_round_trip`
therefore watches the probe process's resident memory and gives up (`flooded`) once it has
grown by `FLOOD_BUDGET` octets.

`read_event` turns one socket-monitor message into a `ProbeEvent`; `curvecert.probe.client`
uses it while it watches the handshake.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert.probe.wire import Exchange, ProbeEvent, describe_event, dropped_after_handshake

__all__ = ["FLOOD_BUDGET", "read_event", "req_round_trip"]

_logger = logging.getLogger(__name__)

#: How much the probe process may grow (octets) while it waits on a REQ server.
FLOOD_BUDGET = 256 << 20

# How often (seconds) the memory is looked at while nothing else wakes the probe.
_MEMORY_CHECK = 0.05


def _resident() -> int:
    """The process's resident memory in octets: current on Linux, else the peak so far."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def read_event(monitor: Any, start: float) -> ProbeEvent:
    """Receive one monitor message; `time` is seconds since `start` (monotonic clock)."""
    msg = recv_monitor_message(monitor)
    code, value = int(msg["event"]), int(msg["value"])
    name, detail = describe_event(code, value)
    event = ProbeEvent(name, value, time.monotonic() - start, detail)
    _logger.debug("probe event %s %s (%s) at %.3fs", name, value, detail, event.time)
    return event


def req_round_trip(sock: zmq.Socket[bytes], monitor: Any, events: list[ProbeEvent],
                   start: float, deadline: float) -> Exchange:
    """Take part in one request/reply with a REQ server whose handshake just succeeded.

    `sock` is the probe's connected ROUTER socket (the peer type a REQ server accepts,
    RFC 28), `monitor` its monitor socket, `events` the monitor events so far; new events
    are appended to it. Returns no later than `deadline` (monotonic seconds). Raises
    nothing for a peer that goes away; libzmq errors on send are counted as an unsent
    reply. A server that makes the probe grow by `FLOOD_BUDGET` octets (an endless
    multipart message) ends the exchange at once as `flooded`.
    """
    sock.router_mandatory = True  # a reply to a peer that is gone fails instead of vanishing
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    received = sent = 0
    base = _resident()
    while True:
        # Requests first: one that arrived just before a drop still counts.
        while sock.poll(0):
            parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            frames = [p.bytes for p in parts]
            received += 1
            _logger.debug("probe: request %d from the REQ server (%d frames, %d octets)",
                          received, len(frames), sum(len(f) for f in frames))
            sent += _answer(sock, frames)
            peer = _socket_type(parts[-1])
            if peer and peer != "REQ":  # "": no metadata (ZMTP 2 peers); take its word
                # libzmq's ROUTER also takes DEALER and ROUTER peers, which may send any
                # number of messages: a second one would prove nothing.
                return Exchange("not-req", received, sent, peer)
            if received >= 2:
                # A strict REQ socket sends again only after it got the previous reply.
                return Exchange("confirmed", received, sent)
        if dropped_after_handshake(events):
            return Exchange("dropped", received, sent)
        if _resident() - base > FLOOD_BUDGET:
            _logger.debug("probe: the REQ server's data grew the probe past %d octets",
                          FLOOD_BUDGET)
            return Exchange("flooded", received, sent)
        left = deadline - time.monotonic()
        if left <= 0:
            return Exchange("kept" if sent else "no-request", received, sent)
        if monitor in dict(poller.poll(max(1, int(min(left, _MEMORY_CHECK) * 1000)))):
            while monitor.poll(0):
                events.append(read_event(monitor, start))


def _socket_type(frame: zmq.Frame) -> str:
    """The sender's socket type from its READY metadata (RFC 23), as libzmq reports it."""
    try:
        return str(frame.get("Socket-Type"))
    except zmq.ZMQError:
        return ""


def _answer(sock: zmq.Socket[bytes], frames: list[bytes]) -> int:
    """Send an empty reply to the request `frames` (ROUTER view); 1 if it went out.

    The reply keeps the request's envelope: every frame up to and including the empty
    delimiter (RFC 28), here the routing id and the delimiter.
    """
    try:
        cut = frames.index(b"", 1) + 1
    except ValueError:
        cut = 1
    try:
        sock.send_multipart([*frames[:cut], b""], zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        _logger.debug("probe: the reply could not be sent: %s", exc.strerror)
        return 0
    return 1
