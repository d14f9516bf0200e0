"""An RFC 8441 client over TLS in Python: ``ssl`` (with ``keylog_filename``), python-hyper h2 and
wsproto's frame layer.

    python -m h2ws.testkit.tls_peers.py_client --port N --ca ca.pem --keylog k.txt --log out.json
        [--tls 1.2|1.3] [--ciphers OPENSSL-CIPHER-LIST] [--key-update] [--big N]
        [--plan full|small] [--no-compat]

On one connection: ``GET /big?n=N`` (a response of many TLS records, split across TCP segments),
then an extended-CONNECT WebSocket ``/ws`` carrying the messages of :func:`messages` in two
batches, each waiting for its echoes.  With ``--key-update`` the client calls OpenSSL's
``SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED)`` between the batches (Python has no API for it;
the ``SSL*`` is read from the ``_ssl._SSLSocket`` object with ctypes), so the second batch goes
out under the next traffic secret and the server answers with a KeyUpdate of its own.  Then the
close handshake, RST_STREAM(CANCEL) (hypercorn does not end the stream itself), GOAWAY.

``--plan small`` sends :func:`small_messages` instead (a capture of a few tens of KB, small
enough to keep in the repository); ``--no-compat`` clears OpenSSL's middlebox compatibility
mode, so a TLS 1.3 ClientHello carries no legacy session id and the server sends no
ChangeCipherSpec.

The log: ``{local_port, tls_version, cipher, key_update, get: {status, length, sha256},
websocket: {stream_id, status, sent: [msg], received: [msg]}}`` with ``msg = {opcode,
payload_b64}`` in wire order, the close frames included.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import hashlib
import json
import random
import socket
import ssl
import struct
import sys
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.events import BytesMessage, CloseConnection, Message, TextMessage


def _length_edges(rng: random.Random) -> list[tuple[str, bytes]]:
    """Empty, non-ASCII text, the last 7-bit and first 16-bit lengths, a 3000-byte text."""
    return [
        ("text", b""),
        ("text", "h\u00e9llo \u2713 \U0001f600".encode()),
        ("binary", rng.randbytes(125)),
        ("binary", rng.randbytes(126)),
        ("text", b"x" * 3000),
    ]


def messages(seed: int = 8441) -> list[tuple[str, bytes]]:
    """A deterministic mix: empty, small, the 7/16/64-bit length encodings, multi-record sizes."""
    rng = random.Random(seed)
    out = [*_length_edges(rng), ("binary", rng.randbytes(65536))]
    for i in range(6):
        out.append(("text", f"message {i} ".encode() * rng.randint(1, 50)))
        out.append(("binary", rng.randbytes(rng.randint(1, 40000))))
    return out


def small_messages(seed: int = 8441) -> list[tuple[str, bytes]]:
    """A few messages of each length encoding, one that spans TLS records (20 KB)."""
    rng = random.Random(seed)
    return [
        *_length_edges(rng),
        ("binary", rng.randbytes(20000)),
        ("text", b"message 1 " * 30),
        ("binary", rng.randbytes(700)),
    ]


def ssl_pointer(sock: ssl.SSLSocket) -> int | None:
    """The ``SSL*`` of a socket: the field after the weak reference to the socket in CPython's
    ``PySSLSocket``.  Checked with ``SSL_version`` before it is used."""
    obj = sock._sslobj  # type: ignore[attr-defined]
    size = ctypes.sizeof(ctypes.c_void_p)
    return ctypes.c_void_p.from_address(id(obj) + 3 * size).value


def key_update(sock: ssl.SSLSocket) -> None:
    libssl = ctypes.CDLL("libssl.so.3")
    libssl.SSL_version.argtypes = [ctypes.c_void_p]
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    ptr = ssl_pointer(sock)
    if not ptr or libssl.SSL_version(ptr) != 0x0304:
        raise RuntimeError("cannot find the SSL* of the socket (or not TLS 1.3)")
    if libssl.SSL_key_update(ptr, 1) != 1:  # SSL_KEY_UPDATE_REQUESTED
        raise RuntimeError("SSL_key_update failed")


class Client:
    def __init__(self, sock: ssl.SSLSocket, authority: str, deadline: float) -> None:
        self.sock = sock
        self.authority = authority
        self.deadline = deadline
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.settings: dict[str, int] = {}
        self.responses: dict[int, int] = {}
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.ws: WsConnection = WsConnection(ConnectionType.CLIENT)
        self.ws_stream = 0
        self.received: list[tuple[str, bytes]] = []
        self._partial: list[bytes] = []
        self.closed = False

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("py_client: timed out")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.h2.receive_data(data):
            self.handle(event)
        self.flush()

    def until(self, predicate: Any) -> None:
        self.flush()
        while not predicate():
            self.pump()

    def handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, setting in event.changed_settings.items():
                self.settings[getattr(code, "name", str(code))] = setting.new_value
        elif isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            self.responses[event.stream_id] = int(headers[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id == self.ws_stream:
                self.ws.receive_data(event.data)
                self.ws_events()
            else:
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            self.ended.add(event.stream_id)

    def ws_events(self) -> None:
        for ev in self.ws.events():
            if isinstance(ev, Message):
                chunk = ev.data.encode() if isinstance(ev, TextMessage) else bytes(ev.data)
                self._partial.append(chunk)
                if ev.message_finished:
                    kind = "text" if isinstance(ev, TextMessage) else "binary"
                    self.received.append((kind, b"".join(self._partial)))
                    self._partial = []
            elif isinstance(ev, CloseConnection):
                payload = struct.pack("!H", ev.code) + (ev.reason or "").encode()
                self.received.append(("close", payload))
                self.closed = True

    def send_ws(self, data: bytes) -> None:
        while data:
            window = min(
                self.h2.local_flow_control_window(self.ws_stream), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                self.pump()
                continue
            self.h2.send_data(self.ws_stream, data[:window])
            data = data[window:]
            self.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--servername", default="localhost")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--keylog", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--tls", choices=("1.2", "1.3"))
    parser.add_argument("--ciphers", help="OpenSSL cipher list for TLS 1.2")
    parser.add_argument("--key-update", action="store_true")
    parser.add_argument("--big", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--plan", choices=("full", "small"), default="full")
    parser.add_argument("--no-compat", action="store_true")
    args = parser.parse_args(argv)

    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    ctx.keylog_filename = args.keylog
    ctx.set_alpn_protocols(["h2"])
    if args.tls:
        version = ssl.TLSVersion.TLSv1_2 if args.tls == "1.2" else ssl.TLSVersion.TLSv1_3
        ctx.minimum_version = ctx.maximum_version = version
    if args.ciphers:
        ctx.set_ciphers(args.ciphers)
    if args.no_compat:
        ctx.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
    deadline = time.monotonic() + args.timeout
    raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname=args.servername) as sock:
        authority = f"{args.servername}:{args.port}"
        client = Client(sock, authority, deadline)
        client.h2.initiate_connection()
        client.until(lambda: "ENABLE_CONNECT_PROTOCOL" in client.settings)

        get_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(
            get_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", f"/big?n={args.big}".encode()),
            ],
            end_stream=True,
        )
        client.until(lambda: get_id in client.ended)

        ws_id = client.ws_stream = client.h2.get_next_available_stream_id()
        client.h2.send_headers(
            ws_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"https"),
                (b":path", b"/ws"),
                (b":authority", authority.encode()),
                (b"sec-websocket-version", b"13"),
            ],
        )
        client.until(lambda: ws_id in client.responses)
        plan = small_messages() if args.plan == "small" else messages()
        sent: list[tuple[str, bytes]] = []
        half = len(plan) // 2
        for i, batch in enumerate((plan[:half], plan[half:])):
            if i == 1 and args.key_update:
                key_update(sock)
            for kind, payload in batch:
                event = (
                    TextMessage(data=payload.decode()) if kind == "text" else BytesMessage(payload)
                )
                client.send_ws(client.ws.send(event))
                sent.append((kind, payload))
            client.flush()
            while len(client.received) < len(sent):
                client.pump()
        close = CloseConnection(code=1000, reason="bye")
        client.send_ws(client.ws.send(close))
        sent.append(("close", struct.pack("!H", 1000) + b"bye"))
        client.until(lambda: client.closed)
        client.h2.reset_stream(ws_id, ErrorCodes.CANCEL)
        client.h2.close_connection()
        client.flush()
        negotiated, cipher = sock.version(), (sock.cipher() or ("?",))[0]
        local_port = sock.getsockname()[1]
        body = bytes(client.bodies.get(get_id, b""))
        with contextlib.suppress(OSError, ssl.SSLError):
            sock.unwrap()  # close_notify both ways

    def msgs(items: list[tuple[str, bytes]]) -> list[dict[str, str]]:
        return [{"opcode": k, "payload_b64": base64.b64encode(p).decode()} for k, p in items]

    log = {
        "local_port": local_port,
        "tls_version": negotiated,
        "cipher": cipher,
        "key_update": args.key_update,
        "get": {
            "stream_id": get_id,
            "status": client.responses.get(get_id),
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
        "websocket": {
            "stream_id": ws_id,
            "status": client.responses.get(ws_id),
            "sent": msgs(sent),
            "received": msgs(client.received),
        },
    }
    with open(args.log, "w") as f:
        json.dump(log, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
