"""hypercorn over TLS on 127.0.0.1 with a forced protocol version and cipher list, serving an echo
WebSocket, bulk bytes and a page whose script opens a same-origin ``wss://`` WebSocket.

    python -m h2ws.testkit.tls_peers.server --certfile c.pem --keyfile k.pem --log reports.jsonl
        [--tls 1.2|1.3] [--ciphers OPENSSL-CIPHER-LIST] [--lifetime 120] [--no-compat]

Routes: ``/ws`` (WebSocket: every message echoed; hypercorn advertises
SETTINGS_ENABLE_CONNECT_PROTOCOL, so browsers use RFC 8441 on the page's connection),
``GET /big?n=N`` (N deterministic bytes), ``GET /page?who=NAME`` (:data:`PAGE`), ``POST /report``
(the page's JSON report, appended as one line to ``--log``), anything else 404.

``--no-compat`` clears OpenSSL's middlebox compatibility mode: a TLS 1.3 handshake without
ChangeCipherSpec records.

Prints ``READY <port>`` once it accepts connections; stops when stdin closes or after
``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import ssl
import sys
from typing import Any
from urllib.parse import parse_qs

#: The browser page: sends :data:`PLAN`-like messages on a same-origin WebSocket, waits for every
#: echo, closes with 1000 "done", then POSTs what it sent and received (base64) to /report.
PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>h2ws TLS page</title>
<script>
const who = new URLSearchParams(location.search).get('who') || 'browser';
const enc = new TextEncoder();
function b64(u8) {
  let s = '';
  for (let i = 0; i < u8.length; i += 8192) s += String.fromCharCode(...u8.subarray(i, i + 8192));
  return btoa(s);
}
function bytes(n, k) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * k) & 255;
  return b;
}
const plan = [
  ['text', 'hello from ' + who],
  ['binary', bytes(200, 7)],
  ['text', 'z\\u00e9\\u2713\\u6f22'.repeat(1500)],
  ['binary', bytes(70000, 13)],
  ['text', ''],
  ['text', 'last from ' + who],
];
const sent = [], received = [];
const ws = new WebSocket(`wss://${location.host}/ws?who=${who}`);
ws.binaryType = 'arraybuffer';
ws.onopen = () => {
  for (const [kind, data] of plan) {
    ws.send(data);
    sent.push({opcode: kind, payload_b64: b64(kind === 'text' ? enc.encode(data) : data)});
  }
};
ws.onmessage = (e) => {
  const text = typeof e.data === 'string';
  const u8 = text ? enc.encode(e.data) : new Uint8Array(e.data);
  received.push({opcode: text ? 'text' : 'binary', payload_b64: b64(u8)});
  if (received.length === plan.length) ws.close(1000, 'done');
};
ws.onclose = (e) => {
  fetch('/report', {method: 'POST', body: JSON.stringify({
    who, sent, received, extensions: ws.extensions,
    close: {code: e.code, reason: e.reason, clean: e.wasClean}})});
};
ws.onerror = () => fetch('/report', {method: 'POST', body: JSON.stringify({who, error: true})});
</script>
"""


def big_body(n: int) -> bytes:
    pattern = bytes(range(251))
    return (pattern * (n // 251 + 1))[:n]


class App:
    def __init__(self, log: str | None) -> None:
        self.log = log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self.websocket(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def websocket(self, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text") or ""})

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        status, out, ctype = 404, b"not found\n", b"text/plain"
        if scope["path"] == "/big":
            status, out, ctype = 200, big_body(int(query.get("n", ["0"])[0])), b"application/x"
        elif scope["path"] == "/page":
            status, out, ctype = 200, PAGE, b"text/html; charset=utf-8"
        elif scope["path"] == "/report" and scope["method"] == "POST":
            if self.log:
                with open(self.log, "ab") as f:
                    f.write(bytes(body).replace(b"\n", b" ") + b"\n")
            status, out = 200, b"ok\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(out)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": out})


async def _until_stdin_closes(lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    eof = asyncio.Event()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            eof.set()

    loop.add_reader(fd, readable)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(eof.wait(), lifetime)


def main(argv: list[str] | None = None) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--log")
    parser.add_argument("--tls", choices=("1.2", "1.3"))
    parser.add_argument("--ciphers", default="ECDHE+AESGCM:ECDHE+CHACHA20")
    parser.add_argument("--lifetime", type=float, default=120.0)
    parser.add_argument("--no-compat", action="store_true")
    args = parser.parse_args(argv)

    class TlsConfig(Config):
        def create_ssl_context(self) -> ssl.SSLContext | None:
            context = super().create_ssl_context()
            if context is not None and args.tls:
                version = ssl.TLSVersion.TLSv1_2 if args.tls == "1.2" else ssl.TLSVersion.TLSv1_3
                context.minimum_version = context.maximum_version = version
            if context is not None and args.no_compat:
                context.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
            return context

    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = sock.getsockname()[1]
    config = TlsConfig()
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    config.certfile = args.certfile
    config.keyfile = args.keyfile
    config.ciphers = args.ciphers
    config.alpn_protocols = ["h2", "http/1.1"]
    config.bind = [f"fd://{sock.detach()}"]
    app = App(args.log)

    async def ready_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_ready(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                print(f"READY {port}", flush=True)

        await app(scope, receive, send_ready if scope["type"] == "lifespan" else send)

    asyncio.run(
        serve(
            ready_app,  # type: ignore[arg-type]
            config,
            shutdown_trigger=lambda: _until_stdin_closes(args.lifetime),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
