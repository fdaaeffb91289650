"""The pure half of handshake diagnosis, continued: verdicts and the advice that goes with them.

`classify` turns the decisive monitor fact (`curvecert.probe.wire.observe`) and, when the
events are ambiguous, the server's greeting into a `ProbeVerdict` with its likely cause and
the fix. The texts depend on the mechanism, the transport (tcp or ipc), whether the client
key was a throwaway (then no store can hold it, so "add the client's certificate" is not the
fix) and on the server socket type the probe found or was told. For a REQ server the
handshake is not enough: the verdict also reads the exchange that followed it
(`curvecert.probe.wire.Exchange`), and a drop or silence after the handshake gets its own
verdict, `dropped-after-handshake` or `no-message`, never `admitted`.

The ZAP domain is a *server* socket option (libzmq #4141): a client can neither send nor
choose it. `zap_domain` is only what the caller believes the server uses; it appears in the
texts and changes nothing on the wire.
"""

from __future__ import annotations

import enum

import zmq

from curvecert.probe.exchange import FLOOD_BUDGET
from curvecert.probe.wire import (
    MAX_FRAME,
    SERVER_TYPES,
    Exchange,
    Greeting,
    Observation,
    protocol_error_name,
)

__all__ = ["NEEDS_GREETING", "ProbeVerdict", "classify"]

_MECHANISM_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)  # 0x11000002


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
    DROPPED_AFTER_HANDSHAKE = "dropped-after-handshake"
    NO_MESSAGE = "no-message"


# The needed greeting look per observation kind: only ambiguous client signatures need it.
NEEDS_GREETING = frozenset({"protocol", "no-detail", "closed", "stalled"})


