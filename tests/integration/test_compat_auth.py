"""pyzmq's own authentication tests (tests/test_auth.py, v27.2), ported to curvecert.compat.

Every scenario runs through BOTH authenticators, like pyzmq's `AuthTest` base class: the
thread one and the asyncio one, on a `zmq.asyncio.Context`, with PUSH/PULL over loopback
TCP. The test bodies keep pyzmq's calls (`allow`, `deny`, `configure_plain`,
`configure_curve`, `configure_curve_callback`, `curve_user_id`, `create_certificates`,
`load_certificate`) and its expectations. What differs is how "cannot connect" is shown:
pyzmq waits 100-200 ms for a message that never comes; here the server socket's monitor
must report the handshake failure (`HANDSHAKE_FAILED_AUTH` with the ZAP status when the
authenticator refused, `HANDSHAKE_FAILED_PROTOCOL` for a wrong server key or a missing
client key), and the authenticator's counters must agree. No sleeps; bounded waits only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from curvecert.compat import CURVE_ALLOW_ANY, create_certificates, load_certificate
from curvecert.compat.asyncio import AsyncioAuthenticator
from curvecert.compat.base import Authenticator
from curvecert.compat.thread import ThreadAuthenticator

Certs = tuple[bytes, bytes, bytes, bytes]
FAILED = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
          zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail"}
WAIT = 10.0  # upper bound for anything that should happen at once


# --- pyzmq's fixtures -----------------------------------------------------------------------

@pytest.fixture
def create_certs(tmp_path: Path) -> tuple[str, str]:
    """pyzmq's fixture: create server and client certificates, then move the public
    files to public_keys/ and the secret ones to private_keys/."""
    base_dir = tmp_path / "certs"
    keys_dir, public_keys_dir, secret_keys_dir = (base_dir / "certificates",
                                                  base_dir / "public_keys",
                                                  base_dir / "private_keys")
    for d in (keys_dir, public_keys_dir, secret_keys_dir):
        d.mkdir(parents=True)
    create_certificates(keys_dir, "server")
    create_certificates(keys_dir, "client")
    for key_file in os.listdir(keys_dir):
        if key_file.endswith(".key"):
            shutil.move(keys_dir / key_file, public_keys_dir / key_file)
    for key_file in os.listdir(keys_dir):
        if key_file.endswith(".key_secret"):
            shutil.move(keys_dir / key_file, secret_keys_dir / key_file)
    return str(public_keys_dir), str(secret_keys_dir)


@pytest.fixture
def public_keys_dir(create_certs: tuple[str, str]) -> str:
    return create_certs[0]


@pytest.fixture
def certs(create_certs: tuple[str, str]) -> Certs:
    """(server_public, server_secret, client_public, client_secret), Z85 bytes."""
    secret_keys_dir = create_certs[1]
    server_public, server_secret = load_certificate(
        os.path.join(secret_keys_dir, "server.key_secret"))
    client_public, client_secret = load_certificate(
        os.path.join(secret_keys_dir, "client.key_secret"))
    assert server_secret is not None and client_secret is not None
    return server_public, server_secret, client_public, client_secret


# --- pyzmq's AuthTest, both flavours --------------------------------------------------------

class AuthTest:
    """One test's world: an asyncio context, the authenticator, pyzmq's helpers."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.context: zmq.asyncio.Context = zmq.asyncio.Context()
        self.auth: Authenticator | None = None

    def make_auth(self) -> Authenticator:
        if self.kind == "thread":
            return ThreadAuthenticator(self.context)
        return AsyncioAuthenticator(self.context)

    def run(self, body: Callable[[], Awaitable[None]]) -> None:
        """Start the authenticator inside a running loop, run `body`, tear down."""
        async def main() -> None:
            self.auth = self.make_auth()
            self.auth.start()
            assert self.auth.is_alive()
            try:
                await asyncio.wait_for(body(), 60)
            finally:
                if self.auth is not None:
                    self.auth.stop()
                    self.auth = None
                self.context.destroy(linger=0)

        asyncio.run(main())

    def stop_auth(self) -> None:
        assert self.auth is not None
        self.auth.stop()
        assert not self.auth.is_alive()
        self.auth = None

    @contextmanager
    def push_pull(self) -> Iterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
        with self.context.socket(zmq.PUSH) as server, self.context.socket(zmq.PULL) as client:
            server.linger = client.linger = 0
            server.sndtimeo = client.rcvtimeo = 2000
            yield server, client

    @contextmanager
    def curve_push_pull(self, certs: Certs, client_key: str | None = "ok"
                        ) -> Iterator[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]]:
        server_public, server_secret, client_public, client_secret = certs
        with self.push_pull() as (server, client):
            server.curve_publickey = server_public
            server.curve_secretkey = server_secret
            server.curve_server = True
            if client_key is not None:
                client.curve_publickey = client_public
                client.curve_secretkey = client_secret
                if client_key == "ok":
                    client.curve_serverkey = server_public
                else:
                    _private, public = zmq.curve_keypair()
                    client.curve_serverkey = public
            yield server, client

    async def can_connect(self, server: zmq.asyncio.Socket, client: zmq.asyncio.Socket,
                          timeout: float = WAIT) -> bool:
        """pyzmq's check: one message from server to client over tcp://127.0.0.1."""
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        msg = [b"Hello World"]
        if not await server.poll(int(timeout * 1000), zmq.POLLOUT):
            return False
        await server.send_multipart(msg, zmq.NOBLOCK)
        if not await client.poll(int(timeout * 1000)):
            return False
        assert await client.recv_multipart(zmq.NOBLOCK) == msg
        return True

    async def refused(self, server: zmq.asyncio.Socket, client: zmq.asyncio.Socket,
                      expect: str, status: int | None = None) -> None:
        """"Cannot connect", shown by the server's monitor: the first handshake ends with
        the `expect`ed failure (and, for "auth", the ZAP `status`), not with success."""
        monitor = server.get_monitor_socket()
        try:
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client.connect(f"tcp://127.0.0.1:{port}")
            while True:
                event = parse_monitor_message(
                    await asyncio.wait_for(monitor.recv_multipart(), WAIT))
                assert event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED, "client got in"
                if event["event"] in FAILED:
                    break
            assert FAILED[event["event"]] == expect
            if status is not None:
                assert event["value"] == status
            assert await client.poll(0) == 0  # nothing was delivered
        finally:
            server.disable_monitor()
            monitor.close(linger=0)

    def counts(self, mechanism: str) -> dict[str, int]:
        assert self.auth is not None
        return self.auth.counters.get(mechanism, {"allowed": 0, "denied": 0, "errors": 0})

    async def counted(self, mechanism: str, outcome: str, at_least: int = 1) -> None:
        """Wait (bounded) until the authenticator has counted the decision: it counts
        after sending the reply, so the client may learn of it first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while self.counts(mechanism)[outcome] < at_least:
            assert loop.time() < deadline, f"{mechanism} {outcome} never counted"
            await asyncio.sleep(0.005)


@pytest.fixture(params=["thread", "asyncio"])
def t(request: pytest.FixtureRequest) -> AuthTest:
    return AuthTest(request.param)


# --- the scenarios --------------------------------------------------------------------------

def test_null(t: AuthTest) -> None:
    """NULL never involves ZAP without a domain; with domain 'global' but no handler bound
    (authenticator stopped, fresh context) it still connects."""
    async def body() -> None:
        t.stop_auth()
        t.context.destroy(linger=0)  # a new context, so ZAP isn't inherited
        t.context = zmq.asyncio.Context()
        with t.push_pull() as (server, client):
            assert await t.can_connect(server, client)
        with t.push_pull() as (server, client):
            server.zap_domain = b"global"
            assert await t.can_connect(server, client)

    t.run(body)


def test_deny(t: AuthTest) -> None:
    async def body() -> None:
        assert t.auth is not None
        t.auth.deny("127.0.0.1")
        with pytest.raises(ValueError):
            t.auth.allow("127.0.0.2")
        with t.push_pull() as (server, client):
            server.zap_domain = b"global"
            await t.refused(server, client, "auth", 400)
        await t.counted("NULL", "denied")
        assert t.counts("NULL")["allowed"] == 0

    t.run(body)


def test_allow(t: AuthTest) -> None:
    async def body() -> None:
        assert t.auth is not None
        t.auth.allow("127.0.0.1")
        with pytest.raises(ValueError):
            t.auth.deny("127.0.0.2")
        with t.push_pull() as (server, client):
            server.zap_domain = b"global"
            assert await t.can_connect(server, client)
        await t.counted("NULL", "allowed")

    t.run(body)


@pytest.mark.parametrize("enabled, password, success", [
    (True, "correct", True),
    (False, "correct", False),
    (True, "incorrect", False),
])
def test_plain(t: AuthTest, enabled: bool, password: str, success: bool) -> None:
    async def body() -> None:
        assert t.auth is not None
        with t.push_pull() as (server, client):
            server.plain_server = True
            client.plain_username = b"admin"
            client.plain_password = password.encode("ascii")
            if enabled:
                t.auth.configure_plain(domain="*", passwords={"admin": "correct"})
            if success:
                assert await t.can_connect(server, client)
                await t.counted("PLAIN", "allowed")
                assert t.counts("PLAIN") == {"allowed": 1, "denied": 0, "errors": 0}
            else:
                await t.refused(server, client, "auth", 400)
                await t.counted("PLAIN", "denied")
                assert t.counts("PLAIN")["allowed"] == 0
        # Remove the authenticator: a plain NULL connection works again.
        t.stop_auth()
        with t.push_pull() as (server, client):
            assert await t.can_connect(server, client)

    t.run(body)


@pytest.mark.parametrize("client_key, location, success", [
    ("ok", CURVE_ALLOW_ANY, True),
    ("ok", "public_keys", True),
    ("bad", "public_keys", False),
    (None, "public_keys", False),
])
def test_curve(t: AuthTest, certs: Certs, public_keys_dir: str, client_key: str | None,
               location: str, success: bool) -> None:
    async def body() -> None:
        assert t.auth is not None
        t.auth.allow("127.0.0.1")
        with t.curve_push_pull(certs, client_key=client_key) as (server, client):
            t.auth.configure_curve(domain="*", location=public_keys_dir
                                   if location == "public_keys" else location)
            if success:
                assert await t.can_connect(server, client)
                await t.counted("CURVE", "allowed")
            else:
                # a wrong server key or no client key fails before ZAP is asked
                await t.refused(server, client, "protocol")
                assert t.counts("CURVE")["allowed"] == 0
        t.stop_auth()
        with t.push_pull() as (server, client):
            assert await t.can_connect(server, client)

    t.run(body)


def test_curve_unknown_client_key_is_refused_by_zap(t: AuthTest, certs: Certs,
                                                     tmp_path: Path) -> None:
    """Not in pyzmq's list, but the case its directory test is for: a well-formed client
    whose key is not in the directory gets a ZAP 400."""
    async def body() -> None:
        assert t.auth is not None
        empty = tmp_path / "nobody"
        empty.mkdir()
        t.auth.configure_curve(domain="*", location=str(empty))
        with t.curve_push_pull(certs) as (server, client):
            await t.refused(server, client, "auth", 400)
        await t.counted("CURVE", "denied")

    t.run(body)


@pytest.mark.parametrize("key", ["ok", "wrong"])
@pytest.mark.parametrize("async_", [True, False])
def test_curve_callback(t: AuthTest, certs: Certs, key: str, async_: bool) -> None:
    async def body() -> None:
        assert t.auth is not None
        t.auth.allow("127.0.0.1")
        server_public, _server_secret, client_public, _client_secret = certs
        seen: list[tuple[str, bytes]] = []

        class CredentialsProvider:
            def __init__(self) -> None:
                self.client = client_public if key == "ok" else server_public

            def callback(self, domain: str, key: bytes) -> bool:
                seen.append((domain, key))
                return key == self.client

            async def async_callback(self, domain: str, key: bytes) -> bool:
                await asyncio.sleep(0.1)  # pyzmq's: a lookup that takes a while
                seen.append((domain, key))
                return key == self.client

        if async_:
            CredentialsProvider.callback = CredentialsProvider.async_callback  # type: ignore[assignment,method-assign]
        provider = CredentialsProvider()
        t.auth.configure_curve_callback(credentials_provider=provider)
        with t.curve_push_pull(certs) as (server, client):
            if key == "ok":
                assert await t.can_connect(server, client)
            else:
                await t.refused(server, client, "auth", 400)
        assert seen and seen[0] == ("*", client_public)  # pyzmq's arguments

    t.run(body)


def test_curve_user_id(t: AuthTest, certs: Certs, public_keys_dir: str) -> None:
    async def body() -> None:
        assert t.auth is not None
        t.auth.allow("127.0.0.1")
        server_public, server_secret, client_public, client_secret = certs
        t.auth.configure_curve(domain="*", location=public_keys_dir)
        # reverse the server-client relationship, so the server is PULL
        with t.push_pull() as (client, server):
            server.curve_publickey = server_public
            server.curve_secretkey = server_secret
            server.curve_server = True
            client.curve_publickey = client_public
            client.curve_secretkey = client_secret
            client.curve_serverkey = server_public
            assert await t.can_connect(client, server)

            # the default user-id map
            await client.send(b"test")
            msg = await server.recv(copy=False)
            assert msg.bytes == b"test"
            assert msg.get("User-Id") == client_public.decode("utf8")

            # a custom user-id map, set on the running authenticator
            t.auth.curve_user_id = lambda client_key: "custom"  # type: ignore[method-assign]
            with t.context.socket(zmq.PUSH) as client2:
                client2.linger = 0
                client2.curve_publickey = client_public
                client2.curve_secretkey = client_secret
                client2.curve_serverkey = server_public
                assert await t.can_connect(client2, server)
                await client2.send(b"test2")
                msg = await server.recv(copy=False)
                assert msg.bytes == b"test2"
                assert msg.get("User-Id") == "custom"

    t.run(body)


# --- compatibility details pyzmq's tests do not cover ---------------------------------------

def test_null_user_id_is_anonymous(t: AuthTest) -> None:
    """pyzmq answers NULL clients with User-Id "anonymous" (kept)."""
    async def body() -> None:
        assert t.auth is not None
        t.auth.allow("127.0.0.1")
        with t.push_pull() as (client, server):
            server.zap_domain = b"global"
            assert await t.can_connect(client, server)
            await client.send(b"hi")
            assert (await server.recv(copy=False)).get("User-Id") == "anonymous"

    t.run(body)


def test_named_domain_falls_back_to_star(t: AuthTest) -> None:
    """pyzmq: a server with zap_domain 'global' is refused by configure_plain('*');
    curvecert: '*' is the fallback for every domain (a documented difference)."""
    async def body() -> None:
        assert t.auth is not None
        t.auth.configure_plain("*", {"admin": "correct"})
        with t.push_pull() as (server, client):
            server.plain_server = True
            server.zap_domain = b"global"
            client.plain_username, client.plain_password = b"admin", b"correct"
            assert await t.can_connect(server, client)

    t.run(body)


def test_password_dict_is_live_and_raising_callback_is_a_500(t: AuthTest, certs: Certs
                                                             ) -> None:
    """pyzmq keeps the passwords dict by reference (kept); a raising callback kills
    pyzmq's handler (here: a 500 and the next handshake is answered)."""
    async def body() -> None:
        assert t.auth is not None
        passwords: dict[str, str] = {}
        t.auth.configure_plain("*", passwords)
        passwords["admin"] = "later"  # changed after configure_plain
        with t.push_pull() as (server, client):
            server.plain_server = True
            client.plain_username, client.plain_password = b"admin", b"later"
            assert await t.can_connect(server, client)

        class Broken:
            def callback(self, domain: str, key: bytes) -> bool:
                raise RuntimeError("database down")

        t.auth.configure_curve_callback("*", Broken())
        with t.curve_push_pull(certs) as (server, client):
            await t.refused(server, client, "auth", 500)
        t.auth.configure_curve("*", CURVE_ALLOW_ANY)
        with t.curve_push_pull(certs) as (server, client):
            assert await t.can_connect(server, client)
        assert t.auth.is_alive()

    t.run(body)
