"""A capture where multiplexing and connection sharing show: RFC 8441 WebSockets and HTTP requests
on one HTTP/2 connection, next to the HTTP/1.1 WebSockets RFC 8441 replaces.

Why a simulation: the report's metrics (concurrency, sharing, flow-control stalls, head-of-line
exposure, close misbehaviours, fallback) need traffic with known timing.  Every HTTP/2 byte is
written by python-hyper ``h2`` (a client and a server that advertises
SETTINGS_ENABLE_CONNECT_PROTOCOL), every WebSocket frame by ``wsproto`` (the HTTP/1.1 handshakes
too), so the bytes are what strict peers write; only time and TCP are simulated: a discrete-event
loop, a link of ``DELAY_S`` one-way delay and ``RATE_BPS`` per direction (so that a large response
really delays the WebSocket frames queued behind it), and a capture point at the client host
(client→server packets recorded when they leave, server→client packets when they arrive).  The
client reads HTTP bodies slowly (``READ_DELAY_S``), so a large response exhausts its flow-control
window and waits for WINDOW_UPDATEs.

Connections (``python -m tests.report_fixtures.scenario OUT.pcap`` writes the capture):

0. h2c to 127.0.0.1:8080 (advertises RFC 8441): GET /, WebSockets /chat (echo, pings, clean close
   with END_STREAM both ways), /feed (server pushes; the server answers the close without
   END_STREAM, so the client resets the stream: two known misbehaviours), /flaky (reset by the
   server without close frames), GET /big (256 KiB, while /chat echoes), GET /app.js for a second
   :authority (coalescing).
1. HTTP/1.1 WebSocket to 127.0.0.1:8080 after connection 0 advertised RFC 8441: a fallback.
2. h2c to 127.0.0.1:8081, which never advertises RFC 8441: GET /.
3. HTTP/1.1 WebSocket to 127.0.0.1:8081 (its server never advertised).
4. HTTP/1.1 WebSocket to 127.0.0.1:9000 (no HTTP/2 seen to that server).

Deterministic: fixed times and payloads; only the client masking keys (``os.urandom``, as RFC 6455
requires) vary, which changes no table value.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

DELAY_S = 0.010  # one way: RTT 20 ms
RATE_BPS = 8_000_000  # per direction: 64 KiB take 65 ms on the wire
READ_DELAY_S = 0.040  # the client application reads HTTP bodies this long after they arrive
MSS = 1448
T0 = 1_700_000_000.0

CLIENT_IP = bytes([127, 0, 0, 1])
SERVER_IP = bytes([127, 0, 0, 1])

#: What the scenario puts in, for tests to compare the report against.
EXPECTED: dict[str, Any] = {
    "connections": 5,
    "chat_messages": 30,  # client text messages on /chat, each echoed
    "chat_pings": 4,
    "feed_pushes": 12,
    "big_bytes": 256 * 1024,
    "h2_websockets": 3,
    "h2_http": 3,
    "h2_authorities": 2,
    "http1_websockets": 3,
}


class Sim:
    """A discrete-event loop: callbacks at simulated times, in time order (FIFO on ties)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (max(t, self.now), next(self._seq), fn))

    def after(self, dt: float, fn: Callable[[], None]) -> None:
        self.at(self.now + dt, fn)

    def run(self) -> None:
        while self._queue:
            t, _, fn = heapq.heappop(self._queue)
            self.now = t
            fn()


