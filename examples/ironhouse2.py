"""Ironhouse, model 2: server and client as two separate processes (tutorial pattern 5b).

Run without arguments, it prepares a working directory (server certificate, client
certificate, a store `authorized_clients/` holding the client's public certificate),
starts `ironhouse2.py server DIR` and `ironhouse2.py client DIR PORT` as child processes
and reports what each saw. Each side only reads what it would really have: the server its
secret certificate and the store; the client its secret certificate and the server's
PUBLIC certificate. The negative case gives the client a wrong server public key: the
server cannot open the client's HELLO and nobody gets through.

    python examples/ironhouse2.py [--negative]
    python examples/ironhouse2.py server DIR          # prints "PORT n", then "RESULT ..."
    python examples/ironhouse2.py client DIR PORT     # prints "RESULT ..."
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import _demo
import zmq
from zmq.utils.monitor import recv_monitor_message

from curvecert import Authenticator, Certificate

TIMEOUT = 5.0


def prepare(workdir: Path, negative: bool) -> None:
    """Write the certificates both processes read."""
    server_cert = Certificate.new(name="ironhouse2 server")
    client_cert = Certificate.new(name="Alice")
    server_cert.save(workdir / "server")
    client_cert.save(workdir / "client")
    store = workdir / "authorized_clients"
    store.mkdir()
    client_cert.save_public(store / "alice")
    # What the client believes the server's public key is.
    believed = Certificate.new(name="impostor") if negative else server_cert
    believed.save_public(workdir / "server_as_known_to_client")


def server(workdir: Path) -> int:
    """The server process: authenticator + CURVE PULL socket; reports what happened."""
    cert = Certificate.load(workdir / "server_secret")
    ctx = zmq.Context()
    try:
        with Authenticator(ctx) as auth:
            auth.allow("127.0.0.1")
            auth.configure_curve(store=workdir / "authorized_clients")
            sock = ctx.socket(zmq.PULL)
            sock.linger = 0
            cert.apply_server(sock)
            monitor = sock.get_monitor_socket(_demo.HANDSHAKE_EVENTS)
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            print(f"PORT {port}", flush=True)
            result = "RESULT timeout"
            if monitor.poll(int(TIMEOUT * 1000)):
                event = recv_monitor_message(monitor)
                if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    result = f"RESULT refused event={event['event']} value={event['value']}"
                elif sock.poll(int(TIMEOUT * 1000)):
                    frame = sock.recv(copy=False)
                    result = f"RESULT received {frame.bytes.decode()} from {frame.get('User-Id')}"
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            print(result, flush=True)
            return 0
    finally:
        ctx.destroy(linger=0)


def client(workdir: Path, port: int) -> int:
    """The client process: CURVE PUSH socket; sends Hello once the handshake succeeded."""
    cert = Certificate.load(workdir / "client_secret")
    server_public = Certificate.load(workdir / "server_as_known_to_client")
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 0
        cert.apply_client(sock, server_public)
        monitor = sock.get_monitor_socket(_demo.HANDSHAKE_EVENTS)
        sock.connect(f"tcp://127.0.0.1:{port}")
        result = "RESULT no handshake"
        if monitor.poll(int(TIMEOUT * 1000)):
            event = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                sock.linger = int(TIMEOUT * 1000)  # let Hello leave before closing
                sock.send(b"Hello")
                result = "RESULT sent Hello"
            else:
                result = f"RESULT refused event={event['event']} value={event['value']}"
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close()
        print(result, flush=True)
        return 0
    finally:
        ctx.destroy()


def both(workdir: Path, negative: bool) -> _demo.Outcome:
    """Start the server and client processes and collect their results."""
    prepare(workdir, negative)
    me = [sys.executable, str(Path(__file__).resolve())]
    srv = subprocess.Popen([*me, "server", str(workdir)], stdout=subprocess.PIPE, text=True)
    cli: subprocess.Popen[str] | None = None
    try:
        assert srv.stdout is not None
        first = srv.stdout.readline().split()
        if first[:1] != ["PORT"]:
            return _demo.Outcome(False, "the server did not start")
        cli = subprocess.Popen([*me, "client", str(workdir), first[1]],
                               stdout=subprocess.PIPE, text=True)
        server_says = srv.stdout.read().strip()
        srv.wait(timeout=TIMEOUT * 3)
        if not server_says.startswith("RESULT received"):
            # A client with the wrong server key never hears back: the server has decided.
            cli.kill()
        try:
            client_says = cli.communicate(timeout=TIMEOUT * 2)[0].strip()
        except subprocess.TimeoutExpired:
            cli.kill()
            client_says = ""
        client_says = client_says or "RESULT (stopped)"
    finally:
        for proc in (srv, cli):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    delivered = server_says.startswith("RESULT received Hello")
    return _demo.Outcome(delivered, f"server: {server_says[7:]}; client: {client_says[7:]}")


def run(workdir: Path, negative: bool = False) -> _demo.Outcome:
    """Same signature as the other examples: both processes, one outcome."""
    return both(workdir, negative)


def _cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
        parser = argparse.ArgumentParser(prog="ironhouse2.py")
        parser.add_argument("role", choices=["server", "client"])
        parser.add_argument("dir", type=Path)
        parser.add_argument("port", type=int, nargs="?")
        args = parser.parse_args()
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format=f"{args.role}: %(name)s: %(levelname)s: %(message)s")
        if args.role == "server":
            sys.exit(server(args.dir))
        if args.port is None:
            parser.error("client needs PORT")
        sys.exit(client(args.dir, args.port))
    _demo.main("ironhouse2", run, __doc__)


if __name__ == "__main__":
    _cli()

