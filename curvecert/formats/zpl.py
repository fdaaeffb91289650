"""ZPL, the ZeroMQ Property Language (RFC 4), as CZMQ's `zconfig` reads and writes it.

`parse` takes a whole text and returns a tree of `Node`s, or raises `ZplSyntaxError` with
the 1-based line number: never a partial tree (CZMQ's loader has the same all-or-nothing
rule, but only logs). The accepted grammar is CZMQ 4.2's, so a file curvecert accepts is a
file CZMQ accepts:

- lines end in LF or CR LF; trailing whitespace (C `isspace`: space, tab, CR, VT, FF) is
  dropped first;
- indentation is spaces only, an exact multiple of 4, one level deeper than a parent; a
  tab after the indentation is allowed only before a comment;
- names use `A-Z a-z 0-9 $ - _ @ . & + /`, with no `/` first or last;
- `name`, `name =`, `name = value`, `name = "value"` and `name = 'value'`, with any
  whitespace around `=`; quotes have no escapes; an unquoted value stops at `#` and loses
  surrounding whitespace (CZMQ's quirk: a bare value that *starts* with `#` is kept whole
  after `= `, and is empty after `=#`);
- after a closing quote only whitespace and a comment may follow.

Two deliberate differences, both stricter (a file curvecert accepts is still one CZMQ
accepts): a NUL byte is an error (CZMQ silently ends the line there), and the text must be
UTF-8 (CZMQ takes any bytes).

`emit` is the writer. It never produces text `parse` cannot read back: values are double
quoted, single quoted when they contain `"`, and refused when they contain both quote
kinds or a line break (`ZplError`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence

from curvecert.errors import ZplError, ZplSyntaxError

__all__ = ["NAME_CHARS", "Node", "emit", "is_valid_name", "parse", "quote_value"]

# RFC 4 name-char, as CZMQ's zconfig.c s_collect_name accepts it.
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$-_@.&+/")
_NAME_RE = re.compile(r"[A-Za-z0-9$\-_@.&+/]+")
_INDENT = 4
# C isspace() in the "C" locale: what zconfig.c skips around '=', after quotes and before '#'.
_WS = " \t\n\v\f\r"


class Node:
    """One ZPL property: a name, a string value ("" for a section) and ordered children.

    A plain slotted class rather than a dataclass: `dataclasses` pulls in `inspect`, which
    would add milliseconds to every `curvecert show` start-up.
    """

    __slots__ = ("children", "column", "line", "name", "value")

    def __init__(self, name: str, value: str = "", children: list[Node] | None = None,
                 line: int = 0, column: int = 0) -> None:
        """A node; `line` is the 1-based line it was parsed from (0 when built in code),
        `column` the 1-based column where its value starts (0 when unknown or empty).
        Messages about a value point there instead of quoting it (it may be a secret)."""
        self.name = name
        self.value = value
        self.children: list[Node] = children if children is not None else []
        self.line = line
        self.column = column

    @property
    def columns(self) -> str:
        """`columns A-B` of the value, or `""` when unknown: where, never what."""
        if not self.column:
            return ""
        return f"columns {self.column}-{self.column + max(len(self.value), 1) - 1}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return (self.name, self.value, self.line, self.children) == (
            other.name, other.value, other.line, other.children)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return (f"Node(name={self.name!r}, value={self.value!r}, "
                f"children={self.children!r}, line={self.line!r})")

    def child(self, name: str) -> Node | None:
        """The first direct child called `name` (CZMQ: the first of duplicates wins)."""
        for c in self.children:
            if c.name == name:
                return c
        return None

    def locate(self, path: str) -> Node | None:
        """The first node at a `/`-separated path below this one, e.g. `curve/public-key`."""
        node: Node | None = self
        for part in path.split("/"):
            if node is None:
                return None
            node = node.child(part)
        return node

    def add(self, name: str, value: str = "") -> Node:
        """Append and return a new child."""
        node = Node(name, value)
        self.children.append(node)
        return node

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Node]]:
        """Yield `(depth, node)` for every descendant, depth first, in order."""
        for c in self.children:
            yield depth, c
            yield from c.walk(depth + 1)


def is_valid_name(name: str) -> bool:
    """True if `name` can be written as a ZPL property name that CZMQ reads back."""
    return bool(_NAME_RE.fullmatch(name)) and not name.startswith("/") and not name.endswith("/")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.split("\n"), start=1):
        yield number, raw.rstrip(_WS)


def parse(data: str | bytes, *, path: str | os.PathLike[str] | None = None) -> Node:
    """Parse a whole ZPL text into a root `Node` (name ""), or raise `ZplSyntaxError`."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = bytes(data).count(b"\n", 0, exc.start) + 1
            raise ZplSyntaxError("text is not valid UTF-8", line=bad_line, path=path) from None
    else:
        text = data
    root = Node("")
    # stack[i] is the last node seen at depth i; depth d needs a parent at stack[d - 1].
    stack: list[Node] = [root]
    for number, line in _lines(text):
        if not line:
            continue
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if not stripped:
            continue
        if number == 1 and stripped.startswith("\ufeff"):
            raise ZplSyntaxError("byte-order mark at the start of the file", line=1, path=path)
        if indent % _INDENT:
            raise ZplSyntaxError(f"indentation of {indent} spaces is not a multiple of 4",
                                 line=number, path=path)
        if "\x00" in stripped:
            raise ZplSyntaxError("NUL byte in line", line=number, path=path)
        if stripped[0] in _WS:
            # zconfig.c: no name here, so only whitespace and a comment may follow.
            if stripped.lstrip(_WS)[:1] == "#":
                continue
            raise ZplSyntaxError("tab in indentation (indent with 4 spaces)", line=number,
                                 path=path)
        if stripped[0] == "#":
            continue
        depth = indent // _INDENT
        if depth >= len(stack):
            what = "a property before any section" if len(stack) == 1 else "indented too deep"
            raise ZplSyntaxError(f"{what} (each level is 4 spaces under its parent)",
                                 line=number, path=path)
        name, value, column = _parse_property(stripped, number, path, indent)
        node = Node(name, value, [], number, column)
        stack[depth].children.append(node)
        del stack[depth + 1:]
        stack.append(node)
    return root


