"""curvecert: CURVE certificates, stores and ZAP authentication for ZeroMQ.

The public names below are imported lazily, so `import curvecert` (and so the CLI's
start-up) costs almost nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Certificate": "curvecert.cert",
    "CurvecertError": "curvecert.errors",
    "CertStore": "curvecert.watch",
    "Authenticator": "curvecert.authenticator",
    "AsyncioAuthenticator": "curvecert.aio",
    "ZapForwarder": "curvecert.forwarder",
    "PasswordFile": "curvecert.passwords",
    "Policy": "curvecert.policy",
    "DomainPolicy": "curvecert.policy",
    "UnsafeAllowAny": "curvecert.policy",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from curvecert.cert import Certificate
    from curvecert.errors import CurvecertError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curvecert' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
