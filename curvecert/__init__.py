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
    from curvecert.aio import AsyncioAuthenticator as AsyncioAuthenticator
    from curvecert.authenticator import Authenticator as Authenticator
    from curvecert.cert import Certificate as Certificate
    from curvecert.errors import CurvecertError as CurvecertError
    from curvecert.forwarder import ZapForwarder as ZapForwarder
    from curvecert.passwords import PasswordFile as PasswordFile
    from curvecert.policy import DomainPolicy as DomainPolicy
    from curvecert.policy import Policy as Policy
    from curvecert.policy import UnsafeAllowAny as UnsafeAllowAny
    from curvecert.watch import CertStore as CertStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curvecert' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
