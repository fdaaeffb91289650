"""Every `serve-auth` option fed hostile values is refused with the file and the key (issue 12).

Table-driven: each option of the configuration file (top level, `[domains.NAME]`,
`[server]`, `[gateway]`) gets each hostile value (inf, nan, negative, huge, nested
tables, wrong types, NUL, overlong text, nesting deeper than the TOML reader can go).
The result is always a `ConfigError` whose message starts with the file and names the
key; never another exception, never a configuration that passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.errors import ConfigError
from curvecert.serve import config

#: (table or "" for the top level, key) for every option of docs/serve-auth.md
OPTIONS = [
    ("", "zap-endpoint"), ("", "ipc-group"), ("", "log-format"), ("", "log-stream"),
    ("", "stats-interval"),
    ("domains.a", "stores"), ("domains.a", "curve"), ("domains.a", "passwords"),
    ("domains.a", "allow"), ("domains.a", "deny"), ("domains.a", "mechanisms"),
    ("server", "cert"), ("server", "forwarders"),
    ("gateway", "front"), ("gateway", "back"), ("gateway", "pattern"),
    ("gateway", "server-cert"), ("gateway", "domain"),
]

#: TOML literals no option accepts
HOSTILE = {
    "inf": "inf",
    "-inf": "-inf",
    "nan": "nan",
    "negative": "-1",
    "tiny": "1e-9",  # a stats line every nanosecond floods the log
    "below-one": "0.5",
    "huge-int": "9" * 40,
    "huge-float": "1e308",
    "nested-table": "{ a = { b = 1 } }",
    "list-of-lists": "[[1], [2]]",
    "bool": "true",
    "datetime": "2026-01-01T00:00:00Z",
    "nul": '"x\\u0000y"',
    "overlong": '"' + "a" * (config.MAX_TEXT + 1) + '"',
    "list-with-a-table": '["10.0.0.0/8", { a = 1 }]',
}

BASE = {
    "": {"zap-endpoint": '"tcp://127.0.0.1:7001"', "log-format": '"json"',
         "stats-interval": "30"},
    "domains.a": {"stores": '["clients"]', "allow": '["10.0.0.0/8"]'},
    "server": {"cert": '"daemon_secret"', "forwarders": '"forwarders"'},
    "gateway": {"front": '"tcp://*:5555"', "back": '"tcp://127.0.0.1:6000"',
                "pattern": '"push-pull"', "server-cert": '"gw_secret"'},
}


def _document(table: str, key: str, literal: str) -> str:
    out: list[str] = []
    for name, items in BASE.items():
        values = dict(items)
        if name == table:
            values[key] = literal
        if name:
            out.append(f"[{name}]")
        out += [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(out) + "\n"


def test_the_base_document_is_valid(tmp_path: Path) -> None:
    cfg = config.parse(_document("", "log-stream", '"stdout"'), path=tmp_path / "c.toml")
    assert cfg.log_stream == "stdout" and cfg.gateway is not None and cfg.server is not None


@pytest.mark.parametrize("value", sorted(HOSTILE))
@pytest.mark.parametrize(("table", "key"), OPTIONS)
def test_hostile_value_is_refused_naming_file_and_key(tmp_path: Path, table: str, key: str,
                                                      value: str) -> None:
    path = tmp_path / "serve-auth.toml"
    with pytest.raises(ConfigError) as info:
        config.parse(_document(table, key, HOSTILE[value]), path=path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert f"{table}.{key}" in message if table else key in message
    assert "\n" not in message


@pytest.mark.parametrize("literal", ["[" * 3000 + "]" * 3000,
                                     "{ b = " * 3000 + "1" + " }" * 3000])
def test_nesting_beyond_the_reader_is_a_config_error(tmp_path: Path, literal: str) -> None:
    path = tmp_path / "deep.toml"
    with pytest.raises(ConfigError, match="nested too deep") as info:
        config.parse(f"stats-interval = {literal}\n", path=path)
    assert str(info.value).startswith(f"{path}: ")


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True)
       | st.integers(min_value=-(10**30), max_value=10**30))
def test_stats_interval_is_finite_and_in_range(value: float) -> None:
    text = _document("", "stats-interval", repr(value) if not isinstance(value, float)
                     else {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value),
                                                                          repr(value)))
    low, high = config.LIMITS["stats-interval"]
    assert (low, high) == (1, 86400)
    try:
        cfg = config.parse(text, path="c.toml")
    except ConfigError as exc:
        assert "stats-interval" in str(exc)
        assert not (value == 0 or low <= value <= high)
    else:
        assert cfg.stats_interval == 0 or low <= cfg.stats_interval <= high


@pytest.mark.parametrize(("literal", "accepted"), [
    ("0", True), ("0.0", True), ("1", True), ("1.0", True), ("86400", True),
    ("1e-9", False), ("0.5", False), ("0.999", False), ("-0.5", False), ("86400.5", False)])
def test_stats_interval_is_off_or_at_least_a_second(tmp_path: Path, literal: str,
                                                    accepted: bool) -> None:
    path = tmp_path / "c.toml"
    text = _document("", "stats-interval", literal)
    if accepted:
        assert config.parse(text, path=path).stats_interval == float(literal)
        return
    with pytest.raises(ConfigError) as info:
        config.parse(text, path=path)
    message = str(info.value)
    assert message.startswith(f"{path}: stats-interval: ")
    assert "expected 0 (off) or a number from 1 to 86400" in message


def test_a_store_missing_from_a_file_is_a_start_up_error(tmp_path: Path) -> None:
    path = tmp_path / "serve-auth.toml"
    path.write_text('zap-endpoint = "ipc:///tmp/x.sock"\n[domains.a]\nstores = ["gone"]\n')
    with pytest.raises(ConfigError, match=r"domains\.a\.stores\[0\]: .*gone: the certificate "
                                          "store does not exist") as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_server_table_needs_a_tcp_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server: only applies to a tcp://"):
        config.parse('zap-endpoint = "ipc:///x"\n[domains.a]\nstores = ["s"]\n'
                     '[server]\ncert = "c"\nforwarders = "f"\n', path=tmp_path / "c.toml")


def _doc_samples() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "serve-auth.md").read_text()
    section = text[text.index("## Configuration file"):text.index("## Decision log")]
    return [block.split("```", 1)[0] for block in section.split("```toml\n")[1:]]


def _split(doc: str) -> tuple[list[str], str]:
    """(top-level lines, the tables from the first `[` line on)."""
    lines = doc.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.startswith("[")), len(lines))
    return lines[:first], "\n".join(lines[first:])


def _add(base: str, part: str) -> str:
    """`part` added to `base`: its top-level keys replace the base's, its tables follow."""
    base_top, base_tables = _split(base)
    part_top, part_tables = _split(part)
    keys = {ln.split("=")[0].strip() for ln in part_top if "=" in ln and ln[0] != "#"}
    top = [ln for ln in base_top if ln.split("=")[0].strip() not in keys] + part_top
    return "\n".join([*top, base_tables, part_tables]) + "\n"


def test_docs_sample_and_each_optional_part_parse(tmp_path: Path) -> None:
    """docs/serve-auth.md: the sample parses, and so does each optional part added to it."""
    base, *optional = _doc_samples()
    assert len(optional) == 3
    path = tmp_path / "serve-auth.toml"
    assert config.parse(base, path=path).stats_interval == 60
    for part in optional:
        config.parse(_add(base, part), path=path)