@dataclass
class Capture:
    packets: list[tuple[float, int, bytes]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, ts: float, frame: bytes) -> None:
        self.packets.append((ts, next(self._order), frame))

    def write(self, path: Path) -> None:
        with path.open("wb") as f:
            writer = dpkt.pcap.Writer(f, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
            for ts, _, frame in sorted(self.packets):
                writer.writepkt(frame, T0 + ts)


class Wire:
    """One TCP connection: handshake, MSS segments over a delayed, rate-limited link, ACKs, FIN.

    ``on_data[d]`` receives the bytes of direction ``d`` when they arrive at the other side.
    """

    def __init__(
        self, sim: Sim, cap: Capture, client_port: int, server_port: int, isn: int
    ) -> None:
        self.sim = sim
        self.cap = cap
        self.ports = {"c2s": (client_port, server_port), "s2c": (server_port, client_port)}
        self.seq = {"c2s": isn, "s2c": isn * 7 + 12345}
        self.received = {"c2s": 0, "s2c": 0}  # next expected seq of direction d, at its receiver
        self.busy = {"c2s": 0.0, "s2c": 0.0}
        self.on_data: dict[str, Callable[[bytes], None]] = {}
        self.ack_pending = {"c2s": False, "s2c": False}

    def _emit(self, d: str, flags: int, payload: bytes, ts: float, seq: int) -> None:
        sport, dport = self.ports[d]
        other = "s2c" if d == "c2s" else "c2s"
        ack = self.received[other] & 0xFFFFFFFF
        tcp = dpkt.tcp.TCP(
            sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack, flags=flags, win=65535
        )
        tcp.data = payload
        src, dst = (CLIENT_IP, SERVER_IP) if d == "c2s" else (SERVER_IP, CLIENT_IP)
        ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
        ip.len = 20 + len(bytes(tcp))
        eth = dpkt.ethernet.Ethernet(src=bytes(6), dst=bytes(6), type=0x0800, data=ip)
        self.cap.add(ts, bytes(eth))

    def _transmit(self, d: str, flags: int, payload: bytes) -> float:
        """Put one segment on the link; returns its arrival time. Capture at the client."""
        depart = max(self.sim.now, self.busy[d])
        self.busy[d] = depart + (len(payload) + 54) * 8 / RATE_BPS
        arrive = self.busy[d] + DELAY_S
        seq = self.seq[d]
        self.seq[d] += len(payload) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)
        self._emit(d, flags, payload, depart if d == "c2s" else arrive, seq)
        return arrive

    def handshake(self, then: Callable[[], None]) -> None:
        self._transmit("c2s", dpkt.tcp.TH_SYN, b"")
        self.received["c2s"] = self.seq["c2s"]

        def synack() -> None:
            arrive = self._transmit("s2c", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, b"")

            def ack() -> None:
                self.received["s2c"] = self.seq["s2c"]
                self._transmit("c2s", dpkt.tcp.TH_ACK, b"")
                then()

            self.sim.at(arrive, ack)

        self.sim.after(DELAY_S, synack)

    def send(self, d: str, data: bytes) -> None:
        for start in range(0, len(data), MSS):
            piece = data[start : start + MSS]
            end_seq = self.seq[d] + len(piece)
            arrive = self._transmit(d, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, piece)
            self.sim.at(
                arrive, lambda d=d, piece=piece, end_seq=end_seq: self._arrive(d, piece, end_seq)
            )

    def _arrive(self, d: str, piece: bytes, end_seq: int) -> None:
        self.received[d] = end_seq
        other = "s2c" if d == "c2s" else "c2s"
        if not self.ack_pending[other]:
            self.ack_pending[other] = True
            self.sim.after(0.0002, lambda: self._pure_ack(other))
        self.on_data[d](piece)

    def _pure_ack(self, d: str) -> None:
        self.ack_pending[d] = False
        self._transmit(d, dpkt.tcp.TH_ACK, b"")

    def close(self) -> None:
        arrive = self._transmit("c2s", dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK, b"")

        def server_fin() -> None:
            self.received["c2s"] = self.seq["c2s"]
            back = self._transmit("s2c", dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK, b"")

            def last_ack() -> None:
                self.received["s2c"] = self.seq["s2c"]
                self._transmit("c2s", dpkt.tcp.TH_ACK, b"")

            self.sim.at(back, last_ack)

        self.sim.at(arrive, server_fin)


