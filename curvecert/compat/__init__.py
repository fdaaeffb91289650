"""pyzmq's `zmq.auth`, name for name, on top of curvecert: switch by changing imports.

Why: most Python ZeroMQ applications that use CURVE are written against `zmq.auth`
(`ThreadAuthenticator`/`AsyncioAuthenticator`, `allow`, `deny`, `configure_plain`,
`configure_curve`, `configure_curve_callback`, `create_certificates`,
`load_certificate(s)`). This package mirrors its module layout and call shapes:

    from zmq.auth import CURVE_ALLOW_ANY           ->  from curvecert.compat import ...
    from zmq.auth.thread import ThreadAuthenticator  ->  from curvecert.compat.thread import ...
    from zmq.auth.asyncio import AsyncioAuthenticator
                                   ->  from curvecert.compat.asyncio import AsyncioAuthenticator

What changes underneath is curvecert's behaviour wherever pyzmq's is unsafe or surprising
(a `'*'` domain that matches every domain, allow-any per domain, watched key directories,
owner-only secret files, metadata in both certificate files, no passwords in logs, 500
instead of a dead thread when a callback raises, deadlines on callbacks...).
docs/migrating-from-zmq-auth.md lists every difference.
"""

from __future__ import annotations

from curvecert.compat.base import CURVE_ALLOW_ANY, VERSION, Authenticator
from curvecert.compat.certs import create_certificates, load_certificate, load_certificates

__all__ = ["CURVE_ALLOW_ANY", "VERSION", "Authenticator", "create_certificates",
           "load_certificate", "load_certificates"]
