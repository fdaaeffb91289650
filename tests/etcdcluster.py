"""A real three-member etcd cluster on loopback ports, for the etcd store's tests.

`EtcdCluster.start()` runs Debian's `etcd` binary three times (127.0.0.1 only, data in a
temporary directory, short heartbeat/election timings so a lost member is noticed fast),
waits with a bounded timeout until every member answers `/health`, and `stop()` ends them
by PID. Members can be killed and restarted one by one (fault tests), and the key space
compacted.

`require_etcd()` skips with a clear reason when the binary is absent, or fails when
`CURVECERT_REQUIRE_ETCD` is set (CI installs etcd-server and sets it). The `etcd_cluster`
fixture is session-scoped: one cluster serves the whole run; tests use distinct prefixes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

__all__ = ["REQUIRE_ENV", "EtcdCluster", "Member", "TlsFiles", "etcd_binary", "make_tls",
           "require_etcd"]

#: Environment variable that turns "etcd missing" from a skip into a failure.
REQUIRE_ENV = "CURVECERT_REQUIRE_ETCD"


def etcd_binary() -> str | None:
    """The etcd server binary, or None."""
    return shutil.which("etcd") or (
        "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)


def require_etcd() -> str:
    """The binary's path, or skip (fail under `CURVECERT_REQUIRE_ETCD`) when it is absent."""
    binary = etcd_binary()
    if binary is None:
        reason = ("the etcd server (Debian package etcd-server) is not installed; the etcd "
                  "store tests need a real cluster")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_ENV} is set", pytrace=False)
        pytest.skip(reason)
    return binary


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS cluster: a CA, the members' certificate, a client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls(directory: str) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made
    with the `openssl` command (skips the test when it is absent)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = directory

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2",
        "-subj", "/CN=curvecert-test-ca")
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        ext = f"{d}/{name}.ext"
        with open(ext, "w") as fh:
            fh.write(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        # the client's certificate has no Common Name: with client-cert-auth and RBAC on,
        # etcd's gateway refuses (HTTP 400) any client certificate that carries one
        subject = f"/CN=curvecert-test-{name}" if name == "server" else "/O=curvecert-test"
        run("req", *ec, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr",
            "-subj", subject)
        run("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey",
            f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/{name}.pem", "-days", "2",
            "-extfile", ext)
    return TlsFiles(f"{d}/ca.pem", f"{d}/server.pem", f"{d}/server.key",
                    f"{d}/client.pem", f"{d}/client.key")


@dataclass
class Member:
    """One etcd member: its name, ports, data directory and process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """`127.0.0.1:PORT` of the client API."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """Three etcd members on loopback; see the module docstring."""

    binary: str
    size: int = 3
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="curvecert-etcd-"))
    members: list[Member] = field(default_factory=list)
    tls: TlsFiles | None = None
    """Serve the client API over HTTPS and require client certificates."""
    token: str | None = None
    """An etcd auth token sent with the fixture's own requests (after `enable_auth`)."""

    def __post_init__(self) -> None:
        ports = _free_ports(2 * self.size)
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(Member(name, ports[2 * i], ports[2 * i + 1],
                                       os.path.join(self.root, name),
                                       os.path.join(self.root, f"{name}.log")))

    # --- addresses ------------------------------------------------------------------------

    @property
    def endpoints(self) -> str:
        """`HOST:PORT,HOST:PORT,...` of every member (for an etcd:// URL)."""
        return ",".join(m.endpoint for m in self.members)

    def url(self, prefix: str) -> str:
        """`etcd://ENDPOINTS/PREFIX` (`etcds://` for a TLS cluster)."""
        scheme = "etcds" if self.tls else "etcd"
        return f"{scheme}://{self.endpoints}/{prefix.strip('/')}"

    @property
    def _scheme(self) -> str:
        return "https" if self.tls else "http"

    def _ssl(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=self.tls.ca)
        context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context

    # --- lifecycle ------------------------------------------------------------------------

    def _launch(self, m: Member, state: str) -> None:
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        args = [self.binary, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", f"{self._scheme}://127.0.0.1:{m.client_port}",
                "--advertise-client-urls", f"{self._scheme}://127.0.0.1:{m.client_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                "--initial-cluster", initial, "--initial-cluster-state", state,
                "--initial-cluster-token", os.path.basename(self.root),
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-outputs", "stderr", "--logger", "zap"]
        if self.tls is not None:
            args += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                     "--trusted-ca-file", self.tls.ca, "--client-cert-auth"]
        with open(m.log, "ab") as log:
            m.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      start_new_session=True)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        """Start every member and wait until all are healthy."""
        for m in self.members:
            self._launch(m, "new")
        self.wait_healthy(timeout)
        return self

    def health(self, m: Member) -> bool:
        """True when `m` answers `/health` with `"health": "true"` (it has a leader)."""
        try:
            with urllib.request.urlopen(f"{self._scheme}://{m.endpoint}/health", timeout=1,
                                        context=self._ssl()) as r:
                return str(json.loads(r.read()).get("health")) == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[Member] | None = None) -> None:
        """Wait (bounded) until every given member (default: every live one) is healthy."""
        deadline = time.monotonic() + timeout
        while True:
            todo = [m for m in (members or [m for m in self.members if m.alive])
                    if not self.health(m)]
            if not todo:
                return
            for m in todo:
                if m.proc is not None and m.proc.poll() is not None:
                    raise AssertionError(f"etcd member {m.name} exited: {self._tail(m)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"etcd members {[m.name for m in todo]} not healthy "
                                     f"within {timeout}s: {self._tail(todo[0])}")
            time.sleep(0.05)

    def _tail(self, m: Member) -> str:
        try:
            with open(m.log, "rb") as fh:
                return fh.read()[-600:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def kill(self, m: Member) -> None:
        """SIGKILL one member (by PID) and reap it."""
        if m.proc is not None and m.proc.poll() is None:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)

    def restart(self, m: Member, timeout: float = 30.0) -> None:
        """Start a killed member again on its data directory and wait until it is healthy."""
        if m.alive:
            return
        self._launch(m, "existing")
        self.wait_healthy(timeout, [m])

    def restore(self, timeout: float = 30.0) -> None:
        """Restart every killed member; wait until all are healthy."""
        for m in self.members:
            if not m.alive:
                self._launch(m, "existing")
        self.wait_healthy(timeout, list(self.members))

    def stop(self) -> None:
        """Kill every member by PID (the data is thrown away) and remove the data."""
        for m in self.members:
            self.kill(m)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- key space ------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        last: Exception | None = None
        for m in self.members:
            if not m.alive:
                continue
            headers = {"Content-Type": "application/json"}
            if self.token:
                headers["Authorization"] = self.token
            req = urllib.request.Request(f"{self._scheme}://{m.endpoint}/v3/{path}",
                                         data=json.dumps(body).encode(), headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=5, context=self._ssl()) as r:
                    out: dict[str, object] = json.loads(r.read())
                    return out
            except (OSError, urllib.error.URLError) as exc:
                last = exc
        raise AssertionError(f"no etcd member answered {path}: {last}")

    def revision(self) -> int:
        """The cluster's current revision."""
        header = self._post("kv/range", {"key": "AA==", "count_only": True})["header"]
        return int(header["revision"])  # type: ignore[index]

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        """Turn on etcd authentication: `root` (password `password`) and `user`
        (same password) with read-write access to `prefix/`; the fixture keeps a root token."""
        key = base64.b64encode(prefix.strip("/").encode() + b"/").decode()
        end = base64.b64encode(prefix.strip("/").encode() + b"0").decode()
        for path, body in (
                ("auth/user/add", {"name": "root", "password": password}),
                ("auth/user/grant", {"user": "root", "role": "root"}),
                ("auth/role/add", {"name": "curvecert-rw"}),
                ("auth/role/grant", {"name": "curvecert-rw", "perm": {
                    "permType": "READWRITE", "key": key, "range_end": end}}),
                ("auth/user/add", {"name": user, "password": password}),
                ("auth/user/grant", {"user": user, "role": "curvecert-rw"}),
                ("auth/enable", {})):
            self._post(path, body)
        token = self._post("auth/authenticate", {"name": "root", "password": password})
        self.token = str(token["token"])

    def compact(self, revision: int | None = None) -> int:
        """Compact the key space up to `revision` (default: the current one); return it."""
        rev = self.revision() if revision is None else revision
        self._post("kv/compaction", {"revision": rev, "physical": True})
        return rev


def cluster_fixture() -> Iterator[EtcdCluster]:
    """Body of the session fixture (`tests/conftest.py` wraps it as `etcd_cluster`)."""
    binary = require_etcd()
    cluster = EtcdCluster(binary)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
