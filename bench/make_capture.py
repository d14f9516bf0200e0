"""Write a large, synthetic but protocol-exact h2c capture full of RFC 8441 WebSockets.

Why synthetic: the benchmark needs captures of any size (hundreds of thousands to millions of
WebSocket messages) whose exact content is known, so that the decoder's output can be checked row
for row, and that can be made in seconds on any machine without running servers or tcpdump.

Why still exact: every HTTP/2 byte is written by two python-hyper ``h2`` connections talking to
each other in memory (a client, and a server that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL), so
preface, SETTINGS, HPACK, stream ids, flow control and WINDOW_UPDATEs are what a real strict peer
writes; every WebSocket frame is written by ``wsproto``'s RFC 6455 frame writer (client frames
masked, server frames not). Only TCP/IP is hand-made here: a SYN/SYN-ACK/ACK handshake, correct
sequence and acknowledgement numbers, MSS-sized segments (small writes sometimes coalesced, large
ones split, ACKs every second segment or piggybacked), IP and TCP checksums, FIN at the end, and
timestamps that only go forward.

Traffic: ``--connections`` TCP connections, each with ``--streams`` WebSocket streams opened by
extended CONNECT after the server's SETTINGS arrived, and ordinary GET/POST requests with bodies of
varied size interleaved on the same connections. On the WebSocket streams the client sends text or
binary messages (mostly 20-200 bytes, some up to 24 KiB, a few fragmented) and the server echoes
each; now and then a ping is answered by a pong; at the end each stream closes with a close
handshake and END_STREAM, the client sends GOAWAY and both sides FIN.

A JSON sidecar (``FILE.json``) records what was written - messages per direction and opcode,
streams, connections, HTTP/2 frames per type, packets - so that a benchmark can check a decoder.
Payload sizes, choices, timing and TCP sequence numbers follow ``--seed``; wsproto draws the
WebSocket masking keys from ``os.urandom`` as RFC 6455 requires, so the client payload bytes on the
wire differ between runs while every count and every unmasked payload stays the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import dpkt
import h2.config
import h2.connection
import h2.events
import h2.settings
from wsproto.frame_protocol import CloseReason, FrameProtocol

C2S = 0
S2C = 1
DIRECTION_NAMES = ("c2s", "s2c")

FRAME_TYPE_NAMES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SIDECAR_FORMAT = 1  # bump when the sidecar's meaning changes, so old captures are remade
CLOSE_REASON = "bye"
CLOSE_PAYLOAD = struct.pack("!H", CloseReason.NORMAL_CLOSURE) + CLOSE_REASON.encode()

CLIENT_IP = bytes([127, 0, 0, 1])
SERVER_IP = bytes([127, 0, 0, 1])
DLT_EN10MB = 1
DLT_LINUX_SLL = 113

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_PSH = 0x08
TCP_ACK = 0x10
WINDOW_SCALE = 7
WINDOW_FIELD = 1024  # x 2**7 = 128 KiB advertised receive window, never the bottleneck here

_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_PSEUDO_HEADER = struct.Struct("!4s4sBBH")


# -- TCP/IP ----------------------------------------------------------------------------------


class Clock:
    """Capture time in integer microseconds, so pcap timestamps never round backwards."""

    def __init__(self, rng: random.Random, start_us: int = 1_700_000_000_000_000) -> None:
        self.now_us = start_us
        self._randint = rng.randint
        self._expovariate = rng.expovariate

    def step(self, low: int, high: int) -> int:
        self.now_us += self._randint(low, high)
        return self.now_us

    def idle(self, mean_us: float) -> None:
        """A pause between application actions (exponential, like independent arrivals)."""
        self.now_us += 1 + int(self._expovariate(1.0 / mean_us))


class PcapSink:
    """Classic pcap through dpkt's writer, with an Ethernet or Linux cooked (SLL) link layer."""

    def __init__(self, stream: BinaryIO, link: str) -> None:
        self.link_type = DLT_EN10MB if link == "ethernet" else DLT_LINUX_SLL
        self._writer = dpkt.pcap.Writer(stream, snaplen=65535, linktype=self.link_type)
        if link == "ethernet":
            # tcpdump on Linux "lo" shows zero MAC addresses and type IPv4.
            header = bytes(12) + b"\x08\x00"
            self._link_headers = (header, header)
        else:
            # SLL: packet type (4 = sent by us, 0 = to us), ARPHRD_LOOPBACK, empty address, IPv4.
            self._link_headers = (
                struct.pack("!HHH8sH", 4, 772, 0, b"", 0x0800),
                struct.pack("!HHH8sH", 0, 772, 0, b"", 0x0800),
            )
        self.packets = 0
        self.bytes = 0

    def write(self, direction: int, ip_packet: bytes, ts_us: int) -> None:
        frame = self._link_headers[direction] + ip_packet
        self._writer.writepkt_time(frame, ts_us / 1_000_000)
        self.packets += 1
        self.bytes += len(frame)


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum (dpkt's in_cksum sums 16-bit words in C via array)."""
    result: int = dpkt.in_cksum(data)
    return result


class TcpFlow:
    """One TCP connection on the wire: sequence numbers, segmentation, ACKs, handshake, FIN.

    Every byte a side sends is delivered at once (no loss), so an ACK always acknowledges
    everything the peer sent so far; a receiver ACKs every second segment of a flight and
    otherwise piggybacks on its next segment or sends a pure ACK when the exchange is over.
    """

    def __init__(
        self,
        sink: PcapSink,
        clock: Clock,
        rng: random.Random,
        client_port: int,
        server_port: int,
        mss: int,
        coalesce: float,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._random = rng.random
        self._ports = ((client_port, server_port), (server_port, client_port))
        self._addrs = ((CLIENT_IP, SERVER_IP), (SERVER_IP, CLIENT_IP))
        self._next_seq = [rng.getrandbits(32), rng.getrandbits(32)]
        self._ip_id = [rng.getrandbits(16), rng.getrandbits(16)]
        self._unacked = [0, 0]  # segments received by this side and not yet acknowledged
        self.mss = mss
        self.coalesce = coalesce

    def _segment(
        self, direction: int, flags: int, payload: bytes = b"", options: bytes = b""
    ) -> None:
        sport, dport = self._ports[direction]
        src, dst = self._addrs[direction]
        seq = self._next_seq[direction]
        ack = self._next_seq[1 - direction] if flags & TCP_ACK else 0
        window = 65535 if flags & TCP_SYN else WINDOW_FIELD
        offset = (20 + len(options)) // 4 << 4
        header = _TCP_HEADER.pack(sport, dport, seq, ack, offset, flags, window, 0, 0)
        tcp = header + options + payload
        pseudo = _PSEUDO_HEADER.pack(src, dst, 0, 6, len(tcp))
        checksum = _checksum(pseudo + tcp)
        tcp = header[:16] + struct.pack("!H", checksum) + header[18:] + options + payload
        ip_id = self._ip_id[direction]
        self._ip_id[direction] = (ip_id + 1) & 0xFFFF
        ip = _IP_HEADER.pack(0x45, 0, 20 + len(tcp), ip_id, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        self._sink.write(direction, ip + tcp, self._clock.now_us)
        consumed = len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)  # SYN, FIN: 1 each
        self._next_seq[direction] = (seq + consumed) & 0xFFFFFFFF
        if flags & TCP_ACK:
            self._unacked[direction] = 0
        if payload or flags & (TCP_SYN | TCP_FIN):
            self._unacked[1 - direction] += 1

    def handshake(self) -> None:
        # MSS, NOP, window scale: what Linux would offer minus SACK and timestamps.
        options = struct.pack("!BBHBBBB", 2, 4, self.mss, 1, 3, 3, WINDOW_SCALE)
        self._clock.step(1, 5)
        self._segment(C2S, TCP_SYN, options=options)
        self._clock.step(10, 40)
        self._segment(S2C, TCP_SYN | TCP_ACK, options=options)
        self._clock.step(10, 40)
        self._segment(C2S, TCP_ACK)

    def flight(self, direction: int, writes: list[bytes]) -> None:
        """Send one side's application writes: coalesce some small ones, split at the MSS."""
        if self._unacked[direction]:
            self._clock.step(15, 120)  # turnaround before the reply (which carries the ACK)
        mss = self.mss
        pending = b""
        last = len(writes) - 1
        for i, data in enumerate(writes):
            pending += data
            if i < last and len(pending) < mss and self._random() < self.coalesce:
                continue  # Nagle / cork: this write leaves together with the next one
            for start in range(0, len(pending), mss):
                self._clock.step(1, 6)
                piece = pending[start : start + mss]
                flags = TCP_ACK | (TCP_PSH if start + mss >= len(pending) else 0)
                self._segment(direction, flags, piece)
                if self._unacked[1 - direction] >= 2:
                    self._clock.step(2, 10)
                    self._segment(1 - direction, TCP_ACK)
            pending = b""

    def settle(self) -> None:
        """The exchange is over: whoever still owes an ACK sends a pure one (delayed ACK)."""
        for direction in (C2S, S2C):
            if self._unacked[direction]:
                self._clock.step(20, 200)
                self._segment(direction, TCP_ACK)

    def close(self) -> None:
        self.settle()
        self._clock.step(20, 80)
        self._segment(C2S, TCP_FIN | TCP_ACK)
        self._clock.step(20, 80)
        self._segment(S2C, TCP_FIN | TCP_ACK)
        self._clock.step(20, 80)
        self._segment(C2S, TCP_ACK)


# -- HTTP/2 + WebSocket ----------------------------------------------------------------------


@dataclass
class Stats:
    """What was written; becomes the JSON sidecar."""

    messages: Counter[tuple[int, str]] = field(default_factory=Counter)  # (direction, opcode)
    ws_frames: Counter[int] = field(default_factory=Counter)  # per direction
    fragmented: int = 0
    h2_frames: Counter[tuple[int, int]] = field(default_factory=Counter)  # (direction, type)
    ws_streams: int = 0
    http_streams: int = 0
    payload_bytes: list[int] = field(default_factory=lambda: [0, 0])  # per direction
    payload_digests: list[int] = field(default_factory=lambda: [0, 0])  # see message()
    http_body_bytes: int = 0

    def message(self, direction: int, opcode: str, payload: bytes, frames: int = 1) -> None:
        """Count one WebSocket message as the application sees it (unmasked, defragmented).

        The SHA-256 digests of a direction's payloads are added up as integers modulo 2**256:
        order does not matter, yet one wrong byte or one missing message changes the sum.
        """
        self.messages[direction, opcode] += 1
        self.ws_frames[direction] += frames
        self.payload_bytes[direction] += len(payload)
        digest = int.from_bytes(hashlib.sha256(payload).digest())
        self.payload_digests[direction] = (self.payload_digests[direction] + digest) % (1 << 256)

    def data_messages(self) -> int:
        return sum(n for (_, op), n in self.messages.items() if op in ("text", "binary"))


class Peer:
    """One side's h2 connection, its queued stream data (flow control) and its writes."""

    def __init__(self, conn: h2.connection.H2Connection, direction: int, stats: Stats) -> None:
        self.conn = conn
        self.direction = direction
        self.writes: list[bytes] = []
        self.queued: dict[int, deque[tuple[bytes, bool]]] = {}
        self._stats = stats
        self._preface_pending = direction == C2S

    def flush(self) -> None:
        """Keep what h2 wrote for the last operation as one application write."""
        data = self.conn.data_to_send()
        if data:
            self._count_frames(data)
            self.writes.append(data)

    def _count_frames(self, data: bytes) -> None:
        """h2 always writes whole frames, so a write's frame headers can be walked directly."""
        offset = 0
        if self._preface_pending:
            assert data.startswith(CLIENT_PREFACE)
            offset = len(CLIENT_PREFACE)
            self._preface_pending = False
        counter = self._stats.h2_frames
        direction = self.direction
        end = len(data)
        while offset < end:
            length = int.from_bytes(data[offset : offset + 3])
            counter[direction, data[offset + 3]] += 1
            offset += 9 + length
        assert offset == end, "h2 wrote a partial frame"

    def queue(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.queued.setdefault(stream_id, deque()).append((data, end_stream))
        self.drain()

    def drain(self) -> None:
        """Send queued stream data as far as the peer's flow-control windows allow."""
        if not self.queued:
            return
        conn = self.conn
        for stream_id in list(self.queued):
            items = self.queued[stream_id]
            while items:
                data, end_stream = items[0]
                window = min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                )
                if len(data) <= window:
                    conn.send_data(stream_id, data, end_stream=end_stream)
                    items.popleft()
                elif window > 0:
                    conn.send_data(stream_id, data[:window])
                    items[0] = (data[window:], end_stream)
                else:
                    break
                self.flush()
            if not items:
                del self.queued[stream_id]


@dataclass
class WsStream:
    stream_id: int
    client: FrameProtocol
    server: FrameProtocol


class Connection:
    """A client and a server h2 connection joined by a TcpFlow; the server echoes WebSockets."""

    def __init__(self, tcp: TcpFlow, stats: Stats, blob: bytes, text_blob: bytes) -> None:
        self.tcp = tcp
        self.stats = stats
        self._blob = blob
        self._text_blob = text_blob
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        # h2's own initial SETTINGS (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE) plus RFC 8441's.
        server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: server.DEFAULT_MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        self.client = Peer(client, C2S, stats)
        self.server = Peer(server, S2C, stats)
        self.connect_protocol_enabled = False
        self.ws: list[WsStream] = []
        self._requests: dict[int, dict[bytes, bytes]] = {}
        self._ws_ids: set[int] = set()
        self._handlers: tuple[Callable[[h2.events.Event], None], ...] = (
            self._on_client_event,
            self._on_server_event,
        )

    # Moving bytes --------------------------------------------------------------------------

    def pump(self) -> None:
        """Deliver writes both ways (as TCP flights) until neither side has anything to say."""
        peers = (self.client, self.server)
        while True:
            moved = False
            for sender in peers:
                if not sender.writes:
                    continue
                moved = True
                receiver = peers[1 - sender.direction]
                writes, sender.writes = sender.writes, []
                self.tcp.flight(sender.direction, writes)
                handle = self._handlers[receiver.direction]
                for event in receiver.conn.receive_data(b"".join(writes)):
                    handle(event)
                receiver.flush()
                receiver.drain()
                sender.drain()
            if not moved:
                return

    def _on_client_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            if setting is not None and setting.new_value == 1:
                self.connect_protocol_enabled = True
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            self.client.conn.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
        elif isinstance(event, h2.events.ResponseReceived):
            assert event.headers is not None
            assert (b":status", b"200") in event.headers, event.headers
        elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
            if isinstance(event, h2.events.ConnectionTerminated):
                return  # only the GOAWAY the client itself asked for at the end
            raise RuntimeError(f"unexpected {event}")

    def _on_server_event(self, event: h2.events.Event) -> None:
        server = self.server
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            headers = dict(event.headers)
            if headers[b":method"] == b"CONNECT" and headers.get(b":protocol") == b"websocket":
                self._ws_ids.add(event.stream_id)
                server.conn.send_headers(event.stream_id, [(":status", "200")])
                server.flush()
            else:
                self._requests[event.stream_id] = headers
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            server.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            request = self._requests.pop(event.stream_id, None)
            if request is not None:
                self._respond(event.stream_id, request)
        elif isinstance(event, h2.events.StreamReset):
            raise RuntimeError(f"unexpected {event}")

    def _respond(self, stream_id: int, request: dict[bytes, bytes]) -> None:
        size = int(request[b":path"].rsplit(b"size=", 1)[1])
        body = self._blob[:size]
        self.server.conn.send_headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", "application/octet-stream"),
                ("content-length", str(size)),
                ("cache-control", "no-store"),
            ],
            end_stream=size == 0,
        )
        self.server.flush()
        if size:
            self.server.queue(stream_id, body, end_stream=True)
        self.stats.http_body_bytes += size

    # Application actions --------------------------------------------------------------------

    def start(self, streams: int, rng: random.Random) -> None:
        """TCP handshake, h2 prefaces and SETTINGS, then the WebSocket streams."""
        self.tcp.handshake()
        self.server.conn.initiate_connection()
        self.server.flush()
        self.client.conn.initiate_connection()
        self.client.flush()
        # pump() lets the client speak first: its preface, then the server's SETTINGS and ACK.
        self.pump()
        self.tcp.settle()
        if not self.connect_protocol_enabled:
            raise RuntimeError("server did not enable the extended CONNECT protocol")
        for i in range(streams):
            self.open_websocket(f"/ws/{i}?client={rng.randrange(10**6)}")

    def open_websocket(self, path: str) -> None:
        client = self.client.conn
        stream_id = client.get_next_available_stream_id()
        client.send_headers(
            stream_id,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "bench.example:8080"),
                ("sec-websocket-version", "13"),
                ("origin", "http://bench.example:8080"),
            ],
        )
        self.client.flush()
        self.pump()
        self.tcp.settle()
        assert stream_id in self._ws_ids
        self.ws.append(WsStream(stream_id, FrameProtocol(True, []), FrameProtocol(False, [])))
        self.stats.ws_streams += 1

    def request(self, rng: random.Random, body_size: int) -> None:
        """An ordinary request sharing the connection: GET mostly, POST with a body sometimes."""
        client = self.client.conn
        stream_id = client.get_next_available_stream_id()
        post = rng.random() < 0.25
        headers = [
            (":method", "POST" if post else "GET"),
            (":scheme", "http"),
            (":path", f"/api/items/{stream_id}?size={body_size}"),
            (":authority", "bench.example:8080"),
            ("accept", "*/*"),
            ("user-agent", "h2ws-bench/1"),
        ]
        if post:
            upload = rng.randint(16, 4096)
            headers.append(("content-length", str(upload)))
            client.send_headers(stream_id, headers)
            self.client.flush()
            self.client.queue(stream_id, self._blob[-upload:], end_stream=True)
            self.stats.http_body_bytes += upload
        else:
            client.send_headers(stream_id, headers, end_stream=True)
            self.client.flush()
        self.stats.http_streams += 1
        self.pump()
        self.tcp.settle()

    def _payload(self, rng: random.Random, size: int) -> tuple[bytes | str, str]:
        start = rng.randrange(len(self._blob) - size)
        if rng.random() < 0.5:
            return self._text_blob[start : start + size].decode("ascii"), "text"
        return self._blob[start : start + size], "binary"

    def echo(self, rng: random.Random, sizes: list[tuple[WsStream, int]]) -> None:
        """Client messages on some streams in one go, then the server echoes each one."""
        stats = self.stats
        echoes: list[tuple[WsStream, bytes | str, str]] = []
        for ws, size in sizes:
            payload, opcode = self._payload(rng, size)
            frames = 1
            if size >= 8 and rng.random() < 0.02:
                frames = rng.randint(2, 4)
                stats.fragmented += 1
            step = math.ceil(size / frames)
            for i in range(frames):
                piece = payload[i * step : (i + 1) * step]
                self.client.queue(ws.stream_id, bytes(ws.client.send_data(piece, i == frames - 1)))
            raw = payload.encode() if isinstance(payload, str) else payload
            stats.message(C2S, opcode, raw, frames)
            echoes.append((ws, payload, opcode))
        self.pump()
        for ws, payload, opcode in echoes:
            self.server.queue(ws.stream_id, bytes(ws.server.send_data(payload)))
            stats.message(S2C, opcode, payload.encode() if isinstance(payload, str) else payload)
        self.pump()
        self.tcp.settle()

    def ping(self, rng: random.Random) -> None:
        ws = rng.choice(self.ws)
        data = rng.randbytes(8)
        self.client.queue(ws.stream_id, bytes(ws.client.ping(data)))
        self.pump()
        self.server.queue(ws.stream_id, bytes(ws.server.pong(data)))
        self.pump()
        self.tcp.settle()
        self.stats.message(C2S, "ping", data)
        self.stats.message(S2C, "pong", data)

    def finish(self) -> None:
        """Close handshake and END_STREAM on every WebSocket, GOAWAY, then TCP FIN both ways."""
        for ws in self.ws:
            close = ws.client.close(CloseReason.NORMAL_CLOSURE, CLOSE_REASON)
            self.client.queue(ws.stream_id, bytes(close))
            self.pump()
            close = ws.server.close(CloseReason.NORMAL_CLOSURE, CLOSE_REASON)
            self.server.queue(ws.stream_id, bytes(close), end_stream=True)
            self.pump()
            self.client.queue(ws.stream_id, b"", end_stream=True)
            self.pump()
            self.tcp.settle()
            for direction in (C2S, S2C):
                self.stats.message(direction, "close", CLOSE_PAYLOAD)
        self.client.conn.close_connection()
        self.client.flush()
        self.pump()
        self.tcp.close()


