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
from types import TracebackType
from typing import Any

import zmq

from curvecert.certs import keys
from curvecert.certs.cert import Certificate
from curvecert.errors import ConfigError, OperationalError
from curvecert.formats.zap import ZAP_ENDPOINT
from curvecert.serve.relay import DEFAULT_TIMEOUT, UNREACHABLE_TEXT, ForwarderStats, Relay

__all__ = ["DEFAULT_TIMEOUT", "UNREACHABLE_TEXT", "ZAP_ENDPOINT", "ForwarderStats",
           "ZapForwarder"]

_logger = logging.getLogger(__name__)


def _check_endpoint(endpoint: str, server_key: bytes | None, cert: Certificate | None) -> None:
    scheme = endpoint.partition("://")[0]
    if scheme not in ("ipc", "tcp", "inproc"):
        raise ConfigError(f"ZAP forwarding endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")
    if (server_key is None) != (cert is None):
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
    `with` block) unbinds and joins the thread; it never blocks on the daemon.
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, *,
                 timeout: float = DEFAULT_TIMEOUT, server_key: bytes | str | None = None,
                 cert: Certificate | None = None, zap_endpoint: str = ZAP_ENDPOINT):
        """Prepare a forwarder; nothing is bound until `start()`."""
        if not 0 < timeout <= 30:
            raise ConfigError(f"forwarder timeout must be in (0, 30] seconds, got {timeout}")
        key = keys.decode_key(server_key, what="daemon server key") if server_key else None
        _check_endpoint(endpoint, key, cert)
        self.context = context
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.zap_endpoint = zap_endpoint
        self._server_key = key
        self._cert = cert
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._control_addr = f"inproc://curvecert-forwarder-{os.getpid()}-{id(self):x}"
        self._control: zmq.Socket[Any] | None = None
        self._relay = Relay(endpoint, self.timeout)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> ZapForwarder:
        """Bind the ZAP endpoint and start relaying; returns once bound (raises if not).

        Raises `OperationalError` if the ZAP endpoint is already bound in this context
        (another authenticator or forwarder holds it).
        """
        if self._thread is not None:
            raise OperationalError("this ZapForwarder is already started")
        control = self.context.socket(zmq.PAIR)
        control.linger = 0
        control.bind(self._control_addr)
        self._control = control
        self._thread = threading.Thread(target=self._run, name="curvecert-zap-forwarder",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            control.close(linger=0)
            self._control = None
            err = self._start_error
            raise OperationalError(f"cannot bind the ZAP endpoint {self.zap_endpoint}: {err} "
                                   "(is another authenticator running in this context?)"
                                   ) from err
        _logger.info("ZAP forwarder bound %s, relaying to %s (deadline %.2fs)",
                     self.zap_endpoint, self.endpoint, self.timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop relaying, unbind the ZAP endpoint and join the thread; safe to call twice."""
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

    def _open_backend(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(zmq.DEALER)
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
        if self._cert is not None and self._server_key is not None:
            self._cert.apply_client(sock, self._server_key)
        sock.connect(self.endpoint)
        return sock

    def _run(self) -> None:
        front = self.context.socket(zmq.ROUTER)
        front.linger = 0
        try:
            front.bind(self.zap_endpoint)
            control = self.context.socket(zmq.PAIR)
            control.linger = 0
            control.connect(self._control_addr)
            back = self._open_backend()
        except (zmq.ZMQError, ValueError) as exc:
            front.close(linger=0)
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            back = self._relay.loop(front, back, control, self._open_backend)
        except Exception:  # pragma: no cover - a bug; never leave libzmq waiting silently
            _logger.exception("ZAP forwarder failed; the ZAP endpoint is now unbound and "
                              "CURVE servers in this context would ACCEPT ALL clients")
        finally:
            try:  # unbinding inproc is synchronous: a new handler may bind at once
                front.unbind(self.zap_endpoint)
            except zmq.ZMQError:
                pass
            front.close(linger=0)
            back.close(linger=0)
            control.close(linger=0)