class H2Side:
    """One h2 endpoint on a wire, with flow-controlled sending: bodies wait for the window."""

    def __init__(self, wire: Wire, d: str, conn: h2.connection.H2Connection) -> None:
        self.wire = wire
        self.d = d
        self.conn = conn
        self.pending: dict[int, list[tuple[bytes, bool]]] = {}
        self.on_event: Callable[[h2.events.Event], None] = lambda e: None
        wire.on_data["s2c" if d == "c2s" else "c2s"] = self.receive

    def pump(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.wire.send(self.d, data)

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.WindowUpdated):
                self.flush()
            self.on_event(event)
        self.pump()

    def send(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        self.pending.setdefault(sid, []).append((data, end_stream))
        self.flush()

    def flush(self) -> None:
        for sid in list(self.pending):
            queue = self.pending[sid]
            while queue:
                data, end = queue[0]
                try:
                    window = self.conn.local_flow_control_window(sid)
                except h2.exceptions.StreamClosedError:
                    queue.clear()
                    break
                size = min(window, self.conn.max_outbound_frame_size, len(data))
                if data and size <= 0:
                    break
                chunk, rest = data[:size], data[size:]
                self.conn.send_data(sid, chunk, end_stream=end and not rest)
                if rest:
                    queue[0] = (rest, end)
                else:
                    queue.pop(0)
            if not queue:
                del self.pending[sid]
        self.pump()


def _payload(i: int, size: int) -> str:
    text = f"msg-{i:03d}:" + "abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1)
    return text[:size]


class H2Scenario:
    """The HTTP/2 connection of the scenario: a scripted client and an application server."""

    def __init__(self, sim: Sim, wire: Wire, advertise: bool, full: bool, authority: str) -> None:
        self.sim = sim
        self.full = full
        self.authority = authority
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, validate_inbound_headers=False)
        )
        if advertise:
            server.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1},
            )
        self.client = H2Side(wire, "c2s", client)
        self.server = H2Side(wire, "s2c", server)
        self.client.on_event = self.on_client_event
        self.server.on_event = self.on_server_event
        self.wire = wire
        self.paths: dict[int, str] = {}
        self.ws_server: dict[int, FrameProtocol] = {}
        self.ws_client: dict[int, FrameProtocol] = {}
        self.client_ws_sid: dict[str, int] = {}

    # -- client -------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.conn.initiate_connection()
        self.client.pump()
        self.server.conn.initiate_connection()  # sent once the preface arrives (see receive)
        t = self.sim.now + 3 * DELAY_S  # after the server's SETTINGS arrived
        self.sim.at(t, lambda: self.get("/", self.authority))
        if not self.full:
            self.sim.at(t + 0.3, self.finish)
            return
        self.sim.at(t + 0.005, lambda: self.open_ws("/chat"))
        self.sim.at(t + 0.010, lambda: self.open_ws("/feed"))
        self.sim.at(t + 0.015, lambda: self.open_ws("/flaky"))
        self.sim.at(t + 0.300, lambda: self.get("/big", "example.test:8080"))
        self.sim.at(t + 0.400, lambda: self.get("/app.js", "static.example.test:8080"))
        for i in range(EXPECTED["chat_messages"]):
            self.sim.at(t + 0.100 + 0.025 * i, lambda i=i: self.chat_message(i))
        for i in range(EXPECTED["chat_pings"]):
            self.sim.at(t + 0.110 + 0.200 * i, lambda i=i: self.ws_send("/chat", "ping", i))
        for i in range(3):
            self.sim.at(t + 0.150 + 0.100 * i, lambda i=i: self.ws_send("/feed", "text", i))
        self.sim.at(t + 0.900, lambda: self.ws_send("/feed", "close", 1001))
        self.sim.at(t + 1.000, lambda: self.ws_send("/chat", "close", 1000))
        self.sim.at(t + 1.200, self.finish)

    def get(self, path: str, authority: str) -> None:
        conn = self.client.conn
        sid = conn.get_next_available_stream_id()
        self.paths[sid] = path
        conn.send_headers(
            sid,
            [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)],
            end_stream=True,
        )
        self.client.pump()

    def open_ws(self, path: str) -> None:
        conn = self.client.conn
        sid = conn.get_next_available_stream_id()
        self.paths[sid] = path
        self.client_ws_sid[path] = sid
        self.ws_client[sid] = FrameProtocol(client=True, extensions=[])
        conn.send_headers(
            sid,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":authority", "example.test:8080"),
                (":path", path),
                ("sec-websocket-version", "13"),
            ],
        )
        self.client.pump()

    def chat_message(self, i: int) -> None:
        self.ws_send("/chat", "text", i, size=24 + (i * 37) % 280)

    def ws_send(self, path: str, kind: str, i: int, size: int = 40) -> None:
        sid = self.client_ws_sid[path]
        proto = self.ws_client[sid]
        if kind == "text":
            data = proto.send_data(_payload(i, size), fin=True)
        elif kind == "ping":
            data = proto.ping(f"ping-{i}".encode())
        else:
            data = proto.close(CloseReason(i), "bye")
        self.client.send(sid, data)

    def finish(self) -> None:
        self.client.conn.close_connection()
        self.client.pump()
        self.sim.after(0.005, self.wire.close)

    def on_client_event(self, event: h2.events.Event) -> None:
        conn = self.client.conn
        if isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            if sid in self.ws_client:
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
                proto = self.ws_client[sid]
                proto.receive_bytes(event.data)
                for frame in proto.received_frames():
                    if frame.opcode is Opcode.CLOSE and self.paths[sid] == "/chat":
                        self.client.send(sid, b"", end_stream=True)
                    elif frame.opcode is Opcode.CLOSE and self.paths[sid] == "/feed":
                        # the server never ends the stream: give up after a while
                        def reset(sid: int = sid) -> None:
                            conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                            self.client.pump()

                        self.sim.after(0.050, reset)
            else:
                n = event.flow_controlled_length

                def read(sid: int = sid, n: int = n) -> None:  # a slow reader
                    conn.acknowledge_received_data(n, sid)
                    self.client.pump()

                self.sim.after(READ_DELAY_S, read)

    # -- server -------------------------------------------------------------------------------

    def on_server_event(self, event: h2.events.Event) -> None:
        conn = self.server.conn
        if isinstance(event, h2.events.RequestReceived):
            headers = {k.decode() if isinstance(k, bytes) else k: v for k, v in event.headers}
            path = headers[":path"]
            path = path.decode() if isinstance(path, bytes) else path
            sid = event.stream_id
            self.paths[sid] = path
            method = headers[":method"]
            if method in ("CONNECT", b"CONNECT"):
                self.ws_server[sid] = FrameProtocol(client=False, extensions=[])
                self.sim.after(0.0005, lambda: self._respond(sid, b""))
                if path == "/feed":
                    for i in range(EXPECTED["feed_pushes"]):
                        self.sim.after(0.120 + 0.060 * i, lambda i=i: self._push(sid, i))
                if path == "/flaky":
                    self.sim.after(0.480, lambda: self._reset(sid))
            else:
                size = (
                    EXPECTED["big_bytes"] if path == "/big" else 5000 if path == "/app.js" else 1500
                )
                self.sim.after(0.001, lambda: self._respond(sid, b"x" * size, end=True))
        elif isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            conn.acknowledge_received_data(event.flow_controlled_length, sid)
            proto = self.ws_server.get(sid)
            if proto is None:
                return
            proto.receive_bytes(event.data)
            for frame in proto.received_frames():
                if frame.opcode is Opcode.TEXT:
                    reply = proto.send_data(frame.payload, fin=True)
                    if self.paths[sid] == "/chat":
                        self.sim.after(0.0005, lambda r=reply: self.server.send(sid, r))
                elif frame.opcode is Opcode.PING:
                    pong = proto.pong(frame.payload)
                    self.sim.after(0.0002, lambda p=pong: self.server.send(sid, p))
                elif frame.opcode is Opcode.CLOSE:
                    code, reason = frame.payload
                    reply = proto.close(code, reason)
                    # /chat ends its side with the close; /feed (like hypercorn) never does
                    end = self.paths[sid] == "/chat"
                    self.sim.after(0.0005, lambda r=reply, e=end: self.server.send(sid, r, e))

    def _respond(self, sid: int, body: bytes, end: bool = False) -> None:
        conn = self.server.conn
        try:
            conn.send_headers(sid, [(":status", "200")], end_stream=end and not body)
        except h2.exceptions.StreamClosedError:
            return
        if body:
            self.server.send(sid, body, end_stream=end)
        self.server.pump()

    def _push(self, sid: int, i: int) -> None:
        proto = self.ws_server[sid]
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.server.send(sid, proto.send_data(bytes([i % 256]) * 300, fin=True))

    def _reset(self, sid: int) -> None:
        self.server.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.server.pump()


