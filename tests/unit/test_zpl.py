"""ZPL (RFC 4) as CZMQ reads it: the edge-case corpus, line numbers, the writer, round trips.

The corpus lives in tests/assets/zpl/{good,bad,differs}. The CZMQ differential test
(tests/integration/test_czmq_interop.py) runs the same files through the real zconfig
parser; here the expectations are spelled out so the rules are readable.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvecert.errors import CurvecertError, ZplError, ZplSyntaxError
from curvecert.formats import zpl

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "zpl"

Tree = tuple[tuple[str, str, "Tree"], ...]


def tree(node: zpl.Node) -> Tree:
    """A node's children as nested `(name, value, children)` tuples (no line numbers)."""
    return tuple((c.name, c.value, tree(c)) for c in node.children)


def values(data: bytes, section: str = "metadata") -> dict[str, str]:
    """`{name: value}` of the first section called `section` (first duplicate wins)."""
    node = zpl.parse(data).child(section)
    assert node is not None
    out: dict[str, str] = {}
    for c in node.children:
        out.setdefault(c.name, c.value)
    return out


# --- the malformed corpus: every file, with the line CZMQ reports too ----------------------

BAD_LINES = {
    "backslash-escape.zpl": 2,        # `"a\"b"`: no escapes, `b"` is junk after the quote
    "bare-cr-separators.zpl": 1,      # bare CR is not a line end in CZMQ
    "bom.zpl": 1,
    "crlf-error-line-3.zpl": 3,
    "deep-after-reset.zpl": 5,        # a new top-level section resets the depth
    "doubled-quote.zpl": 2,           # 'it''s'
    "empty-name.zpl": 2,
    "error-after-blanks.zpl": 6,      # blank and comment lines count
    "indent-2.zpl": 2,
    "indent-3.zpl": 3,
    "indent-6.zpl": 2,
    "indented-comment-2.zpl": 2,      # comments obey the 4-space rule too
    "item-before-section.zpl": 2,
    "jump-two-levels.zpl": 2,
    "junk-after-quote.zpl": 2,
    "multiline-value.zpl": 2,
    "name-colon.zpl": 2,
    "name-space.zpl": 2,
    "name-then-value.zpl": 2,
    "name-unicode.zpl": 2,
    "quote-then-hash-junk.zpl": 2,
    "slash-first.zpl": 1,
    "slash-last.zpl": 2,
    "tab-after-spaces.zpl": 2,
    "tab-in-name.zpl": 2,
    "tab-indent.zpl": 2,
    "two-quoted.zpl": 2,
    "unterminated-double.zpl": 2,
    "unterminated-single.zpl": 2,
}


def test_bad_corpus_is_fully_listed() -> None:
    assert sorted(p.name for p in (CORPUS / "bad").iterdir()) == sorted(BAD_LINES)


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_bad_corpus_fails_with_path_and_line(name: str) -> None:
    path = CORPUS / "bad" / name
    with pytest.raises(ZplSyntaxError) as info:
        zpl.parse(path.read_bytes(), path=path)
    assert info.value.line == BAD_LINES[name]
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:{BAD_LINES[name]}: ")
    assert isinstance(info.value, CurvecertError)


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "good").iterdir()))
def test_good_corpus_parses(name: str) -> None:
    root = zpl.parse((CORPUS / "good" / name).read_bytes())
    assert root.name == ""


@pytest.mark.parametrize(("name", "line"), [("nul-byte.zpl", 2), ("latin1-value.zpl", 2)])
def test_deliberately_stricter_than_czmq(name: str, line: int) -> None:
    # CZMQ accepts these (it ends a line at NUL and takes any bytes); curvecert refuses.
    with pytest.raises(ZplSyntaxError) as info:
        zpl.parse((CORPUS / "differs" / name).read_bytes())
    assert info.value.line == line


# --- what the good files mean ------------------------------------------------------------


def good(name: str) -> bytes:
    return (CORPUS / "good" / name).read_bytes()


def test_czmq_written_file() -> None:
    root = zpl.parse(good("czmq-public.zpl"))
    assert tree(root) == (
        ("metadata", "", (("name", "Alice Example", ()), ("email", "alice@example.org", ()),
                          ("organization", "ACME Widgets", ()))),
        ("curve", "", (("public-key", ")#bT{=8RHi)XQ[hG[*:ML*dRb3d5XTVO+7t481]f", ()),)),
    )
    pub = root.locate("curve/public-key")
    assert pub is not None and pub.line == 12


