"""`curvecert probe` against real CZMQ servers (libczmq's zsock + zauth, Ironhouse), one per
socket type, with no `--server-type`: the probe must find the type by itself and give the
right verdict, admitted for a client in the store, refused for one that is not (issue 13:
a PUSH server once got WRONG SERVER KEY because the probe only connected as DEALER)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from curvecert.certs.cert import Certificate
from tests.conftest import CliResult
from tests.czmq import Czmq
from tests.czmq import czmq_fixture as czmq  # noqa: F401 - the fixture

Run = Callable[..., CliResult]

# server type -> the server types the probe reports finding (its client type's family)
SERVERS = {
    "ROUTER": "ROUTER/REP/DEALER", "REP": "ROUTER/REP/DEALER", "DEALER": "ROUTER/REP/DEALER",
    "PUSH": "PUSH", "PULL": "PULL", "PUB": "PUB/XPUB", "XPUB": "PUB/XPUB", "PAIR": "PAIR",
}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    server, client, stranger = Certificate.new(name="srv"), Certificate.new(name="cli"), \
        Certificate.new(name="stranger")
    server.save(tmp_path / "server")
    client.save(tmp_path / "client")
    stranger.save(tmp_path / "stranger")
    store = tmp_path / "store"
    store.mkdir()
    client.save_public(store / "client")
    return {"server": tmp_path / "server", "client": tmp_path / "client",
            "stranger": tmp_path / "stranger", "store": store}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_known_client_admitted_and_type_found(czmq: Czmq, keys: dict[str, Path],  # noqa: F811
                                              run_cli: Run, kind: str) -> None:
    with czmq.ironhouse_server(getattr(zmq, kind), keys["server"].with_name("server_secret"),
                               keys["store"]) as endpoint:
        r = run_cli("probe", endpoint, "--server-cert", str(keys["server"]), "--cert",
                    str(keys["client"].with_name("client_secret")), "--json",
                    "--timeout", "3")
    doc = json.loads(r.out)
    assert (r.code, doc["verdict"]) == (0, "admitted"), (doc["attempts"], doc["cause"])
    assert doc["server_type_found"] == SERVERS[kind]


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_unknown_client_refused(czmq: Czmq, keys: dict[str, Path],  # noqa: F811
                                run_cli: Run, kind: str) -> None:
    with czmq.ironhouse_server(getattr(zmq, kind), keys["server"].with_name("server_secret"),
                               keys["store"]) as endpoint:
        known_key = run_cli("probe", endpoint, "--server-cert", str(keys["server"]),
                            "--cert", str(keys["stranger"].with_name("stranger_secret")),
                            "--json", "--timeout", "3")
        throwaway = run_cli("probe", endpoint, "--server-cert", str(keys["server"]),
                            "--json", "--timeout", "3")
    doc = json.loads(known_key.out)
    assert (known_key.code, doc["verdict"]) == (1, "refused"), doc["attempts"]
    assert "store" in doc["fix"]
    doc = json.loads(throwaway.out)
    assert doc["verdict"] == "refused"
    # A throwaway key cannot be added to a store: the advice must not say so.
    assert "store add" not in doc["fix"] and "--cert" in doc["fix"]


def test_req_server_loses_the_reply_with_zauth(czmq: Czmq, keys: dict[str, Path],  # noqa: F811
                                               run_cli: Run) -> None:
    """CZMQ's zauth puts the client key in the User-Id, so libzmq drops a CZMQ REQ server's
    connection when the reply arrives: the probe sees the request, and never says admitted."""
    replies: list[bytes] = []
    with czmq.ironhouse_server(zmq.REQ, keys["server"].with_name("server_secret"),
                               keys["store"], requests=2, replies=replies) as endpoint:
        r = run_cli("probe", endpoint, "--server-cert", str(keys["server"]), "--cert",
                    str(keys["client"].with_name("client_secret")), "--json",
                    "--timeout", "3")
        stranger = run_cli("probe", endpoint, "--server-cert", str(keys["server"]),
                           "--stranger", "--json", "--timeout", "3")
    doc = json.loads(r.out)
    assert (r.code, doc["verdict"]) == (1, "dropped-after-handshake"), doc["cause"]
    assert doc["server_type_found"] == "REQ" and doc["attempts"][-1]["socket_type"] == "ROUTER"
    assert doc["round_trip"] == {"outcome": "dropped", "received": 1, "sent": 1,
                                 "socket_type": None}
    assert "user-id = false" in doc["fix"] and replies == []
    assert json.loads(stranger.out)["verdict"] == "refused" and stranger.code == 0
