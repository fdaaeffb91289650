"""The one exception family every curvecert module raises.

Library code raises these with messages a person can act on; only `curvecert.cli` turns
them into text and exit codes (the exceptions know nothing about exit codes). Chain the
cause with `raise ... from exc` so `-v` can show where it came from.
"""

from __future__ import annotations

import os

__all__ = [
    "AmbiguousMatch",
    "CertificateError",
    "ConfigError",
    "CurvecertError",
    "FileExists",
    "InvalidKey",
    "OperationalError",
    "PasswordFileError",
    "StoreError",
    "ZapError",
    "ZplError",
    "ZplSyntaxError",
]


class CurvecertError(Exception):
    """Base class of every error curvecert raises on purpose."""


class InvalidKey(CurvecertError, ValueError):
    """A key or Z85 text is malformed: wrong length, a bad character, or overflow."""


class ZplError(CurvecertError, ValueError):
    """A document cannot be represented in ZPL (RFC 4): raised by the writer."""


class ZplSyntaxError(CurvecertError, ValueError):
    """A ZPL text does not parse; carries the file (if any) and the 1-based line number."""

    def __init__(self, reason: str, *, line: int, path: str | os.PathLike[str] | None = None):
        self.reason = reason
        self.line = line
        self.path = os.fspath(path) if path is not None else None
        where = f"{self.path}:{line}" if self.path else f"line {line}"
        super().__init__(f"{where}: {reason}")


class CertificateError(CurvecertError, ValueError):
    """A certificate is invalid: missing or bad keys, keys that do not match, bad metadata."""

    def __init__(self, reason: str, *, path: str | os.PathLike[str] | None = None,
                 line: int | None = None):
        self.reason = reason
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        where = ""
        if self.path:
            where = f"{self.path}:{line}: " if line else f"{self.path}: "
        super().__init__(f"{where}{reason}")


class FileExists(CurvecertError):
    """A write would replace an existing file and the caller did not allow it (`--force`)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: already exists (use --force to replace it)")


class OperationalError(CurvecertError):
    """The operation could not be carried out: I/O, permissions, bind failures, libzmq."""


class StoreError(CurvecertError):
    """The certificate store cannot be read or changed as asked."""


class AmbiguousMatch(CurvecertError):
    """A selector matched more than one item; nothing was changed."""

    def __init__(self, selector: str, candidates: list[str]):
        self.selector = selector
        self.candidates = candidates
        listing = "; ".join(candidates)
        super().__init__(f"{selector!r} matches {len(candidates)} certificates; "
                         f"nothing was removed. Be more specific: {listing}")


class PasswordFileError(CurvecertError, ValueError):
    """A password file is malformed, or an entry cannot be added."""


class ConfigError(CurvecertError, ValueError):
    """A configuration (TOML file or options) is invalid."""


class ZapError(CurvecertError, ValueError):
    """A ZAP (RFC 27) message is malformed."""
