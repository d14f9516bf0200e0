"""Issue 13 point 3, live: a request whose path is not UTF-8 does not stop recording.

Through ``mitmdump -s addon/addon.py`` (intercept mode, reverse proxy to a local HTTP/1.1
server): ``GET /x\\xff\\xfe`` first, then ordinary requests on new connections.  Every one is
relayed, the bad one is a diagnostic (h11 refuses a non-ASCII request-target), and every later
one is in the tables.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from h2ws.testkit.live.compare import read_tables
from h2ws.testkit.live.proxy import Mitmdump

pytestmark = pytest.mark.timeout(120)


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _get(port: int, target: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def test_non_utf8_path_does_not_stop_live_recording(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "live"
    try:
        proxy = Mitmdump(
            tmp_path,
            mode=f"reverse:http://127.0.0.1:{server.server_address[1]}",
            options={"h2ws_out": out, "h2ws_flush_interval": 1},
        )
        with proxy:
            replies = [_get(proxy.port, t) for t in (b"/x\xff\xfe", b"/later1", b"/later2")]
    finally:
        server.shutdown()
    assert all(r.split(b"\r\n", 1)[0].endswith(b" 200 OK") for r in replies), replies
    tables = read_tables(out)
    # Intercept mode decodes each leg's bytes (client, server): every later request twice.
    paths = sorted(s["path"] for s in tables["streams"])
    assert paths == ["/later1", "/later1", "/later2", "/later2"], paths
    # h11 refuses a request-target that is not ASCII (RFC 9112): one clear diagnostic per
    # leg, the bytes escaped in its message, and the recording goes on.
    bad = [d for d in tables["diagnostics"] if d["code"] == "http1_protocol_error"]
    assert bad and all("\\xff\\xfe" in d["message"] for d in bad), tables["diagnostics"]
    assert not list(out.rglob("*.partial"))