class H1WebSocket:
    """An HTTP/1.1 ``Upgrade: websocket`` connection (wsproto both sides): echo, then close."""

    def __init__(self, sim: Sim, wire: Wire, host: str, messages: int) -> None:
        self.sim = sim
        self.wire = wire
        self.host = host
        self.messages = messages
        self.client = WSConnection(ConnectionType.CLIENT)
        self.server = WSConnection(ConnectionType.SERVER)
        wire.on_data["c2s"] = self.server_receive
        wire.on_data["s2c"] = self.client_receive

    def start(self) -> None:
        self.wire.send("c2s", self.client.send(Request(host=self.host, target="/echo")))

    def client_receive(self, data: bytes) -> None:
        self.client.receive_data(data)
        for event in self.client.events():
            if isinstance(event, AcceptConnection):
                for i in range(self.messages):
                    self.sim.after(0.020 * (i + 1), lambda i=i: self._send(_payload(i, 60)))
                self.sim.after(0.020 * (self.messages + 2), self._close)
            elif isinstance(event, CloseConnection):
                self.sim.after(0.002, self.wire.close)

    def _send(self, text: str) -> None:
        self.wire.send("c2s", self.client.send(Message(data=text)))

    def _close(self) -> None:
        self.wire.send("c2s", self.client.send(CloseConnection(code=1000, reason="done")))

    def server_receive(self, data: bytes) -> None:
        self.server.receive_data(data)
        for event in self.server.events():
            if isinstance(event, Request):
                out = self.server.send(AcceptConnection())
            elif isinstance(event, TextMessage | BytesMessage):
                out = self.server.send(Message(data=event.data))
            elif isinstance(event, Ping | CloseConnection):
                out = self.server.send(event.response())
            else:
                continue
            self.sim.after(0.0005, lambda out=out: self.wire.send("s2c", out))


