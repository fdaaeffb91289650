"""Per-domain `user_id=False`: 200 replies carry an empty User-Id (issue 11, REQ servers).

libzmq 4.3 drops the connection of a REQ socket bound as a CURVE server when the ZAP reply
carries a non-empty User-Id; with the option off, the same exchange works.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import zmq

from curvecert.auth.authenticator import Authenticator
from curvecert.auth.keylookup import StaticKeys
from curvecert.auth.pending import Provider
from curvecert.auth.policy import DomainPolicy, Policy, respond
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError
from curvecert.serve import config
from curvecert.serve.daemon import build_policy

Ctx = zmq.Context[zmq.Socket[bytes]]
KEY = bytes(range(32))
CURVE = [b"1.0", b"7", b"", b"127.0.0.1", b"", b"CURVE", KEY]


def test_reply_has_empty_user_id_but_decision_keeps_it() -> None:
    on = Policy({"*": DomainPolicy(curve=StaticKeys.from_keys([KEY]))})
    off = Policy({"*": DomainPolicy(curve=StaticKeys.from_keys([KEY]), user_id=False)})
    _, decision, reply = respond(on, CURVE)
    assert decision.allowed and reply[4] == decision.user_id != b""
    _, decision, reply = respond(off, CURVE)
    assert decision.allowed and reply[4] == b"" and decision.user_id != b""


def test_provider_grant_also_has_empty_user_id() -> None:
    dp = DomainPolicy(curve=Provider(lambda r: True, inline=True), user_id=False)
    _, decision, reply = respond(Policy({"*": dp}), CURVE)
    assert decision.allowed and reply[4] == b""


def test_user_id_must_be_a_bool() -> None:
    with pytest.raises(ConfigError):
        DomainPolicy(user_id="no")  # type: ignore[arg-type]


def test_toml_user_id(tmp_path: Path) -> None:
    (tmp_path / "clients").mkdir()
    text = 'zap-endpoint = "ipc://x"\n[domains."*"]\nstores = ["clients"]\nuser-id = false\n'
    cfg = config.parse(text, path=tmp_path / "serve.toml")
    assert cfg.domains[0].user_id is False
    live = build_policy(cfg.domains)
    try:
        assert live.policy.domains["*"].user_id is False
    finally:
        live.close()
    with pytest.raises(ConfigError, match=r"user-id: expected true or false"):
        config.parse('zap-endpoint = "ipc://x"\n[domains."*"]\nstores = ["c"]\nuser-id = "no"\n')


def test_req_server_round_trip(ctx: Ctx, caplog: pytest.LogCaptureFixture) -> None:
    server_cert, client_cert = Certificate.new(), Certificate.new()
    caplog.set_level(logging.INFO, "curvecert.audit")
    with Authenticator(ctx) as auth:
        auth.configure_curve(store=StaticKeys.from_certificates([client_cert.public_only()]),
                             user_id=False)
        server = ctx.socket(zmq.REQ)
        client = ctx.socket(zmq.REP)
        server.linger = client.linger = 0
        try:
            server_cert.apply_server(server)
            port = server.bind_to_random_port("tcp://127.0.0.1")
            client_cert.apply_client(client, server_cert)
            client.connect(f"tcp://127.0.0.1:{port}")
            server.send(b"ping")
            assert client.poll(10_000)
            assert client.recv() == b"ping"
            client.send(b"pong")
            assert server.poll(10_000), "the REQ server lost its reply"
            frame = server.recv(copy=False)
            assert frame.bytes == b"pong" and frame.get("User-Id") == ""
        finally:
            client.close(linger=0)
            server.close(linger=0)
    # the audit log still names the client
    assert any(client_cert.public_txt in r.getMessage() for r in caplog.records)
