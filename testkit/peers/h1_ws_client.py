"""The baseline RFC 8441 replaces: WebSockets over HTTP/1.1 ``Upgrade: websocket`` (RFC 6455),
one TCP connection each, with wsproto over a plain socket.

    python -m h2ws.testkit.peers.h1_ws_client --port N --log out.json [--ws 2] [--seed 1]
        [--deflate-every 2] [--get-first] [--parallel] [--tls --ca CA [--servername S]]

WebSocket ``i`` goes to ``/ws/i`` on a new connection; every ``--deflate-every``-th one (counting
from 1) offers permessage-deflate; with ``--get-first`` the first connection carries a plain
``GET /hello`` before its Upgrade (two exchanges on one connection).  The WebSockets run one
after the other, or all at once with ``--parallel`` (as a browser's tabs would: the number of
TCP connections RFC 8441 saves is the number open at the same time).  ``--tls`` speaks TLS with
ALPN ``http/1.1`` only, trusting ``--ca``.  The log has the format of
:mod:`h2ws.testkit.peers.plan`; ``stream_id`` is null and ``local_port`` tells the connections
apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import H11Handshake

from .plan import WsLog, make_plan
from .wssession import WsSession


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("h1_ws_client: timed out")
        return left


def recv(sock: socket.socket, deadline: Deadline) -> bytes:
    sock.settimeout(deadline.left())
    return sock.recv(65536)


def plain_get(sock: socket.socket, host: str, path: str, deadline: Deadline) -> dict[str, Any]:
    """One keep-alive HTTP/1.1 GET with a Content-Length response, read to its end."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = recv(sock, deadline)
        if not data:
            raise ConnectionError("server closed during the GET")
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        data = recv(sock, deadline)
        if not data:
            raise ConnectionError("server closed during the GET body")
        body += data
    if len(body) != length:
        raise ConnectionError("unexpected bytes after the GET response")
    return {
        "stream_id": None,
        "local_port": sock.getsockname()[1],
        "method": "GET",
        "path": path,
        "status": status,
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


Wrap = Callable[[socket.socket], socket.socket]


def tls_wrapper(ca: str, servername: str) -> Wrap:
    """TLS with ALPN ``http/1.1`` alone: the connection a browser opens for an HTTP/1.1
    WebSocket when the server (or a proxy) did not offer RFC 8441."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["http/1.1"])
    return lambda sock: context.wrap_socket(sock, server_hostname=servername)


def run_one(
    host: str,
    port: int,
    index: int,
    seed: int,
    deflate: bool,
    get_first: bool,
    deadline: Deadline,
    requests: list[dict[str, Any]],
    wrap: Wrap | None = None,
) -> WsLog:
    authority = f"{host}:{port}"
    log = WsLog(path=f"/ws/{index}")
    raw = socket.create_connection((host, port), timeout=deadline.left())
    with wrap(raw) if wrap else raw as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.local_port = sock.getsockname()[1]
        if get_first:
            requests.append(plain_get(sock, authority, "/hello", deadline))
        handshake = H11Handshake(ConnectionType.CLIENT)
        extensions = [PerMessageDeflate()] if deflate else []
        sock.sendall(
            handshake.send(Request(host=authority, target=log.path, extensions=extensions))
        )
        while handshake.connection is None:
            data = recv(sock, deadline)
            handshake.receive_data(data or None)
            for event in handshake.events():
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"{log.path}: refused with {event.status_code}")
                if isinstance(event, AcceptConnection):
                    log.status = 101
                    log.response_headers = {
                        k.decode("latin-1"): v.decode("latin-1") for k, v in event.extra_headers
                    }
                    log.extensions = ", ".join(e.name for e in event.extensions) or None
            if not data and handshake.connection is None:
                raise ConnectionError(f"{log.path}: closed during the handshake")
        assert handshake.connection is not None
        session = WsSession(
            handshake.connection,
            make_plan(index, seed, ping_inside=not deflate),
            log,
            f"bye {index}",
        )
        sock.sendall(session.start())
        out = session.receive(b"")  # frames that came with the 101 (trailing data)
        if out:
            sock.sendall(out)
        while not session.done:
            data = recv(sock, deadline)
            out = session.receive(data or None)
            if out:
                sock.sendall(out)
            if not data and not session.done:
                raise ConnectionError(f"{log.path}: closed before the close handshake")
        # RFC 6455 7.1.1: the server closes the TCP connection first; wait for its FIN a while.
        try:
            while recv(sock, deadline):
                pass
            log.stream_end = "server_fin"
        except (TimeoutError, OSError):
            log.stream_end = "client_close"
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ws", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deflate-every", type=int, default=2, help="0: never")
    parser.add_argument("--get-first", action="store_true")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--parallel", action="store_true", help="all WebSockets at once")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca", help="CA certificate (PEM) to trust with --tls")
    parser.add_argument("--servername", default="localhost")
    args = parser.parse_args(argv)
    if args.tls and not args.ca:
        parser.error("--tls needs --ca")

    deadline = Deadline(args.timeout)
    wrap = tls_wrapper(args.ca, args.servername) if args.tls else None
    requests: list[dict[str, Any]] = []
    results: list[WsLog | BaseException | None] = [None] * args.ws

    def one(i: int) -> None:
        deflate = args.deflate_every > 0 and (i + 1) % args.deflate_every == 0
        get_first = args.get_first and i == 0
        try:
            results[i] = run_one(
                args.host, args.port, i, args.seed, deflate, get_first, deadline, requests, wrap
            )
        except BaseException as exc:  # reported below, with the others' logs kept
            results[i] = exc

    if args.parallel:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.ws)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for i in range(args.ws):
            one(i)
    failed = [r for r in results if not isinstance(r, WsLog)]
    if failed:
        print(f"h1_ws_client: {failed[0]!r}", file=sys.stderr)
        return 1
    websockets = [asdict(r) for r in results if isinstance(r, WsLog)]
    log = {
        "client": "python-wsproto",
        "transport": "http/1.1",
        "tls": args.tls,
        "host": args.host,
        "port": args.port,
        "local_port": None,
        "seed": args.seed,
        "enable_connect_protocol": None,
        "websockets": websockets,
        "requests": requests,
    }
    with open(args.log, "w") as f:
        json.dump(log, f, indent=1)
    errors = [f"{w['path']}: {e}" for w in websockets for e in w["errors"]]
    if errors:
        print(f"h1_ws_client: {'; '.join(errors)}", file=sys.stderr)
        return 4
    print(f"h1_ws_client: {len(websockets)} websockets ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
