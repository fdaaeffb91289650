"""The pure half of handshake diagnosis: endpoints, greetings and monitor events.

ZeroMQ connects asynchronously and never raises on a failed handshake, so a wrong server
key, a refused client, a missing ZAP handler and a server that is down all look the same
to an application: *nothing happens* (libzmq #2227, pyzmq #1706). libzmq >= 4.3 does tell
the client side a little through the socket monitor; this module names those events and
picks the decisive one (`observe`). `curvecert.probe.advice` turns it into a verdict and
`curvecert.probe.client` does the I/O.

What libzmq 4.3.5 reports on the CLIENT side (measured with a DEALER client and default
options; docs/troubleshooting.md has the full table):

- nothing listening (tcp, ipc): `CLOSED`, `CONNECT_RETRIED` in a loop; never `CONNECTED`.
- admitted (ZAP 200, or CURVE with no handler): `CONNECTED`, `HANDSHAKE_SUCCEEDED`.
- ZAP 400 / 500: `HANDSHAKE_FAILED_AUTH` with value 400 / 500 (the ERROR reason); no retry.
- ZAP 300, or a handler that never answers: `CONNECTED`, then nothing until the server's
  `ZMQ_HANDSHAKE_IVL` (30 s) ends the connection. The client never learns the 300.
- wrong CURVE server key: `HANDSHAKE_FAILED_NO_DETAIL` (EPIPE), `DISCONNECTED`, retries
  (the server sees `HANDSHAKE_FAILED_PROTOCOL` ZMTP_CRYPTOGRAPHIC). A PLAIN server without a
  ZAP handler, a malformed ZAP reply, an incompatible socket type and a peer that closes
  at once all look exactly the same.
- mechanisms differ: a race. `HANDSHAKE_FAILED_PROTOCOL` ZMTP_MECHANISM_MISMATCH (3 runs
  of 30) or `HANDSHAKE_FAILED_NO_DETAIL` (27 of 30): the server noticed first and reset.
- non-ZMTP bytes: CURVE/PLAIN client `CONNECTED`, `DISCONNECTED` (no handshake event);
  a NULL client takes them for a ZMTP 1.0 peer and waits. A silent peer: nothing.

Several failures share one signature, so the client may also read the server's ZMTP
greeting over a raw socket; `parse_greeting` reads it (RFC 23: signature, version,
20-octet mechanism).

A handshake that succeeds is not always the end. A REQ socket bound as a server speaks
first, and libzmq 4.3 drops such a CURVE/PLAIN server's connection when the first message
*to* it arrives after a ZAP reply with a non-empty User-Id (its REQ session refuses the
User-Id frame libzmq puts before that message). So for a REQ server the probe also takes
part in one exchange (`curvecert.probe.exchange`); `Exchange` records it and
`after_handshake` reads it.

Nothing here opens a socket.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from curvecert.errors import OperationalError

__all__ = [
    "COMPATIBLE_TYPES",
    "MAX_FRAME",
    "SENDS_FIRST",
    "SERVER_TYPES",
    "Endpoint",
    "Exchange",
    "Greeting",
    "Observation",
    "ProbeEvent",
    "after_handshake",
    "describe_event",
    "dropped_after_handshake",
    "observe",
    "parse_endpoint",
    "parse_greeting",
    "protocol_error_name",
]

# libzmq monitor event numbers (zmq.h; the handshake events are stable since libzmq 4.3.0).
_CONNECTED = int(zmq.EVENT_CONNECTED)
_CONNECT_DELAYED = int(zmq.EVENT_CONNECT_DELAYED)
_CONNECT_RETRIED = int(zmq.EVENT_CONNECT_RETRIED)
_CLOSED = int(zmq.EVENT_CLOSED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_NO_DETAIL = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)  # 0x0800, value = errno
_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)  # 0x1000
_FAILED_PROTOCOL = int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)  # 0x2000, value = ZMQ_PROTOCOL_ERROR_*
_FAILED_AUTH = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)  # 0x4000, value = ZAP status from ERROR
_MECHANISM_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)  # 0x11000002

#: server socket type -> the socket type the probe connects with (ZMTP RFC 23 pairs).
#: An incompatible pair is dropped after authentication, which looks like a wrong key.
SERVER_TYPES: dict[str, str] = {
    "ROUTER": "DEALER", "DEALER": "DEALER", "REP": "DEALER", "REQ": "ROUTER",
    "PUB": "SUB", "XPUB": "SUB", "SUB": "PUB", "XSUB": "PUB",
    "PUSH": "PULL", "PULL": "PUSH", "PAIR": "PAIR",
}

#: client socket type -> the server socket types it fits (RFC 28-31), in the order the
#: probe tries them when the server's type is not given and the handshake is dropped.
#: ROUTER comes last: it also fits ROUTER and DEALER servers, but DEALER found those first.
COMPATIBLE_TYPES: dict[str, tuple[str, ...]] = {
    "DEALER": ("ROUTER", "REP", "DEALER"),
    "PULL": ("PUSH",),
    "SUB": ("PUB", "XPUB"),
    "PUSH": ("PULL",),
    "PAIR": ("PAIR",),
    "ROUTER": ("REQ",),
}

#: Server socket types that send the first message of a connection (RFC 28: REQ sends a
#: request and then waits for the reply). For these the probe answers one request before
#: it says admitted.
SENDS_FIRST = frozenset({"REQ"})

#: The largest frame (octets) the probe's socket takes from a server (ZMQ_MAXMSGSIZE):
#: without it libzmq allocates whatever size an untrusted peer announces. A larger frame
#: makes the probe's libzmq close the connection.
MAX_FRAME = 1 << 20

# RFC 23 greeting: the mechanism name is octets 12..31 of the 64-octet greeting.
_MECHANISM_END = 32


@dataclass(frozen=True)
class ProbeEvent:
    """One socket-monitor event: libzmq's name, its value, seconds since connect, a gloss."""

    name: str
    value: int
    time: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"name": self.name, "value": self.value, "elapsed": round(self.time, 4),
                "detail": self.detail}