def build(path: Path) -> dict[str, Any]:
    """Write the scenario's capture to ``path``; returns :data:`EXPECTED`."""
    sim = Sim()
    cap = Capture()

    def h2_conn(
        port: int, server_port: int, advertise: bool, full: bool, authority: str, at: float
    ) -> None:
        wire = Wire(sim, cap, port, server_port, isn=port * 1000)
        scenario = H2Scenario(sim, wire, advertise, full, authority)
        sim.at(at, lambda: wire.handshake(scenario.start))

    def h1_conn(port: int, server_port: int, host: str, at: float) -> None:
        wire = Wire(sim, cap, port, server_port, isn=port * 1000)
        ws = H1WebSocket(sim, wire, host, messages=5)
        sim.at(at, lambda: wire.handshake(ws.start))

    h2_conn(40001, 8080, advertise=True, full=True, authority="example.test:8080", at=0.0)
    h1_conn(40002, 8080, "example.test:8080", at=0.200)
    h2_conn(40003, 8081, advertise=False, full=False, authority="other.test:8081", at=0.050)
    h1_conn(40004, 8081, "other.test:8081", at=0.300)
    h1_conn(40005, 9000, "third.test:9000", at=0.350)
    sim.run()
    cap.write(path)
    return EXPECTED


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "scenario.pcap")
    build(out)
    print(f"wrote {out}")
