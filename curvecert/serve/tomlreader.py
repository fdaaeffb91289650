"""Strict, typed reading of TOML tables: every key known, every value checked, errors located.

`curvecert.serve.config` reads the `serve-auth` file through `TableReader`: a wrong type,
an unknown key, a NUL or an overlong string, a list of thousands, a number that is not
finite or outside its documented range (`LIMITS`) raises `ConfigError` naming the key
(`domains.app.allow[2]: expected a string, got a table`). The caller adds the file name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from curvecert.errors import ConfigError

__all__ = ["LIMITS", "MAX_ITEMS", "MAX_TEXT", "OFF_AT_ZERO", "TableReader", "in_range",
           "range_text"]

#: Documented ranges of the numeric options (docs/serve-auth.md, "Configuration file"):
#: name -> (lowest, highest), both inclusive. Anything else (inf, nan, negative, huge)
#: is refused with the file and the key.
LIMITS: dict[str, tuple[float, float]] = {
    "stats-interval": (1.0, 86_400.0),  # seconds; at least 1 (else a log flood), a day
}
#: Numeric options that also take 0, meaning "off" (below their `LIMITS` range).
OFF_AT_ZERO = frozenset({"stats-interval"})


def in_range(key: str, value: float) -> bool:
    """True when `value` is finite and allowed for the numeric option `key`."""
    low, high = LIMITS[key]
    return math.isfinite(value) and (low <= value <= high
                                     or (value == 0 and key in OFF_AT_ZERO))


def range_text(key: str) -> str:
    """What `key` accepts, in words: `0 (off) or a number from 1 to 86400`."""
    low, high = LIMITS[key]
    off = "0 (off) or " if key in OFF_AT_ZERO else ""
    return f"{off}a number from {low:g} to {high:g}"
#: Longest text value accepted (a path, an endpoint, a group or domain name).
MAX_TEXT = 4096
#: Longest list (stores, allow, deny, mechanisms).
MAX_ITEMS = 10_000


class TableReader:
    """Typed access to one TOML table with strict key checking and located errors."""

    def __init__(self, table: Mapping[str, Any], where: str, base: Path | None):
        self.table = table
        self.where = where
        self.base = base
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ConfigError(f"{self._key(key)}: {value} is out of range") from None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{self._key(key)}: expected {_kind_name(kind)}, "
                              f"got {_kind_name(type(value))}")
        if isinstance(value, str):
            _check_text(value, self._key(key))
        elif isinstance(value, list) and len(value) > MAX_ITEMS:
            raise ConfigError(f"{self._key(key)}: more than {MAX_ITEMS} items")
        return value

    def number(self, key: str, default: float) -> float:
        """A finite number within `LIMITS[key]` (or 0 for a key in `OFF_AT_ZERO`)."""
        value: float = self.get(key, float, default)
        if not in_range(key, value):
            raise ConfigError(f"{self._key(key)}: {value!r} is out of range; expected "
                              f"{range_text(key)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings."""
        value = self.get(key, (str, list), [])
        items = [value] if isinstance(value, str) else value
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(f"{self._key(key)}[{i}]: expected a string, "
                                  f"got {_kind_name(type(item))}")
            _check_text(item, f"{self._key(key)}[{i}]")
        return tuple(items)

    def path(self, key: str) -> Path | None:
        value = self.get(key, str)
        return None if value is None else self.resolve(value)

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        if not p.is_absolute() and self.base is not None:
            p = self.base / p
        return p

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value: str = self.get(key, str, default)
        if value not in choices:
            raise ConfigError(f"{self._key(key)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def table_of(self, key: str) -> Mapping[str, Any] | None:
        return self.get(key, dict)  # type: ignore[no-any-return]

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key")


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise ConfigError(f"{where}: contains a NUL character")
    if len(value) > MAX_TEXT:
        raise ConfigError(f"{where}: longer than {MAX_TEXT} characters")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", list: "a list", dict: "a table", float: "a number",
             int: "an integer", bool: "true or false"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