# -- the capture -----------------------------------------------------------------------------


@dataclass
class Params:
    messages: int = 200_000
    connections: int = 4
    streams: int = 8
    seed: int = 1
    port: int = 8080
    link: str = "ethernet"
    mss: int = 1460
    coalesce: float = 0.4
    request_every: int = 40  # one ordinary request per this many echo actions, on average
    ping_every: int = 200


def _message_size(rng: random.Random) -> int:
    """Mostly small (20-200 bytes), 1 in 100 from 200 B to 24 KiB (log-uniform).

    The larger ones span several TCP segments and, above 16 KiB, several HTTP/2 DATA frames.
    """
    if rng.random() < 0.01:
        return int(math.exp(rng.uniform(math.log(200), math.log(24 * 1024))))
    return rng.randint(20, 200)


def _body_size(rng: random.Random) -> int:
    """Response bodies from empty to 160 KiB, log-uniform: some wait for WINDOW_UPDATEs."""
    if rng.random() < 0.05:
        return 0
    return int(math.exp(rng.uniform(math.log(16), math.log(160 * 1024))))


def generate(params: Params, output: Path) -> dict[str, Any]:
    """Write the capture and its sidecar; return the sidecar's content."""
    if params.messages < 2:
        raise ValueError("--messages must be at least 2 (a message and its echo)")
    started = time.perf_counter()
    rng = random.Random(params.seed)
    blob = rng.randbytes(1 << 20)
    text_blob = bytes(32 + b % 95 for b in blob)  # printable ASCII, valid UTF-8
    stats = Stats()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as stream:
        sink = PcapSink(stream, params.link)
        clock = Clock(rng)
        connections: list[Connection] = []
        for i in range(params.connections):
            tcp = TcpFlow(sink, clock, rng, 40000 + 7 * i, params.port, params.mss, params.coalesce)
            connection = Connection(tcp, stats, blob, text_blob)
            connection.start(params.streams, rng)
            connections.append(connection)
            clock.idle(2000)

        # Every client message is echoed, so the budget is reached in pairs.
        target_pairs = (params.messages + 1) // 2
        pairs = 0
        while pairs < target_pairs:
            clock.idle(250)
            connection = rng.choice(connections)
            roll = rng.random()
            if roll < 1 / params.request_every:
                connection.request(rng, _body_size(rng))
            elif roll < 1 / params.request_every + 1 / params.ping_every:
                connection.ping(rng)
            else:
                batch = min(rng.choice((1, 1, 1, 2, 2, 3, 4)), target_pairs - pairs)
                chosen = rng.sample(connection.ws, min(batch, len(connection.ws)))
                connection.echo(rng, [(ws, _message_size(rng)) for ws in chosen])
                pairs += len(chosen)
        for connection in connections:
            clock.idle(1000)
            connection.finish()

    messages_by = {
        DIRECTION_NAMES[d]: {op: n for (dd, op), n in sorted(stats.messages.items()) if dd == d}
        for d in (C2S, S2C)
    }
    frames_by = {
        DIRECTION_NAMES[d]: {
            FRAME_TYPE_NAMES.get(t, str(t)): n
            for (dd, t), n in sorted(stats.h2_frames.items())
            if dd == d
        }
        for d in (C2S, S2C)
    }
    total_frames = Counter[str]()
    for per_direction in frames_by.values():
        total_frames.update(per_direction)
    by_opcode = Counter[str]()
    for (_, op), n in stats.messages.items():
        by_opcode[op] += n
    sidecar: dict[str, Any] = {
        "capture": output.name,
        "generator": "bench/make_capture.py",
        "format": SIDECAR_FORMAT,
        "params": vars(params),
        "server_port": params.port,
        "link_type": params.link,
        "packets": sink.packets,
        "bytes": sink.bytes,
        "connections": params.connections,
        "streams": {
            "websocket": stats.ws_streams,
            "http": stats.http_streams,
            "total": stats.ws_streams + stats.http_streams,
        },
        "messages": {
            "total": sum(stats.messages.values()),
            "data": stats.data_messages(),
            "c2s": sum(n for (d, _), n in stats.messages.items() if d == C2S),
            "s2c": sum(n for (d, _), n in stats.messages.items() if d == S2C),
            "by_opcode": dict(sorted(by_opcode.items())),
            "by_direction": messages_by,
            "fragmented": stats.fragmented,
        },
        "ws_frames": {DIRECTION_NAMES[d]: stats.ws_frames[d] for d in (C2S, S2C)},
        "payload_bytes": {DIRECTION_NAMES[d]: stats.payload_bytes[d] for d in (C2S, S2C)},
        "payload_sha256_sum": {
            DIRECTION_NAMES[d]: f"{stats.payload_digests[d]:064x}" for d in (C2S, S2C)
        },
        "http_body_bytes": stats.http_body_bytes,
        "h2_frames": {
            "total": sum(total_frames.values()),
            "by_type": dict(sorted(total_frames.items())),
            "by_direction": frames_by,
        },
        "generator_seconds": round(time.perf_counter() - started, 3),
    }
    sidecar_path(output).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def sidecar_path(capture: Path) -> Path:
    return capture.with_name(capture.name + ".json")


