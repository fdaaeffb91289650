"""Fuzz target: the ZPL parser and writer (`curvecert.formats.zpl`).

Properties, for any input:

- `parse` returns a tree or raises `ZplSyntaxError` whose line number lies within the
  text and whose message starts with `path:line:`; never another exception;
- a parsed tree only holds what the grammar allows (valid names, values without NUL or
  line feed, line numbers in range, increasing in document order);
- `parse(str)` and `parse(bytes)` agree; CRLF line ends (and trailing blanks) change
  nothing, not even the line number of an error;
- parse, emit, parse is stable: `emit` either refuses a value (only for values ZPL cannot
  quote) or writes a text that parses back to the same tree, and emitting that again
  gives the same text;
- differential, against the real libczmq: every text curvecert accepts, CZMQ's
  `zconfig_chunk_load` accepts too and reads as the same tree.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from curvecert.errors import ZplError, ZplSyntaxError
from curvecert.formats import zpl
from tests.czmq import CzmqNode, load_czmq
from tests.fuzz.conftest import FUZZ, scaled
from tests.fuzz.strategies import ZPL_SEEDS, mutated, zpl_texts

Tree = tuple[tuple[str, str, "Tree"], ...]

any_zpl = st.one_of(st.binary(max_size=300), zpl_texts(), mutated(ZPL_SEEDS))


def _tree(nodes: list[zpl.Node]) -> Tree:
    return tuple((n.name, n.value, _tree(n.children)) for n in nodes)


def _czmq_tree(nodes: tuple[CzmqNode, ...]) -> Tree:
    return tuple((n.name, n.value, _czmq_tree(n.children)) for n in nodes)


def _parse(data: bytes | str) -> zpl.Node | ZplSyntaxError:
    try:
        return zpl.parse(data, path="fuzz.zpl")
    except ZplSyntaxError as exc:
        return exc


def _line_count(data: bytes | str) -> int:
    return (data.count(b"\n") if isinstance(data, bytes) else data.count("\n")) + 1


def _check_outcome(data: bytes | str, got: zpl.Node | ZplSyntaxError) -> None:
    lines = _line_count(data)
    if isinstance(got, ZplSyntaxError):
        assert 1 <= got.line <= lines, (got.line, lines)
        assert got.path == "fuzz.zpl"
        assert str(got).startswith(f"fuzz.zpl:{got.line}: ")
        return
    last = 0
    for _depth, node in got.walk():
        assert zpl.is_valid_name(node.name), node.name
        assert "\n" not in node.value and "\x00" not in node.value
        assert last < node.line <= lines
        last = node.line


def _same(a: zpl.Node | ZplSyntaxError, b: zpl.Node | ZplSyntaxError) -> None:
    if isinstance(a, ZplSyntaxError) or isinstance(b, ZplSyntaxError):
        assert isinstance(a, ZplSyntaxError) and isinstance(b, ZplSyntaxError), (a, b)
        assert a.line == b.line, (a, b)
    else:
        assert _tree(a.children) == _tree(b.children)


def _emittable(root: zpl.Node) -> bool:
    """Whether every value can be quoted (the only reason `emit` may refuse a parsed tree)."""
    for _depth, node in root.walk():
        v = node.value
        if "\r" in v or ('"' in v and "'" in v):
            return False
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


@FUZZ
@given(any_zpl)
@example(b"")
@example(b"\n" * 5 + b"  x")
@example(b"a\n    b\n        c\n            d\n    e\r\n\xff")
@example(b"\xef\xbb\xbfa = 1\n")
@example(b"a = #x\nb =#y\n")
@example(b"a\n    b = '\"'\n    c = x\"y'z\n")
def test_parse_any_bytes(data: bytes) -> None:
    got = _parse(data)
    _check_outcome(data, got)
    # CRLF (and a trailing blank on every line) must not change the outcome
    _same(got, _parse(data.replace(b"\n", b"\r\n")))
    _same(got, _parse(data.replace(b"\n", b" \t\n")))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        assert isinstance(got, ZplSyntaxError)
        return
    _same(got, _parse(text))


@FUZZ
@given(st.one_of(st.text(max_size=200), zpl_texts().map(
    lambda b: b.decode("utf-8", "surrogatepass"))))
def test_parse_any_text(text: str) -> None:
    got = _parse(text)
    _check_outcome(text, got)


@FUZZ
@given(any_zpl)
@example(b"a = x\ry\n")
@example(b"a\n    b = 'x\"'\n")
def test_parse_emit_parse_is_stable(data: bytes) -> None:
    got = _parse(data)
    if isinstance(got, ZplSyntaxError):
        return
    if not _emittable(got):
        with pytest.raises(ZplError):
            zpl.emit(got)
        return
    text = zpl.emit(got, comments=["  fuzz"])
    again = zpl.parse(text)
    assert _tree(again.children) == _tree(got.children)
    assert zpl.emit(again, comments=["  fuzz"]) == text


_czmq = load_czmq()


@pytest.mark.czmq
@pytest.mark.skipif(_czmq is None, reason="libczmq (libczmq4) is not installed")
@scaled(0.5)
@given(st.one_of(zpl_texts(), mutated(ZPL_SEEDS)))
def test_czmq_accepts_what_curvecert_accepts(data: bytes) -> None:
    got = _parse(data)
    if isinstance(got, ZplSyntaxError):
        return  # CZMQ may accept more (it only logs); only the other direction is promised
    assert _czmq is not None
    theirs = _czmq.parse_zpl(data)
    assert theirs is not None, "CZMQ rejects a text curvecert accepts"
    assert _czmq_tree(theirs) == _tree(got.children)
