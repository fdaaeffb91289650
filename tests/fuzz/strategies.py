"""Input generators shared by the fuzz targets: raw bytes, grammar-aware texts, mutations.

Random bytes alone rarely get past the first line of a parser, so most targets draw from
three sources at once: plain `st.binary()`, texts assembled from the tokens the grammar
cares about (indentation, names, `=`, quotes, `#`, CR, NUL, a BOM, non-ASCII), and
mutations of real seed files (byte flips, truncation, insertions, deletions, CRLF).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hypothesis import strategies as st

__all__ = ["ZPL_SEEDS", "mutated", "mutations", "zpl_texts"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "zpl"
#: Every ZPL file of the test corpus (good, bad and CZMQ-differs cases) as seed material.
ZPL_SEEDS: tuple[bytes, ...] = tuple(p.read_bytes() for p in sorted(_ASSETS.rglob("*.zpl")))

_NAMES = ["metadata", "curve", "public-key", "secret-key", "name", "a", "x/y", "/a", "a/",
          "$-_@.&+", "ünï", "a b", "a:b", "", "0", "email"]
_VALUES = ['"v"', "'v'", '"a\'b"', "'a\"b'", '"unterminated', "bare value", "#hash",
           '"x" # c', '"x" junk', "", '""', "''", "é€😀", "a\tb", '"' + "k" * 40 + '"',
           "\x00", "\ufeff", "\x0b\x0c", "a#b", '"\r"']
_SEPS = ["=", " = ", "=\t", " =", "  ", "\t", "", "==", " # comment"]
_INDENTS = ["", "    ", "        ", "            ", "  ", "   ", "\t", "    \t", " \t",
            "                "]
_ENDS = ["\n", "\r\n", "\r", "\n\n", " \n", "\t\r\n"]


@st.composite
def _zpl_line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    indent = draw(st.sampled_from(_INDENTS))
    if kind == 0:
        return indent + "#" + draw(st.text(max_size=12))
    if kind == 1:
        return indent
    if kind == 2:
        return indent + draw(st.text(max_size=20))
    name = draw(st.one_of(st.sampled_from(_NAMES),
                          st.from_regex(r"[A-Za-z0-9$\-_@.&+/]{1,12}", fullmatch=True)))
    if kind == 3:
        return indent + name
    value = draw(st.one_of(st.sampled_from(_VALUES), st.text(max_size=15)))
    return indent + name + draw(st.sampled_from(_SEPS)) + value


@st.composite
def zpl_texts(draw: st.DrawFn) -> bytes:
    """A ZPL-like document: lines of indented names, values, quotes, comments and junk."""
    lines = draw(st.lists(_zpl_line(), max_size=12))
    out = []
    for line in lines:
        out.append(line)
        out.append(draw(st.sampled_from(_ENDS)))
    text = "".join(out)
    if draw(st.booleans()):
        text = text.rstrip("\n")
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` with a few random edits: flips, truncation, insertions, deletions, CRLF."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 7))
        n = len(data)
        if op == 0 and n:  # flip bits of one byte
            i = draw(st.integers(0, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == 1:  # truncate
            data = data[:draw(st.integers(0, n))]
        elif op == 2:  # insert bytes
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(
                [b"\n", b"\r", b"\r\n", b"\x00", b"    ", b"\t", b"#", b'"', b"'", b"=",
                 b"\xef\xbb\xbf", b"\xff", b"\xc3", b"curve\n", b"    secret-key = \"\"\n"])))
        elif op == 3 and n:  # delete a range
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 16))]
        elif op == 4:  # LF -> CRLF everywhere
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
        elif op == 5 and n:  # duplicate a line
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
        elif op == 6 and n:  # overwrite one byte with an interesting one
            i = draw(st.integers(0, n - 1))
            data[i] = draw(st.sampled_from(b" \t\r\n\x00#=\"'/\x7f\x80"))
        elif op == 7 and n:  # swap two lines
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def mutated(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """A mutation of one of `seeds`."""
    return st.sampled_from(list(seeds)).flatmap(lambda seed: mutations(seed))
