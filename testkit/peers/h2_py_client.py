"""An RFC 8441 client in Python (python-hyper h2 + wsproto's frame layer) over a plain socket.

    python -m h2ws.testkit.peers.h2_py_client --port N --log out.json [--upgrade] [--seed 1]
        [--tls --ca CA [--servername S]] [--websockets 2] [--gets 1]

With ``--upgrade`` the connection starts as HTTP/1.1 ``GET /hello`` with ``Upgrade: h2c`` and
``HTTP2-Settings`` (RFC 7540 3.2; the response to that GET arrives on stream 1 over HTTP/2);
without it, h2c with prior knowledge; with ``--tls``, TLS with ALPN ``h2`` only, trusting
``--ca``.  Once the server's SETTINGS allow extended CONNECT it opens, interleaved on the one
connection: ``/ws/0`` offering permessage-deflate, ``GET /big``, ``/ws/1`` without extensions
(and with a ping inside a fragmented message) — by default; ``--websockets`` and ``--gets`` make
more of each, alternating (even WebSockets offer permessage-deflate; the GETs cycle through
``/big``, ``/hello`` and a 404).  Each WebSocket follows the :mod:`h2ws.testkit.peers.plan` mix,
closes with a close handshake and is then reset with RST_STREAM(CANCEL).  The log has the
format of :mod:`h2ws.testkit.peers.plan`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import client_extensions_handshake
from wsproto.utilities import split_comma_header

from .plan import WsLog, make_plan
from .wssession import WsSession


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("h2_py_client: timed out")
        return left


@dataclass
class WsStream:
    log: WsLog
    deflate: bool
    offered: list[Extension] = field(default_factory=list)
    session: WsSession | None = None
    done: bool = False


@dataclass
class GetStream:
    entry: dict[str, Any]
    body: bytearray = field(default_factory=bytearray)
    done: bool = False


class Client:
    def __init__(
        self,
        sock: socket.socket,
        deadline: Deadline,
        authority: str,
        seed: int,
        scheme: bytes = b"http",
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.authority = authority
        self.seed = seed
        self.scheme = scheme
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.outbound: dict[int, bytearray] = {}
        self.websockets: dict[int, WsStream] = {}
        self.gets: dict[int, GetStream] = {}
        self.server_settings: dict[str, int] = {}
        self.errors: list[str] = []
        self.local_port = sock.getsockname()[1]

    # -------------------------------------------------------------------------------- plumbing
    def flush(self) -> None:
        for stream_id, buf in self.outbound.items():
            while buf:
                try:
                    window = self.conn.local_flow_control_window(stream_id)
                except h2.exceptions.StreamClosedError:
                    buf.clear()
                    break
                n = min(len(buf), window, self.conn.max_outbound_frame_size)
                if n <= 0:
                    break
                self.conn.send_data(stream_id, bytes(buf[:n]))
                del buf[:n]
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def recv(self) -> bytes:
        self.sock.settimeout(self.deadline.left())
        return self.sock.recv(65536)

    def run_until(self, predicate: Any) -> None:
        self.flush()
        while not predicate():
            data = self.recv()
            if not data:
                raise ConnectionError("the server closed the connection")
            self.handle(self.conn.receive_data(data))
            self.flush()

    # ---------------------------------------------------------------------------------- events
    def handle(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                for code, setting in event.changed_settings.items():
                    name = getattr(code, "name", str(code))
                    self.server_settings[name] = setting.new_value
            elif isinstance(event, h2.events.ResponseReceived):
                self.on_response(event.stream_id, event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.on_data(event.stream_id, event.data)
            elif isinstance(event, h2.events.StreamEnded):
                self.on_end(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.errors.append(f"stream {event.stream_id} reset by the server")
                self.on_end(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise ConnectionError(f"GOAWAY from the server: {event.error_code}")

    def on_response(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        fields = {k.decode(): v.decode() for k, v in headers}
        status = int(fields.get(":status", "0"))
        if stream_id in self.gets:
            self.gets[stream_id].entry["status"] = status
            return
        ws = self.websockets[stream_id]
        ws.log.status = status
        ws.log.response_headers = {k: v for k, v in fields.items() if not k.startswith(":")}
        if status != 200:
            raise ConnectionError(f"{ws.log.path}: status {status}")
        accepted = fields.get("sec-websocket-extensions")
        extensions: list[Extension] = []
        if accepted:
            accepts = split_comma_header(accepted.encode())
            extensions = client_extensions_handshake(accepts, ws.offered)
        ws.log.extensions = fields.get("sec-websocket-extensions")
        index = int(ws.log.path.rsplit("/", 1)[1])
        plan = make_plan(index, self.seed, ping_inside=not extensions)
        ws.session = WsSession(
            WsConnection(ConnectionType.CLIENT, extensions), plan, ws.log, f"bye {index}"
        )
        self.outbound[stream_id] += ws.session.start()

    def on_data(self, stream_id: int, data: bytes) -> None:
        if stream_id in self.gets:
            self.gets[stream_id].body += data
            return
        ws = self.websockets[stream_id]
        if ws.session is None or ws.done:
            return
        self.outbound[stream_id] += ws.session.receive(data)
        if ws.session.done:
            self.flush()  # the close frame first, then the reset
            # hypercorn fails the whole connection on DATA (even an empty END_STREAM) after its
            # close frame, so the stream ends with RST_STREAM(CANCEL) (RFC 8441 section 5).
            self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            ws.log.stream_end = "rst_stream:CANCEL"
            ws.done = True

    def on_end(self, stream_id: int) -> None:
        if stream_id in self.gets:
            get = self.gets[stream_id]
            get.entry["body_length"] = len(get.body)
            get.entry["body_sha256"] = hashlib.sha256(get.body).hexdigest()
            get.done = True
        elif stream_id in self.websockets:
            ws = self.websockets[stream_id]
            if not ws.done:
                ws.log.errors.append("the server ended the stream before the close handshake")
                ws.done = True

    # -------------------------------------------------------------------------------- requests
    def open_get(self, path: str, stream_id: int | None = None) -> None:
        entry = {
            "stream_id": None,
            "local_port": self.local_port,
            "method": "GET",
            "path": path,
            "status": None,
            "body_length": 0,
            "body_sha256": None,
        }
        if stream_id is None:  # not the upgraded request: send it
            stream_id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":scheme", self.scheme),
                    (b":authority", self.authority.encode()),
                    (b":path", path.encode()),
                ],
                end_stream=True,
            )
        entry["stream_id"] = stream_id
        self.gets[stream_id] = GetStream(entry)

    def open_websocket(self, index: int, deflate: bool) -> None:
        stream_id = self.conn.get_next_available_stream_id()
        log = WsLog(path=f"/ws/{index}", stream_id=stream_id, local_port=self.local_port)
        ws = WsStream(log, deflate)
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", self.scheme),
            (b":path", log.path.encode()),
            (b":authority", self.authority.encode()),
            (b"sec-websocket-version", b"13"),
        ]
        if deflate:
            ws.offered = [PerMessageDeflate()]
            offer = ws.offered[0].offer()
            headers.append((b"sec-websocket-extensions", f"permessage-deflate; {offer}".encode()))
        self.conn.send_headers(stream_id, headers, end_stream=False)
        self.outbound[stream_id] = bytearray()
        self.websockets[stream_id] = ws

    def all_done(self) -> bool:
        return all(w.done for w in self.websockets.values()) and all(
            g.done for g in self.gets.values()
        )


def upgrade(sock: socket.socket, client: Client, path: str) -> None:
    """HTTP/1.1 GET with ``Upgrade: h2c``; returns once the server switched to HTTP/2."""
    settings = client.conn.initiate_upgrade_connection()
    assert settings is not None
    request = (
        (
            f"GET {path} HTTP/1.1\r\nHost: {client.authority}\r\n"
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        ).encode()
        + b"HTTP2-Settings: "
        + settings
        + b"\r\n\r\n"
    )
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = client.recv()
        if not data:
            raise ConnectionError("closed during the h2c upgrade")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(f"no h2c upgrade: {status!r}")
    client.open_get(path, stream_id=1)  # the upgraded request is stream 1, half-closed (local)
    client.flush()  # the connection preface and SETTINGS
    if rest:
        client.handle(client.conn.receive_data(rest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument(
        "--upgrade", action="store_true", help="Upgrade: h2c (else prior knowledge)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--websockets", type=int, default=2, help="WebSockets to open")
    parser.add_argument("--gets", type=int, default=1, help="GETs, between the WebSockets")
    parser.add_argument("--tls", action="store_true", help="TLS with ALPN h2 (else h2c)")
    parser.add_argument("--ca", help="CA certificate (PEM) to trust with --tls")
    parser.add_argument("--servername", default="localhost", help="SNI and :authority with --tls")
    args = parser.parse_args(argv)
    if args.tls and args.upgrade:
        parser.error("--upgrade is h2c only")

    deadline = Deadline(args.timeout)
    authority = f"{args.servername if args.tls else args.host}:{args.port}"
    with socket.create_connection((args.host, args.port), timeout=deadline.left()) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = raw
        if args.tls:
            context = ssl.create_default_context(cafile=args.ca)
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(raw, server_hostname=args.servername)
            if sock.selected_alpn_protocol() != "h2":
                print("h2_py_client: the server did not choose ALPN h2", file=sys.stderr)
                return 3
        scheme = b"https" if args.tls else b"http"
        client = Client(sock, deadline, authority, args.seed, scheme)
        if args.upgrade:
            upgrade(sock, client, "/hello")
        else:
            client.conn.initiate_connection()
        client.run_until(lambda: "ENABLE_CONNECT_PROTOCOL" in client.server_settings)
        if client.server_settings["ENABLE_CONNECT_PROTOCOL"] != 1:
            print("h2_py_client: no SETTINGS_ENABLE_CONNECT_PROTOCOL=1", file=sys.stderr)
            return 3
        gets = [f"/big?n={args.big}", "/hello", "/missing"]
        for i in range(max(args.websockets, args.gets)):
            if i < args.websockets:
                client.open_websocket(i, deflate=i % 2 == 0)
            if i < args.gets:
                client.open_get(gets[i % len(gets)])
        client.run_until(client.all_done)
        client.conn.close_connection()
        client.flush()
        if args.tls:
            # An SSL socket cannot half-close; the GOAWAY says we are done, and the server
            # gets a moment to close its side.
            client.deadline = Deadline(min(client.deadline.end - time.monotonic(), 2.0))
        else:
            sock.shutdown(socket.SHUT_WR)
        try:  # let the server close its side
            while client.recv():
                pass
        except (TimeoutError, OSError):
            pass

    log = {
        "client": "python-h2",
        "transport": "h2" if args.tls else "h2c-upgrade" if args.upgrade else "h2c",
        "host": args.host,
        "port": args.port,
        "local_port": client.local_port,
        "seed": args.seed,
        "enable_connect_protocol": True,
        "server_settings": client.server_settings,
        "websockets": [asdict(w.log) for w in client.websockets.values()],
        "requests": [g.entry for g in client.gets.values()],
    }
    with open(args.log, "w") as f:
        json.dump(log, f, indent=1)
    errors = client.errors + [f"{w['path']}: {e}" for w in log["websockets"] for e in w["errors"]]
    if errors:
        print(f"h2_py_client: {'; '.join(errors)}", file=sys.stderr)
        return 4
    print(f"h2_py_client: {len(client.websockets)} websockets ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
