"""`import curvecert.compat.install` switches `import zmq.auth` code to curvecert (issue 13;
docs/migrating-from-zmq-auth.md). Each case runs in a fresh interpreter, since it changes
`sys.modules` for the whole process, and makes real CURVE handshakes over loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

#: Unchanged `import zmq.auth` application code: Ironhouse with pyzmq's call shapes.
APP = r"""
import os, sys, tempfile
import zmq
{prelude}
import zmq.auth
import zmq.auth.thread
import curvecert.compat.thread

assert zmq.auth.thread.ThreadAuthenticator is curvecert.compat.thread.ThreadAuthenticator
{extra}
tmp = tempfile.mkdtemp()
keys, public = os.path.join(tmp, "keys"), os.path.join(tmp, "public")
os.mkdir(keys); os.mkdir(public)
server_pub, server_sec = zmq.auth.create_certificates(keys, "server")
client_pub, client_sec = zmq.auth.create_certificates(keys, "client")
os.rename(client_pub, os.path.join(public, "client.key"))
ctx = zmq.Context()
auth = zmq.auth.thread.ThreadAuthenticator(ctx)
auth.start()
auth.configure_curve(domain="*", location=public)
server = ctx.socket(zmq.PULL)
server.curve_publickey, server.curve_secretkey = zmq.auth.load_certificate(server_sec)
server.curve_server = True
port = server.bind_to_random_port("tcp://127.0.0.1")
client = ctx.socket(zmq.PUSH)
client.curve_publickey, client.curve_secretkey = zmq.auth.load_certificate(client_sec)
client.curve_serverkey = zmq.auth.load_certificate(server_sec)[0]
client.connect("tcp://127.0.0.1:%d" % port)
client.send(b"hello")
assert server.poll(10000), "not admitted"
frame = server.recv(copy=False)
assert frame.get("User-Id"), "no User-Id"
for s in (client, server):
    s.close(linger=0)
auth.stop()
ctx.term()
print("OK", type(auth).__module__)
"""


def _run(prelude: str, extra: str = "") -> str:
    proc = subprocess.run([sys.executable, "-c", APP.format(prelude=prelude, extra=extra)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_install_first() -> None:
    assert _run("import curvecert.compat.install").strip() == "OK curvecert.compat.thread"


def test_install_after_zmq_auth_was_imported() -> None:
    """pyzmq's modules, imported and held by others, now hand out curvecert's names."""
    out = _run("import zmq.auth.thread as held_earlier\nimport curvecert.compat.install",
               "assert held_earlier.ThreadAuthenticator is "
               "curvecert.compat.thread.ThreadAuthenticator")
    assert out.strip() == "OK curvecert.compat.thread"


@pytest.mark.parametrize("module", ["zmq.auth.asyncio", "zmq.auth.base", "zmq.auth.certs"])
def test_every_mirrored_module_is_installed(module: str, tmp_path: Path) -> None:
    code = (f"import curvecert.compat.install, importlib\n"
            f"m = importlib.import_module({module!r})\n"
            f"assert m.__name__.startswith('curvecert.compat'), m.__name__\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
