"""An ASGI echo application for hypercorn, and a command that serves it on 127.0.0.1.

``websocket`` scope: accept (hypercorn negotiates permessage-deflate itself when the client offers
it), echo every text and binary message back unchanged, and close when the client closes.  With
``?close_after=K`` in the path the server itself closes (code 1000, reason ``server bye``) after
echoing K messages, so that the server-initiated close (with END_STREAM on HTTP/2) is covered too.

``http`` scope: ``GET /hello`` returns ``hello from hypercorn\\n``, ``GET /big?n=N`` returns N
deterministic bytes, anything else 404.

Run as a script, it serves on 127.0.0.1 (h2c prior knowledge, HTTP/1.1 with WebSocket and h2c
Upgrade on the same port; TLS with ALPN h2 and http/1.1 when given a certificate), prints
``READY <port>`` on stdout once it accepts connections, and stops by itself when its stdin closes
(the parent went away) or after ``--lifetime`` seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any
from urllib.parse import parse_qs

HELLO = b"hello from hypercorn\n"
MAX_BIG = 64 * 2**20


def big_body(n: int) -> bytes:
    """N deterministic bytes (a repeating 0..250 pattern), what ``GET /big?n=N`` returns."""
    pattern = bytes(range(251))
    return (pattern * (n // 251 + 1))[:n]


async def _http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:  # drain the request body, if any
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    status, body, ctype = 404, b"not found\n", b"text/plain"
    if scope["method"] in ("GET", "HEAD"):
        if scope["path"] == "/hello":
            status, body = 200, HELLO
        elif scope["path"] == "/big":
            try:
                n = int(query.get("n", ["0"])[0])
            except ValueError:
                n = -1
            if 0 <= n <= MAX_BIG:
                status, body, ctype = 200, big_body(n), b"application/octet-stream"
            else:
                status, body = 400, b"bad n\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    close_after = int(query["close_after"][0]) if "close_after" in query else None
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    echoed = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            continue
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message.get("text") or ""})
        echoed += 1
        if close_after is not None and echoed >= close_after:
            await send({"type": "websocket.close", "code": 1000, "reason": "server bye"})
            # Wait for the client's close reply (or the disconnect) before returning.
            while (await receive())["type"] != "websocket.disconnect":
                pass
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _shutdown_trigger(lifetime: float) -> None:
    """Returns when stdin reaches EOF (the parent closed it or died) or after ``lifetime`` s."""
    loop = asyncio.get_running_loop()
    eof = asyncio.Event()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            eof.set()

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(eof.wait(), lifetime)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)


def main(argv: list[str] | None = None) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    parser.add_argument("--certfile", help="serve TLS (ALPN h2, http/1.1) with this certificate")
    parser.add_argument("--keyfile")
    parser.add_argument("--lifetime", type=float, default=120.0, help="stop after this many s")
    args = parser.parse_args(argv)

    sock = socket.create_server(("127.0.0.1", args.port), backlog=128)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = sock.getsockname()[1]
    fd = sock.detach()  # hypercorn wraps the descriptor itself ("fd://")

    config = Config()
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    if args.certfile:
        config.certfile = args.certfile
        config.keyfile = args.keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    config.bind = [f"fd://{fd}"]  # TLS when a certificate is configured, else plain

    async def ready_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_ready(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                # The socket is already listening: connections queue until accepted.
                print(f"READY {port}", flush=True)

        await app(scope, receive, send_ready)

    asyncio.run(serve(ready_app, config, shutdown_trigger=lambda: _shutdown_trigger(args.lifetime)))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