def _parse_property(s: str, number: int, path: str | os.PathLike[str] | None,
                    indent: int = 0) -> tuple[str, str, int]:
    # Errors give columns, never the text: a damaged secret-key line must not be quoted
    # back into a terminal or a log (docs/security.md, "Secrets in messages").
    def col(rest: str) -> int:
        return indent + len(s) - len(rest) + 1

    m = _NAME_RE.match(s)
    if not m:
        raise ZplSyntaxError(f"column {indent + 1}: expected a property name (letters, digits "
                             "and $ - _ @ . & + /)", line=number, path=path)
    name = m.group()
    if name.startswith("/") or name.endswith("/"):
        raise ZplSyntaxError(f"columns {indent + 1}-{indent + len(name)}: a property name may "
                             "not start or end with '/'", line=number, path=path)
    rest = s[m.end():].lstrip(_WS)
    if not rest or rest[0] == "#":
        return name, "", 0
    if rest[0] != "=":
        raise ZplSyntaxError(f"column {col(rest)}: expected '=' after the property name "
                             f"(columns {indent + 1}-{indent + len(name)})", line=number,
                             path=path)
    after_eq = rest[1:]
    rest = after_eq.lstrip(_WS)
    if not rest:
        return name, "", 0
    quote = rest[0]
    if quote in "\"'":
        end = rest.find(quote, 1)
        if end < 0:
            raise ZplSyntaxError(f"column {col(rest)}: the value has no closing {quote}",
                                 line=number, path=path)
        tail = rest[end + 1:].lstrip(_WS)
        if tail and tail[0] != "#":
            raise ZplSyntaxError(f"columns {col(tail)}-{indent + len(s)}: unexpected text "
                                 f"after the quoted value (columns {col(rest)}-"
                                 f"{col(rest) + end})", line=number, path=path)
        return name, rest[1:end], col(rest) + 1
    if rest[0] == "#":
        # CZMQ quirk (zconfig.c cuts at the '#' after walking back over whitespace): a bare
        # value that starts with '#' is kept whole after `= `, and is empty after `=#`.
        return (name, rest, col(rest)) if after_eq[0] in _WS else (name, "", 0)
    start = col(rest)
    hash_at = rest.find("#")
    if hash_at >= 0:
        rest = rest[:hash_at]
    value = rest.rstrip(_WS)
    return name, value, start if value else 0


def quote_value(value: str) -> str:
    """Quote `value` for writing; raise `ZplError` if no quoting can represent it."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ZplError(f"value {value[:40]!r} contains a line break or NUL; ZPL cannot hold it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ZplError(f"value {value[:40]!r} is not valid Unicode text") from None
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ZplError(f"value {value[:40]!r} contains both quote kinds; ZPL has no escapes")


def emit(root: Node | Sequence[Node], *, comments: Iterable[str] = ()) -> str:
    """Write a tree as CZMQ does: `#` comment lines, a blank line, 4-space indent, LF.

    `root` is a root node (its children are written) or a sequence of top-level nodes.
    A node with an empty value and children is written as a bare section name.
    """
    top = root.children if isinstance(root, Node) else list(root)
    out: list[str] = []
    comments = list(comments)
    for c in comments:
        if "\n" in c or "\r" in c:
            raise ZplError("a comment line may not contain a line break")
        out.append(f"#{c}\n")
    if comments:
        out.append("\n")
    for node in top:
        _emit_node(node, 0, out)
    return "".join(out)


def _emit_node(node: Node, depth: int, out: list[str]) -> None:
    if not is_valid_name(node.name):
        raise ZplError(f"{node.name!r} is not a valid ZPL name (use letters, digits and "
                       "$ - _ @ . & + /, not starting or ending with /)")
    pad = " " * (_INDENT * depth)
    if node.value == "" and (node.children or depth == 0):
        out.append(f"{pad}{node.name}\n")
    else:
        out.append(f"{pad}{node.name} = {quote_value(node.value)}\n")
    for c in node.children:
        _emit_node(c, depth + 1, out)
