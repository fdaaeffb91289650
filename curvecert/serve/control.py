"""The control channel of `serve-auth`: a read-only request/reply socket next to the ZAP one.

Why: the operator needs to ask the *running* daemon what it trusts, whether it is healthy
and what it decided lately; the disk (`store list`) and the log stream cannot answer that
during a reload or when a file is unreadable.

Transport: a ZeroMQ ROUTER bound on `ipc://DIR/control.sock`, by default in the same
runtime directory as the ZAP socket (`control_endpoint_for`), bound the same way (temporary
name, mode 0600, then renamed into place). Access control is the file system: the directory
is owner-only and a directory that group or others may write to is refused
(`check_runtime_dir`), so only the daemon's user (and root) can connect. No peer
credentials (SO_PEERCRED) are consulted: libzmq does not expose them per message, and the
permission bits already decide who can `connect(2)`. The client checks who answers before
it connects (`ControlClient`, with the forwarder's `curvecert.serve.runtime` checks: the
directory and the socket owned by this user or root, the directory not writable by group
or others) and refuses a reply of the wrong shape (`curvecert.serve.controlreply`).

Protocol: one request frame, one reply frame, both a JSON object (UTF-8, the request at
most `MAX_REQUEST` bytes). Requests (`parse_request` is the strict, pure parser):

- `{"command": "status"}`
- `{"command": "trusted", "domain": D}` (`domain` optional)
- `{"command": "decisions", "last": N, "denied": bool, "after": CURSOR}` (all optional;
  `after` returns only decisions newer than a cursor from an earlier reply, for `--follow`)

Replies: `{"ok": true, "result": {...}}` or `{"ok": false, "error": "one line"}`. There
is no command that changes anything (read-only by design). A malformed request gets an
error reply and the daemon carries on.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from curvecert.auth.policy import Policy
from curvecert.errors import CurvecertError, OperationalError
from curvecert.serve.controlreply import reply_problem
from curvecert.serve.policyview import (
    certificate_of,
    etcd_summary,
    is_etcd_store,
    policy_stores,
    store_summary,
    trusted_entries,
)
from curvecert.serve.runtime import check_directory, check_socket, default_owners

__all__ = [
    "COMMANDS",
    "CONTROL_NAME",
    "DEFAULT_RING",
    "MAX_REQUEST",
    "ControlClient",
    "ControlHandler",
    "ControlRequest",
    "ControlRequestError",
    "ControlState",
    "DecisionRing",
    "check_runtime_dir",
    "control_endpoint_for",
    "etcd_summary",
    "is_etcd_store",
    "iso_time",
    "policy_stores",
    "store_summary",
    "trusted_entries",
]

#: File name of the control socket in the runtime directory.
CONTROL_NAME = "control.sock"
#: Largest request accepted, in bytes.
MAX_REQUEST = 4096
#: Decisions kept in memory for `decisions`.
DEFAULT_RING = 1000
COMMANDS = ("status", "trusted", "decisions")
_FIELDS: dict[str, dict[str, type]] = {
    "status": {},
    "trusted": {"domain": str},
    "decisions": {"last": int, "denied": bool, "after": int},
}


class ControlRequestError(CurvecertError, ValueError):
    """A control request that is not valid JSON or breaks the protocol."""


@dataclass(frozen=True)
class ControlRequest:
    """One parsed request; `last` 1..ring size, `after` a cursor >= 0 or None."""

    command: str
    domain: str | None = None
    last: int = 20
    denied: bool = False
    after: int | None = None


def parse_request(data: bytes) -> ControlRequest:
    """Parse one request frame strictly; raise `ControlRequestError` with a one-line reason.

    Unknown commands, unknown or mistyped fields, non-objects, over-long frames and
    invalid UTF-8 are all refused. Never raises anything else.
    """
    if len(data) > MAX_REQUEST:
        raise ControlRequestError(f"request over {MAX_REQUEST} bytes")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ControlRequestError(f"request is not JSON: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ControlRequestError("request must be a JSON object")
    command = obj.pop("command", None)
    if not isinstance(command, str) or command not in _FIELDS:
        raise ControlRequestError(f"unknown command; expected one of {', '.join(COMMANDS)}")
    fields = _FIELDS[command]
    for name, value in obj.items():
        want = fields.get(name)
        if want is None:
            raise ControlRequestError(f"{command}: unknown field {name[:40]!r}")
        # bool is an int subclass: demand the exact type
        if type(value) is not want:
            raise ControlRequestError(f"{command}: {name} must be a {want.__name__}")
    last = obj.get("last", 20)
    if not 1 <= last <= 100_000:
        raise ControlRequestError("decisions: last must be 1..100000")
    after = obj.get("after")
    if after is not None and after < 0:
        raise ControlRequestError("decisions: after must be >= 0")
    domain = obj.get("domain")
    if domain is not None and len(domain.encode("utf-8", "surrogatepass")) > 255:
        raise ControlRequestError("trusted: domain longer than 255 bytes")
    return ControlRequest(command, domain, last, obj.get("denied", False), after)


# --- the decision ring ----------------------------------------------------------------------

class DecisionRing:
    """The last `capacity` decision records, each with a sequence number (the cursor).

    `append` is called on the answering thread(s): a deque append and a counter step,
    both atomic under the GIL, so no lock on the hot path.
    """

    def __init__(self, capacity: int = DEFAULT_RING):
        """Keep at most `capacity` records."""
        self.capacity = capacity
        self._items: collections.deque[tuple[int, Mapping[str, Any]]] = \
            collections.deque(maxlen=capacity)
        self._seq = itertools.count(1)

    def append(self, record: Mapping[str, Any]) -> None:
        """Remember one decision record (see `curvecert.serve.daemon`)."""
        self._items.append((next(self._seq), record))

    def select(self, *, last: int = 20, denied: bool = False, after: int | None = None
               ) -> tuple[list[tuple[int, Mapping[str, Any]]], int]:
        """`(items oldest first, cursor)`: the newest `last` records (only non-200 ones
        with `denied`), newer than `after` when given; `cursor` is the highest sequence
        number seen, for the next `after`."""
        items = list(self._items)
        cursor = items[-1][0] if items else (after or 0)
        if after is not None:
            items = [it for it in items if it[0] > after]
            cursor = max(cursor, after)
        if denied:
            items = [it for it in items if str(it[1].get("status")) != "200"]
        return items[-last:], cursor


# --- the server side ------------------------------------------------------------------------

class ControlState(Protocol):
    """What the handler reads: implemented by the daemon."""

    ring: DecisionRing

    def status(self) -> dict[str, Any]:
        """The `status` result."""

    def live_policy(self) -> Policy:
        """The policy answering ZAP requests right now."""


class ControlHandler:
    """Turns request frames into reply frames; never raises (errors become replies)."""

    def __init__(self, state: ControlState):
        """Answer from `state`."""
        self.state = state
        self.errors = 0

    def respond(self, body: list[bytes]) -> list[bytes]:
        """One reply frame for the request frames `body` (exactly one frame expected)."""
        try:
            if len(body) != 1:
                raise ControlRequestError("a request is exactly one frame")
            result = self._answer(parse_request(body[0]))
            reply: dict[str, Any] = {"ok": True, "result": result}
        except ControlRequestError as exc:
            self.errors += 1
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug here must not stop the daemon
            self.errors += 1
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        return [json.dumps(reply, ensure_ascii=True, separators=(",", ":")).encode()]

    def _answer(self, req: ControlRequest) -> dict[str, Any]:
        if req.command == "status":
            return self.state.status()
        policy = self.state.live_policy()
        if req.command == "trusted":
            if req.domain is not None and req.domain not in policy.domains:
                raise ControlRequestError("trusted: no such domain")
            return {"items": trusted_entries(policy, req.domain)}
        items, cursor = self.state.ring.select(last=req.last, denied=req.denied,
                                               after=req.after)
        out = []
        for seq, rec in items:
            item: dict[str, Any] = {
                "seq": seq, "time": iso_time(rec.get("time", 0.0)),
                "mechanism": str(rec.get("mechanism", "?")),
                "status": int(rec.get("status", 500)), "reason": str(rec.get("reason", "")),
                "address": str(rec.get("address", "")), "domain": str(rec.get("domain", "")),
                "user_id": str(rec.get("user_id") or ""),
                "subject": str(rec.get("subject") or rec.get("user_id") or "")}
            key = item["subject"]
            if rec.get("cert_name") or rec.get("fingerprint"):
                item.update({"name": rec.get("cert_name"), "fingerprint": rec.get("fingerprint")})
            elif rec.get("mechanism") == "CURVE" and len(key) == 40:
                item.update(certificate_of(policy, str(rec.get("domain", "")), key))
            else:
                item.update({"name": None, "fingerprint": None})
            out.append(item)
        return {"items": out, "cursor": cursor}


def iso_time(epoch: object) -> str:
    """Seconds since the epoch as ISO-8601 UTC with milliseconds (`...Z`)."""
    t = float(epoch) if isinstance(epoch, (int, float)) else 0.0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def control_endpoint_for(zap_endpoint: str | None, default_zap: str) -> str:
    """The control endpoint that goes with a ZAP endpoint: in the same directory,
    `control.sock` next to a ZAP socket named `zap.sock` (the default), else
    `NAME.control.sock` next to `NAME.sock`, so two daemons in one directory do not
    collide. A `tcp://` or missing ZAP endpoint uses `default_zap`'s directory."""
    base = zap_endpoint if zap_endpoint and zap_endpoint.startswith("ipc://") else default_zap
    path = os.path.abspath(base[len("ipc://"):])
    stem = os.path.basename(path)
    stem = stem[:-len(".sock")] if stem.endswith(".sock") else stem
    name = CONTROL_NAME if stem == "zap" else f"{stem}.{CONTROL_NAME}"
    return "ipc://" + os.path.join(os.path.dirname(path), name)


