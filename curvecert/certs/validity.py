"""Validity periods of certificates: `not-before` / `not-after` metadata, times, durations.

CZMQ's certificate format has no validity period, so curvecert keeps one in two ordinary
metadata items, which every ZPL reader (CZMQ's `zcert_load`, pyzmq's `load_certificate`,
jeromq) reads back like any other metadata:

    metadata
        not-before = "2026-11-29T12:00:00Z"
        not-after = "2027-02-27T12:00:00Z"

Both names use only ZPL name characters and are legal ZMTP property names, so a ZAP 200
reply carries them to the application unchanged. The values are ISO-8601 times in UTC,
written `YYYY-MM-DDTHH:MM:SSZ` (whole seconds). A certificate is valid from `not-before`
(inclusive) up to `not-after` (exclusive): at the `not-after` instant it has expired.
Either item may be absent; a certificate with neither is valid for ever (as before).

Reading is lenient about the spelling (`+00:00` or another offset instead of `Z`, a
fraction of a second, a bare date meaning midnight UTC) and strict about meaning: a time
without a zone is refused, as it names a different instant on every machine. A value that
does not parse makes the certificate invalid (`Validity.problem`), never valid for ever:
the authenticator refuses it (fail closed) and `verify` reports it.

Durations (`--expires 90d`, `--warn-within 14d`) are one or more `NUMBERunit` groups with
units `w d h m s` (`90d`, `12h`, `1d12h`, `45s`); a bare number is seconds.

Pure functions over the standard library; `from_zmtp` is on the ZAP hot path and caches.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from curvecert.errors import CertificateError
from curvecert.formats import zmtp
from curvecert.formats.sanitize import escape

__all__ = [
    "NOT_AFTER",
    "NOT_BEFORE",
    "Validity",
    "describe",
    "format_time",
    "from_meta",
    "from_zmtp",
    "parse_duration",
    "parse_time",
    "to_json",
    "window",
    "with_validity",
]

#: Metadata names (ZPL and ZMTP legal; see the module docstring).
NOT_BEFORE = "not-before"
NOT_AFTER = "not-after"

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(Z|z|[+-]\d{2}:?\d{2})?)?\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
# Years beyond this are refused: they overflow time.gmtime on some platforms.
_MAX_YEAR = 9999


def parse_time(text: str, *, what: str = "time") -> float:
    """Seconds since the epoch (UTC) for an ISO-8601 time such as `2027-03-01T00:00:00Z`.

    Accepts `Z` or a `±HH:MM` offset, an optional fraction of a second, and a bare date
    (midnight UTC). Raises `CertificateError` (`what` names the field) for anything else,
    including a time of day without a zone.
    """
    m = _TIME.match(text.strip())
    if m is None:
        raise CertificateError(f"{what}: {_shown(text)} is not an ISO-8601 time "
                               "(e.g. 2027-03-01T00:00:00Z)")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    if hour is not None and zone is None:
        raise CertificateError(f"{what}: {_shown(text)} has no time zone; write it in UTC "
                               "with a trailing Z")
    try:
        fields = (int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                  int(second or 0))
        if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] <= 23
                and fields[4] <= 59 and fields[5] <= 60 and 1970 <= fields[0] <= _MAX_YEAR):
            raise ValueError
        if fields[2] > calendar.monthrange(fields[0], fields[1])[1]:
            raise ValueError
    except ValueError:
        raise CertificateError(f"{what}: {_shown(text)} is not a valid date and time "
                               "(years 1970-9999)") from None
    seconds = float(calendar.timegm((*fields, 0, 0, 0)))
    if frac:
        seconds += int(frac) / 10 ** len(frac)
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise CertificateError(f"{what}: {_shown(text)} has an invalid zone offset")
        seconds -= sign * (hours * 3600 + minutes * 60)
    return seconds


def format_time(seconds: float) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (fractions are dropped)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(seconds)))


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in a duration such as `90d`, `12h`, `1d12h`, `30m`, `45s` or `3600`.

    Units: w (weeks), d (days), h, m, s. Raises `CertificateError` for anything else.
    """
    s = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise CertificateError(f"{what}: {_shown(text)} is not a duration (e.g. 90d, 12h, "
                               "1d12h, 30m, 45s)")
    return total