def test_crlf_and_line_numbers() -> None:
    root = zpl.parse(good("crlf.zpl"))
    assert tree(root) == (("metadata", "", (("name", "Alice", ()),)),
                          ("curve", "", (("public-key", "x", ()),)))
    curve = root.child("curve")
    assert curve is not None and curve.line == 4


def test_comments_everywhere_czmq_allows_them() -> None:
    assert values(good("comments.zpl")) == {"a": "v", "b": "v", "c": "v"}


def test_unquoted_values() -> None:
    assert values(good("unquoted.zpl")) == {
        "bare": "bare value", "inner": "say \"hi\" and 'bye'", "padded": "lots of space",
        "hash": "a"}


def test_hash_at_the_start_of_a_bare_value() -> None:
    # zconfig.c walks back over whitespace from the '#': after `= ` nothing is cut,
    # after `=#` everything is.
    assert values(good("hash-quirk.zpl")) == {
        "kept": "# kept whole # even this", "empty": "", "tabbed": "# kept too"}


def test_name_value_variants() -> None:
    assert values(good("variants.zpl")) == {
        "a": "v", "b": "v", "c": "v", "d": "v", "e": "", "f": "", "g": "", "h": ""}


def test_quoted_values_keep_everything_but_their_quote() -> None:
    assert values(good("quotes.zpl")) == {
        "apostrophe": "it's", "dquote": 'say "hi"', "hash": "#not a comment", "eq": "a=b",
        "spaces": "  both sides  ", "backslash": "C:\\\\dir\\\\"}


def test_any_c_whitespace_around_equals() -> None:
    assert values(good("whitespace-around-eq.zpl")) == {"a": "tab", "b": "vt", "c": "x"}


def test_tab_before_a_comment_is_fine() -> None:
    assert values(good("tab-before-comment.zpl")) == {"name": "x"}


def test_nested_sections_and_first_duplicate_wins() -> None:
    root = zpl.parse(good("nested.zpl"))
    assert tree(root) == (
        ("metadata", "", (("name", "x", (("sub", "ignored by zcert", (("deeper", "y", ()),)),)),
                          ("next", "z", ()))),
        ("curve", "", ()))
    assert root.locate("metadata/name/sub/deeper") is not None
    assert root.locate("metadata/nope") is None
    dup = zpl.parse(good("duplicates.zpl"))
    assert values(good("duplicates.zpl")) == {"name": "first"}
    assert len(dup.children) == 2  # both sections are kept in the tree


def test_sections_with_values_case_and_name_chars() -> None:
    assert tree(zpl.parse(good("section-value.zpl")))[0][:2] == ("metadata",
                                                                "section with a value")
    assert values(good("case.zpl")) == {"name": "y"}
    assert values(good("name-chars.zpl")) == {"a.b-c_d$e@f&g+h/i": "all name characters",
                                              "0digit": "names may start with a digit"}


def test_long_lines_and_unicode() -> None:
    long = values(good("long-line.zpl"))
    assert long["long"] == "v" * 3000 and long["n" * 1500] == "long name"
    assert values(good("unicode-value.zpl")) == {"name": "Zoë Ünïcødé ✓", "bare": "日本語"}


@pytest.mark.parametrize("name", ["empty.zpl", "comments-only.zpl", "blank-lines.zpl",
                                  "no-final-newline.zpl", "bare-cr.zpl"])
def test_degenerate_files(name: str) -> None:
    root = zpl.parse(good(name))
    assert all(c.name == "metadata" for c in root.children)


def test_reasons_are_specific() -> None:
    cases = {
        b"a\n  b\n": "not a multiple of 4",
        b"a\n\tb\n": "tab in indentation",
        b"    b\n": "before any section",
        b"a\n        b\n": "too deep",
        b"a = \"x\n": "no closing \"",
        b"a = 'x' y\n": "unexpected text after the quoted value",
        b"a: b\n": "expected '='",
        b"/a\n": "may not start or end with '/'",
        b"\xef\xbb\xbfa\n": "byte-order mark",
        b"a = \"\xff\"\n": "not valid UTF-8",
    }
    for data, reason in cases.items():
        with pytest.raises(ZplSyntaxError, match=reason):
            zpl.parse(data)


