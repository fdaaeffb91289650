"""The one sanitizer for untrusted text (DESIGN.md: "untrusted text is data").

Anything that came from a peer or a file (a PLAIN user name, a ZAP domain, certificate
metadata, a file name, a greeting's mechanism field) passes through here before it reaches
a terminal, a log line or an error message. The rule, everywhere:

- Characters that control a terminal or change how text is laid out are shown as visible
  escapes: C0 and C1 controls and DEL (`\\x1b`), Unicode format characters such as the bidi
  overrides and isolates and zero-width characters (`\\u202e`), the line and paragraph
  separators U+2028/U+2029, and lone surrogates. Bytes that are not UTF-8 become `\\xNN`.
- A backslash is shown as `\\\\`, so an escape seen in output was made here, never typed
  by the peer.
- `field` additionally quotes a value that holds a space, `"` or `=`, or is empty, so a
  `key=value` record cannot be forged; `json_line` writes one JSON record that stays one
  line for any reader (`str.splitlines` splits on U+2028, U+0085 and friends).

Pure functions, no imports beyond the standard library; tested with hypothesis against the
running Python's `unicodedata` categories (Cc, Cf, Zl, Zp, Cs).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

__all__ = ["UNSAFE", "EscapingFormatter", "escape", "field", "is_safe", "json_line",
           "json_text", "unsafe_characters", "unsafe_summary"]

#: Characters shown escaped: Cc (C0, DEL, C1), Cf (format: bidi, zero-width, tags, ...),
#: Zl/Zp (U+2028/U+2029), Cs (lone surrogates from `surrogateescape`), and the backslash.
#: Cf ranges from Unicode 15 (Python 3.11-3.13 agree); the property test checks them.
_CLASS = (
    "\\\\\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
UNSAFE = re.compile(f"[{_CLASS}]")
_QUOTE_NEEDED = re.compile(r'[\s"=]')
#: In JSON text these may stand raw only inside strings; escaping them there keeps the
#: record one line for every reader and hides nothing from a terminal.
#: (Compiled on first use: the CLI's start-up only needs `UNSAFE`.)
@functools.cache
def _json_unsafe() -> re.Pattern[str]:
    return re.compile(f"[{_CLASS[2:]}]")


#: For indented JSON: the same minus the newline between items (json.dumps escapes C0
#: characters inside strings itself, so a raw newline is always structure).
@functools.cache
def _json_text_unsafe() -> re.Pattern[str]:
    return re.compile("[" + _CLASS[2:].replace("\x00-\x1f", "\x00-\x09\x0b-\x1f", 1) + "]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_safe(text: str) -> bool:
    """True when `text` needs no escaping (no control, format or separator character)."""
    return UNSAFE.search(text) is None


def unsafe_characters(text: str) -> list[tuple[int, str]]:
    """`(offset, escaped)` for each character `escape` would change, backslash excepted.

    For findings such as "metadata value holds U+202E at column 7" (`verify`, `store check`).
    """
    return [(m.start(), _visible(m)) for m in UNSAFE.finditer(text) if m.group() != "\\"]


def unsafe_summary(text: str, *, shown: int = 3) -> str | None:
    """None for safe text, else what `verify` and `store check` say about it.

    `2 control, format or line-separator characters (U+001B at position 1, U+202E at
    position 7)`: code points and 1-based positions, never the characters themselves.
    """
    found = [m for m in UNSAFE.finditer(text) if m.group() != "\\"]
    if not found:
        return None
    where = ", ".join(f"U+{ord(m.group()):04X} at position {m.start() + 1}"
                      for m in found[:shown])
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    noun = "character" if len(found) == 1 else "characters"
    return f"{len(found)} control, format or line-separator {noun} ({where}{more})"


def escape(text: str | bytes, *, limit: int | None = None) -> str:
    """`text` with every unsafe character shown as an escape; bytes are read as UTF-8.

    `limit` caps the result at that many characters of the *escaped* text, ending in `…`
    when cut (for log lines fed 10 MB user names). Never raises.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("utf-8", "surrogateescape")
        out = UNSAFE.sub(_visible_bytes, text)
    elif UNSAFE.search(text) is None:
        out = text
    else:
        out = UNSAFE.sub(_visible, text)
    if limit is not None and len(out) > limit:
        out = out[: max(limit - 1, 0)] + "…"
    return out


def _visible_bytes(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte carried by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return _visible(match)


def field(text: str | bytes, *, limit: int | None = None) -> str:
    """`escape(text)`, double-quoted when it is empty or holds white space, `"` or `=`.

    The value half of a `key=value` log record: whatever a peer sends, the record keeps
    its shape (one line, the same keys).
    """
    out = escape(text, limit=limit)
    if not out or _QUOTE_NEEDED.search(out):
        return '"' + out.replace('"', '\\"') + '"'
    return out


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(obj: Any) -> str:
    """`obj` as one line of compact JSON (no trailing newline) that no reader splits.

    Non-ASCII text stays readable; C1 controls, format characters and the Unicode line
    separators inside strings are written as `\\uXXXX` escapes, which JSON decoders undo.
    """
    import json  # lazily: `import curvecert.cli` stays cheap

    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _json_unsafe().sub(_json_escape, text)


def json_text(obj: Any, *, indent: int = 2) -> str:
    """`obj` as indented JSON (the `--json` output of commands), escaped as `json_line` is.

    The structure's own newlines stay; every string is free of controls and separators.
    """
    import json

    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    return _json_text_unsafe().sub(_json_escape, text)


class EscapingFormatter(logging.Formatter):
    """A `logging.Formatter` that escapes the formatted message (arguments included).

    Log calls pass paths, domains and addresses as `%s` arguments; this keeps each record
    one line of safe text whatever they hold. A traceback (`exc_info`) is left as Python
    wrote it: it is multi-line by nature and only shown with `-v`.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's message, escaped, through this formatter's format string."""
        record.message = escape(record.message)
        return super().formatMessage(record)
