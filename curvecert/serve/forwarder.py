"""`ZapForwarder`: the small in-process piece that lets a separate daemon answer ZAP.

Why it exists: libzmq sends ZAP requests only to `inproc://zeromq.zap.01` in the server
socket's own context, so an authenticator in another process (`curvecert serve-auth`)
never sees them unless something inside the application relays them. That something
must be careful in two ways:

- **Bind first.** A CURVE server with no ZAP handler bound accepts every client. The
  forwarder binds the ZAP endpoint in `start()` (which returns only once it is bound),
  so start it *before* the application binds its server sockets.
- **Fail closed, and fast.** A handler that never answers stalls each handshake for
  libzmq's 30 s `ZMQ_HANDSHAKE_IVL`. When the daemon does not answer within `timeout`
  (0.5 s by default) the forwarder replies `500` itself ("authenticator unreachable"),
  so an outage denies promptly and never admits.

The relay itself (envelopes, sequence numbers, deadlines, link resets) is
`curvecert.serve.relay.Relay`; this module owns the lifecycle and the link's security.
While the daemon is away each handshake is denied after the deadline (a client told 500
stops retrying in libzmq 4.3 until the application reconnects it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from types import TracebackType
from typing import Any

import zmq

from curvecert.auth.endpoint import ZapLease, acquire
from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats.zap import ZAP_ENDPOINT
from curvecert.serve.relay import DEFAULT_TIMEOUT, UNREACHABLE_TEXT, ForwarderStats, Relay
from curvecert.serve.runtime import check_directory, check_socket, default_owners, read_key

__all__ = ["DEFAULT_TIMEOUT", "UNREACHABLE_TEXT", "ZAP_ENDPOINT", "ForwarderStats",
           "ZapForwarder"]

_logger = logging.getLogger(__name__)


def _check_endpoint(endpoint: str, server_key: bytes | None, cert: Certificate | None) -> None:
    scheme = endpoint.partition("://")[0]
    if scheme not in ("ipc", "tcp", "inproc"):
        raise ConfigError(f"ZAP forwarding endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")
    if scheme == "tcp" and (server_key is None) != (cert is None):
        raise ConfigError("a CURVE-secured forwarding link needs both the daemon's server key "
                          "and the forwarder's own secret certificate")
    if scheme == "tcp" and server_key is None:
        raise ConfigError(f"{endpoint}: a tcp:// link to the authenticator carries PLAIN "
                          "passwords and client keys; give server_key= and cert= (CURVE) "
                          "or use ipc://")
    if cert is not None and not cert.has_secret:
        raise ConfigError("the forwarder's certificate must include its secret key")


class ZapForwarder:
    """Relay this context's ZAP requests to a `curvecert serve-auth` daemon; deny on outage.

    `ZapForwarder(context, "ipc:///run/curvecert/zap.sock").start()` before the
    application binds its server sockets. For a `tcp://` daemon pass the daemon's public
    key as `server_key` and the forwarder's own secret certificate as `cert` (the daemon
    admits forwarders by key). `timeout` (seconds, default 0.5) is how long the daemon
    has to answer before the forwarder replies 500 itself. `stop()` (or leaving the
    `with` block) joins the thread and never blocks on the daemon; the ZAP endpoint stays
    bound and denies until the context terminates (close server sockets first).
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, *,
                 timeout: float = DEFAULT_TIMEOUT, server_key: bytes | str | None = None,
                 cert: Certificate | None = None, zap_endpoint: str = ZAP_ENDPOINT,
                 owners: Collection[int] | None = None):
        """Prepare a forwarder; nothing is bound until `start()`.

        On `ipc://` the link is CURVE as well: the daemon's key is `server_key` or, by
        default, the key the daemon publishes next to its socket (`PATH.pub`), and `cert`
        defaults to a key made for this forwarder. The socket's directory, the socket and
        the key file must be owned by one of `owners` (default: this user and root) and
        the directory not writable by group or others (`curvecert.serve.runtime`).
        """
        if not 0 < timeout <= 30:
            raise ConfigError(f"forwarder timeout must be in (0, 30] seconds, got {timeout}")
        key = keys.decode_key(server_key, what="daemon server key") if server_key else None
        _check_endpoint(endpoint, key, cert)
        self.context = context
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.zap_endpoint = zap_endpoint
        self._server_key = key
        self._ipc = endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None
        self._owners = frozenset(owners) if owners is not None else default_owners()
        self._cert = cert if cert is not None or self._ipc is None else Certificate.new()
        self._thread: threading.Thread | None = None
        self._control_addr = f"inproc://curvecert-forwarder-{os.getpid()}-{id(self):x}"
        self._control: zmq.Socket[Any] | None = None
        self._relay = Relay(endpoint, self.timeout)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> ZapForwarder:
        """Bind the ZAP endpoint (or take it over) and start relaying; returns once bound.

        Everything the relay needs (its control pair, the link to the daemon, the thread)
        is made here; if any of it fails, `OperationalError` is raised and the endpoint,
        if it was bound, stays bound and denies (`curvecert.auth.endpoint`). Also raises
        `OperationalError` if another live handler holds the ZAP endpoint of this context.
        """
        if self._thread is not None:
            raise OperationalError("this ZapForwarder is already started")
        # Bound first: even when start() fails below, servers in this context are refused
        # (by the deny-all responder) rather than admitted.
        lease = acquire(self.context, self.zap_endpoint)
        made: list[zmq.Socket[Any]] = []
        try:
            if self._ipc is not None:
                self._check_ipc()  # an impostor's directory or socket: refuse at once
            control = self.context.socket(zmq.PAIR)
            made.append(control)
            control.linger = 0
            control.bind(self._control_addr)
            inner: zmq.Socket[Any] = zmq.Socket(self.context, zmq.PAIR)  # the thread's own
            made.append(inner)
            inner.linger = 0
            inner.connect(self._control_addr)
            back: zmq.Socket[Any] | None = None
            try:
                back = self._open_backend()
                made.append(back)
            except OperationalError as exc:  # no daemon key yet: the relay retries
                _logger.warning("%s (denying until the daemon is up)", exc)
            thread = threading.Thread(target=self._run, args=(lease, inner, back),
                                      name="curvecert-zap-forwarder", daemon=True)
            thread.start()
        except BaseException as exc:
            for sock in made:
                sock.close(linger=0)
            lease.release()  # never unbind: the deny-all responder answers meanwhile
            if isinstance(exc, OperationalError):
                raise
            raise OperationalError(f"cannot start the ZAP forwarder on {self.zap_endpoint}: "
                                   f"{exc}") from exc
        self._control, self._thread = control, thread
        _logger.info("ZAP forwarder bound %s, relaying to %s (deadline %.2fs)",
                     self.zap_endpoint, self.endpoint, self.timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop relaying and join the thread; safe to call twice.

        The ZAP endpoint is NOT unbound: a deny-all responder answers 500 until the
        context terminates or a new handler takes over (close server sockets first).
        """
        thread, control = self._thread, self._control
        if thread is None or control is None:
            return
        try:
            control.send(b"STOP", zmq.NOBLOCK)
        except zmq.ZMQError:  # the thread is gone already
            pass
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - the loop never blocks for long
            _logger.error("ZAP forwarder thread did not stop within %.1fs", timeout)
        control.close(linger=0)
        self._thread = None
        self._control = None

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ZapForwarder:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def stats(self) -> ForwarderStats:
        """A consistent copy of the counters."""
        return self._relay.stats

    @property
    def forwarded(self) -> int:
        """Requests relayed to the daemon."""
        return self._relay.forwarded

    @property
    def answered(self) -> int:
        """Replies relayed back from the daemon."""
        return self._relay.answered

    @property
    def timed_out(self) -> int:
        """Requests denied by the forwarder because the daemon did not answer in time."""
        return self._relay.timed_out

    @property
    def resets(self) -> int:
        """How many times the link to the daemon was reopened after a silent timeout."""
        return self._relay.resets

    # --- the relay thread ---------------------------------------------------------------

    def _check_ipc(self) -> None:
        """Refuse a socket directory or socket that another user controls (raises
        `OperationalError`); a missing socket is fine (the daemon is not up yet)."""
        assert self._ipc is not None
        directory = os.path.dirname(os.path.abspath(self._ipc))
        if os.path.lexists(directory):
            check_directory(directory, self._owners)
        check_socket(self._ipc, self._owners)

    def _open_backend(self) -> zmq.Socket[Any]:
        # Untracked by the context: only the relay thread touches it, and Context.destroy()
        # must not close it from another thread while the relay polls it.
        sock: zmq.Socket[Any] = zmq.Socket(self.context, zmq.DEALER)
        sock.linger = 0
        # Requests queue while the link is (re)connecting, so a forwarder started a moment
        # before the daemon is reachable does not deny its first clients. A queue toward a
        # dead daemon is thrown away with the socket after a silent deadline (see _loop).
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 1000
        sock.sndhwm = sock.rcvhwm = 100_000  # a burst of handshakes must not hit the HWM
        if self.endpoint.startswith("tcp://"):
            sock.heartbeat_ivl = 1000
            sock.heartbeat_timeout = 3000
        try:
            server_key = self._server_key
            if self._ipc is not None:
                self._check_ipc()
                if server_key is None:  # re-read at every link: a restarted daemon's key
                    server_key = read_key(self._ipc, self._owners)
            if self._cert is not None and server_key is not None:
                self._cert.apply_client(sock, server_key)
            sock.connect(self.endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _run(self, lease: ZapLease, control: zmq.Socket[Any],
             back: zmq.Socket[Any] | None) -> None:
        terminated = False
        try:
            back, terminated = self._relay.loop(lease.socket, back, control,
                                                self._open_backend)
        except zmq.ContextTerminated:
            terminated = True
        except BaseException:  # pragma: no cover - the loop catches everything it expects
            _logger.exception("ZAP forwarder failed; the ZAP endpoint stays bound and denies")
        finally:
            if back is not None:
                back.close(linger=0)
            control.close(linger=0)
            if terminated:
                lease.terminated()
            else:
                lease.release()  # bound to the end: a deny-all responder takes over
