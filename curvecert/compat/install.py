"""`import curvecert.compat.install`: pyzmq's `zmq.auth` names now mean `curvecert.compat`,
for the whole process.

Why: code written as `import zmq.auth` and `zmq.auth.thread.ThreadAuthenticator(ctx)` (or a
library that does so) cannot switch by changing one import line. Importing this module,
once and early (before the application creates its authenticators):

- puts `curvecert.compat` and its submodules in `sys.modules` under `zmq.auth`,
  `zmq.auth.base`, `zmq.auth.certs`, `zmq.auth.thread` and `zmq.auth.asyncio`, and sets
  `zmq.auth`, so every later `import zmq.auth...` / `from zmq.auth... import` gets
  curvecert's classes;
- replaces, in pyzmq's own modules if they were imported already, every public name
  `curvecert.compat` mirrors, so `zmq.auth.thread.ThreadAuthenticator` looked up through a
  module object taken earlier is curvecert's too.

What it cannot change: a name a module copied before (`from zmq.auth.thread import
ThreadAuthenticator` executed earlier keeps pyzmq's class in that module). Import this
first. It is explicit on purpose: nothing in curvecert does it implicitly.
"""

from __future__ import annotations

import sys
from types import ModuleType

import zmq

import curvecert.compat as _package
from curvecert.compat import asyncio as _asyncio
from curvecert.compat import base as _base
from curvecert.compat import certs as _certs
from curvecert.compat import thread as _thread

__all__ = ["MODULES", "install"]

#: pyzmq module name -> the curvecert module that stands in for it.
MODULES: dict[str, ModuleType] = {
    "zmq.auth": _package,
    "zmq.auth.base": _base,
    "zmq.auth.certs": _certs,
    "zmq.auth.thread": _thread,
    "zmq.auth.asyncio": _asyncio,
}


def install() -> None:
    """Install `curvecert.compat` under the `zmq.auth` names (idempotent)."""
    for name, new in MODULES.items():
        old = sys.modules.get(name)
        if old is not None and old is not new:  # pyzmq's module, imported already
            for attr in getattr(new, "__all__", ()):
                setattr(old, attr, getattr(new, attr))
    sys.modules.update(MODULES)
    zmq.auth = _package  # type: ignore[attr-defined]


install()
