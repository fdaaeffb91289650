"""The client's check of a control reply's shape (`curvecert.serve.control.ControlClient`).

Why: the CLI walks and counts what the daemon sends; a forged or broken reply must end in a
one-line error (exit 3), not a traceback or a misleading view. Only the shape is judged
(containers, integer counts); strings are escaped when printed (`curvecert.cli.replytext`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["reply_problem"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_of_dicts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _status_problem(r: Mapping[str, Any]) -> str | None:
    for name in ("pid", "generation"):
        if name in r and not _is_int(r[name]):
            return f"status: {name} is not an integer"
    if "uptime" in r and not _is_num(r["uptime"]):
        return "status: uptime is not a number"
    for name in ("problems", "findings"):
        if name in r and not isinstance(r[name], list):
            return f"status: {name} is not a list"
    if "domains" in r:
        if not _list_of_dicts(r["domains"]):
            return "status: domains is not a list of objects"
        for dom in r["domains"]:
            if not isinstance(dom.get("mechanisms", []), list):
                return "status: a domain's mechanisms is not a list"
            if not _list_of_dicts(dom.get("stores", [])):
                return "status: a domain's stores is not a list of objects"
            for store in dom.get("stores", []):
                for name in ("certificates", "finding_count"):
                    if name in store and not _is_int(store[name]):
                        return f"status: a store's {name} is not an integer"
    counts = r.get("decisions", {})
    if not isinstance(counts, dict) or not all(
            isinstance(by, dict) and all(_is_int(n) for n in by.values())
            for by in counts.values()):
        return "status: decisions is not {mechanism: {status: count}}"
    forwarders = r.get("forwarders", {})
    if not isinstance(forwarders, dict) or not all(
            _is_int(forwarders[k]) for k in ("connected", "seen", "refused") if k in forwarders):
        return "status: forwarders is not {connected, seen, refused: count}"
    return None


def reply_problem(command: str, result: Mapping[str, Any]) -> str | None:
    """What is wrong with the shape of a `result` for `command` (one line), or None.

    The client refuses a malformed reply instead of printing it: containers must be what
    the CLI walks and counts must be integers (`bool` is not). Strings are not judged
    here; every printed value is escaped (`curvecert.formats.sanitize`) anyway.
    """
    if command == "status":
        return _status_problem(result)
    if command in ("trusted", "decisions"):
        if not _list_of_dicts(result.get("items", [])):
            return f"{command}: items is not a list of objects"
    if command == "decisions":
        if "cursor" in result and not _is_int(result["cursor"]):
            return "decisions: cursor is not an integer"
        for item in result.get("items", []):
            for name in ("seq", "status"):
                if name in item and not _is_int(item[name]):
                    return f"decisions: {name} is not an integer"
    return None
