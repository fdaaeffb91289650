"""Credential providers that misbehave, against both authenticators, over real sockets.

A provider that raises, one that never returns (plain and async), one that is merely
slow: the request concerned gets a 500 (at the deadline for the stuck ones), other
requests are answered meanwhile, the next valid request is answered, and `stop()` returns
while the stuck call is still stuck. Requests are raw ZAP messages from a DEALER on
`inproc://zeromq.zap.01` (so several can be in flight and replies are matched by request
id), plus real PLAIN/CURVE handshakes over loopback TCP. Waits are bounded; no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from curvecert.auth.aio import AsyncioAuthenticator
from curvecert.auth.authenticator import Authenticator, BaseAuthenticator
from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.pending import Grant
from curvecert.formats.zap import ZAP_ENDPOINT, ZapRequest

WAIT = 10.0
DEADLINE = 0.5  # provider timeout used here: short, so stuck calls expire quickly
KEY = bytes(range(32))


def null(rid: bytes) -> list[bytes]:
    return [b"1.0", rid, b"", b"127.0.0.1", b"", b"NULL"]


def plain(rid: bytes, user: bytes = b"alice", password: bytes = b"pw") -> list[bytes]:
    return [b"1.0", rid, b"", b"127.0.0.1", b"", b"PLAIN", user, password]


def curve(rid: bytes, key: bytes = KEY) -> list[bytes]:
    return [b"1.0", rid, b"", b"127.0.0.1", b"", b"CURVE", key]


class World:
    """One authenticator flavour on an asyncio context, and a DEALER ZAP client."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ctx: zmq.asyncio.Context = zmq.asyncio.Context()
        self.auth: BaseAuthenticator
        if kind == "thread":
            self.auth = Authenticator(self.ctx, max_workers=2)
        else:
            self.auth = AsyncioAuthenticator(self.ctx, max_workers=2)
        self.auth.configure_null()
        self.dealer: zmq.asyncio.Socket | None = None
        self.stash: dict[bytes, list[bytes]] = {}

    def start(self) -> None:
        self.auth.start()  # type: ignore[attr-defined]
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.connect(ZAP_ENDPOINT)

    def stop(self) -> None:
        self.auth.stop()  # type: ignore[attr-defined]

    def run(self, body: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            self.start()
            try:
                await asyncio.wait_for(body(), 60)
            finally:
                self.stop()
                if self.dealer is not None:
                    self.dealer.close(linger=0)
                self.ctx.destroy(linger=0)

        asyncio.run(main())

    async def send(self, frames: list[bytes]) -> None:
        assert self.dealer is not None
        await self.dealer.send_multipart([b"", *frames])

    async def recv(self) -> list[bytes]:
        assert self.dealer is not None
        reply = await asyncio.wait_for(self.dealer.recv_multipart(), WAIT)
        assert reply[0] == b"" and len(reply) == 7, reply
        return reply[1:]

    async def reply_for(self, rid: bytes) -> list[bytes]:
        """The reply to request `rid` (replies to others that arrive first are kept)."""
        while rid not in self.stash:
            reply = await self.recv()
            self.stash[reply[1]] = reply
        return self.stash.pop(rid)

    async def ask(self, frames: list[bytes]) -> list[bytes]:
        await self.send(frames)
        return await self.reply_for(frames[1])


@pytest.fixture(params=["thread", "asyncio"])
def w(request: pytest.FixtureRequest) -> World:
    return World(request.param)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test, so a 'never returning' call finally lets its thread go."""
    event = threading.Event()
    yield event
    event.set()


# --- a provider that raises -----------------------------------------------------------------

@pytest.mark.parametrize("is_async", [False, True])
def test_raising_provider_is_a_500_and_the_next_request_is_answered(
        w: World, is_async: bool, caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: ZapRequest) -> bool:
        raise RuntimeError(f"db down; password was {request.credentials[1]!r}")

    async def broken_async(request: ZapRequest) -> bool:
        raise RuntimeError(f"db down; password was {request.credentials[1]!r}")

    w.auth.configure_provider("PLAIN", broken_async if is_async else broken, name="db")

    async def body() -> None:
        reply = await w.ask(plain(b"1", password=b"hunter2"))
        assert reply[1:3] == [b"1", b"500"]
        assert (await w.ask(null(b"2")))[1:3] == [b"2", b"200"]
        assert w.auth.counters["PLAIN"]["errors"] == 1

    with caplog.at_level("WARNING"):
        w.run(body)
    assert "db failed: RuntimeError" in caplog.text
    assert "hunter2" not in caplog.text  # only the exception's type is logged


# --- malformed input ------------------------------------------------------------------------

def test_malformed_requests_get_500_and_the_hook_sees_every_decision(w: World) -> None:
    seen: list[tuple[bool, str]] = []

    def hook(request: ZapRequest | None, decision: Any) -> None:
        seen.append((request is not None, decision.status))
        if len(seen) == 2:
            raise RuntimeError("a broken audit sink")  # must not stop anything

    w.auth.on_decision = hook

    async def body() -> None:
        for frames in ([b"1.0"], [b"2.0", b"v", b"", b"127.0.0.1", b"", b"NULL"],
                       curve(b"short", key=b"\x01" * 31),
                       [b"1.0", b"u", b"", b"\xff", b"", b"NULL"]):
            reply = await w.ask(frames) if len(frames) > 1 else None
            if reply is None:  # a one-frame body: answered with an empty request id
                await w.send(frames)
                reply = await w.reply_for(b"")
            assert reply[2] == b"500" and reply[4:] == [b"", b""]
        assert (await w.ask(null(b"ok")))[1:3] == [b"ok", b"200"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while len(seen) < 5:  # the hook runs just after the reply has been sent
            assert loop.time() < deadline
            await asyncio.sleep(0.005)
        assert seen == [(False, "500")] * 4 + [(True, "200")]
        assert w.auth.requests == 5 and w.auth.counters["NULL"]["errors"] == 2

    w.run(body)


# --- providers that never return ------------------------------------------------------------

def test_stuck_blocking_provider_expires_while_others_are_answered(
        w: World, release: threading.Event) -> None:
    started = threading.Event()

    def stuck(request: ZapRequest) -> bool:
        started.set()
        release.wait()  # never returns during the test
        return True

    w.auth.configure_provider("PLAIN", stuck, name="stuck", timeout=DEADLINE)
    w.auth.configure_curve(store=StaticKeys.from_keys([KEY]))

    async def body() -> None:
        await w.send(plain(b"stuck"))
        assert (await w.ask(curve(b"curve")))[1:3] == [b"curve", b"200"]
        assert (await w.ask(null(b"null")))[1:3] == [b"null", b"200"]
        reply = await w.reply_for(b"stuck")  # 500 at its deadline
        assert reply[1:3] == [b"stuck", b"500"] and reply[3] == b"Internal error"
        assert started.is_set() and not release.is_set()  # it ran, and is still stuck
        assert (await w.ask(null(b"after")))[1:3] == [b"after", b"200"]
        # stop() returns although the call is still running in its worker
        w.stop()
        assert not w.auth.running and not release.is_set()

    w.run(body)


def test_stuck_async_provider_expires_and_is_cancelled(w: World) -> None:
    cancelled = threading.Event()

    async def stuck(request: ZapRequest) -> bool:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    w.auth.configure_provider("CURVE", stuck, name="stuck", timeout=DEADLINE)

    async def body() -> None:
        await w.send(curve(b"stuck"))
        assert (await w.ask(null(b"null")))[1:3] == [b"null", b"200"]
        assert (await w.reply_for(b"stuck"))[1:3] == [b"stuck", b"500"]
        assert (await w.ask(null(b"after")))[1:3] == [b"after", b"200"]
        await asyncio.get_running_loop().run_in_executor(None, cancelled.wait, WAIT)
        assert cancelled.is_set()  # the coroutine was cancelled at the deadline
        w.stop()
        assert not w.auth.running

    w.run(body)


def test_every_worker_stuck_blocking_calls_expire_unstarted(
        w: World, release: threading.Event) -> None:
    """With both workers (max_workers=2) stuck, a third blocking call cannot start: it
    is answered 500 at its deadline and never runs; everything else is still answered."""
    started: list[bytes] = []

    def stuck(request: ZapRequest) -> bool:
        started.append(request.request_id)
        release.wait()
        return True

    w.auth.configure_provider("PLAIN", stuck, name="stuck", timeout=DEADLINE)

    async def body() -> None:
        for rid in (b"a", b"b", b"c"):
            await w.send(plain(rid))
        assert (await w.ask(null(b"null")))[1:3] == [b"null", b"200"]
        for rid in (b"a", b"b", b"c"):
            assert (await w.reply_for(rid))[2] == b"500"
        assert sorted(started) == [b"a", b"b"]  # "c" never started
        assert (await w.ask(null(b"after")))[1:3] == [b"after", b"200"]

    w.run(body)


def test_stop_answers_requests_in_flight(w: World, release: threading.Event) -> None:
    def stuck(request: ZapRequest) -> bool:
        release.wait()
        return True

    w.auth.configure_provider("PLAIN", stuck, name="stuck", timeout=30)

    async def body() -> None:
        await w.send(plain(b"waiting"))
        assert (await w.ask(null(b"null")))[1:3] == [b"null", b"200"]  # it is in flight
        assert w.auth.in_flight == 1  # type: ignore[attr-defined]
        w.stop()  # long before the 30 s deadline
        assert (await w.reply_for(b"waiting"))[1:3] == [b"waiting", b"500"]

    w.run(body)


# --- slow but working providers -------------------------------------------------------------

def test_slow_async_provider_does_not_hold_up_other_requests(w: World) -> None:
    gate: dict[str, asyncio.Event] = {}
    loop_of_provider: list[asyncio.AbstractEventLoop] = []
    waiting = threading.Event()

    async def slow(request: ZapRequest) -> Grant:
        loop_of_provider.append(asyncio.get_running_loop())
        event = gate.setdefault("open", asyncio.Event())
        waiting.set()
        await event.wait()
        return Grant("db-user", {"Role": "admin"})

    w.auth.configure_provider("PLAIN", slow, name="slow", timeout=WAIT)

    async def body() -> None:
        await w.send(plain(b"slow"))
        await asyncio.get_running_loop().run_in_executor(None, waiting.wait, WAIT)
        assert waiting.is_set()  # the provider is running and waiting
        # the fast request overtakes the slow one
        assert (await w.ask(null(b"fast")))[1:3] == [b"fast", b"200"]
        loop = loop_of_provider[0]
        loop.call_soon_threadsafe(gate["open"].set)
        reply = await w.reply_for(b"slow")
        assert reply[1:5] == [b"slow", b"200", b"OK", b"db-user"]
        assert reply[5] == b"\x04Role\x00\x00\x00\x05admin"
        # the thread authenticator runs async providers on its own loop, the asyncio one
        # on the application's loop
        assert (loop is asyncio.get_running_loop()) == (w.kind == "asyncio")

    w.run(body)


def test_blocking_provider_result_cache(w: World) -> None:
    calls: list[bytes] = []

    def lookup(request: ZapRequest) -> bool:
        calls.append(request.credentials[0])
        return request.credentials[0] == KEY

    provider = w.auth.configure_provider("CURVE", lookup, name="db", cache_ttl=60)

    async def body() -> None:
        for rid in (b"1", b"2", b"3"):
            assert (await w.ask(curve(rid)))[1:3] == [rid, b"200"]
        assert calls == [KEY]  # asked once, then answered from the cache
        other = bytes(32)
        for rid in (b"4", b"5"):
            assert (await w.ask(curve(rid, other)))[1:3] == [rid, b"400"]
        assert calls == [KEY, other, other]  # denials are never cached
        assert provider.cache is not None and len(provider.cache) == 1
        provider.cache.clear()
        assert (await w.ask(curve(b"6")))[2] == b"200" and calls[-1] == KEY

    w.run(body)


# --- real handshakes ------------------------------------------------------------------------

async def _handshake(ctx: zmq.asyncio.Context, user: bytes) -> tuple[int, Any]:
    """A PLAIN client and server over TCP: the server monitor's first handshake event."""
    server, client = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    server.linger = client.linger = 0
    server.plain_server = True
    client.plain_username, client.plain_password = user, b"pw"
    monitor = server.get_monitor_socket()
    try:
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        while True:
            event = parse_monitor_message(await asyncio.wait_for(monitor.recv_multipart(),
                                                                 WAIT))
            if event["event"] in (zmq.EVENT_HANDSHAKE_SUCCEEDED,
                                  zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                return event["event"], event["value"]
    finally:
        server.disable_monitor()
        monitor.close(linger=0)
        server.close(linger=0)
        client.close(linger=0)


def test_handshakes_with_a_misbehaving_provider(w: World, release: threading.Event) -> None:
    def lookup(request: ZapRequest) -> bool:
        user = request.credentials[0]
        if user == b"boom":
            raise ConnectionError("ldap unreachable")
        if user == b"hang":
            release.wait()
        return user == b"alice"

    w.auth.configure_provider("PLAIN", lookup, name="ldap", timeout=DEADLINE)

    async def body() -> None:
        assert await _handshake(w.ctx, b"boom") == (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 500)
        assert await _handshake(w.ctx, b"hang") == (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 500)
        assert await _handshake(w.ctx, b"mallory") == (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
        assert (await _handshake(w.ctx, b"alice"))[0] == zmq.EVENT_HANDSHAKE_SUCCEEDED

    w.run(body)


def test_asyncio_start_outside_a_running_loop_says_so() -> None:
    from curvecert.errors import OperationalError

    auth = AsyncioAuthenticator(zmq.Context.instance())
    errors: list[BaseException] = []

    def in_a_thread_without_a_loop() -> None:
        try:
            auth.start()
        except OperationalError as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_a_thread_without_a_loop)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "needs an asyncio event loop" in str(errors[0])
    assert not auth.running


def test_asyncio_poller_fallback_and_stop_from_another_thread() -> None:
    """The zmq.asyncio.Poller path (loops without add_reader), and stop() called from a
    thread while the loop runs."""
    ctx = zmq.asyncio.Context()
    auth = AsyncioAuthenticator(ctx, use_reader=False)
    auth.configure_null()

    async def body() -> None:
        auth.start()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(ZAP_ENDPOINT)
        try:
            for rid in (b"1", b"2"):
                await dealer.send_multipart([b"", *null(rid)])
                reply = await asyncio.wait_for(dealer.recv_multipart(), WAIT)
                assert reply[2:4] == [rid, b"200"]
            await asyncio.get_running_loop().run_in_executor(None, auth.stop)
            assert not auth.running
        finally:
            dealer.close(linger=0)

    try:
        asyncio.run(body())
    finally:
        auth.stop()
        ctx.destroy(linger=0)


def test_asyncio_run_ending_answers_requests_in_flight() -> None:
    """asyncio.run() cancels the provider task when the application's loop ends: the
    request is answered 500 then, not left waiting."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = AsyncioAuthenticator(ctx)

    async def stuck(request: ZapRequest) -> bool:
        await asyncio.Event().wait()
        return True

    auth.configure_provider("CURVE", stuck, name="stuck", timeout=30)
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger, dealer.rcvtimeo = 0, int(WAIT * 1000)

    async def body() -> None:
        auth.start()
        dealer.connect(ZAP_ENDPOINT)
        dealer.send_multipart([b"", *curve(b"x")])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while auth.in_flight == 0:
            assert loop.time() < deadline
            await asyncio.sleep(0.005)

    try:
        asyncio.run(body())  # returns with the call in flight
        assert dealer.recv_multipart()[2:4] == [b"x", b"500"]
    finally:
        auth.stop()
        dealer.close(linger=0)
        ctx.destroy(linger=0)
