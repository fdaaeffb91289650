"""The live half of handshake diagnosis: connect to a server once and say why it fails.

`probe` connects a monitored client socket, collects libzmq's monitor events until one is
decisive (`curvecert.probe.wire.observe`), and asks `curvecert.probe.advice.classify` for the
verdict. When the events are ambiguous it adds a second, tiny look at the server
(`peek_greeting`): a raw socket sends the 11-octet start of a ZMTP 3 greeting and reads the
server's greeting, which names its security mechanism (RFC 23). That tells "a CURVE server
dropped us" (wrong key) from "some other program closed the connection" (not ZeroMQ), and "a
ZAP handler is stalling" from "a silent non-ZeroMQ port". The server sees that look as one
short connection that ends during the greeting.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import CertificateError, ConfigError, OperationalError
from curvecert.formats import z85
from curvecert.probe.advice import NEEDS_GREETING, ProbeVerdict, classify
from curvecert.probe.exchange import read_event, req_round_trip
from curvecert.probe.wire import (
    COMPATIBLE_TYPES,
    MAX_FRAME,
    SENDS_FIRST,
    SERVER_TYPES,
    Endpoint,
    Exchange,
    Greeting,
    Observation,
    ProbeEvent,
    after_handshake,
    observe,
    parse_endpoint,
    parse_greeting,
)

__all__ = ["MAX_TIMEOUT", "ProbeResult", "peek_greeting", "probe"]

_logger = logging.getLogger(__name__)

# RFC 23 greeting: signature %xFF 8*%x00 %x7F, version major, minor, 20-octet mechanism,
# as-server, 31 octets filler (64 in all). libzmq answers the rest of its greeting only
# after it has read the peer's signature and major version, so we send those 11 octets.
_GREETING_START = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03"
_GREETING_LEN = 64

#: The longest --timeout (seconds): one day. libzmq's poll takes milliseconds in a C long.
MAX_TIMEOUT = 86400

# Observations after which the client type that connected names the server's type: an
# admission or a ZAP answer, and the two ends of a REQ server's exchange after its handshake.
_TYPE_FITS = ("admitted", "auth", "dropped-after-handshake", "no-message", "flooded",
              "not-req")


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
    server_type_found: str | None = None
    attempts: tuple[tuple[str, str], ...] = field(default=())
    exchange: Exchange | None = None

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
            "client": None if self.client_key is None else {
                "public_key": self.client_key,
                "public_key_hex": z85.decode(self.client_key).hex(),
                "fingerprint": self.client_fingerprint},
            "stranger": self.stranger,
            "zap_domain": self.zap_domain,
            "server_type": self.server_type,
            "server_type_found": self.server_type_found,
            "attempts": [{"socket_type": t, "server_types": list(COMPATIBLE_TYPES.get(t, ())),
                          "verdict": kind} for t, kind in self.attempts],
            "round_trip": None if self.exchange is None else self.exchange.to_dict(),
            "timeout": self.timeout,
            "elapsed": round(self.elapsed, 3),
            "events": [e.to_dict() for e in self.events],
        }



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
        events.append(read_event(monitor, start))
        if observe(events) is not None:
            # Take what is already queued (typically the DISCONNECTED that follows).
            while monitor.poll(0):
                events.append(read_event(monitor, start))
            return events, False


def probe(endpoint: str, *, server_key: bytes | str | None = None,
          client_cert: Certificate | None = None, plain: tuple[str, str] | None = None,
          zap_domain: str | None = None, stranger: bool = False, timeout: float = 5.0,
          server_type: str | None = None, peek: bool = True) -> ProbeResult:
    """Connect to `endpoint`, watch the handshake, and return the verdict.

    The mechanism follows the arguments: `server_key` makes a CURVE client (with
    `client_cert`'s keys, or a throwaway keypair), `plain=(user, password)` a PLAIN client,
    neither a NULL client. `stranger` connects with a fresh key that no store can contain;
    then the expected outcome is a refusal, and an admission is `FAILS_OPEN`. `zap_domain`
    is informational only (a client cannot choose the server's domain). `peek` allows the
    raw greeting look used to tell ambiguous failures apart.

    `server_type` is the server socket's type; the probe connects once with a compatible
    type. Without it (None), a dropped handshake is retried with the other client types
    (DEALER, PULL, SUB, PUSH, PAIR, ROUTER; `COMPATIBLE_TYPES`) before concluding, because
    libzmq drops incompatible socket types after the security handshake, which looks
    exactly like a wrong key; the type that got an answer is `server_type_found`. All
    attempts share one `timeout` (seconds); the greeting look may add up to one second.

    A REQ server (`SENDS_FIRST`, given or found) is admitted only after a round trip:
    the probe waits for its request, answers it and sees the reply kept
    (`curvecert.probe.exchange`); the result's `exchange` says how it went. A stranger
    probe stops at the handshake, whose success alone means the server fails open.

    Raises `ConfigError` for conflicting arguments or a `timeout` (seconds) outside
    (0, `MAX_TIMEOUT`], `CertificateError` for a client certificate without a secret
    key, `OperationalError` for an unusable endpoint.
    """
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses NaN
        raise ConfigError(f"timeout must be more than 0 and at most {MAX_TIMEOUT} seconds, "
                          f"not {timeout}")
    if server_type is not None:
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
    creds = _Credentials(plain=plain)
    if server_key is not None:
        creds.server_public = keys.decode_key(server_key, what="server key")
        if client_cert is None:
            creds.client_public, creds.client_secret = keys.keypair()
            throwaway = not stranger
        else:
            creds.client_public, creds.client_secret = (client_cert.public_key,
                                                        client_cert.secret_key)
    fingerprint = (keys.fingerprint(creds.client_public) if creds.client_public is not None
                   else None)

    start = time.monotonic()
    order = ([SERVER_TYPES[server_type]] if server_type is not None
             else list(COMPATIBLE_TYPES))
    attempts: list[tuple[str, str]] = []
    greeting = Greeting("skipped")
    found: str | None = None
    obs: Observation | None = None
    events: list[ProbeEvent] = []
    exchange: Exchange | None = None
    deadline = start + timeout  # shared by every attempt (the greeting look adds <= 1 s)
    out_of_time = False
    for client_type in order:
        left = deadline - time.monotonic()
        if attempts and left <= 0:
            out_of_time = True  # the remaining client types are not tried
            break
        targets = ((server_type,) if server_type is not None
                   else COMPATIBLE_TYPES.get(client_type, ()))
        round_trip = not stranger and bool(targets) and set(targets) <= SENDS_FIRST
        events, timed_out, exchange = _attempt(ep, client_type, creds, max(left, 0.001),
                                               round_trip)
        obs = observe(events, timed_out=timed_out) if exchange is None else after_handshake(
            exchange)
        assert obs is not None
        attempts.append((client_type, obs.kind))
        if peek and obs.kind in NEEDS_GREETING and greeting.status == "skipped":
            greeting = peek_greeting(ep, min(timeout, 1.0))
            _logger.debug("greeting look: %s", greeting)
        dropped = obs.kind in ("no-detail", "closed")
        other_peer = greeting.status in ("not-zmtp", "closed", "silent") or (
            greeting.is_zmtp and greeting.mechanism not in (None, mechanism))
        if not dropped or other_peer:
            if obs.kind in _TYPE_FITS or server_type is not None:
                found = "/".join(COMPATIBLE_TYPES.get(client_type, ()))
            break
    if server_type is not None:
        found = server_type
    assert obs is not None
    shown_type = server_type or (found.split("/")[0] if found else "ROUTER")
    verdict, cause, fix = classify(obs, greeting, mechanism=mechanism, stranger=stranger,
                                   throwaway=throwaway, zap_domain=zap_domain,
                                   server_type=shown_type, endpoint=ep.text, timeout=timeout,
                                   client_fingerprint=fingerprint, transport=ep.transport,
                                   exchange=exchange, tried=tuple(t for t, _ in attempts)
                                   if server_type is None and not out_of_time else ())
    ok = verdict is (ProbeVerdict.REFUSED if stranger else ProbeVerdict.ADMITTED)
    notes: list[str] = []
    if server_type is None and found and len(attempts) > 1:
        notes.append(f"The server's socket type is {found}: the probe got an answer as "
                     f"{attempts[-1][0]} after {', '.join(t for t, _ in attempts[:-1])} "
                     "were dropped; pass --server-type to connect that way at once.")
    if out_of_time:
        notes.append(f"The --timeout of {timeout:g}s ran out after the probe tried "
                     f"{', '.join(t for t, _ in attempts)}; it did not try the other client "
                     "types. Pass --server-type, or a longer --timeout.")
    if zap_domain:
        notes.append(f"ZAP domain {zap_domain!r} is a server socket option; the probe cannot "
                     "send it and only uses it in this advice.")
    return ProbeResult(
        endpoint=ep.text, mechanism=mechanism, verdict=verdict, ok=ok, cause=cause, fix=fix,
        events=tuple(events), greeting=greeting,
        client_key=(z85.encode(creds.client_public) if creds.client_public is not None
                    else None),
        client_fingerprint=fingerprint, stranger=stranger, zap_domain=zap_domain,
        server_type=shown_type, timeout=timeout, elapsed=time.monotonic() - start,
        notes=tuple(notes), server_type_found=found, attempts=tuple(attempts),
        exchange=exchange)


@dataclass
class _Credentials:
    """What the client socket presents: CURVE keys, PLAIN user and password, or nothing."""

    plain: tuple[str, str] | None = None
    server_public: bytes | None = None
    client_public: bytes | None = None
    client_secret: bytes | None = None


def _attempt(ep: Endpoint, client_type: str, creds: _Credentials, timeout: float,
             round_trip: bool = False) -> tuple[list[ProbeEvent], bool, Exchange | None]:
    """One monitored connection as `client_type`: the events, whether time ran out, and
    (with `round_trip`, once the handshake succeeded) the exchange with a REQ server."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = context.socket(getattr(zmq, client_type))
        sock.linger = 0
        sock.maxmsgsize = MAX_FRAME  # a larger frame from the peer ends the connection
        sock.rcvhwm = 8  # the probe reads at most two messages; libzmq buffers no more
        if ep.host is not None and ":" in ep.host:
            sock.ipv6 = True
        if creds.server_public is not None:
            assert creds.client_public and creds.client_secret
            sock.curve_publickey = z85.encode(creds.client_public).encode("ascii")
            sock.curve_secretkey = z85.encode(creds.client_secret).encode("ascii")
            sock.curve_serverkey = z85.encode(creds.server_public).encode("ascii")
        elif creds.plain is not None:
            sock.plain_username = creds.plain[0].encode("utf-8")
            sock.plain_password = creds.plain[1].encode("utf-8")
        if client_type == "SUB":
            sock.subscribe(b"")
        monitor = sock.get_monitor_socket()
        start = time.monotonic()
        try:
            sock.connect(ep.text)
        except zmq.ZMQError as exc:
            raise OperationalError(f"{ep.text}: libzmq cannot connect: {exc.strerror}") from exc
        events, timed_out = _watch(monitor, start, start + timeout)
        exchange = None
        if round_trip and not timed_out and observe(events) == Observation("admitted"):
            exchange = req_round_trip(sock, monitor, events, start, start + timeout)
        sock.disable_monitor()
        monitor.close()
        sock.close()
        return events, timed_out, exchange
    finally:
        context.destroy(linger=0)
