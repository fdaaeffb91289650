"""Text for values that came in a control reply (`status`, `trusted`, `decisions`, `top`).

A reply is untrusted input: a forged or broken daemon may put a string where a number
belongs, or an object where a list does. Every value goes through
`curvecert.formats.sanitize` before it reaches the terminal; numbers are formatted only
when they are numbers. The client refuses malformed replies first
(`curvecert.serve.control.reply_problem`); these helpers are the second fence.
"""

from __future__ import annotations

from typing import Any

from curvecert.formats.sanitize import escape

__all__ = ["as_list", "dicts", "etcd_line", "etcd_short", "items_of", "number", "shown"]


def shown(value: Any) -> str:
    """Any value from a reply as escaped text (a forged reply may put anything anywhere)."""
    return escape(str(value))


def number(value: Any, spec: str = "") -> str:
    """A number from a reply formatted with `spec`; anything else escaped as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except ValueError:  # e.g. a float where an integer was expected
            pass
    return shown(value)


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list from a reply (anything else in it is skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def as_list(value: Any) -> list[Any]:
    """A list from a reply, or an empty one for anything else."""
    return value if isinstance(value, list) else []


def items_of(result: Any) -> list[dict[str, Any]]:
    """The `items` objects of a `trusted` or `decisions` result."""
    return dicts(result.get("items", [])) if isinstance(result, dict) else []


def etcd_line(store: dict[str, Any]) -> str:
    """`etcd revision 42, lag 0.3 s (bound 30 s), watch connected, 0 reconnect(s), 1 full
    read(s)` for an etcd store's status entry."""
    lag = store.get("lag_seconds")
    lag_text = "never confirmed" if lag is None else f"lag {number(lag, '.1f')} s"
    watch = "watch connected" if store.get("connected") else "watch DISCONNECTED"
    return (f"etcd revision {number(store.get('revision'), 'd')}, {lag_text} (bound "
            f"{number(store.get('staleness_seconds'), 'g')} s), {watch}, "
            f"{number(store.get('reconnects'), 'd')} reconnect(s), "
            f"{number(store.get('full_reads'), 'd')} full read(s)")


def etcd_short(store: dict[str, Any]) -> str:
    """`rev 42, lag 0.3 s, watch ok` (or `watch DOWN`): an etcd store's sync state in a
    table cell; empty for a directory store."""
    if store.get("backend") != "etcd":
        return ""
    lag = store.get("lag_seconds")
    lag_text = "lag never confirmed" if lag is None else f"lag {number(lag, '.1f')} s"
    watch = "watch ok" if store.get("connected") else "watch DOWN"
    return f"rev {number(store.get('revision'), 'd')}, {lag_text}, {watch}"