def _shown(text: str) -> str:
    """A user's value for an error message: bounded, without control characters."""
    return repr(escape(text, limit=40))


class Validity(NamedTuple):
    """A validity period: `not_before` / `not_after` in seconds since the epoch, or None.

    `problem` is set when a date is present but unreadable: such a certificate is never
    valid (fail closed).
    """

    not_before: float | None = None
    not_after: float | None = None
    problem: str | None = None

    def refusal(self, now: float) -> str | None:
        """Why a certificate with this period is not valid at `now`, or None if it is.

        The reasons are the authenticator's 400 texts: `certificate expired at T`,
        `certificate not valid before T`, `certificate validity unreadable: ...`.
        """
        if self.problem is not None:
            return f"certificate validity unreadable: {self.problem}"
        if self.not_after is not None and now >= self.not_after:
            return f"certificate expired at {format_time(self.not_after)}"
        if self.not_before is not None and now < self.not_before:
            return f"certificate not valid before {format_time(self.not_before)}"
        return None

    def remaining(self, now: float) -> float | None:
        """Seconds until `not_after` (negative once expired), or None without one."""
        return None if self.not_after is None else self.not_after - now

    def problems(self, now: float, warn_within: float
                 ) -> list[tuple[str, str, str]]:
        """`(severity, code, message)` for `verify` and `store check`: `validity-invalid`,
        `expired` and `not-yet-valid` (errors), `expires-soon` (a warning when fewer than
        `warn_within` seconds are left)."""
        if self.problem is not None:
            return [("error", "validity-invalid", f"validity dates are unusable: "
                     f"{self.problem}; the authenticator refuses this certificate")]
        if self.not_after is not None and now >= self.not_after:
            return [("error", "expired", f"expired at {format_time(self.not_after)} "
                     f"({_ago(now - self.not_after)} ago)")]
        out = []
        if self.not_before is not None and now < self.not_before:
            out.append(("error", "not-yet-valid", f"not valid before "
                        f"{format_time(self.not_before)} (in {_ago(self.not_before - now)})"))
        if self.not_after is not None and self.not_after - now < warn_within:
            out.append(("warning", "expires-soon", f"expires at "
                        f"{format_time(self.not_after)} (in {_ago(self.not_after - now)})"))
        return out

    def items(self) -> list[tuple[str, str]]:
        """The metadata items that record this period (canonical spelling)."""
        out = []
        if self.not_before is not None:
            out.append((NOT_BEFORE, format_time(self.not_before)))
        if self.not_after is not None:
            out.append((NOT_AFTER, format_time(self.not_after)))
        return out


def _ago(seconds: float) -> str:
    """A rough human duration: `3d 4h`, `5h 2m`, `40s`."""
    s = int(max(seconds, 0))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def describe(period: Validity, now: float) -> str:
    """One line for people: `until T (in 89d 23h)`, `EXPIRED at T (2d 1h ago)`, ..."""
    if period.problem is not None:
        return f"INVALID ({period.problem})"
    parts = []
    if period.not_before is not None:
        parts.append(f"from {format_time(period.not_before)}")
    if period.not_after is not None:
        parts.append(f"until {format_time(period.not_after)}")
    text = " ".join(parts)
    if period.not_after is not None and now >= period.not_after:
        return f"EXPIRED at {format_time(period.not_after)} ({_ago(now - period.not_after)} ago)"
    if period.not_before is not None and now < period.not_before:
        return f"{text} (NOT YET VALID: starts in {_ago(period.not_before - now)})"
    if period.not_after is not None:
        return f"{text} (in {_ago(period.not_after - now)})"
    return text


