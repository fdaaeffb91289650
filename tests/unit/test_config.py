"""`curvecert.serve.config`: the serve-auth TOML file parsed strictly into plain values."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.errors import ConfigError
from curvecert.serve import config

FULL = """
zap-endpoint = "tcp://127.0.0.1:7001"
log-format = "json"
log-stream = "stdout"
stats-interval = 30

[server]
cert = "daemon_secret"
forwarders = "/etc/curvecert/forwarders"

[domains.""]
stores = ["clients", "/abs/more"]
passwords = "passwd"
allow = ["10.0.0.0/8", "::1"]
deny = "10.9.9.9"
mechanisms = ["curve", "PLAIN"]

[domains."eu.example"]
curve = "unsafe-allow-any"
mechanisms = ["CURVE"]

[gateway]
front = "tcp://*:5555"
back = "tcp://127.0.0.1:6000"
pattern = "router-dealer"
server-cert = "gw_secret"
domain = "eu.example"
"""


def test_full_example(tmp_path: Path) -> None:
    path = tmp_path / "serve-auth.toml"
    path.write_text(FULL)
    cfg = config.parse(FULL, path=path)  # the stores need not exist for parse (load checks)
    assert cfg.zap_endpoint == "tcp://127.0.0.1:7001"
    assert (cfg.log_format, cfg.log_stream, cfg.stats_interval) == ("json", "stdout", 30.0)
    assert cfg.server == config.ServerConfig(cert=tmp_path / "daemon_secret",
                                             forwarders=Path("/etc/curvecert/forwarders"))
    default, eu = cfg.domains
    assert default.name == ""
    assert default.stores == (tmp_path / "clients", Path("/abs/more"))
    assert default.passwords == tmp_path / "passwd"
    assert default.allow == ("10.0.0.0/8", "::1") and default.deny == ("10.9.9.9",)
    assert default.mechanisms == ("CURVE", "PLAIN")
    assert (eu.name, eu.curve, eu.stores) == ("eu.example", "unsafe-allow-any", ())
    assert cfg.gateway == config.GatewayConfig(
        front="tcp://*:5555", back="tcp://127.0.0.1:6000", pattern="router-dealer",
        server_cert=tmp_path / "gw_secret", domain="eu.example")
    assert cfg.path == path


def test_minimal_defaults() -> None:
    cfg = config.parse('zap-endpoint = "ipc:///tmp/x.sock"\n[domains.app]\nstores = ["/s"]\n')
    assert cfg.log_format == "text" and cfg.stats_interval == 0 and cfg.server is None
    assert cfg.domains[0] == config.DomainConfig(name="app", stores=(Path("/s"),))


@pytest.mark.parametrize(("text", "needle"), [
    ('zap-endpoint = "ipc:///x"\nbogus = 1\n[domains.a]\n', "bogus: unknown key"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nstore = "/s"\n', "domains.a.store: unknown key"),
    ('zap-endpoint = "ipc:///x"\n[domains."b c"]\nallow = ["1.2.3.4", "nope"]\n',
     'domains."b c".allow'),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nmechanisms = ["GSSAPI"]\n', "mechanisms"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\ncurve = "maybe"\n', "domains.a.curve"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nmechanisms = ["CURVE"]\n', "no `stores`"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nmechanisms = ["PLAIN"]\n', "passwords"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nstores = 3\n', "expected a string or a list"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nstores = [3]\n', "domains.a.stores[0]"),
    ('zap-endpoint = "udp://x"\n[domains.a]\n', "zap-endpoint"),
    ('zap-endpoint = "tcp://127.0.0.1:1"\n[domains.a]\n', "[server]"),
    ('zap-endpoint = "ipc:///x"\nlog-format = "xml"\n[domains.a]\n', "log-format"),
    ('zap-endpoint = "ipc:///x"\nstats-interval = -1\n[domains.a]\n', "stats-interval"),
    ('zap-endpoint = "ipc:///x"\n', "no domains"),
    ('[domains.a]\n', "nothing to serve"),
    ('zap-endpoint = "ipc:///x"\n[domains]\na = 1\n', "expected a table"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\n[gateway]\nfront = "tcp://*:1"\n', "gateway"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\n[gateway]\nfront = "tcp://*:1"\n'
     'back = "tcp://h:2"\nserver-cert = "c"\npattern = "mesh"\n', "gateway.pattern"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\n[server]\ncert = "c"\nextra = 1\n',
     "server.extra: unknown key"),
    ('zap-endpoint = "ipc:///x"\n[domains.a\n', "not valid TOML"),
    ('zap-endpoint = true\n[domains.a]\n', "expected a string"),
    ('zap-endpoint = "ipc:///x"\n[domains.a]\nstrict-modes = "yes"\n',
     "domains.a.strict-modes: expected true or false"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert needle in str(info.value)


def test_strict_modes_per_domain() -> None:
    cfg = config.parse('zap-endpoint = "ipc:///x"\n[domains.a]\nstores = ["/s"]\n'
                       'strict-modes = true\n[domains.b]\nstores = ["/t"]\n')
    assert [d.strict_modes for d in cfg.domains] == [True, False]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")


def test_defaults_follow_environment() -> None:
    assert config.default_zap_endpoint({"XDG_RUNTIME_DIR": "/run/user/7"}) == \
        "ipc:///run/user/7/curvecert/zap.sock"
    assert config.default_zap_endpoint({}).startswith("ipc:///tmp/curvecert-")
    assert config.default_store_dir({"CURVECERT_STORE": "/s"}) == Path("/s")
    assert config.default_store_dir({"XDG_CONFIG_HOME": "/c"}) == Path("/c/curvecert/store")


@pytest.mark.parametrize("ep", ["tcp://*:5", "tcp://[::1]:9", "ipc:///run/x.sock",
                                "tcp://127.0.0.1:80"])
def test_good_endpoints(ep: str) -> None:
    assert config.check_endpoint(ep, where="x") == ep


@pytest.mark.parametrize("ep", ["tcp://host", "tcp://:5", "inproc://x", "ipc://", "x"])
def test_bad_endpoints(ep: str) -> None:
    with pytest.raises(ConfigError):
        config.check_endpoint(ep, where="x")


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_parse_never_raises_anything_but_config_error(text: str) -> None:
    try:
        config.parse(text)
    except ConfigError:
        pass


KNOWN = {"stores", "curve", "passwords", "allow", "deny", "mechanisms", "user-id",
         "strict-modes"}


@settings(max_examples=100)
@given(st.from_regex(r"[a-z][a-z_-]{0,12}", fullmatch=True).filter(lambda k: k not in KNOWN))
def test_any_unknown_domain_key_is_rejected(key: str) -> None:
    with pytest.raises(ConfigError, match=f"domains.a.{key}: unknown key"):
        config.parse(f'zap-endpoint = "ipc:///x"\n[domains.a]\nstores = ["/s"]\n{key} = 1\n')
