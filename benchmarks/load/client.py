"""One load-benchmark worker: keeps N CURVE clients handshaking against the server.

Started by `server.py` with one JSON argument (see `main`). Each of the `slots` clients
loops: a new DEALER socket with either a trusted keypair (from the cache's keypair file)
or a freshly generated one, a socket monitor on it, connect, send one message carrying
the claimed public key, then wait for the verdict:

- a reply from the server: admitted (the server also checked the message's User-Id);
- the monitor's `HANDSHAKE_FAILED_AUTH` event: refused, with the ZAP status code;
- nothing within `verdict_timeout`: undecided.

Then the socket is closed and the slot starts again with a new socket. The sockets are
watched with one epoll set on their `ZMQ_FD`s (`zmq_poll` over 500 sockets is O(n) a
call). After `duration`
seconds no new client starts; the ones in flight get `drain` seconds to finish. The
result (counts by key kind and outcome, a latency histogram in ms) is one JSON object on
stdout.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import resource
import select
import sys
import time
from typing import Any

import loadlib
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

__all__ = ["main"]

EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
          | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class Slot:
    """One client in flight: its sockets, what kind of key it uses and when it started."""

    __slots__ = ("handshaken", "mon", "sock", "started", "trusted")

    def __init__(self, sock: zmq.Socket[Any], mon: zmq.Socket[Any], trusted: bool,
                 started: float):
        self.sock, self.mon, self.trusted, self.started = sock, mon, trusted, started
        self.handshaken = False


def main() -> None:
    cfg = json.loads(sys.argv[1])
    loadlib.raise_nofile()
    rng = random.Random(cfg["seed"])
    trusted_keys = loadlib.read_keypairs(cfg["blob"], cfg["key_start"], cfg["key_stop"])
    server_key = cfg["server_key"].encode("ascii")
    endpoint = cfg["endpoint"]
    untrusted_share = cfg["untrusted_share"]
    verdict_timeout = cfg["verdict_timeout"]

    ctx: zmq.Context[Any] = zmq.Context(io_threads=1)
    ctx.max_sockets = 65536  # each client is a DEALER plus two monitor PAIR sockets
    # epoll on the sockets' ZMQ_FD (zmq_poll over 500 sockets costs O(n) per call and
    # zmq.Poller.unregister is O(n) too); ZMQ_EVENTS is checked after every wake-up.
    ep = select.epoll()
    owner: dict[int, tuple[zmq.Socket[Any], int]] = {}  # fd -> (socket, slot)
    slots: list[Slot | None] = [None] * cfg["slots"]
    counts: collections.Counter[str] = collections.Counter()
    latency: dict[str, collections.Counter[int]] = {
        "admitted": collections.Counter(), "refused": collections.Counter()}
    serial = itertools.count()

    def start(i: int) -> None:
        trusted = rng.random() >= untrusted_share
        if trusted:
            raw_pub, raw_sec = rng.choice(trusted_keys)
            pub, sec = z85.encode(raw_pub), z85.encode(raw_sec)
        else:
            pub, sec = zmq.curve_keypair()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_serverkey = server_key
        sock.curve_publickey = pub
        sock.curve_secretkey = sec
        # A unique monitor endpoint: pyzmq's default names it after the socket's FD, which
        # is reused at once when a closed socket's monitor may still be going away.
        mon = sock.get_monitor_socket(EVENTS, addr=f"inproc://load-mon-{next(serial)}")
        sock.connect(endpoint)
        sock.send(pub)  # queued until the handshake is done; dropped if refused
        slot = Slot(sock, mon, trusted, time.monotonic())
        slots[i] = slot
        for s in (sock, mon):
            fd = s.FD
            owner[fd] = (s, i)
            ep.register(fd, select.EPOLLIN)

    def finish(i: int, outcome: str, detail: str = "") -> None:
        slot = slots[i]
        assert slot is not None
        kind = "trusted" if slot.trusted else "untrusted"
        counts[f"{kind}.{outcome}{detail}"] += 1
        if outcome in latency:
            latency[outcome][int((time.monotonic() - slot.started) * 1000)] += 1
        for s in (slot.sock, slot.mon):
            fd = s.FD
            ep.unregister(fd)
            del owner[fd]
        slot.sock.disable_monitor()
        slot.mon.close(linger=0)
        slot.sock.close(linger=0)
        slots[i] = None

    def service(sock: zmq.Socket[Any], i: int) -> None:
        """Handle what `sock` has to read; the slot may finish (and start again)."""
        while True:
            slot = slots[i]
            if slot is None or (sock is not slot.sock and sock is not slot.mon):
                return  # finished meanwhile
            if not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            if sock is slot.mon:
                event = recv_monitor_message(sock)
                ev = event["event"]
                if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    slot.handshaken = True
                    continue
                if ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    finish(i, "refused", f".{event['value']}")
                else:
                    finish(i, "failed", f".{zmq.Event(ev).name}")
            else:
                reply = sock.recv()
                finish(i, "admitted", "" if reply == b"ok" else ".bad-reply")
            if time.monotonic() < stop_at:
                start(i)
            return

    t0 = time.monotonic()
    stop_at = t0 + cfg["duration"]
    drain_until = stop_at + cfg["drain"]
    for i in range(len(slots)):
        start(i)
    for s, i in list(owner.values()):
        service(s, i)
    next_check = time.monotonic() + 0.25
    while True:
        now = time.monotonic()
        if now >= stop_at and not owner:
            break
        if now > drain_until:
            for i, slot in enumerate(slots):
                if slot is not None:
                    finish(i, "undecided", ".drain")
            break
        for fd, _ in ep.poll(0.1):
            entry = owner.get(fd)
            if entry is not None:
                service(*entry)
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.25
            for i, slot in enumerate(slots):
                if slot is None:
                    continue
                # ZMQ_FD is edge-like: look at every socket now and then, so a missed
                # wake-up costs at most this period, never a client.
                service(slot.sock, i)
                slot = slots[i]
                if slot is not None:
                    service(slot.mon, i)
                slot = slots[i]
                if slot is not None and now - slot.started > verdict_timeout:
                    finish(i, "undecided", ".handshaken" if slot.handshaken else "")
                    if now < stop_at:
                        start(i)
    ep.close()
    ctx.term()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"counts": dict(counts), "elapsed": time.monotonic() - t0,
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
           "latency_ms": {k: {str(ms): n for ms, n in v.items()} for k, v in latency.items()}}
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
