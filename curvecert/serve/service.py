"""`ZapService`: the daemon's listening ROUTER, with the ipc socket file's permissions.

The daemon is a *terminal* RFC 27 handler behind proxies: it answers plain REQ clients
and DEALER/ROUTER proxies alike by splitting each message at its empty delimiter frame
and returning the envelope unchanged. Its endpoint is either

- `ipc://PATH`: the socket file is bound under a temporary name, set to 0600 (0660 with
  `ipc_group`) and then renamed into place, so it is never reachable with looser
  permissions; it is removed on a clean stop; or
- `tcp://HOST:PORT`: a CURVE server with the daemon's own certificate, whose handshakes are
  checked by a curvecert `Authenticator` on the daemon's context that admits only the
  forwarder keys in `[server] forwarders`.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import zmq

from curvecert.auth.wire import send_frames
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats import zap
from curvecert.serve.config import BACKLOG
from curvecert.serve.runtime import check_directory, check_socket, publish_key, remove_key

__all__ = ["FORWARDER_DOMAIN", "ZapService", "ipc_path", "prepare_directory"]

#: ZAP domain of the daemon's own tcp:// socket (only forwarder keys are admitted there).
FORWARDER_DOMAIN = "curvecert-forwarders"
# Forwarders pipeline many requests per connection; libzmq's per-pipe default of 1000 is
# far below a burst of handshakes across a few busy applications.
_HWM = 100_000
_NOBLOCK = int(zmq.NOBLOCK)


def ipc_path(endpoint: str) -> str | None:
    """The socket file of an `ipc://` endpoint, else None."""
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


class ZapService:
    """The daemon's ROUTER on `endpoint`: bind (with permissions), answer, unbind.

    `respond(body) -> reply frames` is called for each request body (the frames after the
    envelope); it must never raise. Only the owning thread may call `bind`, `serve_ready`
    and `close`.
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, *,
                 ipc_group: str | None = None, server_cert: Certificate | None = None):
        """Prepare; nothing is bound until `bind()`."""
        self.context = context
        self.endpoint = endpoint
        self.ipc_group = ipc_group
        self.server_cert = server_cert
        self.socket: zmq.Socket[Any] | None = None
        self._ipc_inode: tuple[int, int] | None = None
        self.bound: str | None = None
        """The endpoint actually bound (a `tcp://...:*` port resolved), after `bind()`."""
        self.requests = 0
        self.dropped = 0

    def bind(self) -> None:
        """Bind the ROUTER; raises `OperationalError` (exit 3) when that is impossible."""
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.BACKLOG, BACKLOG)
        sock.sndhwm = _HWM
        sock.rcvhwm = _HWM
        if self.server_cert is not None:
            self.server_cert.apply_server(sock)
            if ipc_path(self.endpoint) is None:  # tcp: forwarders are admitted by key
                sock.zap_domain = FORWARDER_DOMAIN.encode()
        try:
            path = ipc_path(self.endpoint)
            if path is not None:
                self._bind_ipc(sock, path)
                self.bound = "ipc://" + os.path.abspath(path)
            else:
                try:
                    sock.bind(self.endpoint)
                except zmq.ZMQError as exc:
                    raise OperationalError(f"cannot bind {self.endpoint}: {exc}") from exc
                self.bound = sock.last_endpoint.decode()
        except BaseException:
            sock.close(linger=0)
            raise
        self.socket = sock

    def _bind_ipc(self, sock: zmq.Socket[Any], path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        gid = _group_id(self.ipc_group) if self.ipc_group else None
        mode = 0o660 if gid is not None else 0o600
        prepare_directory(directory, gid)
        check_socket(path, {os.geteuid()})  # a socket of another user: refuse, never replace
        if _socket_in_use(path):
            raise OperationalError(f"{path}: another process is serving this socket "
                                   "(is serve-auth already running?)")
        # A short temporary name: unix socket paths are limited to 107 bytes.
        tmp = os.path.join(directory, f".cc{os.getpid()}")
        try:
            sock.bind("ipc://" + tmp)
        except zmq.ZMQError as exc:
            raise OperationalError(f"cannot bind {self.endpoint}: {exc}") from exc
        try:
            # Tighten first, publish second: the file is never reachable at `path` with
            # the umask's permissions.
            os.chmod(tmp, mode)
            if gid is not None:
                os.chown(tmp, -1, gid)
            os.replace(tmp, path)
            st = os.stat(path)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise OperationalError(f"{path}: cannot set up the socket file: "
                                   f"{exc.strerror}") from exc
        self._ipc_inode = (st.st_dev, st.st_ino)
        if self.server_cert is not None:  # the forwarder pins this key (serve.runtime)
            publish_key(path, self.server_cert.public_key, gid=gid)

    def serve_ready(self, respond: Callable[[list[bytes]], list[bytes]]) -> int:
        """Answer every request waiting on the socket without blocking; return how many."""
        return self.serve_routed(lambda _envelope, body: respond(body))

    def serve_routed(self, respond: Callable[[list[bytes], list[bytes]], list[bytes] | None]
                     ) -> int:
        """`serve_ready` for a `respond(envelope, body)` that may return None: it answers
        later through `send(envelope, reply)` (a PLAIN check or a provider call)."""
        assert self.socket is not None
        n = 0
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            parts = zap.split_envelope(frames)
            if parts is None:  # nobody to route a reply to
                self.dropped += 1
                continue
            envelope, body = parts
            reply = respond(envelope, body)
            if reply is not None:
                self.send(envelope, reply)
            n += 1
            self.requests += 1

    def send(self, envelope: list[bytes], reply: list[bytes]) -> None:
        """Send one reply; a peer that went away is counted in `dropped`, not raised."""
        if self.socket is None:
            return
        try:
            send_frames(self.socket, [*envelope, *reply], _NOBLOCK)
        except zmq.ZMQError:  # the forwarder went away; it answers 500 itself
            self.dropped += 1

    def close(self) -> None:
        """Close the socket and remove the ipc socket file if it is still ours."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None
        path = ipc_path(self.endpoint)
        if path is not None and self._ipc_inode is not None:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == self._ipc_inode and stat.S_ISSOCK(st.st_mode):
                    os.unlink(path)
            except OSError:
                pass
            self._ipc_inode = None
            if self.server_cert is not None:
                remove_key(path, self.server_cert.public_key)


def prepare_directory(directory: str, gid: int | None) -> None:
    """Create the socket directory (0700, or 0750 `root:GROUP`-style with `gid`) or check
    the one that exists: ours, not writable by group/others, and with `gid` that group
    with search access. Raises `OperationalError` (exit 3) saying what to fix.
    """
    want = 0o750 if gid is not None else 0o700
    try:
        os.mkdir(directory, want)
        created = True
    except FileExistsError:
        created = False
    except FileNotFoundError:
        try:
            os.makedirs(os.path.dirname(directory), 0o755, exist_ok=True)
            os.mkdir(directory, want)
            created = True
        except OSError as exc:
            raise OperationalError(f"{directory}: cannot create the socket directory: "
                                   f"{exc.strerror}") from exc
    except OSError as exc:
        raise OperationalError(f"{directory}: cannot create the socket directory: "
                               f"{exc.strerror}") from exc
    if created:
        try:
            os.chmod(directory, want)  # whatever the umask
            if gid is not None:
                os.chown(directory, -1, gid)
        except OSError as exc:
            raise OperationalError(f"{directory}: cannot give the socket directory to the "
                                   f"ipc group: {exc.strerror}") from exc
    check_directory(directory, {os.geteuid()})
    if gid is not None:
        st = os.stat(directory)
        if st.st_gid != gid or not st.st_mode & stat.S_IXGRP:
            raise OperationalError(
                f"{directory}: the ipc group cannot reach the socket (directory group "
                f"{st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}); run: chgrp {gid} "
                f"{directory} && chmod 0750 {directory}")


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ConfigError(f"ipc group {name!r} does not exist") from None


def _socket_in_use(path: str) -> bool:
    """True when something accepts connections on the unix socket file `path`."""
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False  # a stale file left by a crash: libzmq replaces it
    finally:
        probe.close()
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