def test_str_input_and_no_path() -> None:
    with pytest.raises(ZplSyntaxError) as info:
        zpl.parse("a\n  b\n")
    assert str(info.value).startswith("line 2: ")


# --- the writer -------------------------------------------------------------------------


def test_emit_is_czmq_layout() -> None:
    meta = zpl.Node("metadata")
    meta.add("name", "Alice")
    curve = zpl.Node("curve")
    curve.add("public-key", "k")
    text = zpl.emit([meta, curve], comments=["   banner", "   two"])
    assert text == ('#   banner\n#   two\n\nmetadata\n    name = "Alice"\n'
                    'curve\n    public-key = "k"\n')


def test_emit_empty_section_and_root_node() -> None:
    root = zpl.Node("")
    root.add("metadata")
    sec = root.add("curve")
    sec.add("empty", "")
    assert zpl.emit(root) == 'metadata\ncurve\n    empty = ""\n'


@pytest.mark.parametrize(("value", "quoted"), [
    ("plain", '"plain"'), ("it's", "\"it's\""), ('say "hi"', "'say \"hi\"'"),
    ("", '""'), ("  pad  ", '"  pad  "'), ("# not a comment", '"# not a comment"'),
    ("a=b", '"a=b"'), ("ünï", '"ünï"')])
def test_quote_value(value: str, quoted: str) -> None:
    assert zpl.quote_value(value) == quoted


@pytest.mark.parametrize("value", ["both ' and \"", "line\nbreak", "cr\rhere", "nul\x00",
                                   "lone \udcff surrogate"])
def test_unrepresentable_values_are_refused(value: str) -> None:
    with pytest.raises(ZplError):
        zpl.quote_value(value)
    node = zpl.Node("metadata")
    node.add("x", value)
    with pytest.raises(ZplError):
        zpl.emit([node])


@pytest.mark.parametrize("name", ["", "full name", "nämé", "a:b", "/a", "a/", "a#b", "a=b"])
def test_invalid_names_are_refused(name: str) -> None:
    assert not zpl.is_valid_name(name)
    node = zpl.Node("metadata")
    node.add(name, "v")
    with pytest.raises(ZplError, match="not a valid ZPL name"):
        zpl.emit([node])


def test_comment_with_line_break_is_refused() -> None:
    with pytest.raises(ZplError):
        zpl.emit([zpl.Node("a")], comments=["one\ntwo"])


# --- round trips ------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9$\-_@.&+][A-Za-z0-9$\-_@.&+/]{0,10}", fullmatch=True).filter(
    lambda n: not n.endswith("/"))
# Any text without a line break or NUL, and without both quote kinds at once.
plain_values = st.text(st.characters(codec="utf-8",
                                     exclude_characters="\n\r\x00"), max_size=30).filter(
    lambda v: not ('"' in v and "'" in v))


@st.composite
def documents(draw: st.DrawFn, depth: int = 0) -> list[zpl.Node]:
    out = []
    for _ in range(draw(st.integers(0, 3 if depth < 3 else 0))):
        node = zpl.Node(draw(names), draw(plain_values))
        node.children = draw(documents(depth + 1))
        if depth == 0 and not node.children:
            node.value = node.value or "v"  # a bare top-level name round-trips as ""
        out.append(node)
    return out


def strip(nodes: list[zpl.Node]) -> Tree:
    return tuple((n.name, n.value, strip(n.children)) for n in nodes)


@settings(max_examples=200)
@given(documents(), st.lists(st.text(st.characters(codec="utf-8",
                                                   exclude_characters="\n\r\x00"),
                                     max_size=20), max_size=3))
def test_parse_emit_round_trip(doc: list[zpl.Node], comments: list[str]) -> None:
    text = zpl.emit(doc, comments=comments)
    assert strip(zpl.parse(text).children) == strip(doc)
    assert strip(zpl.parse(text.encode("utf-8")).children) == strip(doc)
    # a CRLF copy of the same text means the same thing
    assert strip(zpl.parse(text.replace("\n", "\r\n")).children) == strip(doc)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_zpl_syntax_error(data: bytes) -> None:
    try:
        zpl.parse(data)
    except ZplSyntaxError as exc:
        assert exc.line >= 1