def check_runtime_dir(path: str) -> None:
    """Refuse a socket directory group or others may write to, or owned by someone else.

    Raises `OperationalError` naming the directory. A missing directory is fine (the bind
    creates it owner-only).
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OperationalError(f"{directory}: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OperationalError(f"{directory}: group or others may write to the socket "
                               "directory; refusing it (chmod go-w)")
    if st.st_uid != os.geteuid():
        raise OperationalError(f"{directory}: owned by uid {st.st_uid}, not by this user")


# --- the client side ------------------------------------------------------------------------

class ControlClient:
    """Ask a running daemon; one DEALER socket, bounded waits, `OperationalError` on failure."""

    def __init__(self, endpoint: str, *, timeout: float = 5.0):
        """Connect lazily to `endpoint` (an `ipc://` path)."""
        if not endpoint.startswith("ipc://"):
            raise OperationalError(f"{endpoint}: the control channel is an ipc:// endpoint")
        self.endpoint = endpoint
        self.path = endpoint[len("ipc://"):]
        self.timeout = timeout
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[Any] | None = None
        self._lock = threading.Lock()

    def _check_owner(self) -> None:
        """Know who answers: refuse a socket directory or socket that another user owns
        or that group or others can write to (`curvecert.serve.runtime`, the forwarder's
        checks, owners: this user and root). A forged reply is never read."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.lexists(directory):
            check_directory(directory, default_owners())
        if not check_socket(self.path, default_owners()):
            raise OperationalError(f"{self.path}: no control socket (is serve-auth "
                                   "running? see --endpoint)")

    def _probe(self) -> None:
        """Fail fast with a clear reason: libzmq retries a refused ipc connect forever."""
        self._check_owner()
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(self.timeout)
        try:
            probe.connect(self.path)
        except FileNotFoundError:
            raise OperationalError(f"{self.path}: no control socket (is serve-auth "
                                   "running? see --endpoint)") from None
        except PermissionError:
            raise OperationalError(f"{self.path}: permission denied (the control socket "
                                   "belongs to another user)") from None
        except OSError as exc:
            raise OperationalError(f"{self.path}: cannot connect: {exc.strerror}") from None
        finally:
            probe.close()

    def request(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request; the `result` object, or `OperationalError` (error reply,
        timeout, unreachable daemon)."""
        with self._lock:
            if self._sock is None:
                self._probe()
                self._ctx = zmq.Context()
                self._sock = self._ctx.socket(zmq.DEALER)
                self._sock.linger = 0
                self._sock.connect(self.endpoint)
            sock = self._sock
            sock.send_multipart([b"", json.dumps(obj).encode()])
            if not sock.poll(int(self.timeout * 1000)):
                self.close()
                raise OperationalError(f"{self.path}: the daemon did not answer within "
                                       f"{self.timeout:g}s")
            frames = sock.recv_multipart()
        try:
            reply = json.loads(frames[-1])
        except ValueError:
            raise OperationalError(f"{self.path}: the daemon sent a reply that is not "
                                   "JSON") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            why = reply.get("error", "?") if isinstance(reply, dict) else "?"
            raise OperationalError(f"{self.path}: the daemon refused the request: {why}")
        result = reply.get("result")
        if not isinstance(result, dict):
            raise OperationalError(f"{self.path}: the daemon sent a malformed reply: "
                                   "result is not an object")
        problem = reply_problem(str(obj.get("command")), result)
        if problem is not None:
            raise OperationalError(f"{self.path}: the daemon sent a malformed reply: "
                                   f"{problem}")
        return result

    def close(self) -> None:
        """Close the socket and its context."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
