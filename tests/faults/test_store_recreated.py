"""The store directory deleted and re-created while `curvecert serve-auth` runs.

A real `serve-auth` process answers ZAP requests on an ipc endpoint; this test sends them
with a plain REQ socket (what a `ZapForwarder` relays). While the directory is gone a
formerly trusted key is refused (fail closed, logged); once the directory is back with
the key, it is admitted again; a directory swapped in by rename is followed too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from curvecert import store
from curvecert.certs.cert import Certificate
from tests.faults.support import wait_outcome
from tests.serveproc import ServeAuth, zap_asker

pytestmark = pytest.mark.slow


def test_store_deleted_and_recreated(tmp_path: Path, ctx: zmq.Context[Any],
                                     cli_env: Callable[..., dict[str, str]]) -> None:
    sd = tmp_path / "clients"
    alice, bob = Certificate.new(name="alice"), Certificate.new(name="bob")
    store.add_certificate(sd, alice)
    args = ["--store", str(sd), "--zap-endpoint", f"ipc://{tmp_path}/run/zap.sock",
            "--log-format", "json", "--log-stream", "stdout"]
    with ServeAuth(args, cli_env(None)) as daemon:
        ask = zap_asker(ctx, daemon)
        assert ask(alice) == 200
        assert ask(bob) == 400

        # deleted: the formerly trusted key is refused, and the daemon says why
        shutil.rmtree(sd)
        wait_outcome(lambda: ask(alice), 400)
        daemon.wait_stderr("cannot read the store directory")

        # re-created empty: still nothing trusted; the new directory is watched
        sd.mkdir()
        store.add_certificate(sd, bob)
        wait_outcome(lambda: ask(bob), 200)
        assert ask(alice) == 400
        daemon.wait_stderr("is readable again")

        # the key added back: admitted again
        store.add_certificate(sd, alice)
        wait_outcome(lambda: ask(alice), 200)

        # replaced by a rename (a deployment swapping in a new directory)
        fresh = tmp_path / "clients.new"
        store.add_certificate(fresh, bob)
        os.rename(sd, tmp_path / "clients.old")
        os.rename(fresh, sd)
        wait_outcome(lambda: ask(alice), 400)
        assert ask(bob) == 200
        assert daemon.proc.poll() is None
