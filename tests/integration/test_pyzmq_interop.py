"""Interoperability with pyzmq's `zmq.auth` certificate functions, both ways, and a real
CURVE handshake with keys that crossed between the two.

pyzmq writes `NAME.key` / `NAME.key_secret`, puts metadata (unquoted) only in the secret
file and reads files with a line scanner; curvecert must read the former and write files
the latter understands.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from curvecert.certs.cert import Certificate
from curvecert.certs.verify import verify_file
from curvecert.errors import CertificateError, InvalidKey

SERVER_SECRET = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
SERVER_PUBLIC = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def test_curvecert_reads_pyzmq_files(tmp_path: Path) -> None:
    meta = {"name": "Alice Example", "email": "alice@example.org", "role": "worker"}
    pub_file, sec_file = zmq.auth.create_certificates(str(tmp_path), "alice", metadata=meta)
    assert (pub_file, sec_file) == (f"{tmp_path}/alice.key", f"{tmp_path}/alice.key_secret")
    py_pub, py_sec = zmq.auth.load_certificate(sec_file)
    assert py_sec is not None

    public = Certificate.load(pub_file)
    secret = Certificate.load(sec_file)
    assert public.public_txt.encode() == py_pub == secret.public_txt.encode()
    assert not public.has_secret
    assert (secret.secret_txt or "").encode() == py_sec
    assert public.meta == {}  # pyzmq writes metadata to the secret file only
    assert secret.meta == meta  # unquoted there, read as CZMQ reads it


def test_pyzmq_unquoted_metadata_is_read_as_czmq_reads_it(tmp_path: Path) -> None:
    meta = {"note": "a # b", "padded": "  x  "}
    _, sec_file = zmq.auth.create_certificates(str(tmp_path), "c", metadata=meta)
    # pyzmq writes `note = a # b`: ZPL (CZMQ and curvecert) ends a bare value at '#'
    assert Certificate.load(sec_file).meta == {"note": "a", "padded": "x"}


def test_verify_flags_pyzmq_secret_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        _, sec_file = zmq.auth.create_certificates(str(tmp_path), "c")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(sec_file).st_mode) == 0o644  # pyzmq follows the umask
    assert [f.code for f in verify_file(sec_file)] == ["secret-mode"]


def test_pyzmq_reads_curvecert_files(tmp_path: Path) -> None:
    cert = Certificate.from_secret(SERVER_SECRET, {"name": "server", "note": 'say "hi"'})
    cert.save(tmp_path / "server.key")  # pyzmq's naming: NAME.key + NAME.key_secret
    assert zmq.auth.load_certificate(tmp_path / "server.key") == (SERVER_PUBLIC.encode(), None)
    assert zmq.auth.load_certificate(tmp_path / "server.key_secret") == (
        SERVER_PUBLIC.encode(), SERVER_SECRET.encode())
    other = Certificate.new()
    other.save(tmp_path / "client.key")
    assert zmq.auth.load_certificates(tmp_path) == {SERVER_PUBLIC.encode(): True,
                                                   other.public_txt.encode(): True}


def test_pyzmq_misreads_key_like_metadata_names(tmp_path: Path) -> None:
    # why `verify` warns about metadata names starting like a key line (meta-pyzmq-key):
    # pyzmq's line scanner takes such a line as the key.
    cert = Certificate.from_secret(SERVER_SECRET, {"secret-key-hint": "ops"})
    cert.save(tmp_path / "c.key")
    assert zmq.auth.load_certificate(tmp_path / "c.key") == (SERVER_PUBLIC.encode(), b"ops")
    assert zmq.auth.load_certificate(tmp_path / "c.key_secret")[1] == b"ops"
    assert not Certificate.load(tmp_path / "c.key").has_secret
    assert Certificate.load(tmp_path / "c.key_secret").secret_txt == SERVER_SECRET
    assert [f.code for f in verify_file(tmp_path / "c.key")] == ["meta-pyzmq-key"]


def _exchange(server: zmq.Socket[bytes], client: zmq.Socket[bytes]) -> bytes | None:
    client.send(b"ping")
    if not server.poll(5000):
        return None
    return server.recv()


def test_handshake_with_keys_across_both_libraries(ctx: zmq.Context[zmq.Socket[bytes]],
                                                   tmp_path: Path) -> None:
    """A pyzmq authenticator loads a curvecert store; curvecert certs key both sockets."""
    store = tmp_path / "clients"
    store.mkdir()
    server_cert = Certificate.new({"name": "server"})
    client_cert = Certificate.new({"name": "client"})
    client_cert.save_public(store / "client.key")
    # the client's keys go through pyzmq's loader, from a curvecert secret file
    client_cert.save(tmp_path / "client.key")
    py_pub, py_sec = zmq.auth.load_certificate(tmp_path / "client.key_secret")

    auth = ThreadAuthenticator(ctx)
    auth.start()
    try:
        auth.configure_curve(domain="*", location=str(store))
        server = ctx.socket(zmq.PULL)
        server.linger = 0
        server_cert.apply_server(server)
        port = server.bind_to_random_port("tcp://127.0.0.1")

        client = ctx.socket(zmq.PUSH)
        client.linger = 0
        client.curve_publickey = py_pub
        client.curve_secretkey = py_sec
        client.curve_serverkey = server_cert.public_key
        client.connect(f"tcp://127.0.0.1:{port}")
        assert _exchange(server, client) == b"ping"
        client.close()

        # a client that is not in the store: the server never sees its message
        stranger = ctx.socket(zmq.PUSH)
        stranger.linger = 0
        Certificate.new().apply_client(stranger, server_cert)
        stranger.connect(f"tcp://127.0.0.1:{port}")
        stranger.send(b"intruder")
        assert not server.poll(300)
        stranger.close()
        server.close()
    finally:
        auth.stop()


def test_apply_variants(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    cert = Certificate.from_secret(SERVER_SECRET)
    server = ctx.socket(zmq.ROUTER)
    client = ctx.socket(zmq.DEALER)
    server.linger = client.linger = 0
    try:
        cert.apply_server(server)
        assert server.getsockopt(zmq.CURVE_SERVER) == 1
        cert.apply_client(client, SERVER_PUBLIC)
        assert client.getsockopt(zmq.CURVE_SERVER) == 0
        with pytest.raises(InvalidKey):
            cert.apply_client(client, "not a key")
        with pytest.raises(CertificateError, match="public-only"):
            cert.public_only().apply(client)
    finally:
        server.close()
        client.close()
