"""etcd store URLs and options: parsing is total (ConfigError or a value), canonical form
round-trips, secrets never show in repr (hypothesis-tested, no etcd needed)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curvecert.errors import ConfigError
from curvecert.store.etcdurl import (
    DEFAULT_PORT,
    EtcdOptions,
    EtcdUrl,
    is_etcd_url,
    parse_url,
    read_password,
)

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
_port = st.integers(1, 65535)
_segment = st.from_regex(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,8}", fullmatch=True).filter(
    lambda s: s not in (".", ".."))
_prefix = st.lists(_segment, min_size=1, max_size=4).map("/".join)


@st.composite
def urls(draw: st.DrawFn) -> EtcdUrl:
    hosts = draw(st.lists(st.tuples(st.one_of(_hostname, _ipv4, _ipv6), _port), min_size=1,
                          max_size=4, unique=True))
    return EtcdUrl(tuple(hosts), draw(_prefix), tls=draw(st.booleans()))


@given(urls())
def test_canonical_form_round_trips(url: EtcdUrl) -> None:
    text = str(url)
    assert is_etcd_url(text)
    assert parse_url(text) == url
    assert url.key_for(b"\x01" * 32) == url.prefix.encode() + b"/" + b"01" * 32


@given(st.text(max_size=80))
def test_parse_is_total(text: str) -> None:
    for candidate in (text, "etcd://" + text, "etcd://127.0.0.1:2379/" + text):
        try:
            parsed = parse_url(candidate)
        except ConfigError as exc:
            assert "\n" not in str(exc).strip() or "\n" in candidate
        else:
            assert parse_url(str(parsed)) == parsed


def test_examples() -> None:
    u = parse_url("etcd://a.example:1,10.0.0.2,[::1]:3/curvecert/clients/")
    assert u.endpoints == (("a.example", 1), ("10.0.0.2", DEFAULT_PORT), ("::1", 3))
    assert u.prefix == "curvecert/clients" and not u.tls
    assert str(u) == "etcd://a.example:1,10.0.0.2:2379,[::1]:3/curvecert/clients"
    assert parse_url("etcds://h/p").tls
    for bad in ("etcd://", "etcd://h:1", "etcd://h:1/", "etcd://h:0/p", "etcd://h:1/a//b",
                "etcd://h:1/../x", "etcd://h:1,h:1/p", "etcd://h_x:1/p", "http://h:1/p",
                "etcd://[nope]:1/p", "etcd://h:/p", "etcd://h:1/a b"):
        with pytest.raises(ConfigError):
            parse_url(bad)


def test_options_from_env_and_files(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-value\n")
    os.chmod(pw, 0o600)
    opts = EtcdOptions.from_env({"CURVECERT_ETCD_USER": "curvecert",
                                 "CURVECERT_ETCD_PASSWORD_FILE": str(pw),
                                 "CURVECERT_ETCD_STALENESS": "12.5"})
    assert opts.user == "curvecert" and opts.password == "s3cret-value"
    assert opts.staleness == 12.5
    assert "s3cret" not in repr(opts)
    env_first = EtcdOptions.from_env({"CURVECERT_ETCD_USER": "u",
                                      "CURVECERT_ETCD_PASSWORD": "from-env",
                                      "CURVECERT_ETCD_PASSWORD_FILE": str(pw)})
    assert env_first.password == "from-env"
    assert EtcdOptions(user="u").with_password_file(pw).password == "s3cret-value"
    with pytest.raises(ConfigError, match="pw-missing") as info:
        read_password(tmp_path / "pw-missing")
    assert "s3cret" not in str(info.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_password(tmp_path / "empty")
    with pytest.raises(ConfigError):
        EtcdOptions(cert="c.pem")
    with pytest.raises(ConfigError):
        EtcdOptions(password="x")
    with pytest.raises(ConfigError):
        EtcdOptions(staleness=0)
    assert EtcdOptions(ca="ca.pem").tls and not EtcdOptions().tls
