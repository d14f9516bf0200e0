"""The pages a browser loads for the observer-fidelity and intercept tests, served by hypercorn.

``GET /`` returns a page that opens a same-origin ``wss://`` WebSocket to ``/ws/browser``,
sends one message and, once it is echoed, reports ``GET /result?echo=…`` and closes the
WebSocket.  ``GET /intercept?expect=…`` is the intercept-mode page (``intercept_page.html``:
fetches, then a WebSocket whose messages a test addon changes).  Everything else is
``testkit/peers/echo_app.py``.  The server notes what it saw in a JSON lines file
(``--events``): the HTTP version of every request and of the WebSocket (ASGI ``http_version``:
``2`` for RFC 8441, ``1.1`` for an Upgrade), so a test knows what reached the server whatever
sat in between.

    python -m h2ws.testkit.live.browser_app [--certfile C --keyfile K] --events E.jsonl

serves TLS (ALPN h2, http/1.1) with a certificate, cleartext HTTP/1.1 (and h2c) without; it
prints ``READY <port>`` and stops when stdin closes or after the lifetime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

from h2ws.testkit.peers import echo_app

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>h2ws browser test</title></head>
<body><p id="state">opening</p>
<script>
const state = document.getElementById("state");
const ws = new WebSocket(`wss://${location.host}/ws/browser`);
ws.onopen = () => { state.textContent = "open"; ws.send("hello from the browser"); };
ws.onmessage = (event) => {
  state.textContent = "echoed";
  fetch("/result?echo=" + encodeURIComponent(event.data))
    .finally(() => ws.close(1000, "done"));
};
ws.onerror = () => fetch("/result?error=1");
</script></body></html>
"""


INTERCEPT_PAGE = (Path(__file__).resolve().parent / "intercept_page.html").read_bytes()


def make_app(events_path: str) -> Any:
    def note(scope: dict[str, Any], **extra: Any) -> None:
        row = {
            "type": scope["type"],
            "path": scope.get("path"),
            "http_version": scope.get("http_version"),
            "client_port": (scope.get("client") or [None, None])[1],
            # set by the intercept-mode tests' request hook (tests/live/hooks_addon.py)
            "test_header": dict(scope.get("headers") or []).get(b"x-h2ws-test", b"").decode(),
            **extra,
        }
        with open(events_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in ("/", "/intercept", "/result"):
            query = scope.get("query_string", b"").decode("latin-1")
            note(scope, query=query)
            page = {"/": PAGE, "/intercept": INTERCEPT_PAGE}.get(scope["path"])
            body = page if page is not None else b"ok\n"
            ctype = b"text/html; charset=utf-8" if page is not None else b"text/plain"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] in ("http", "websocket"):
            note(scope)
        await echo_app.app(scope, receive, send)

    return app


def main(argv: list[str] | None = None) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--events", required=True)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)

    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = sock.getsockname()[1]
    config = Config()
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    if args.certfile:
        config.certfile = args.certfile
        config.keyfile = args.keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    config.bind = [f"fd://{sock.detach()}"]
    app = make_app(args.events)

    async def ready_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                print(f"READY {port}", flush=True)
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    shutdown = echo_app._shutdown_trigger(args.lifetime)
    asyncio.run(serve(ready_app, config, shutdown_trigger=lambda: shutdown))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
