"""Rendering a forged control reply: no control character reaches the terminal.

A reply is untrusted (docs/security.md "Know who answers"): every string field gets ESC,
OSC, C1, bidi and U+2028 characters, every numeric field gets a string, and the text of
`status`, `trusted`, `decisions` and `top` (plain and rich) must hold none of them. The
client's shape check (`reply_problem`) refuses the same replies before they are printed.
"""

from __future__ import annotations

import io
import re
import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from curvecert.cli import opstop
from curvecert.cli.ops import decision_line, status_lines, trusted_line
from curvecert.serve.controlreply import reply_problem

NASTY = ["\x1b]0;pwned\x07", "\x1b[2J", "\x9b31m", "\x9d0;x\x9c", "\u2028", "\u2029",
         "\u202e", "\u200b", "\x85", "\r", "\n", "\x7f", "[link=https://evil]x[/link]",
         "[bold red]", "\udcff", "\\"]
hostile = st.lists(st.sampled_from(NASTY) | st.text(max_size=4), min_size=1, max_size=5) \
    .map("".join)
#: what a number field may hold in a forged reply
anything = hostile | st.integers() | st.floats() | st.booleans() | st.none()


def _unsafe(text: str) -> list[str]:
    return [ch for ch in text if ch not in "\n" and unicodedata.category(ch)
            in ("Cc", "Cf", "Zl", "Zp", "Cs")]


def _status(s: st.DrawFn) -> dict[str, Any]:
    store = {"path": s(hostile), "certificates": s(anything), "healthy": s(anything),
             "problem": s(hostile), "generation": s(anything), "finding_count": s(anything),
             "next_expiry": s(hostile)}
    return {"healthy": s(anything), "pid": s(anything), "uptime": s(anything),
            "generation": s(anything), "time": s(hostile), "problems": [s(hostile)],
            "domains": [{"name": s(hostile), "mechanisms": [s(hostile), s(anything)],
                         "stores": [store]}],
            "findings": [s(hostile)],
            "decisions": {s(hostile): {s(hostile): s(anything), "400": s(anything)}},
            "forwarders": {"connected": s(anything), "seen": s(anything),
                           "refused": s(anything)}}


def _decision(s: st.DrawFn) -> dict[str, Any]:
    return {"seq": s(anything), "time": s(hostile), "mechanism": s(hostile),
            "status": s(anything), "reason": s(hostile), "address": s(hostile),
            "domain": s(hostile), "user_id": s(hostile), "subject": s(hostile),
            "name": s(hostile), "fingerprint": s(hostile)}


forged_status = st.composite(_status)()
forged_decision = st.composite(_decision)()
forged_trusted = st.fixed_dictionaries({k: hostile | anything for k in
                                        ("domain", "name", "public_key", "fingerprint", "path")})


@settings(max_examples=200, deadline=None)
@given(forged_status, forged_decision, forged_trusted)
def test_forged_reply_renders_without_control_characters(
        status: dict[str, Any], decision: dict[str, Any], item: dict[str, Any]) -> None:
    lines = [*status_lines(status), decision_line(decision), trusted_line(item)]
    for line in lines:
        assert "\n" not in line
        assert _unsafe(line) == [], line
    rates = opstop.Rates()
    args = (status, rates.totals(status), rates.update(status, 1.0), [decision, "junk"])
    plain = opstop._plain(*args)
    assert _unsafe(plain) == [], plain
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="truecolor", width=160,
            legacy_windows=False).print(opstop._rich(*args))
    # rich may style (SGR: ESC [ ... m) but nothing from the reply may add anything else:
    # no OSC (title, hyperlink), no other escape, no layout character
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert _unsafe(text) == [], text


@settings(max_examples=200, deadline=None)
@given(forged_status)
def test_shape_check_refuses_strings_in_numbers(status: dict[str, Any]) -> None:
    problem = reply_problem("status", status)
    numbers = [status["pid"], status["generation"], status["uptime"],
               *status["forwarders"].values(),
               *(n for by in status["decisions"].values() for n in by.values()),
               *(status["domains"][0]["stores"][0][k] for k in ("certificates",
                                                                 "finding_count"))]
    if any(isinstance(n, (str, bool)) or n is None for n in numbers):
        assert problem is not None and "\n" not in problem


def test_shape_check_accepts_a_real_reply_and_refuses_wrong_containers() -> None:
    good = {"pid": 1, "uptime": 2.5, "generation": 0, "problems": [], "findings": [],
            "domains": [{"name": "global", "mechanisms": ["CURVE"],
                         "stores": [{"path": "/s", "certificates": 1, "finding_count": 0}]}],
            "decisions": {"CURVE": {"200": 3}},
            "forwarders": {"connected": 1, "seen": 1, "refused": 0}}
    assert reply_problem("status", good) is None
    assert reply_problem("status", {**good, "domains": "x"}) is not None
    assert reply_problem("status", {**good, "decisions": {"CURVE": {"200": True}}})
    assert reply_problem("trusted", {"items": [{"domain": "g"}]}) is None
    assert reply_problem("trusted", {"items": ["x"]}) is not None
    assert reply_problem("decisions", {"items": [], "cursor": "7"}) is not None
    assert reply_problem("decisions", {"items": [{"status": "200"}], "cursor": 7})
    assert reply_problem("decisions", {"items": [{"status": 200, "seq": 1}], "cursor": 7}) \
        is None