# -- checking a capture with tshark ----------------------------------------------------------


def verify_with_tshark(capture: Path, sidecar: dict[str, Any], tshark: str = "tshark") -> list[str]:
    """Let tshark decode the capture; return the disagreements (empty when all is well).

    Checks that tshark sees exactly the HTTP/2 frames h2 wrote (per type) and that its expert
    system reports no malformed packet and no error (e.g. a bad checksum or a TCP problem).
    """
    import subprocess

    port = str(sidecar["server_port"])
    fields = subprocess.run(
        [tshark, "-r", str(capture), "-d", f"tcp.port=={port},http2", "-o",
         "tcp.check_checksum:TRUE", "-Y", "http2", "-T", "fields", "-e", "http2.type"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    seen = Counter[str]()
    for line in fields.splitlines():
        for value in line.split(","):
            if value:
                seen[FRAME_TYPE_NAMES.get(int(value), value)] += 1
    problems = []
    expected = sidecar["h2_frames"]["by_type"]
    if dict(seen) != expected:
        problems.append(f"tshark frame counts {dict(sorted(seen.items()))} != generated {expected}")
    expert = subprocess.run(
        [tshark, "-r", str(capture), "-d", f"tcp.port=={port},http2", "-o",
         "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-q", "-z", "expert,warn"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if any(line.startswith(("Errors", "Warns")) for line in expert.splitlines()):
        problems.append("tshark expert info:\n" + expert.strip())
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=Params.messages,
        metavar="N",
        help="WebSocket data messages, both directions (default %(default)s)",
    )
    parser.add_argument("--connections", type=int, default=Params.connections)
    parser.add_argument(
        "--streams", type=int, default=Params.streams, help="WebSocket streams per connection"
    )
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--port", type=int, default=Params.port, help="server TCP port")
    parser.add_argument("--link", choices=("ethernet", "sll"), default=Params.link)
    parser.add_argument("--mss", type=int, default=Params.mss)
    parser.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, check the capture with tshark (slow on large files)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="pcap file to write")
    args = parser.parse_args(argv)  # fmt: skip
    if args.streams < 1 or args.connections < 1:
        parser.error("--connections and --streams must be at least 1")
    params = Params(
        messages=args.messages,
        connections=args.connections,
        streams=args.streams,
        seed=args.seed,
        port=args.port,
        link=args.link,
        mss=args.mss,
    )
    sidecar = generate(params, args.output)
    messages = sidecar["messages"]
    print(
        f"{args.output}: {sidecar['packets']} packets, {sidecar['bytes']} bytes, "
        f"{messages['total']} WebSocket messages ({messages['data']} text/binary, "
        f"{messages['c2s']} c2s, {messages['s2c']} s2c) on {sidecar['streams']['websocket']} "
        f"WebSocket + {sidecar['streams']['http']} HTTP streams, {sidecar['connections']} "
        f"connections, {sidecar['h2_frames']['total']} HTTP/2 frames "
        f"in {sidecar['generator_seconds']:.1f} s; counts in {sidecar_path(args.output)}"
    )
    if args.verify:
        problems = verify_with_tshark(args.output, sidecar)
        for problem in problems:
            print(f"verify: {problem}", file=sys.stderr)
        print("verify: tshark agrees" if not problems else "verify: FAILED")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
