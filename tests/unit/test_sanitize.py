"""The one sanitizer (curvecert.formats.sanitize): properties over any text or bytes."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from curvecert.formats import sanitize

BAD = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _bad_chars(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in BAD]


@given(st.text())
def test_escape_leaves_no_control_format_or_separator(text: str) -> None:
    out = sanitize.escape(text)
    assert _bad_chars(out) == []
    assert len(out.splitlines()) <= 1


@given(st.binary())
def test_escape_bytes_leaves_no_control(data: bytes) -> None:
    out = sanitize.escape(data)
    assert _bad_chars(out) == []
    assert len(out.splitlines()) <= 1


@given(st.text())
def test_escape_is_identity_on_safe_text(text: str) -> None:
    if not _bad_chars(text) and "\\" not in text:
        assert sanitize.escape(text) == text
        assert sanitize.is_safe(text)


@given(st.text(), st.text())
def test_escape_is_injective(a: str, b: str) -> None:
    if a != b:
        assert sanitize.escape(a) != sanitize.escape(b)


@given(st.text(), st.text())
def test_field_cannot_forge_a_record(value: str, other: str) -> None:
    record = f"user={sanitize.field(value)} status=400"
    assert len(record.splitlines()) == 1
    assert _bad_chars(record) == []
    # the value never ends the field early: the rest of the record is untouched
    assert record.endswith(" status=400")
    if value:
        assert "status=200" not in sanitize.field(value) or sanitize.field(value).startswith('"')


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(), kids, max_size=3), max_leaves=10))
def test_json_line_is_one_line_and_round_trips(obj: object) -> None:
    line = sanitize.json_line(obj)
    assert len(line.splitlines()) == 1
    assert _bad_chars(line) == []
    assert json.loads(line) == obj


def test_examples() -> None:
    assert sanitize.escape("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert sanitize.escape("evil\u202etxt") == "evil\\u202etxt"
    assert sanitize.escape(b"\xff\x00ok") == "\\xff\\x00ok"
    assert sanitize.escape("x" * 10, limit=5) == "xxxx…"
    assert sanitize.field("") == '""'
    assert sanitize.field('a "b"=c') == '"a \\"b\\"=c"'
    assert sanitize.unsafe_characters("ok\u2028no") == [(2, "\\u2028")]
