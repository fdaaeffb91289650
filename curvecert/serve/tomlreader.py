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

__all__ = ["LIMITS", "MAX_ITEMS", "MAX_TEXT", "TableReader"]

#: Documented ranges of the numeric options (docs/serve-auth.md, "Configuration file"):
#: name -> (lowest, highest), both inclusive. Anything else (inf, nan, negative, huge)
#: is refused with the file and the key.
LIMITS: dict[str, tuple[float, float]] = {
    "stats-interval": (0.0, 86_400.0),  # seconds; 0 = off; at most a day
}
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
        """A finite number within `LIMITS[key]`."""
        value: float = self.get(key, float, default)
        low, high = LIMITS[key]
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{self._key(key)}: {value!r} is out of range; expected a "
                              f"number from {low:g} to {high:g}")
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
