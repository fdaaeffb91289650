"""Every output path renders hostile text inert (issue 12; docs/security.md, "Untrusted text").

Any bytes as a PLAIN user name, ZAP domain or address, certificate metadata name/value,
file name or greeting mechanism go through each renderer: the audit log line, the
`serve-auth` text and JSON decision logs, `show` (plain and rich), `verify`/`store check`
findings, the escaping log formatter, the CLI error line and `probe`'s verdict. The
output holds no C0/C1 control, format (bidi, zero-width) or line/paragraph separator
character except the format's own newline, and one record stays one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from curvecert.auth.base import format_decision
from curvecert.auth.decision import Decision
from curvecert.auth.records import decision_fields
from curvecert.certs.cert import Certificate
from curvecert.certs.verify import Finding, check_metadata
from curvecert.cli import probe as probe_cli
from curvecert.cli import render
from curvecert.cli import serve as serve_cli
from curvecert.formats import zmtp
from curvecert.formats.sanitize import EscapingFormatter, escape, json_line
from curvecert.probe.advice import classify
from curvecert.probe.client import ProbeResult
from curvecert.probe.wire import Greeting, Observation, ProbeEvent, parse_greeting

BAD = {"Cc", "Cf", "Zl", "Zp", "Cs"}
#: Text a peer or a file can hold: any bytes decoded as the code decodes them, any text.
wire = st.binary(max_size=80).map(lambda b: b.decode("utf-8", "replace")) \
    | st.text(max_size=60)
hostile = st.sampled_from(["\x1b[2J", "\x1b]0;title\x07", "\u202e", "\u2028", "\x85",
                           "\r", "\n✓ 200 PLAIN user=admin", '" status=200 x="', "\x00",
                           "\ud800", "\u200b", "\x7f"])
text = st.one_of(wire, hostile, st.tuples(wire, hostile, wire).map("".join))


def _clean_lines(out: str) -> list[str]:
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        bad = [c for c in line if unicodedata.category(c) in BAD]
        assert not bad, f"{bad!r} in {line!r}"
    return lines


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120, no_color=True, color_system=None, highlight=False,
                   markup=False, emoji=False, soft_wrap=True, force_terminal=False), buf


def _decision(status: str, user: str, domain: str, address: str, meta_name: str,
              mechanism: str) -> Decision:
    metadata = zmtp.encode([("name", meta_name.encode("utf-8", "surrogatepass"))]) \
        if status == "200" else b""
    return Decision(status, "x", user.encode("utf-8", "surrogatepass") if status == "200"
                    else b"", metadata, "reason " + user[:5], mechanism, domain, address, user)


records = st.builds(_decision, st.sampled_from(["200", "400", "500"]), text, text, text,
                    text.filter(lambda s: len(s.encode("utf-8", "surrogatepass")) < 200),
                    st.sampled_from(["PLAIN", "CURVE", "NULL", "?"]))


@settings(max_examples=300, deadline=None)
@given(records)
def test_audit_line_is_one_clean_line(decision: Decision) -> None:
    line = format_decision(decision)
    assert len(_clean_lines(line)) == 1
    fields = line.split(" ")
    assert fields[0] in ("ALLOWED", "DENIED", "ERROR")


@settings(max_examples=300, deadline=None)
@given(records)
def test_json_decision_log_is_one_clean_line_with_fixed_fields(decision: Decision) -> None:
    record = {"time": 1.0, **decision_fields(decision)}
    out = json_line({"event": "decision", **record})
    assert len(out.splitlines()) == 1 and len(_clean_lines(out)) == 1
    back = json.loads(out)
    assert set(back) == {"event", "time", "outcome", "status", "mechanism", "domain",
                         "address", "user_id", "cert_name", "fingerprint", "reason"}
    assert back["reason"] == decision.reason


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_serve_auth_text_log_is_one_clean_line(decision: Decision) -> None:
    log = serve_cli._DecisionLog("json", "stderr")  # no console built for json
    log.fmt = "text"
    log._console, buf = _console()
    log.decision({"time": 1.0, **decision_fields(decision)})
    assert len(_clean_lines(buf.getvalue())) == 1


metadata = st.lists(st.tuples(text.filter(bool), text), max_size=4)


def _cert(meta: list[tuple[str, str]]) -> Certificate:
    return Certificate.new(meta)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metadata, text)
def test_show_plain_and_rich_are_clean(meta: list[tuple[str, str]], path: str) -> None:
    cert = _cert(meta)
    plain = render.plain_certificate(cert, path=path)
    rows = render.certificate_rows(cert, path=path)
    assert len(_clean_lines(plain)) == len(rows)  # one line per row, whatever the values
    console, buf = _console()
    console.print(render.render_certificate(cert, path=path))
    _clean_lines(buf.getvalue())
    _clean_lines(_json(cert, path))


def _json(cert: Certificate, path: str) -> str:
    buf = io.StringIO()
    render.print_json(render.cert_to_json(cert, path=path), file=buf)
    out = buf.getvalue()
    assert json.loads(out)["metadata"] == dict(cert.meta)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metadata, text)
def test_verify_and_store_check_findings_are_clean(meta: list[tuple[str, str]],
                                                   path: str) -> None:
    findings = check_metadata(meta, path)
    findings.append(Finding(path, 3, "error", "x", "message about " + path))
    console, buf = _console()
    console.print(render.render_findings(findings))
    assert len(_clean_lines(buf.getvalue())) == len(findings)
    for name, value in meta:
        if any(unicodedata.category(c) in BAD for c in name + value):
            assert any(f.code == "meta-unsafe-text" for f in findings)


@settings(max_examples=200, deadline=None)
@given(text, text)
def test_log_formatter_and_error_line_are_clean(message: str, arg: str) -> None:
    formatter = EscapingFormatter("curvecert: %(levelname)s: %(message)s")
    record = logging.LogRecord("curvecert", logging.WARNING, __file__, 1,
                               "%s: " + message.replace("%", "%%"), (arg,), None)
    assert len(_clean_lines(formatter.format(record))) == 1
    assert len(_clean_lines(f"curvecert: error: {escape(arg)}")) == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=20, max_size=20), text)
def test_probe_rendering_is_clean(mechanism: bytes, detail: str) -> None:
    data = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x01" + mechanism + b"\x00" + bytes(31)
    greeting = parse_greeting(data)
    assert isinstance(greeting, Greeting)
    verdict, cause, fix = classify(Observation("closed"), greeting, mechanism="CURVE",
                                   endpoint="tcp://127.0.0.1:1")
    result = ProbeResult("tcp://127.0.0.1:1", "CURVE", verdict, False, cause, fix,
                         (ProbeEvent("CONNECTED", 0, 0.001, detail),), greeting)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # render.console() writes to sys.stdout
        probe_cli._render(result)
    _clean_lines(buf.getvalue())
    out = io.StringIO()
    render.print_json(result.to_dict(), file=out)
    _clean_lines(out.getvalue())