def from_meta(meta: Mapping[str, str] | Iterable[tuple[str, str]]) -> Validity | None:
    """The validity period in certificate metadata, or None when it has no dates.

    The first of duplicate names wins (as in CZMQ). Never raises: an unreadable value
    becomes `Validity.problem`.
    """
    items = meta.items() if isinstance(meta, Mapping) else meta
    found: dict[str, str] = {}
    for name, value in items:
        if name in (NOT_BEFORE, NOT_AFTER):
            found.setdefault(name, value)
    if not found:
        return None
    try:
        nb = parse_time(found[NOT_BEFORE], what=NOT_BEFORE) if NOT_BEFORE in found else None
        na = parse_time(found[NOT_AFTER], what=NOT_AFTER) if NOT_AFTER in found else None
    except CertificateError as exc:
        return Validity(problem=str(exc))
    if nb is not None and na is not None and na <= nb:
        return Validity(nb, na, problem=f"{NOT_AFTER} is not later than {NOT_BEFORE}")
    return Validity(nb, na)


# Metadata blobs seen by the authenticator -> their period (None: no dates). The same
# stores answer with the same blobs, so parsing happens once per certificate.
_BLOBS: dict[bytes, Validity | None] = {}
# Bounded: at ~200 bytes a blob, 16384 entries are ~4 MB. A store with more dated
# certificates than this parses some blobs again (a few microseconds each).
_BLOB_CACHE = 16384


def from_zmtp(blob: bytes) -> Validity | None:
    """The validity period in a ZMTP metadata blob (what a key lookup returns), or None.

    The ZAP hot path: a blob without `not-` in it costs one substring search. A blob that
    does not decode counts as having no dates (the caller checks blobs separately).
    """
    if blob.find(b"not-") < 0:  # (`in` on bytes costs an exception inside CPython)
        return None
    try:
        return _BLOBS[blob]
    except KeyError:
        pass
    try:
        items = [(n, v.decode("utf-8", "replace")) for n, v in zmtp.decode(blob)]
    except ValueError:
        items = []
    result = from_meta(items)
    if len(_BLOBS) >= _BLOB_CACHE:
        _BLOBS.clear()
    _BLOBS[blob] = result
    return result


_ALWAYS = (-math.inf, math.inf)
_NEVER = (math.inf, -math.inf)
_WINDOWS: dict[bytes, tuple[float, float]] = {}


def window(blob: bytes) -> tuple[float, float]:
    """`(start, end)` of a ZMTP metadata blob's period: valid iff `start <= now < end`.

    The ZAP hot path's form of `from_zmtp`: no dates is `(-inf, inf)`, an unreadable
    period `(inf, -inf)` (never valid; `from_zmtp(blob).refusal(now)` says why). Cached.
    """
    try:
        return _WINDOWS[blob]
    except KeyError:
        pass
    period = from_zmtp(blob)
    if period is None:
        result = _ALWAYS
    elif period.problem is not None:
        result = _NEVER
    else:
        result = (-math.inf if period.not_before is None else period.not_before,
                  math.inf if period.not_after is None else period.not_after)
    if len(_WINDOWS) >= _BLOB_CACHE:
        _WINDOWS.clear()
    _WINDOWS[blob] = result
    return result


def with_validity(meta: Iterable[tuple[str, str]], *, not_before: float | None = None,
                  not_after: float | None = None) -> list[tuple[str, str]]:
    """`meta` with its validity items replaced by the given times (None keeps no item).

    Raises `CertificateError` when `not_after` is not later than `not_before`.
    """
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise CertificateError(f"{NOT_AFTER} ({format_time(not_after)}) must be later than "
                               f"{NOT_BEFORE} ({format_time(not_before)})")
    kept = [(n, v) for n, v in meta if n not in (NOT_BEFORE, NOT_AFTER)]
    return kept + Validity(not_before, not_after).items()


def to_json(validity: Validity | None) -> dict[str, object]:
    """`{"not_before": ..., "not_after": ...}` (ISO-8601 `...Z` or null), as the JSON rules
    name them; a `validity_problem` key is added when a date is unreadable."""
    if validity is None:
        return {"not_before": None, "not_after": None}
    out: dict[str, object] = {
        "not_before": None if validity.not_before is None else format_time(validity.not_before),
        "not_after": None if validity.not_after is None else format_time(validity.not_after),
    }
    if validity.problem is not None:
        out["validity_problem"] = validity.problem
    return out
