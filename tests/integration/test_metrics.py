"""Metrics of embedded authenticators and forwarders, scraped over real HTTP, and the
shipped alert rules checked by promtool."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from curvecert import store
from curvecert.auth.aio import AsyncioAuthenticator
from curvecert.auth.authenticator import Authenticator
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError
from curvecert.serve import metrics
from curvecert.serve.forwarder import ZapForwarder
from tests.promtool import promtool
from tests.serveproc import Server, handshake

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus"


class Scrape:
    """A registry served on a free loopback port."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.server, self.where = metrics.serve_http("127.0.0.1", 0, self.registry)

    def text(self) -> str:
        with urllib.request.urlopen(f"http://{self.where}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def samples(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                out.setdefault(sample.name, []).append(sample)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scrape() -> Iterator[Scrape]:
    s = Scrape()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Any]:
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    clients = tmp_path / "clients"
    store.add_certificate(clients, alice)
    return {"server": Certificate.new(name="server"), "alice": alice, "bob": bob,
            "clients": clients}


def _decisions(samples: dict[str, list[Any]]) -> dict[str, float]:
    return {s.labels["status"]: s.value for s in samples.get("curvecert_decisions_total", [])}


def test_embedded_authenticator(ctx: zmq.Context[Any], certs: dict[str, Any],
                                scrape: Scrape) -> None:
    with Authenticator(ctx, log_decisions=False) as auth:
        auth.configure_curve(store=certs["clients"])
        metrics.register(auth, scrape.registry)
        assert _decisions(scrape.samples()) == {}
        srv = Server(ctx, certs["server"])
        try:
            assert handshake(srv, certs["alice"]).status == 200
            assert handshake(srv, certs["bob"]).status == 400
            assert handshake(srv, certs["bob"]).status == 400
        finally:
            srv.close()
        samples = scrape.samples()
        assert _decisions(samples) == {"200": 1, "400": 2}
        count = samples["curvecert_decision_duration_seconds_count"][0].value
        assert count == 3
        assert samples["curvecert_decision_duration_seconds_sum"][0].value > 0
        certificates = samples["curvecert_store_certificates"][0]
        assert certificates.value == 1 and certificates.labels["domain"] == "*"
        assert samples["curvecert_store_healthy"][0].value == 1
        promtool("check", "metrics", stdin=scrape.text())


def test_embedded_asyncio_authenticator(certs: dict[str, Any], scrape: Scrape) -> None:
    import zmq.asyncio

    async def body() -> dict[str, list[Any]]:
        actx = zmq.asyncio.Context()
        auth = AsyncioAuthenticator(actx, log_decisions=False)
        auth.configure_curve(store=certs["clients"])
        metrics.register(auth, scrape.registry)
        auth.start()
        loop = asyncio.get_running_loop()
        # a plain view of the same libzmq context: the server's handshakes reach the
        # asyncio authenticator, and the blocking helper runs in a worker thread
        srv = Server(zmq.Context.shadow(actx.underlying), certs["server"])
        try:
            ok = await loop.run_in_executor(None, handshake, srv, certs["alice"])
            no = await loop.run_in_executor(None, handshake, srv, certs["bob"])
            assert (ok.status, no.status) == (200, 400)
            return await loop.run_in_executor(None, scrape.samples)
        finally:
            srv.close()
            auth.stop()
            actx.destroy(linger=0)

    samples = asyncio.run(body())
    assert _decisions(samples) == {"200": 1, "400": 1}
    assert samples["curvecert_decision_duration_seconds_count"][0].value == 2


def test_embedded_forwarder_counts_timeouts(ctx: zmq.Context[Any], certs: dict[str, Any],
                                            scrape: Scrape, tmp_path: Path) -> None:
    # nobody serves this endpoint: the forwarder denies at its deadline (fail closed)
    with ZapForwarder(ctx, f"ipc://{tmp_path}/nobody.sock", timeout=0.2) as fwd:
        metrics.register(fwd, scrape.registry)
        srv = Server(ctx, certs["server"])
        try:
            assert handshake(srv, certs["alice"]).status != 200
        finally:
            srv.close()
        samples = scrape.samples()
    failed = samples["curvecert_forwarder_timeouts_total"][0].value \
        + samples["curvecert_forwarder_unreachable_total"][0].value
    assert failed >= 1
    promtool("check", "metrics", stdin=scrape.text())


def test_register_refuses_other_objects() -> None:
    with pytest.raises(ConfigError):
        metrics.register(object(), prometheus_client.CollectorRegistry())


def test_listen_address_rules() -> None:
    assert metrics.parse_listen("9464") == ("127.0.0.1", 9464)
    assert metrics.parse_listen("[::1]:9464") == ("::1", 9464)
    assert metrics.parse_listen("localhost:0") == ("localhost", 0)
    with pytest.raises(ConfigError, match="loopback"):
        metrics.parse_listen("0.0.0.0:9464")
    assert metrics.parse_listen("0.0.0.0:9464", allow_remote=True) == ("0.0.0.0", 9464)
    with pytest.raises(ConfigError):
        metrics.parse_listen("127.0.0.1:http")


def test_alert_rules_are_valid_and_fire() -> None:
    promtool("check", "rules", str(RULES / "curvecert-rules.yml"))
    promtool("test", "rules", "curvecert-rules.test.yml", cwd=RULES)
