"""The baseline RFC 8441 replaces: WebSockets over HTTP/1.1 ``Upgrade: websocket`` (RFC 6455),
one TCP connection each, with wsproto over a plain socket.

    python -m tests.peers.h1_ws_client --port N --log out.json [--ws 2] [--seed 1]
        [--deflate-every 2] [--get-first]

WebSocket ``i`` goes to ``/ws/i`` on a new connection; every ``--deflate-every``-th one (counting
from 1) offers permessage-deflate; with ``--get-first`` the first connection carries a plain
``GET /hello`` before its Upgrade (two exchanges on one connection).  The log has the format of
:mod:`tests.peers.plan`; ``stream_id`` is null and ``local_port`` tells the connections apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import time
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


def run_one(
    host: str,
    port: int,
    index: int,
    seed: int,
    deflate: bool,
    get_first: bool,
    deadline: Deadline,
    requests: list[dict[str, Any]],
) -> WsLog:
    authority = f"{host}:{port}"
    log = WsLog(path=f"/ws/{index}")
    with socket.create_connection((host, port), timeout=deadline.left()) as sock:
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
    args = parser.parse_args(argv)

    deadline = Deadline(args.timeout)
    requests: list[dict[str, Any]] = []
    websockets = []
    for i in range(args.ws):
        deflate = args.deflate_every > 0 and (i + 1) % args.deflate_every == 0
        get_first = args.get_first and i == 0
        ws = run_one(args.host, args.port, i, args.seed, deflate, get_first, deadline, requests)
        websockets.append(asdict(ws))
    log = {
        "client": "python-wsproto",
        "transport": "http/1.1",
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