@dataclass(frozen=True)
class Endpoint:
    """A checked connect endpoint; `host`/`port` for tcp, `path` for ipc."""

    text: str
    transport: str
    host: str | None = None
    port: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class Greeting:
    """What a raw look at the server's ZMTP greeting found.

    `status` is one of `zmtp` (a ZMTP 3 greeting; `mechanism` names the server's security
    mechanism), `not-zmtp` (other bytes, `preview` holds the first ones), `closed` (the
    peer closed without sending anything), `silent` (nothing within the time allowed),
    `refused`, `error`, or `skipped` (not looked at, or a transport a raw socket can't use).
    """

    status: str
    mechanism: str | None = None
    version: tuple[int, int] | None = None
    preview: bytes = b""
    error: str = ""

    @property
    def is_zmtp(self) -> bool:
        """True when the peer sent a ZMTP 3.x signature."""
        return self.status == "zmtp"


@dataclass(frozen=True)
class Observation:
    """The decisive fact in the client's monitor events (see `observe`).

    `kind` is one of `admitted`, `auth` (value = ZAP status), `protocol` (value = protocol
    error code), `no-detail` (value = errno), `closed` (connected, then disconnected with
    no handshake event), `refused` (a retry before any connection), `stalled` (connected,
    then nothing before the deadline), `silent` (never connected, never refused).
    """

    kind: str
    value: int = 0


@dataclass(frozen=True)
class Exchange:
    """One exchange with a server that sends first, after its handshake succeeded.

    `received` counts the server's requests that reached the probe and `sent` the replies
    the probe sent (each an empty body). `outcome` is one of:

    - `confirmed`: a second request arrived. A REQ socket sends again only after it has
      received the reply to its previous request (RFC 28, strict REQ), so the server took
      the probe's reply.
    - `kept`: the probe answered, and the connection was still up at the deadline. A REQ
      server that refuses the reply drops the connection as soon as it arrives.
    - `dropped`: the connection closed after the handshake (`sent` tells whether the probe
      had answered by then).
    - `no-request`: nothing arrived before the deadline; no message went either way.
    - `not-req`: the server's message says (libzmq's `Socket-Type` property) that its
      socket is not a REQ socket (`socket_type`): a DEALER or ROUTER, which libzmq lets a
      ROUTER probe connect to, sends what it likes; the probe stopped after answering.
    - `flooded`: the server sent more than the probe takes (a multipart message that did
      not end while the probe grew by `curvecert.probe.exchange.FLOOD_BUDGET` octets); the
      probe stopped listening.
    """

    outcome: str
    received: int = 0
    sent: int = 0
    socket_type: str = ""

    @property
    def round_trip(self) -> bool:
        """True when a request went one way and its reply the other, and was kept."""
        return self.outcome in ("confirmed", "kept")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"outcome": self.outcome, "received": self.received, "sent": self.sent,
                "socket_type": self.socket_type or None}


def after_handshake(exchange: Exchange) -> Observation:
    """The decisive fact once the handshake succeeded and `exchange` followed it.

    `admitted` only for a round trip; a drop is `dropped-after-handshake` (value: replies
    sent before it), no request at all is `no-message`, a flood is `flooded`, a server
    that is not a REQ socket `not-req`.
    """
    if exchange.round_trip:
        return Observation("admitted")
    if exchange.outcome in ("flooded", "not-req"):
        return Observation(exchange.outcome)
    if exchange.outcome == "dropped":
        return Observation("dropped-after-handshake", exchange.sent)
    return Observation("no-message")


