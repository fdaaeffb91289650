"""A server-key rotation end to end, with real processes over loopback (docs/rotation.md).

`curvecert rotate` makes the next key; a `serve-auth` gateway serves the current key on
one front and the next key on a second front (its own key from `env:`, so no secret is on
its command line); clients pinned to either key connect and their messages reach the
application. After `--promote` the gateway is restarted with the new key only, on the
front new-key clients already use, and `--retire` deletes the old pair: new-key clients
connect, old-key clients do not, and `probe` says why.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs.cert import Certificate
from tests.conftest import CliResult
from tests.integration.test_gateway import client, verdict
from tests.serveproc import ServeAuth

Env = Callable[[dict[str, str] | None], dict[str, str]]
Run = Callable[..., CliResult]
FRONTS = re.compile(r"gateway (\S+)(?: \+ (\S+))? -> ")

pytestmark = pytest.mark.slow


def _fronts(daemon: ServeAuth) -> list[str]:
    m = FRONTS.search(", ".join(daemon.where))
    assert m is not None, daemon.where
    return [f for f in m.groups() if f]


def _delivers(app: zmq.Socket[Any], cert: Certificate, server: Certificate,
              front: str, text: bytes) -> bool:
    cctx: zmq.Context[Any] = zmq.Context()
    try:
        push, mon = client(cctx, zmq.PUSH, cert, server, front)
        if verdict(mon) != 200:
            return False
        push.send(text)
        assert app.poll(10_000), "admitted but nothing reached the application"
        return app.recv() == text
    finally:
        cctx.destroy(linger=0)


def _probe(run_cli: Run, *args: str) -> dict[str, Any]:
    r = run_cli("probe", "--json", "--server-type", "PULL", "--timeout", "5", *args)
    assert r.code in (0, 1), r.err
    data: dict[str, Any] = json.loads(r.out)
    return data


def test_rotation_with_overlap(tmp_path: Path, ctx: zmq.Context[Any], run_cli: Run,
                               cli_env: Env) -> None:
    gw = str(tmp_path / "gateway")
    assert run_cli("new", gw, "--name", "gateway").code == 0
    old = Certificate.load(gw + "_secret")
    r = run_cli("rotate", gw, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["items"][0]["role"] == "next"
    new = Certificate.load(gw + ".next_secret")
    assert new.public_key != old.public_key and new.meta["name"] == "gateway"

    clients = tmp_path / "clients"
    clients.mkdir()
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    for c in (alice, bob):
        store.add_certificate(clients, c)
    alice.save(tmp_path / "alice")
    bob.save(tmp_path / "bob")

    app = ctx.socket(zmq.PULL)
    app.linger = 0
    back = f"tcp://127.0.0.1:{app.bind_to_random_port('tcp://127.0.0.1')}"
    old_secret = Path(gw + "_secret").read_text()
    common = ["--back", back, "--pattern", "push-pull", "--store", str(clients)]

    # Overlap: the current key on one front, the next key on a second front.
    overlap = ServeAuth(["--front", "tcp://127.0.0.1:*", "--server-cert", "env:GW_SECRET",
                         "--next-front", "tcp://127.0.0.1:*",
                         "--next-server-cert", gw + ".next_secret", *common,
                         "--log-format", "json", "--log-stream", "stdout",
                         "--stats-interval", "1"],
                        cli_env({"GW_SECRET": old_secret}))
    with overlap:
        with open(f"/proc/{overlap.proc.pid}/cmdline", "rb") as fh:
            argv = fh.read()
        assert (old.secret_txt or "").encode() not in argv and b"env:GW_SECRET" in argv
        front_old, front_new = _fronts(overlap)
        assert _delivers(app, alice, old, front_old, b"alice, old key")
        assert _delivers(app, bob, new, front_new, b"bob, new key")
        both = _probe(run_cli, front_old, front_new, "--server-cert", gw,
                      "--server-cert", gw + ".next", "--cert", str(tmp_path / "alice_secret"))
        assert both["ok"] and [i["verdict"] for i in both["items"]] == ["admitted"] * 2
        # What an operator watches: messages per front (the counters of the stats line).
        overlap.wait_stdout(r'"gateway_current_front_in_msgs":[1-9].*'
                            r'"gateway_next_front_in_msgs":[1-9]')
        crossed = _probe(run_cli, front_new, "--server-cert", gw,
                         "--cert", str(tmp_path / "alice_secret"))
        assert crossed["verdict"] == "wrong-server-key"
    logs = "\n".join(overlap.err.lines + overlap.out.lines)
    assert (old.secret_txt or "") not in logs and (new.secret_txt or "") not in logs

    # Clients have switched: promote, serve the new key only where new-key clients connect.
    assert run_cli("rotate", gw, "--promote").code == 0
    assert Certificate.load(gw).public_key == new.public_key
    assert Certificate.load(gw + ".prev").public_key == old.public_key
    with ServeAuth(["--front", front_new, "--server-cert", gw + "_secret", *common],
                   cli_env(None)) as after:
        assert _fronts(after) == [front_new]
        assert run_cli("rotate", gw, "--retire").code == 0
        assert not os.path.exists(gw + ".prev_secret")
        assert _delivers(app, bob, new, front_new, b"bob, after retirement")
        assert _delivers(app, alice, new, front_new, b"alice, switched")
        old_pinned = _probe(run_cli, front_new, front_old, "--server-key", old.public_txt,
                            "--cert", str(tmp_path / "alice_secret"))
        assert not old_pinned["ok"]
        assert [i["verdict"] for i in old_pinned["items"]] == ["wrong-server-key",
                                                               "nothing-listening"]


def test_daemon_serves_forwarders_on_both_keys(tmp_path: Path, run_cli: Run,
                                               cli_env: Env) -> None:
    from curvecert.serve.forwarder import ZapForwarder
    from tests.serveproc import Outcome, Server, handshake

    daemon_path = str(tmp_path / "daemon")
    assert run_cli("new", daemon_path).code == 0
    assert run_cli("rotate", daemon_path).code == 0
    old = Certificate.load(daemon_path + "_secret")
    new = Certificate.load(daemon_path + ".next_secret")
    creds = tmp_path / "creds"  # the next key as a systemd credential
    creds.mkdir()
    (creds / "zap-next").write_bytes(Path(daemon_path + ".next_secret").read_bytes())
    forwarders, clients = tmp_path / "forwarders", tmp_path / "clients"
    forwarders.mkdir()
    clients.mkdir()
    fwd_cert, alice = Certificate.new(name="app-1"), Certificate.new(name="alice")
    store.add_certificate(forwarders, fwd_cert)
    store.add_certificate(clients, alice)
    server = Certificate.new(name="app")
    args = ["--store", str(clients), "--zap-endpoint", "tcp://127.0.0.1:*",
            "--server-cert", daemon_path + "_secret", "--forwarders", str(forwarders),
            "--next-zap-endpoint", "tcp://127.0.0.1:*", "--next-server-cert", "cred:zap-next"]
    with ServeAuth(args, cli_env({"CREDENTIALS_DIRECTORY": str(creds)})) as daemon:
        ep_old, ep_new = daemon.where[:2]
        for endpoint, key in ((ep_old, old), (ep_new, new)):
            app_ctx: zmq.Context[Any] = zmq.Context()
            try:
                with ZapForwarder(app_ctx, endpoint, server_key=key.public_key, cert=fwd_cert):
                    srv = Server(app_ctx, server)
                    try:
                        assert handshake(srv, alice) == Outcome(200, alice.public_txt)
                    finally:
                        srv.close()
            finally:
                app_ctx.destroy(linger=0)
