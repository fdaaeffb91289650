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
    "Certificate": "curvecert.certs.cert",
    "CurvecertError": "curvecert.errors",
    "CertStore": "curvecert.store.watch",
    "Authenticator": "curvecert.auth.authenticator",
    "AsyncioAuthenticator": "curvecert.auth.aio",
    "ZapForwarder": "curvecert.serve.forwarder",
    "PasswordFile": "curvecert.auth.passwords",
    "Policy": "curvecert.auth.policy",
    "DomainPolicy": "curvecert.auth.policy",
    "UnsafeAllowAny": "curvecert.auth.policy",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from curvecert.auth.aio import AsyncioAuthenticator as AsyncioAuthenticator
    from curvecert.auth.authenticator import Authenticator as Authenticator
    from curvecert.auth.keylookup import UnsafeAllowAny as UnsafeAllowAny
    from curvecert.auth.passwords import PasswordFile as PasswordFile
    from curvecert.auth.policy import DomainPolicy as DomainPolicy
    from curvecert.auth.policy import Policy as Policy
    from curvecert.certs.cert import Certificate as Certificate
    from curvecert.errors import CurvecertError as CurvecertError
    from curvecert.serve.forwarder import ZapForwarder as ZapForwarder
    from curvecert.store.watch import CertStore as CertStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curvecert' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