def classify(obs: Observation, greeting: Greeting, *, mechanism: str, stranger: bool = False,
             throwaway: bool = False, zap_domain: str | None = None,
             server_type: str = "ROUTER", endpoint: str = "", timeout: float = 0.0,
             client_fingerprint: str | None = None, transport: str = "tcp",
             tried: tuple[str, ...] = (),
             exchange: Exchange | None = None) -> tuple[ProbeVerdict, str, str]:
    """Turn an observation (and the greeting, if read) into `(verdict, cause, fix)`.

    `transport` (`tcp`, `ipc`, ...) picks the advice about addresses; `tried` lists the
    client socket types already tried when the server's type was not given (then socket
    types are not the reason for a drop); `throwaway` says the CURVE key was generated for
    this probe, so no store can hold it. `exchange` is what followed a REQ server's
    handshake (the kinds `dropped-after-handshake` and `no-message` come from it).
    """
    V = ProbeVerdict
    srv = greeting.mechanism
    dom = _domain_note(zap_domain)
    probe_type = SERVER_TYPES.get(server_type, "DEALER")
    kind = obs.kind
    ipc = transport == "ipc"
    types_note = (f"this probe connected as {probe_type}, for a {server_type} server"
                  if not tried else
                  f"this probe tried every compatible client type ({', '.join(tried)}) and "
                  "each was dropped, so the socket types are not the reason")
    type_fix = ("" if tried else
                " If the key is right, pass --server-type with the server socket's type.")

    if kind == "refused" and ipc:
        return (V.NOTHING_LISTENING,
                f"Nothing accepts connections at {endpoint}: no process listens on that ipc "
                "path. The socket file is missing or stale (left by a server that died), the "
                "server is down, or it binds another path.",
                "Start the server, or fix the path: it must be the exact path the server "
                "binds (`ls -l` shows a socket, type `s`). The client also needs search "
                "permission on every directory of the path and write permission on the "
                "socket.")
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
                f"No connection within {timeout:g}s, and no refusal either: packets to "
                "the host are dropped (firewall), the host is down, or the address is wrong.",
                "Check the address, routing and firewalls between the hosts; try again with a "
                "longer --timeout.")
    if kind == "flooded":
        return (V.PROTOCOL_ERROR,
                "The handshake succeeded, then the REQ server sent a message that did not "
                "end: the probe took frames until its memory grew by "
                f"{FLOOD_BUDGET >> 20} MiB and then stopped. A REQ socket sends one request "
                "and waits for the reply; this peer is not behaving as one (a broken or "
                "hostile implementation).",
                "Check what really listens at this endpoint and which ZeroMQ library it "
                "uses; the server's own log and socket monitor show what it sends.")
    if kind in ("dropped-after-handshake", "no-message"):
        return _after_handshake(kind, exchange or Exchange("no-request"), mechanism,
                                timeout=timeout, zap_domain=zap_domain)
    if kind in ("admitted", "not-req"):
        verdict, cause, fix = _admitted(mechanism, stranger=stranger, throwaway=throwaway,
                                        dom=dom, zap_domain=zap_domain,
                                        fingerprint=client_fingerprint)
        if exchange is not None and verdict is V.ADMITTED:
            cause, fix = _round_trip(cause, exchange, timeout)
        return verdict, cause, fix
    if kind == "auth":
        return _auth(obs.value, mechanism, stranger=stranger, dom=dom,
                     fingerprint=client_fingerprint, throwaway=throwaway)

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
        name = protocol_error_name(obs.value)
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
                f"types do not fit ({types_note}).",
                "Compare the key you probed with against the server's public certificate "
                "(`curvecert show SERVER.key`) and probe with --server-cert SERVER.key."
                f"{type_fix} Check the server's monitor for ZAP_* protocol errors (a "
                "malformed ZAP reply).")
    if mechanism == "PLAIN":
        cause = ("The PLAIN server dropped the connection during the handshake without an "
                 "ERROR command. libzmq does this when no ZAP handler is bound in the server "
                 "socket's context (PLAIN cannot work without one: every handshake fails), or "
                 "when the handler's reply is malformed. Incompatible socket types are "
                 f"dropped the same way ({types_note}).")
        fix = ("Start a ZAP handler in the server process before the server socket binds (a "
               "curvecert authenticator, or pyzmq's ThreadAuthenticator with "
               f"configure_plain), and set a ZAP domain on the server socket.{dom}"
               + ("" if tried else " If a handler runs, pass --server-type with the server "
                  "socket's type."))
        return V.DROPPED, cause, fix
    return (V.DROPPED,
            "The server speaks ZMTP but closed the connection during the handshake without "
            "an ERROR command. Most often the socket types do not fit "
            f"({types_note}); a malformed ZAP reply has the same effect.",
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


def _round_trip(cause: str, exchange: Exchange, timeout: float) -> tuple[str, str]:
    """The admitted texts once a REQ server's exchange made the round trip."""
    if exchange.outcome == "not-req":
        kind = exchange.socket_type
        return cause + (f" Its message says the server is a {kind}, not a REQ socket (a "
                        "ROUTER probe also connects to DEALER and ROUTER sockets), so its "
                        "handling of a reply was not checked."), (
            f"Probe again with --server-type {kind}, or without --server-type.")
    if exchange.outcome == "confirmed":
        how = ("took the probe's reply and sent its next request (a strict REQ socket sends "
               "again only after it received a reply)")
    else:
        how = (f"kept the connection open for the rest of the {timeout:g}s after the probe's "
               "reply (a REQ server that refuses a reply drops the connection at once)")
    cause += (f" Then one round trip: the REQ server sent a request, the probe answered "
              f"with an empty reply, and the server {how}.")
    return cause, ("Nothing to fix: the server's requests go out and replies come back. "
                   "Its application did receive the probe's empty replies, and a request it "
                   "sent to the probe as the probe left is lost: a strict REQ socket with "
                   "no other peer now waits for that reply (restart it if so).")


def _user_id_off(zap_domain: str | None) -> str:
    domain = f" {zap_domain!r}" if zap_domain else ""
    return (f"turn the User-Id off in the server's ZAP domain{domain}: `user-id = false` in "
            "the domain's table of the serve-auth configuration, or `user_id=False` in the "
            "domain's policy with curvecert's authenticator (`configure_curve(..., "
            "user_id=False)`, `DomainPolicy(user_id=False)`)")


def _user_id_fix(mechanism: str, zap_domain: str | None) -> str:
    where = ("" if mechanism != "NULL" else
             " (a NULL server asks ZAP only when its socket sets a ZAP domain)")
    return (f"If the server uses ZAP{where}, {_user_id_off(zap_domain)}. Clients are still "
            "authenticated and logged; only the server's User-Id message property becomes "
            "empty. Or bind a ROUTER or REP socket as the server: they are not affected. "
            "Then restart the server's REQ socket, which still waits for the lost reply.")


def _after_handshake(kind: str, exchange: Exchange, mechanism: str, *, timeout: float,
                     zap_domain: str | None) -> tuple[ProbeVerdict, str, str]:
    """A REQ server admitted the probe, then dropped it or sent nothing."""
    V = ProbeVerdict
    ok = f"The handshake succeeded (the server admitted this {mechanism} client), "
    if kind == "dropped-after-handshake" and exchange.sent:
        cause = (ok + "and the REQ server sent a request, but it closed the connection as "
                 "soon as the probe's reply arrived, so the reply was lost. libzmq 4.3 does "
                 "exactly this to a REQ socket bound as a CURVE or PLAIN server when its ZAP "
                 "handler's 200 carried a non-empty User-Id: the REQ session refuses the "
                 "User-Id frame that comes before the first message from the client. "
                 "Applications see it as replies silently lost, and the server's REQ socket "
                 "then waits for ever. A server that closed its socket at that very moment "
                 "looks the same.")
        return V.DROPPED_AFTER_HANDSHAKE, cause, _user_id_fix(mechanism, zap_domain)
    if kind == "dropped-after-handshake":
        sent = ("before any request arrived" if not exchange.received else
                "after its request, before the probe could answer")
        return (V.DROPPED_AFTER_HANDSHAKE,
                ok + f"then the connection closed {sent}: the server socket was closed, its "
                "process ended, or it dropped this peer for another reason; or the probe's "
                f"own libzmq closed it because the server sent a frame over {MAX_FRAME >> 20} "
                "MiB (the probe's limit) or bytes that are not valid ZMTP.",
                "Check that the server keeps its REQ socket open and running, and read its "
                "log; then probe again.")
    cause = (ok + "but a REQ server speaks first and no request arrived within "
             f"{timeout:g}s, so no message went either way. The server application did not "
             "send on this connection: it is idle or sends rarely, its requests go to its "
             "other peers (REQ deals them out in turn), or its REQ socket is stuck waiting "
             "for the reply to an earlier request whose peer went away (a strict REQ socket "
             "never sends again then).")
    fix = ("Make sure the server application sends requests while you probe, or use a "
           "longer --timeout if it sends rarely. A REQ socket stuck on a lost reply must be "
           "closed and opened again (or use ZMQ_REQ_RELAXED with a retry).")
    if mechanism != "NULL" or zap_domain:
        fix += (" A REQ server whose clients were dropped after the handshake (verdict "
                "dropped-after-handshake, the User-Id problem) gets stuck that way: "
                f"{_user_id_off(zap_domain)} first.")
    return V.NO_MESSAGE, cause, fix


def _auth(status: int, mechanism: str, *, stranger: bool, dom: str,
          fingerprint: str | None, throwaway: bool = False) -> tuple[ProbeVerdict, str, str]:
    V = ProbeVerdict
    if status == 400 and throwaway and mechanism == "CURVE":
        return (V.REFUSED,
                "The server's ZAP handler refused the probe's throwaway key (status 400): a "
                "server that checks client keys does exactly this with a key it has never "
                "seen, so the server key, the socket types and the handler all work." + dom,
                "To check a real client, probe with its secret certificate (--cert "
                "CLIENT_secret); to check that strangers are refused, use --stranger.")
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
        return (f"The program at {endpoint} accepts connections but closes them without "
                "sending a ZMTP greeting: it is not a ZeroMQ server.")
    return (f"The program at {endpoint} accepts connections but never sends a ZMTP "
            "greeting (a libzmq server sends its signature at once): it is not a ZeroMQ "
            "server, or it is wedged.")

