"""The etcd store against a real etcd with TLS (CA + client certificates) and user/password
authentication, as a production cluster runs.

A one-member cluster serves HTTPS only, requires a client certificate signed by a
throw-away CA (made with `openssl`), and has etcd authentication enabled: the user
`curvecert` may read and write one prefix. Secrets reach curvecert from a file or the
environment only, and never appear in its output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from curvecert.certs.cert import Certificate
from curvecert.store.etcd import EtcdStore
from curvecert.store.etcdops import EtcdWriter
from curvecert.store.etcdurl import EtcdOptions, parse_url
from tests.etcdcluster import EtcdCluster, make_tls, require_etcd

PASSWORD = "pw-" + os.urandom(6).hex()
PREFIX = "secure/clients"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    binary = require_etcd()
    tls = make_tls(str(tmp_path_factory.mktemp("tls")))
    cluster = EtcdCluster(binary, size=1, tls=tls)
    try:
        cluster.start()
        cluster.enable_auth("curvecert", PASSWORD, PREFIX)
        yield cluster
    finally:
        cluster.stop()


def _options(cluster: EtcdCluster, **changes: Any) -> EtcdOptions:
    assert cluster.tls is not None
    values: dict[str, Any] = {"ca": cluster.tls.ca, "cert": cluster.tls.client_cert,
                              "key": cluster.tls.client_key, "user": "curvecert",
                              "password": PASSWORD, "staleness": 5.0}
    values.update(changes)
    return EtcdOptions(**{k: v for k, v in values.items() if v is not None})


def _env(cluster: EtcdCluster) -> dict[str, str]:
    assert cluster.tls is not None
    return {"CURVECERT_ETCD_CA": cluster.tls.ca, "CURVECERT_ETCD_CERT": cluster.tls.client_cert,
            "CURVECERT_ETCD_KEY": cluster.tls.client_key, "CURVECERT_ETCD_USER": "curvecert"}


def test_live_store_over_tls_with_login(secure: EtcdCluster) -> None:
    alice = Certificate.new(name="alice")
    url = secure.url(PREFIX)
    assert url.startswith("etcds://")
    EtcdWriter(parse_url(url), _options(secure)).add(alice)
    with EtcdStore(url, _options(secure)) as store:
        assert store.healthy and store.lookup(alice.public_key) is not None
        bob = Certificate.new(name="bob")
        EtcdWriter(parse_url(url), _options(secure)).add(bob)
        assert store.wait_for(lambda s: bob.public_key in s, 20)


@pytest.mark.parametrize("change", [
    {"password": "wrong-password"},          # etcd refuses the login
    {"user": None, "password": None},        # no login: permission denied
    {"cert": None, "key": None},             # no client certificate: TLS handshake fails
])
def test_refused_access_fails_closed_without_leaking(secure: EtcdCluster,
                                                     change: dict[str, Any],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with EtcdStore(secure.url(PREFIX), _options(secure, **change)) as store:
        assert not store.healthy and len(store) == 0
        assert PASSWORD not in (store.problem or "")
    assert PASSWORD not in caplog.text and "wrong-password" not in caplog.text


def test_cli_reads_secrets_from_file_and_env_only(secure: EtcdCluster, tmp_path: Path,
                                                  run_cli: Callable[..., Any]) -> None:
    url = secure.url(PREFIX)
    carol = Certificate.new(name="carol")
    carol.save(tmp_path / "carol")
    pw_file = tmp_path / "etcd-password"
    pw_file.write_text(PASSWORD + "\n")
    pw_file.chmod(0o600)
    r = run_cli("store", "--store", url, "--etcd-password-file", str(pw_file), "add",
                str(tmp_path / "carol"), env=_env(secure))
    assert r.code == 0, r.err
    r = run_cli("store", "list", "--json", "--store", url,
                env={**_env(secure), "CURVECERT_ETCD_PASSWORD": PASSWORD})
    assert r.code == 0, r.err
    assert carol.public_txt in r.out
    r = run_cli("store", "list", "--store", url, env=_env(secure))  # no password anywhere
    assert r.code == 3 and r.err.startswith("curvecert: error: ")
    for out in (r.out, r.err):
        assert PASSWORD not in out
    r = run_cli("-v", "store", "list", "--store", url,
                env={**_env(secure), "CURVECERT_ETCD_PASSWORD": "wrong-" + PASSWORD})
    assert r.code == 3 and "refused the login" in r.err and PASSWORD not in r.err
