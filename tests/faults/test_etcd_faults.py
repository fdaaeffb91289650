"""The etcd store under real faults: etcd members killed by PID, quorum lost, history compacted.

Verdicts come from real CURVE handshakes through an embedded authenticator (and, for the
quorum test, a `serve-auth` process too). Every wait is bounded: store generations and
health are waited on with `wait_for`, handshakes retried with `retry_until`. The shared
cluster is restored after each test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert.auth.authenticator import Authenticator
from curvecert.auth.policy import DomainPolicy, Policy
from curvecert.certs.cert import Certificate
from curvecert.serve.forwarder import ZapForwarder
from curvecert.store.etcd import EtcdStore
from curvecert.store.etcdops import EtcdWriter
from curvecert.store.etcdurl import EtcdOptions, parse_url
from tests.conftest import wait_until
from tests.etcdcluster import EtcdCluster
from tests.serveproc import ServeAuth, Server, handshake, retry_until

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(etcd_cluster: EtcdCluster) -> Iterator[EtcdCluster]:
    """The shared cluster, healthy before and restored after the test."""
    etcd_cluster.restore()
    yield etcd_cluster
    etcd_cluster.restore()


@pytest.fixture
def prefix() -> str:
    return f"faults/{uuid.uuid4().hex[:12]}"


class App:
    """An embedded authenticator on a live store, and a CURVE server to handshake with."""

    def __init__(self, store: EtcdStore):
        self.server_cert = Certificate.new(name="server")
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.auth = Authenticator(self.ctx, Policy({"*": DomainPolicy(curve=store)}),
                                  log_decisions=False)
        self.auth.start()
        self.server = Server(self.ctx, self.server_cert)

    def status(self, client: Certificate) -> int:
        return handshake(self.server, client).status

    def close(self) -> None:
        self.server.close()
        self.auth.stop()
        self.ctx.destroy(linger=0)


@pytest.fixture
def live(cluster: EtcdCluster, prefix: str) -> Iterator[Callable[..., tuple[EtcdStore, App]]]:
    made: list[tuple[EtcdStore, App]] = []

    def make(url: str | None = None, staleness: float = 30.0) -> tuple[EtcdStore, App]:
        store = EtcdStore(url or cluster.url(prefix), EtcdOptions(staleness=staleness),
                          probe_interval=0.1).start()
        wait_until(lambda: store.connected, 20, message="the store's watch")
        app = App(store)
        made.append((store, app))
        return store, app

    yield make
    for store, app in made:
        app.close()
        store.stop()


def test_one_member_killed_decisions_continue(cluster: EtcdCluster, prefix: str,
                                              live: Any) -> None:
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    writer = EtcdWriter(parse_url(cluster.url(prefix)))
    writer.add(alice)
    store, app = live()
    assert app.status(alice) == 200
    reconnects = store.reconnects
    cluster.kill(cluster.members[0])  # the member the store talks to first
    cluster.wait_healthy(20)
    assert app.status(alice) == 200 and app.status(bob) == 400
    writer.add(bob)
    assert store.wait_for(lambda s: bob.public_key in s, 20)
    assert store.healthy and store.reconnects > reconnects
    assert app.status(bob) == 200
    writer.remove([alice.public_key])
    assert store.wait_for(lambda s: alice.public_key not in s, 20)
    assert app.status(alice) == 400


def test_quorum_lost_snapshot_then_deny_then_recover(cluster: EtcdCluster, prefix: str,
                                                     live: Any, tmp_path: Path,
                                                     cli_env: Any) -> None:
    alice = Certificate.new(name="alice")
    url = cluster.url(prefix)
    EtcdWriter(parse_url(url)).add(alice)
    store, app = live(staleness=4.0)
    ep = f"ipc://{tmp_path}/zap.sock"
    env = cli_env({"CURVECERT_ETCD_STALENESS": "4"})
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with ServeAuth(["--store", url, "--zap-endpoint", ep], env) as daemon:
            fwd = ZapForwarder(ctx, ep).start()
            srv = Server(ctx, app.server_cert)
            try:
                assert handshake(srv, alice).status == 200
                cluster.kill(cluster.members[1])
                cluster.kill(cluster.members[2])
                # within the bound: both answer from their last snapshot
                assert app.status(alice) == 200
                assert handshake(srv, alice).status == 200
                # past the bound: both fail closed
                assert store.wait_for(lambda s: not s.healthy, 30)
                assert "staleness bound" in (store.problem or "")
                assert app.status(alice) == 400
                retry_until(lambda: (daemon.drain(), handshake(srv, alice))[1],
                            lambda o: o.status == 400, 30)
                # quorum back: both recover by themselves, no restart
                cluster.restore()
                assert store.wait_for(lambda s: s.healthy, 30)
                assert app.status(alice) == 200
                retry_until(lambda: (daemon.drain(), handshake(srv, alice))[1],
                            lambda o: o.status == 200, 30)
                assert daemon.proc.poll() is None
            finally:
                srv.close()
                fwd.stop()
    finally:
        ctx.destroy(linger=0)


def test_compaction_past_the_watch_rereads_everything(cluster: EtcdCluster, prefix: str,
                                                      live: Any) -> None:
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    m0 = cluster.members[0]
    only_m0 = f"etcd://{m0.endpoint}/{prefix}"
    writer = EtcdWriter(parse_url(cluster.url(prefix)))
    writer.add(alice)
    store, app = live(only_m0)
    assert app.status(alice) == 200
    reads = store.full_reads
    cluster.kill(m0)  # the store's only member: its watch is cut
    writer.remove([alice.public_key])  # a revocation the watch never sees
    writer.add(bob)
    cluster.compact()  # history before this revision is gone
    assert app.status(alice) == 200  # still the last snapshot (within the bound)
    cluster.restart(m0)
    assert store.wait_for(lambda s: alice.public_key not in s and bob.public_key in s, 30)
    assert store.full_reads > reads and store.healthy
    assert app.status(alice) == 400
    assert app.status(bob) == 200
    assert store.revision >= cluster.revision() - 1
