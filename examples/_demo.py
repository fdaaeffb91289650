"""Shared plumbing for the security-pattern examples (not a pattern itself).

Each example builds a server socket (PULL, bound on loopback TCP) and a client socket
(PUSH) with the security of its pattern, then calls `exchange`: it waits for the server's
handshake event (no sleeps, bounded by a timeout) and, when the handshake succeeded,
sends "Hello" from the client and reads it on the server together with the properties
ZAP attached to it (`User-Id`, certificate metadata). `main` gives every example the same
command line: `--negative` runs the case that must be refused, `-v` logs at DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

try:  # run from a checkout without `pip install -e .`: use the checkout's curvecert
    import curvecert  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the example is started
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["Outcome", "exchange", "main"]

HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_NAMES: dict[int, str] = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed (no detail)",
          zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed (protocol error)",
          zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused by the authenticator"}
#: How long a refused client is watched to make sure nothing gets through afterwards.
GRACE = 0.3


@dataclass
class Outcome:
    """What happened: was "Hello" delivered, and what did the server learn?"""

    delivered: bool
    detail: str
    properties: dict[str, str] = field(default_factory=dict)


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        return str(frame.get(name))
    except (zmq.ZMQError, UnicodeDecodeError):
        return None


def exchange(server: zmq.Socket[bytes], client: zmq.Socket[bytes], port: int, *,
             timeout: float = 5.0, properties: tuple[str, ...] = ()) -> Outcome:
    """Connect `client` to `server` (bound on `port`) and try to deliver one message."""
    monitor = server.get_monitor_socket(HANDSHAKE_EVENTS)
    try:
        client.connect(f"tcp://127.0.0.1:{port}")
        if not monitor.poll(int(timeout * 1000)):
            return Outcome(False, f"no handshake within {timeout}s")
        event = recv_monitor_message(monitor)
        if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            what = _NAMES.get(int(event["event"]), str(event["event"]))
            code = event["value"]
            # Make sure the refused client really never gets a message through.
            if server.poll(int(GRACE * 1000)):
                return Outcome(True, f"handshake {what} ({code}), yet a message arrived")
            return Outcome(False, f"handshake {what} (status/code {code})")
        client.send(b"Hello")
        if not server.poll(int(timeout * 1000)):
            return Outcome(False, "handshake succeeded but no message arrived")
        frame = server.recv(copy=False)
        props = {name: value for name in ("User-Id", *properties)
                 if (value := _property(frame, name)) is not None}
        return Outcome(frame.bytes == b"Hello", "received Hello", props)
    finally:
        server.disable_monitor()
        monitor.close(linger=0)
        client.close(linger=0)
        server.close(linger=0)


def main(name: str, run: Callable[[Path, bool], Outcome], doc: str | None) -> None:
    """Command line of every example: run the pattern, print one result line, exit 0 when
    the outcome is the expected one (delivered, or refused with `--negative`)."""
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=doc)
    parser.add_argument("--negative", action="store_true",
                        help="run the case that must be refused")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(name)s: %(levelname)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        outcome = run(Path(tmp), args.negative)
    expected = not args.negative
    extra = "".join(f" {k}={v}" for k, v in outcome.properties.items())
    if outcome.delivered == expected:
        verdict = "refused as expected" if args.negative else "OK"
        print(f"{name}: {verdict}: {outcome.detail}{extra}")
        sys.exit(0)
    print(f"{name}: UNEXPECTED: {outcome.detail}{extra}")
    sys.exit(1)
