"""Handshake diagnostics: connect to a server once and say why the handshake fails.

ZeroMQ connects asynchronously and never raises on a failed handshake, so a wrong server
key, a refused client, a missing ZAP handler and a server that is down all look the same
to an application: *nothing happens* (libzmq #2227, pyzmq #1706). libzmq >= 4.3 does tell
the client side a little through the socket monitor, and this module turns those events
into one verdict with its likely cause and the fix.

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

Because several failures share one signature, the probe adds a second, tiny look at the
server when the events are ambiguous: a raw socket sends the 11-octet start of a ZMTP 3
greeting and reads the server's greeting, which names its security mechanism (RFC 23:
signature, version, 20-octet mechanism). That tells "a CURVE server dropped us" (wrong key)
from "some other program closed the connection" (not ZeroMQ), and "a ZAP handler is
stalling" from "a silent non-ZeroMQ port". The server sees that look as one short
connection that ends during the greeting.

The ZAP domain is a *server* socket option (libzmq #4141): a client can neither send nor
choose it. `zap_domain` is therefore only what the caller believes the server uses; the
probe puts it into the cause and fix texts (for example the handler needs a policy for
that domain) and into the result, and changes nothing on the wire.

The classification (`observe`, `classify`, `parse_greeting`, `parse_endpoint`) is pure;
`probe` and `peek_greeting` do the I/O.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import CertificateError, ConfigError, OperationalError
from curvecert.formats import z85

__all__ = [
    "SERVER_TYPES",
    "Endpoint",
    "Greeting",
    "Observation",
    "ProbeEvent",
    "ProbeResult",
    "ProbeVerdict",
    "classify",
    "describe_event",
    "observe",
    "parse_endpoint",
    "parse_greeting",
    "peek_greeting",
    "probe",
]

_logger = logging.getLogger(__name__)

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

# RFC 23 greeting: signature %xFF 8*%x00 %x7F, version major, minor, 20-octet mechanism,
# as-server, 31 octets filler (64 in all). libzmq answers the rest of its greeting only
# after it has read the peer's signature and major version, so we send those 11 octets.
_GREETING_START = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03"
_GREETING_LEN = 64
_MECHANISM_END = 32


class ProbeVerdict(enum.Enum):
    """What the probe concluded; the value is the stable name printed in `--json`."""

    NOTHING_LISTENING = "nothing-listening"
    NOT_ZMQ_PEER = "not-zmq-peer"
    MECHANISM_MISMATCH = "mechanism-mismatch"
    WRONG_SERVER_KEY = "wrong-server-key"
    DROPPED = "dropped"
    PROTOCOL_ERROR = "protocol-error"
    REFUSED = "refused"
    SERVER_ERROR = "server-error"
    TEMPORARY = "temporary"
    STALLED = "stalled"
    ADMITTED = "admitted"
    FAILS_OPEN = "fails-open"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class ProbeEvent:
    """One socket-monitor event: libzmq's name, its value, seconds since connect, a gloss."""

    name: str
    value: int
    time: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {"event": self.name, "value": self.value, "time": round(self.time, 4),
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
class ProbeResult:
    """The verdict of one probe, with the evidence behind it."""

    endpoint: str
    mechanism: str
    verdict: ProbeVerdict
    ok: bool
    cause: str
    fix: str
    events: tuple[ProbeEvent, ...]
    greeting: Greeting
    client_key: str | None = None
    client_fingerprint: str | None = None
    stranger: bool = False
    zap_domain: str | None = None
    server_type: str = "ROUTER"
    timeout: float = 0.0
    elapsed: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def server_mechanism(self) -> str | None:
        """The server's mechanism, when the greeting was read."""
        return self.greeting.mechanism

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping. It never holds a secret key or a password."""
        return {
            "endpoint": self.endpoint,
            "mechanism": self.mechanism,
            "verdict": self.verdict.value,
            "ok": self.ok,
            "cause": self.cause,
            "fix": self.fix,
            "notes": list(self.notes),
            "server_mechanism": self.greeting.mechanism,
            "greeting": self.greeting.status,
            "client_public_key": self.client_key,
            "client_fingerprint": self.client_fingerprint,
            "stranger": self.stranger,
            "zap_domain": self.zap_domain,
            "server_type": self.server_type,
            "timeout": self.timeout,
            "elapsed": round(self.elapsed, 3),
            "events": [e.to_dict() for e in self.events],
        }


# --- pure parts -------------------------------------------------------------------------


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
        detail = _protocol_error_name(value)
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


def _protocol_error_name(code: int) -> str:
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


# The needed greeting look per observation kind: only ambiguous client signatures need it.
_NEEDS_GREETING = frozenset({"protocol", "no-detail", "closed", "stalled"})


def classify(obs: Observation, greeting: Greeting, *, mechanism: str, stranger: bool = False,
             throwaway: bool = False, zap_domain: str | None = None,
             server_type: str = "ROUTER", endpoint: str = "", timeout: float = 0.0,
             client_fingerprint: str | None = None) -> tuple[ProbeVerdict, str, str]:
    """Turn an observation (and the greeting, if read) into `(verdict, cause, fix)`."""
    V = ProbeVerdict
    srv = greeting.mechanism
    dom = _domain_note(zap_domain)
    probe_type = SERVER_TYPES.get(server_type, "DEALER")
    kind = obs.kind

    if kind == "refused":
        return (V.NOTHING_LISTENING,
                f"Nothing accepts connections at {endpoint}: the connection was refused. No "
                "process has bound this address, the server is down, or it listens on "
                "another port or interface (or another ipc path).",
                "Start the server, or fix the endpoint: it must match the server's bind "
                "address and port. A server bound to 127.0.0.1 is reachable only from its "
                "own host; bind to the interface clients use.")
    if kind == "silent":
        return (V.TIMEOUT,
                f"No TCP connection within {timeout:g}s, and no refusal either: packets to "
                "the host are dropped (firewall), the host is down, or the address is wrong.",
                "Check the address, routing and firewalls between the hosts; try again with a "
                "longer --timeout.")
    if kind == "admitted":
        return _admitted(mechanism, stranger=stranger, throwaway=throwaway, dom=dom,
                         zap_domain=zap_domain, fingerprint=client_fingerprint)
    if kind == "auth":
        return _auth(obs.value, mechanism, stranger=stranger, dom=dom,
                     fingerprint=client_fingerprint)

    if kind == "protocol" and obs.value == _MECHANISM_MISMATCH:
        return _mismatch(mechanism, srv)  # only a ZMTP peer can disagree on mechanisms
    # Ambiguous client signatures: lean on the greeting.
    if greeting.status in ("not-zmtp", "closed", "silent"):
        return (V.NOT_ZMQ_PEER, _not_zmtp_cause(greeting, endpoint),
                "Check the port: another program listens there. Find the endpoint the "
                "ZeroMQ server really binds and probe that.")
    if greeting.is_zmtp and srv and srv != mechanism and kind != "stalled":
        return _mismatch(mechanism, srv)
    if kind == "protocol":
        name = _protocol_error_name(obs.value)
        return (V.PROTOCOL_ERROR,
                f"The handshake failed with protocol error {name} ({obs.value:#x}): the peer "
                "speaks ZMTP but sent something libzmq rejects, such as a custom ERROR "
                "reason, a malformed command, or a different ZMTP version or implementation.",
                "Check the server's ZeroMQ library and version; the server's own socket "
                "monitor shows the failure from its side.")
    if kind == "stalled":
        seen = f" ({srv})" if srv else ""
        return (V.STALLED,
                f"The server speaks ZMTP{seen} and accepted the connection, but the handshake "
                f"did not finish within {timeout:g}s. A libzmq server keeps the connection "
                "open without an answer when its ZAP handler replies 300 (temporary failure) "
                "or does not reply at all (handler thread hung, slow or blocked); after its "
                "ZMQ_HANDSHAKE_IVL (30 s by default) it drops the connection and the client "
                "reconnects, which starts the same wait again.",
                "Check that the ZAP handler in the server process is alive and answering and "
                "that its backend (store, password source) is reachable; a longer --timeout "
                "shows whether it is only slow. Status texts of a 300 stay on the server; "
                "read its log.")
    # no-detail or closed: the server dropped the connection without an ERROR command.
    if mechanism == "CURVE" and kind == "no-detail":
        return (V.WRONG_SERVER_KEY,
                "The CURVE server closed the connection during the handshake without an "
                "ERROR command. libzmq does exactly this when it cannot open the client's "
                "HELLO because the client used a server public key that does not belong to "
                "the server's secret key (the server's monitor shows HANDSHAKE_FAILED_PROTOCOL "
                "ZMTP_CRYPTOGRAPHIC; older libzmq printed 'cannot open client HELLO -- wrong "
                "server key?'). The same silent drop happens when the server's ZAP handler "
                "sends a malformed reply or answers 300 (temporary failure: libzmq closes "
                "without an ERROR, or keeps the handshake waiting), or when the socket "
                "types do not fit (this probe "
                f"connected as {probe_type}, for a {server_type} server).",
                "Compare the key you probed with against the server's public certificate "
                "(`curvecert show SERVER.key`) and probe with --server-cert SERVER.key. If the "
                "key is right, pass --server-type with the server socket's type, and check the "
                "server's monitor for ZAP_* protocol errors (a malformed ZAP reply).")
    if mechanism == "PLAIN":
        cause = ("The PLAIN server dropped the connection during the handshake without an "
                 "ERROR command. libzmq does this when no ZAP handler is bound in the server "
                 "socket's context (PLAIN cannot work without one: every handshake fails), or "
                 "when the handler's reply is malformed. Incompatible socket types are "
                 f"dropped the same way (this probe connected as {probe_type}, for a "
                 f"{server_type} server).")
        fix = ("Start a ZAP handler in the server process before the server socket binds (a "
               "curvecert authenticator, or pyzmq's ThreadAuthenticator with "
               f"configure_plain), and set a ZAP domain on the server socket.{dom} If a "
               "handler runs, pass --server-type with the server socket's type.")
        return V.DROPPED, cause, fix
    return (V.DROPPED,
            "The server speaks ZMTP but closed the connection during the handshake without "
            "an ERROR command. Most often the socket types do not fit (this probe connected "
            f"as {probe_type}, for a {server_type} server); a malformed ZAP reply has the "
            "same effect.",
            "Pass --server-type with the server socket's type. If that is right, check the "
            "server's socket monitor for HANDSHAKE_FAILED_PROTOCOL ZAP_* codes.")


def _domain_note(zap_domain: str | None) -> str:
    if not zap_domain:
        return ""
    return (f" The server's ZAP domain is said to be {zap_domain!r}: the handler needs a "
            "policy for exactly that domain (pyzmq's configure_*('*') covers only an empty "
            "domain).")


def _admitted(mechanism: str, *, stranger: bool, throwaway: bool, dom: str,
              zap_domain: str | None, fingerprint: str | None) -> tuple[ProbeVerdict, str, str]:
    V = ProbeVerdict
    if stranger:
        return (V.FAILS_OPEN,
                "The server admitted a freshly generated key that no store can "
                "contain, so it accepts ANY CURVE client. libzmq does this when no ZAP "
                "handler is bound in the server socket's context (CURVE without a handler "
                "skips client authentication), or when the handler allows any key.",
                "Start a ZAP handler in the server process before the server socket binds (a "
                "curvecert authenticator with a store, or pyzmq's ThreadAuthenticator with "
                "configure_curve(location=STORE)) and remove any allow-any setting." + dom)
    who = f" (client key {fingerprint})" if fingerprint else ""
    cause = f"The handshake succeeded: the server admitted this {mechanism} client{who}."
    if throwaway and mechanism == "CURVE":
        cause += (" The probe used a throwaway key, so this server lets in CURVE clients it "
                  "cannot know: it checks no client keys (no ZAP handler, or allow-any). Use "
                  "--stranger to make that the question.")
    elif mechanism == "NULL":
        domain = "" if zap_domain else " and the server sets no ZAP domain"
        cause += (" NULL has no credentials; libzmq asks a ZAP handler only when the server "
                  f"socket sets a ZAP domain, so with no handler{domain} every peer is "
                  "admitted.")
    return (V.ADMITTED, cause,
            "Nothing to fix in the handshake. If the application still sees no messages, "
            "look above it: socket types and patterns, subscriptions, and sending before "
            "the connection is up.")


def _auth(status: int, mechanism: str, *, stranger: bool, dom: str,
          fingerprint: str | None) -> tuple[ProbeVerdict, str, str]:
    V = ProbeVerdict
    if status == 400:
        if stranger:
            return (V.REFUSED,
                    "The server refused a freshly generated key (ZAP status 400): it checks "
                    "CURVE clients and fails closed.",
                    "Nothing to fix: this is the expected outcome.")
        who = {"CURVE": f"the client key ({fingerprint or 'unknown'}) is not in the "
                        "handler's store or allow list, or the client's address is denied",
               "PLAIN": "the username or password is wrong, or the client's address is "
                        "denied",
               "NULL": "the client's address is denied (or not on the allow list)"}
        cause = (f"The server's ZAP handler refused this client (status 400, sent to the "
                 f"client as an ERROR command): {who.get(mechanism, 'the credentials')}. "
                 "The handler's status text stays on the server; read its log." + dom)
        fix = {"CURVE": "Add the client's public certificate to the server's store (`curvecert "
                        "store add CLIENT.key`, or copy it into the store directory), or "
                        "fix the address allow/deny lists; then reconnect (libzmq does not "
                        "retry after an ERROR).",
               "PLAIN": "Check the username and password against the server's password "
                        "file (`curvecert passwd`), and the address lists.",
               "NULL": "Fix the address allow/deny lists of the server's ZAP handler."}
        return V.REFUSED, cause, fix.get(mechanism, "Check the handler's policy.")
    if status == 500:
        return (V.SERVER_ERROR,
                "The server's ZAP handler reported an internal error (status 500): it could "
                "not decide (store or password file unreadable, backend unreachable, or a "
                "bug in the handler)." + dom,
                "Read the authenticator's log in the server process and fix its store or "
                "configuration; the client does not retry after an ERROR, so reconnect "
                "afterwards.")
    if status == 300:
        return (V.TEMPORARY,
                "The server answered 300 (temporary failure) in an ERROR command. A libzmq "
                "server never sends that (it stalls silently on 300), so the peer is "
                "another ZMTP implementation.",
                "Retry later; check the health of the server's authentication backend.")
    return (V.PROTOCOL_ERROR,
            f"The handshake failed with an unexpected authentication status {status}.",
            "Check the server's ZAP handler: RFC 27 allows only 200, 300, 400 and 500.")


def _mismatch(mechanism: str, server: str | None) -> tuple[ProbeVerdict, str, str]:
    seen = f"the server speaks {server}" if server else "the server uses another mechanism"
    cause = (f"The security mechanisms differ: this probe used {mechanism} but {seen}. libzmq "
             "ends the handshake as soon as it reads the peer's greeting: the side that notices "
             "first reports ZMTP_MECHANISM_MISMATCH (0x11000002) and drops the connection, so "
             "the client often sees only the drop.")
    fixes = {
        "CURVE": "Probe as a CURVE client: --server-cert SERVER.key (or --server-key KEY), "
                 "plus --cert CLIENT.key_secret.",
        "PLAIN": "Probe as a PLAIN client: --plain USER (the password is read from a prompt "
                 "or stdin).",
        "NULL": "The server has no security (NULL). Probe without --server-key/--plain, or, if "
                "it should be a CURVE server, set curve_server and its secret key on the "
                "server socket before it binds.",
    }
    fix = fixes.get(server or "", "Use the mechanism the server is configured with.")
    return ProbeVerdict.MECHANISM_MISMATCH, cause, fix


def _not_zmtp_cause(greeting: Greeting, endpoint: str) -> str:
    if greeting.status == "not-zmtp":
        shown = greeting.preview[:24].decode("ascii", "replace")
        printable = "".join(c if c.isprintable() else "." for c in shown)
        return (f"The program at {endpoint} is not a ZeroMQ peer: it answered with "
                f"{printable!r} instead of a ZMTP greeting.")
    if greeting.status == "closed":
        return (f"The program at {endpoint} accepts TCP connections but closes them without "
                "sending a ZMTP greeting: it is not a ZeroMQ server.")
    return (f"The program at {endpoint} accepts TCP connections but never sends a ZMTP "
            "greeting (a libzmq server sends its signature at once): it is not a ZeroMQ "
            "server, or it is wedged.")


# --- live parts -------------------------------------------------------------------------


def peek_greeting(endpoint: Endpoint, timeout: float) -> Greeting:
    """Read the server's ZMTP greeting over a raw socket (tcp and ipc only)."""
    if endpoint.transport == "tcp":
        assert endpoint.host is not None and endpoint.port is not None
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        except ConnectionRefusedError:
            return Greeting("refused")
        except OSError as exc:
            return Greeting("error", error=str(exc))
    elif endpoint.transport == "ipc" and endpoint.path is not None and hasattr(socket,
                                                                                "AF_UNIX"):
        path = endpoint.path
        address = "\0" + path[1:] if path.startswith("@") else path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return Greeting("refused")
        except OSError as exc:
            sock.close()
            return Greeting("error", error=str(exc))
    else:
        return Greeting("skipped")
    data = b""
    eof = False
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(_GREETING_START)
        while len(data) < _GREETING_LEN:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            chunk = sock.recv(_GREETING_LEN - len(data))
            if not chunk:
                eof = True
                break
            data += chunk
            if data[:1] != b"\xff":
                break  # not ZMTP; the first octets are enough to say so
    except TimeoutError:
        pass
    except OSError as exc:
        # A reset after some octets still tells what the peer is.
        if not data:
            sock.close()
            return Greeting("closed", error=str(exc))
    finally:
        sock.close()
    return parse_greeting(data, eof=eof)


def _resolve(endpoint: Endpoint) -> None:
    if endpoint.transport != "tcp" or endpoint.host is None:
        return
    try:
        socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OperationalError(f"{endpoint.text}: cannot resolve host {endpoint.host!r}: "
                               f"{exc}") from exc


def _watch(monitor: Any, start: float, deadline: float) -> tuple[list[ProbeEvent], bool]:
    """Collect monitor events until one is decisive or the deadline passes."""
    events: list[ProbeEvent] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return events, True
        if not monitor.poll(max(1, int(left * 1000))):
            continue
        msg = recv_monitor_message(monitor)
        code, value = int(msg["event"]), int(msg["value"])
        name, detail = describe_event(code, value)
        ev = ProbeEvent(name, value, time.monotonic() - start, detail)
        _logger.debug("probe event %s %s (%s) at %.3fs", name, value, detail, ev.time)
        events.append(ev)
        if observe(events) is not None:
            # Take what is already queued (typically the DISCONNECTED that follows).
            while monitor.poll(0):
                msg = recv_monitor_message(monitor)
                c, v = int(msg["event"]), int(msg["value"])
                n, d = describe_event(c, v)
                events.append(ProbeEvent(n, v, time.monotonic() - start, d))
            return events, False


def probe(endpoint: str, *, server_key: bytes | str | None = None,
          client_cert: Certificate | None = None, plain: tuple[str, str] | None = None,
          zap_domain: str | None = None, stranger: bool = False, timeout: float = 5.0,
          server_type: str = "ROUTER", peek: bool = True) -> ProbeResult:
    """Connect to `endpoint` once, watch the handshake, and return the verdict.

    The mechanism follows the arguments: `server_key` makes a CURVE client (with
    `client_cert`'s keys, or a throwaway keypair), `plain=(user, password)` a PLAIN client,
    neither a NULL client. `stranger` connects with a fresh key that no store can contain;
    then the expected outcome is a refusal, and an admission is `FAILS_OPEN`. `zap_domain`
    is informational only (a client cannot choose the server's domain). `server_type` is
    the server socket's type; the probe connects with a compatible one. `peek` allows the
    raw greeting look used to tell ambiguous failures apart.

    Raises `ConfigError` for conflicting arguments, `CertificateError` for a client
    certificate without a secret key, `OperationalError` for an unusable endpoint.
    """
    if timeout <= 0:
        raise ConfigError("timeout must be positive")
    server_type = server_type.upper()
    if server_type not in SERVER_TYPES:
        raise ConfigError(f"unknown server socket type {server_type!r}; one of "
                          f"{', '.join(SERVER_TYPES)}")
    if plain is not None and server_key is not None:
        raise ConfigError("a probe is either CURVE (server key) or PLAIN (username), not both")
    if stranger and server_key is None:
        raise ConfigError("a stranger probe is a CURVE probe: it needs the server's public key")
    if stranger and client_cert is not None:
        raise ConfigError("a stranger probe generates its own key; do not pass a client cert")
    if client_cert is not None and server_key is None:
        raise ConfigError("a client certificate needs the server's public key (CURVE)")
    if client_cert is not None and not client_cert.has_secret:
        raise CertificateError("the client certificate has no secret key; pass the secret "
                               "certificate file (NAME_secret)")
    ep = parse_endpoint(endpoint)
    _resolve(ep)

    mechanism = "CURVE" if server_key is not None else "PLAIN" if plain is not None else "NULL"
    throwaway = False
    client_public: bytes | None = None
    client_secret: bytes | None = None
    server_public: bytes | None = None
    if server_key is not None:
        server_public = keys.decode_key(server_key, what="server key")
        if client_cert is None:
            client_public, client_secret = keys.keypair()
            throwaway = not stranger
        else:
            client_public, client_secret = client_cert.public_key, client_cert.secret_key
    fingerprint = keys.fingerprint(client_public) if client_public is not None else None

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    start = time.monotonic()
    try:
        sock = context.socket(getattr(zmq, SERVER_TYPES[server_type]))
        sock.linger = 0
        if ep.host is not None and ":" in ep.host:
            sock.ipv6 = True
        if mechanism == "CURVE":
            assert client_public and client_secret and server_public
            sock.curve_publickey = z85.encode(client_public).encode("ascii")
            sock.curve_secretkey = z85.encode(client_secret).encode("ascii")
            sock.curve_serverkey = z85.encode(server_public).encode("ascii")
        elif plain is not None:
            sock.plain_username = plain[0].encode("utf-8")
            sock.plain_password = plain[1].encode("utf-8")
        monitor = sock.get_monitor_socket()
        start = time.monotonic()
        try:
            sock.connect(ep.text)
        except zmq.ZMQError as exc:
            raise OperationalError(f"{ep.text}: libzmq cannot connect: {exc.strerror}") from exc
        events, timed_out = _watch(monitor, start, start + timeout)
        sock.disable_monitor()
        monitor.close()
        sock.close()
    finally:
        context.destroy(linger=0)

    obs = observe(events, timed_out=timed_out)
    assert obs is not None
    greeting = Greeting("skipped")
    if peek and obs.kind in _NEEDS_GREETING:
        greeting = peek_greeting(ep, min(timeout, 1.0))
        _logger.debug("greeting look: %s", greeting)
    verdict, cause, fix = classify(obs, greeting, mechanism=mechanism, stranger=stranger,
                                   throwaway=throwaway, zap_domain=zap_domain,
                                   server_type=server_type, endpoint=ep.text, timeout=timeout,
                                   client_fingerprint=fingerprint)
    ok = verdict is (ProbeVerdict.REFUSED if stranger else ProbeVerdict.ADMITTED)
    notes: list[str] = []
    if zap_domain:
        notes.append(f"ZAP domain {zap_domain!r} is a server socket option; the probe cannot "
                     "send it and only uses it in this advice.")
    return ProbeResult(
        endpoint=ep.text, mechanism=mechanism, verdict=verdict, ok=ok, cause=cause, fix=fix,
        events=tuple(events), greeting=greeting,
        client_key=z85.encode(client_public) if client_public is not None else None,
        client_fingerprint=fingerprint, stranger=stranger, zap_domain=zap_domain,
        server_type=server_type, timeout=timeout, elapsed=time.monotonic() - start,
        notes=tuple(notes))
