"""An in-memory HTTP/2 client and server (python-hyper h2) that record the bytes they exchange.

Unit tests build exact byte streams with it: the h2 library is an independent, strict
implementation of RFC 9113 and RFC 8441, so what it writes is what real peers write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.settings
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

Chunk = tuple[str, bytes, float]


@dataclass
class H2Pair:
    """Client and server h2 connections; every write is kept as a (direction, bytes, ts) chunk."""

    chunks: list[Chunk] = field(default_factory=list)
    ts: float = 1_700_000_000.0
    enable_connect_protocol: bool = True

    def __post_init__(self) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, validate_inbound_headers=False)
        )
        if self.enable_connect_protocol:
            self.server.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1},
            )
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.flush()

    def tick(self, dt: float = 0.001) -> float:
        self.ts += dt
        return self.ts

    def flush(self) -> None:
        """Deliver pending bytes both ways until both sides are quiet (ACKs included)."""
        for _ in range(10):
            moved = False
            out = self.client.data_to_send()
            if out:
                self.chunks.append(("c2s", out, self.tick()))
                self.server.receive_data(out)
                moved = True
            out = self.server.data_to_send()
            if out:
                self.chunks.append(("s2c", out, self.tick()))
                self.client.receive_data(out)
                moved = True
            if not moved:
                return

    # -- helpers for common exchanges -------------------------------------------------------

    def get(self, path: str, body: bytes = b"hello", status: int = 200) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(
            sid,
            [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", path)],
            end_stream=True,
        )
        self.flush()
        self.server.send_headers(sid, [(":status", str(status))])
        self.flush()
        self.send("s2c", sid, body, end_stream=True)
        return sid

    def open_websocket(
        self, path: str = "/ws", status: int = 200, extensions: str | None = None
    ) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(
            sid,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":authority", "example"),
                (":path", path),
                ("sec-websocket-version", "13"),
            ],
        )
        self.flush()
        headers = [(":status", str(status))]
        if extensions:
            headers.append(("sec-websocket-extensions", extensions))
        self.server.send_headers(sid, headers, end_stream=status >= 300)
        self.flush()
        return sid

    def send(self, direction: str, sid: int, data: bytes, end_stream: bool = False) -> None:
        """Send as DATA frames of at most the peer's frame size, keeping flow control open."""
        conn = self.client if direction == "c2s" else self.server
        peer = self.server if direction == "c2s" else self.client
        size = conn.max_outbound_frame_size
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for i, piece in enumerate(pieces):
            conn.send_data(sid, piece, end_stream=end_stream and i == len(pieces) - 1)
            self.flush()
            if piece:
                peer.acknowledge_received_data(len(piece), sid)
                self.flush()


def ws_peer(direction: str, deflate: PerMessageDeflate | None = None) -> FrameProtocol:
    """A wsproto frame writer for one direction: client frames are masked, server frames not."""
    extensions = [deflate] if deflate is not None else []
    return FrameProtocol(client=direction == "c2s", extensions=extensions)