def dropped_after_handshake(events: Sequence[ProbeEvent]) -> bool:
    """True when `DISCONNECTED` follows `HANDSHAKE_SUCCEEDED` in `events`."""
    succeeded = False
    for ev in events:
        code = _event_code(ev.name)
        if code == _SUCCEEDED:
            succeeded = True
        elif code == _DISCONNECTED and succeeded:
            return True
    return False


def parse_endpoint(text: str) -> Endpoint:
    """Check a connect endpoint; raise `OperationalError` with the reason if it can't work.

    Accepts `tcp://host:port` (IPv6 as `[addr]`, an optional `source;` prefix) and
    `ipc://path` (`ipc://@name` is Linux's abstract namespace). Other transports are left
    to libzmq; `inproc://` is refused, since it exists only inside one process's context.
    """
    transport, sep, rest = text.partition("://")
    if not sep or not transport or not rest:
        raise OperationalError(f"{text!r} is not an endpoint; expected tcp://HOST:PORT or "
                               "ipc://PATH")
    transport = transport.lower()
    if transport == "inproc":
        raise OperationalError(f"{text}: inproc endpoints exist only inside one process; "
                               "a probe cannot reach them")
    if transport == "ipc":
        return Endpoint(text, transport, path=rest)
    if transport != "tcp":
        return Endpoint(text, transport)
    target = rest.rsplit(";", 1)[-1]
    host, colon, port_text = target.rpartition(":")
    if not colon or not host:
        raise OperationalError(f"{text}: a tcp endpoint needs HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise OperationalError(f"{text}: port must be a number from 1 to 65535, "
                               f"got {port_text!r}")
    if host == "*":
        raise OperationalError(f"{text}: '*' is for bind; connect to an address or host name")
    return Endpoint(text, transport, host=host, port=int(port_text))


def parse_greeting(data: bytes, *, eof: bool = False) -> Greeting:
    """Classify the first octets a peer sent (`eof`: it then closed the connection)."""
    if not data:
        return Greeting("closed" if eof else "silent")
    # The 8 padding octets are free (libzmq puts 0x01 in the last one for ZMTP 1.0 peers);
    # libzmq itself only checks the first octet and the low bit of the tenth.
    if data[0] != 0xFF or (len(data) >= 10 and data[9] & 0x01 != 0x01):
        return Greeting("not-zmtp", preview=data[:32])
    if len(data) < 12:
        return Greeting("zmtp", preview=data[:32])
    version = (data[10], data[11])
    mechanism = None
    if len(data) >= _MECHANISM_END:
        raw = data[12:_MECHANISM_END].rstrip(b"\x00")
        mechanism = raw.decode("ascii", "replace") or None
    return Greeting("zmtp", mechanism=mechanism, version=version, preview=data[:12])


def describe_event(event: int, value: int) -> tuple[str, str]:
    """libzmq's name for a monitor event and a short reading of its value."""
    try:
        name = zmq.Event(event).name or hex(event)
    except ValueError:
        name = hex(event)
    if event == _NO_DETAIL:
        detail = f"{errno.errorcode.get(value, str(value))} ({os.strerror(value)})"
    elif event == _FAILED_PROTOCOL:
        detail = protocol_error_name(value)
    elif event == _FAILED_AUTH:
        detail = f"ZAP status {value}"
    elif event == _CONNECT_RETRIED:
        detail = f"retry in {value} ms"
    elif event == _CONNECT_DELAYED:
        detail = "connect in progress"
    elif event in (_CONNECTED, _DISCONNECTED, _CLOSED):
        detail = f"fd {value}"
    else:
        detail = str(value)
    return name, detail


def protocol_error_name(code: int) -> str:
    # Iterate __members__: iterating a Flag skips multi-bit members such as these codes.
    for name, member in zmq.Event.__members__.items():
        if name.startswith("PROTOCOL_ERROR_") and int(member) == code:
            return name.removeprefix("PROTOCOL_ERROR_")
    return hex(code)


def observe(events: Sequence[ProbeEvent], *, timed_out: bool = False) -> Observation | None:
    """The first decisive fact in `events`, or None while there is none yet.

    With `timed_out`, the absence of a decision becomes one (`stalled` or `silent`).
    """
    connected = False
    names = {_SUCCEEDED: "admitted", _FAILED_AUTH: "auth", _FAILED_PROTOCOL: "protocol",
             _NO_DETAIL: "no-detail"}
    for ev in events:
        code = _event_code(ev.name)
        if code in names:
            return Observation(names[code], ev.value)
        if code == _CONNECTED:
            connected = True
        elif code == _DISCONNECTED and connected:
            return Observation("closed")
        elif code == _CONNECT_RETRIED and not connected:
            return Observation("refused")
    if timed_out:
        return Observation("stalled" if connected else "silent")
    return None


def _event_code(name: str) -> int:
    try:
        return int(zmq.Event[name])
    except KeyError:
        return -1

