"""TCP reassembly: captured segments in, ordered byte chunks per connection and direction out.

One job: put each direction's bytes in order (RFC 9293 §3.4 sequence numbers, SYN/FIN/RST ends),
as the receiving application most likely read them, and say where bytes are missing.

Sans-IO: :class:`TcpReassembler` is fed :class:`TcpSegment` values and returns chunk events
(:mod:`h2ws.analysis.core.chunks`) at once, in capture order, so a capture of any size streams
through in bounded memory.

Rules, and why:

- Sequence numbers are unwrapped relative to the next expected one (a signed 32-bit distance),
  so a stream longer than 4 GiB keeps a consistent position.
- The first copy of every byte wins; retransmissions and overlaps only contribute bytes never
  seen before.  A decoder must see what the receiver most likely saw, and byte-identical
  retransmissions (the normal case) make the choice invisible.
- Bytes that can never arrive become a :class:`Gap` plus a ``gap`` diagnostic, and reassembly
  goes on after them.  A hole is declared lost when the out-of-order buffer is full, when the
  peer acknowledges bytes beyond it (the receiver has them, so no retransmission will come and
  the capture simply missed them), or when the connection ends (RST, ``finish``).  A FIN or the
  peer's last acknowledgement tell how long a hole at the end of a direction was.
- Data becomes a :class:`Data` event as soon as it is in order, stamped with the time of the
  segment that made it so (when the receiving application could first have read it).
- When the capture starts mid-connection the client is inferred (see
  :func:`_src_is_client`), a ``midstream_start`` diagnostic says so, and the connection's
  ``ConnectionInfo.midstream`` tells the decoder, which may then recognise HTTP/2 or a
  WebSocket from the bytes (and correct the client guess from them).

Diagnostic codes (layer ``tcp``): ``midstream_start`` (warning), ``gap`` (error),
``port_reuse`` (warning: a new SYN on a 4-tuple whose connection was never seen to end).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from typing import NamedTuple

from h2ws.analysis.core.chunks import ChunkEvent, Closed, ConnectionInfo, Data, Gap, Opened
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.records import Direction

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_WRAP = 0x100000000
#: An acknowledgement further ahead than this is not trusted as evidence of missing bytes.
_MAX_ACK_AHEAD = 1 << 30
#: Ports whose owner is taken to be the server when the handshake was not captured.
SERVER_PORTS = frozenset(
    {1080, 1443, 3000, 3128, 4443, 5000, 5001, 8000, 8008, 8080, 8081, 8088, 8443, 8888, 9000}
    | {9080, 9090, 9443}
)
_TOMBSTONES = 65536

Key = tuple[str, int, str, int]


class TcpSegment(NamedTuple):
    """One captured TCP segment, as much as reassembly needs of it.

    A tuple (immutable, and built in C): readers make one per packet.
    """

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


#: a TcpSegment from a tuple of all its fields, in order
make_segment = TcpSegment._make


def new_segment(
    ts: float,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes,
) -> TcpSegment:
    """``TcpSegment(...)`` by its factory (``_make``), without NamedTuple's Python-level
    ``__new__``: half the cost, and capture readers make one per packet."""
    return make_segment((ts, src, sport, dst, dport, seq, ack, flags, payload))


class _Half:
    """One direction of a connection.  Positions are unwrapped (may exceed 2**32)."""

    __slots__ = (
        "ack32",
        "base",
        "buffered",
        "conn",
        "conn_id",
        "datas",
        "direction",
        "exp32",
        "fin",
        "fin_done",
        "hole",
        "nxt",
        "peer",
        "starts",
    )

    def __init__(self, conn: _Conn, direction: Direction) -> None:
        self.conn = conn
        self.conn_id = conn.conn_id
        self.direction: Direction = direction
        self.peer: _Half = self
        self.nxt = 0  # next expected position; meaningless while exp32 == -1
        self.exp32 = -1  # nxt & 0xFFFFFFFF, or -1 until the first position is known
        self.base = 0  # position of the first data byte, for messages
        self.ack32: int | None = None  # the peer's latest acknowledgement of this side
        # Out-of-order bytes: disjoint ranges sorted by start, all beyond nxt.
        self.starts: list[int] = []
        self.datas: list[bytes] = []
        self.buffered = 0
        self.fin: int | None = None  # position of the FIN
        self.fin_done = False  # every byte up to and including the FIN is delivered
        # True while bytes beyond nxt are known (buffered data or a FIN): the fast path is off.
        self.hole = False

    def start_at(self, pos: int) -> None:
        self.nxt = self.base = pos
        self.exp32 = pos & _MASK

    def unwrap(self, seq: int) -> int:
        d = (seq - self.nxt) & _MASK
        return self.nxt + (d - _WRAP if d & _HALF else d)


class _Conn:
    __slots__ = ("c2s", "conn_id", "info", "keys", "s2c")

    def __init__(self, info: ConnectionInfo, keys: tuple[Key, Key]) -> None:
        self.info = info
        self.conn_id = info.conn_id
        self.keys = keys
        self.c2s = _Half(self, "c2s")
        self.s2c = _Half(self, "s2c")
        self.c2s.peer = self.s2c
        self.s2c.peer = self.c2s


def _is_server_port(port: int) -> bool:
    return port < 1024 or port in SERVER_PORTS


def _src_is_client(seg: TcpSegment) -> bool:
    """Guess who opened a connection whose handshake was not captured.

    If exactly one port is a server port (below 1024 or in :data:`SERVER_PORTS`), its owner is
    the server; if both are, the higher port is the client's (ephemeral ports are high);
    otherwise the first sender is taken to be the client.
    """
    src_srv, dst_srv = _is_server_port(seg.sport), _is_server_port(seg.dport)
    if src_srv != dst_srv:
        return dst_srv
    if src_srv and seg.sport != seg.dport:
        return seg.sport > seg.dport
    return True


class TcpReassembler:
    """Turns TCP segments of any number of connections into chunk events, as they come.

    ``conn_id`` is ``f"{prefix}:{n}"``, n counting connections from 0 in order of first
    appearance; the prefix defaults to the capture's base file name.
    """

    def __init__(
        self,
        capture: str | None,
        source: str = "pcap",
        conn_id_prefix: str | None = None,
        *,
        max_buffer_bytes: int = 4 << 20,
        max_buffer_segments: int = 2048,
    ) -> None:
        self.capture = capture
        self.source = source
        if conn_id_prefix is None:
            conn_id_prefix = os.path.basename(capture) if capture else "tcp"
        self.prefix = conn_id_prefix
        self.max_buffer_bytes = max_buffer_bytes
        self.max_buffer_segments = max_buffer_segments
        self._flows: dict[Key, _Half] = {}
        self._open: dict[str, _Conn] = {}  # in order of appearance, for finish()
        # 4-tuples of ended connections: their late ACKs and retransmissions must not look
        # like a new connection caught mid-stream.  Bounded; oldest forgotten first.
        self._ended: dict[Key, None] = {}
        self._count = 0
        self._last_ts: float | None = None

    def feed(self, seg: TcpSegment) -> list[ChunkEvent]:
        """Events that ``seg`` causes, in order."""
        self._last_ts = seg.ts
        half = self._flows.get((seg.src, seg.sport, seg.dst, seg.dport))
        flags = seg.flags
        if half is None or flags & (SYN | FIN | RST):
            return self._feed_slow(seg, half)
        peer = half.peer
        if flags & ACK:
            peer.ack32 = seg.ack
        payload = seg.payload
        if not payload:
            if peer.hole and flags & ACK:
                out: list[ChunkEvent] = []
                self._on_ack(peer, seg.ack, seg.ts, out)
                return out
            return []
        if seg.seq == half.exp32 and not half.hole:
            half.nxt += len(payload)
            half.exp32 = half.nxt & _MASK
            out = [Data(half.conn_id, half.direction, seg.ts, payload)]
            if peer.hole and flags & ACK:
                self._on_ack(peer, seg.ack, seg.ts, out)
            return out
        return self._feed_slow(seg, half)

    def finish(self, ts: float | None = None) -> list[ChunkEvent]:
        """End every connection still open: the capture ended under them."""
        if ts is None:
            ts = self._last_ts if self._last_ts is not None else 0.0
        out: list[ChunkEvent] = []
        for conn in list(self._open.values()):
            self._flush(conn, ts, out)
            both_fin = conn.c2s.fin_done and conn.s2c.fin_done
            self._close(conn, "fin" if both_fin else "capture_ended", ts, out)
        return out

    # -- everything but in-order data and pure ACKs -------------------------------------------

    def _feed_slow(self, seg: TcpSegment, half: _Half | None) -> list[ChunkEvent]:
        out: list[ChunkEvent] = []
        flags, ts = seg.flags, seg.ts
        fresh_syn = flags & (SYN | ACK) == SYN
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        if half is None:
            if flags & RST or (key in self._ended and not fresh_syn):
                return out  # nothing to reset, or a straggler of an ended connection
            half = self._new_conn(seg, key, out)
        elif fresh_syn and (half.exp32 == -1 or (seg.seq + 1) & _MASK != half.base & _MASK):
            # Not a retransmitted SYN: the 4-tuple is reused and we missed the old end.
            out.append(
                diagnostic(
                    half.conn_id, "tcp", "warning", "port_reuse", "new SYN on open 4-tuple", ts=ts
                )
            )
            self._flush(half.conn, ts, out)
            self._close(half.conn, "closed", ts, out)
            half = self._new_conn(seg, key, out)
        peer = half.peer
        if half.exp32 == -1:
            half.start_at(seg.seq + 1 if flags & SYN else seg.seq)
        if flags & ACK:
            if peer.exp32 == -1 and not flags & RST:
                peer.start_at(seg.ack)  # the peer's first byte we can still see
            peer.ack32 = seg.ack
        if flags & RST:
            self._flush(half.conn, ts, out)
            self._close(half.conn, "rst", ts, out)
            return out
        start = half.unwrap(seg.seq) + (1 if flags & SYN else 0)
        if seg.payload and not half.fin_done:
            self._data(half, start, seg.payload, ts, out)
        if flags & FIN and half.fin is None:
            half.fin = max(start + len(seg.payload), half.nxt)
            self._settle(half)
        if flags & ACK and peer.hole:
            self._on_ack(peer, seg.ack, ts, out)
        elif half.fin_done and peer.fin_done:
            self._close(half.conn, "fin", ts, out)
        return out

    def _new_conn(self, seg: TcpSegment, key: Key, out: list[ChunkEvent]) -> _Half:
        flags = seg.flags
        handshake = bool(flags & SYN)
        src_is_client = not flags & ACK if handshake else _src_is_client(seg)
        rev = (seg.dst, seg.dport, seg.src, seg.sport)
        client, server = (key, rev) if src_is_client else (rev, key)
        conn_id = f"{self.prefix}:{self._count}"
        self._count += 1
        info = ConnectionInfo(
            conn_id=conn_id,
            client_addr=client[0],
            client_port=client[1],
            server_addr=server[0],
            server_port=server[1],
            source=self.source,
            capture=self.capture,
            midstream=not handshake,
        )
        conn = _Conn(info, (key, rev))
        self._open[conn_id] = conn
        half, other = (conn.c2s, conn.s2c) if src_is_client else (conn.s2c, conn.c2s)
        self._flows[key] = half
        self._flows[rev] = other
        self._ended.pop(key, None)
        self._ended.pop(rev, None)
        out.append(Opened(info, seg.ts))
        if not handshake:
            out.append(
                diagnostic(
                    conn_id,
                    "tcp",
                    "warning",
                    "midstream_start",
                    f"handshake not captured; {client[0]}:{client[1]} taken as the client",
                    ts=seg.ts,
                )
            )
        return half

    def _data(self, half: _Half, start: int, data: bytes, ts: float, out: list[ChunkEvent]) -> None:
        nxt = half.nxt
        end = start + len(data)
        if half.fin is not None and end > half.fin:
            data = data[: max(half.fin - start, 0)]  # nothing is sent after a FIN
            end = start + len(data)
        if end <= nxt:
            return  # retransmission of delivered bytes
        if start < nxt:
            data = data[nxt - start :]
            start = nxt
        if start == nxt and not half.starts:
            half.nxt = end
            out.append(Data(half.conn_id, half.direction, ts, data))
        else:
            self._buffer(half, start, data)
            self._drain(half, ts, out)
            while half.starts and (
                len(half.starts) > self.max_buffer_segments or half.buffered > self.max_buffer_bytes
            ):
                self._skip_hole(half, ts, out)
        self._settle(half)

    def _buffer(self, half: _Half, start: int, data: bytes) -> None:
        """Keep the bytes of [start, start+len) that no buffered range holds yet."""
        starts, datas = half.starts, half.datas
        end = start + len(data)
        i = bisect_right(starts, start) - 1
        pieces: list[tuple[int, bytes]] = []
        cur = start
        if i >= 0:
            cur = max(cur, starts[i] + len(datas[i]))
        i += 1
        while cur < end:
            nxt_start = starts[i] if i < len(starts) else end
            if nxt_start > cur:
                stop = min(nxt_start, end)
                pieces.append((cur, data[cur - start : stop - start]))
                cur = stop
            if i < len(starts):
                cur = max(cur, starts[i] + len(datas[i]))
                i += 1
        for pos, piece in pieces:
            k = bisect_right(starts, pos)
            starts.insert(k, pos)
            datas.insert(k, piece)
            half.buffered += len(piece)

    def _drain(self, half: _Half, ts: float, out: list[ChunkEvent]) -> None:
        """Deliver buffered ranges that are now in order, as one chunk."""
        starts, datas = half.starts, half.datas
        parts: list[bytes] = []
        while starts and starts[0] <= half.nxt:
            start = starts.pop(0)
            data = datas.pop(0)
            half.buffered -= len(data)
            end = start + len(data)
            if end > half.nxt:
                parts.append(data[half.nxt - start :] if start < half.nxt else data)
                half.nxt = end
        if parts:
            out.append(Data(half.conn_id, half.direction, ts, b"".join(parts)))

    def _settle(self, half: _Half) -> None:
        """Consume a FIN that is now in order; refresh the fast-path flags."""
        if half.fin is not None and not half.fin_done and half.nxt >= half.fin:
            half.fin_done = True
            half.nxt = max(half.nxt, half.fin + 1)
        half.exp32 = half.nxt & _MASK
        half.hole = bool(half.starts) or (half.fin is not None and not half.fin_done)

    def _skip_hole(
        self, half: _Half, ts: float, out: list[ChunkEvent], limit: int | None = None
    ) -> None:
        """Declare the bytes up to the next known one (or ``limit``) lost, and go on after them."""
        target = half.starts[0] if half.starts else half.fin
        assert target is not None, "no hole to skip"
        if limit is not None and limit < target:
            target = limit
        self._gap(half, target - half.nxt, ts, out)
        half.nxt = target
        self._drain(half, ts, out)
        self._settle(half)

    def _on_ack(self, half: _Half, ack: int, ts: float, out: list[ChunkEvent]) -> None:
        """The peer of ``half`` acknowledged ``ack``: holes before it were lost by the capture."""
        acked = half.unwrap(ack)
        while half.hole and half.nxt < acked:
            self._skip_hole(half, ts, out, limit=acked)
        if half.fin_done and half.peer.fin_done:
            self._close(half.conn, "fin", ts, out)

    def _flush(self, conn: _Conn, ts: float, out: list[ChunkEvent]) -> None:
        """Nothing more will come: every known hole is lost, then deliver what follows it."""
        for half in (conn.c2s, conn.s2c):
            if half.exp32 == -1:
                continue
            while half.hole:
                self._skip_hole(half, ts, out)
            if half.ack32 is not None:
                missing = half.unwrap(half.ack32) - half.nxt
                if 0 < missing < _MAX_ACK_AHEAD:
                    self._gap(half, missing, ts, out)  # acknowledged, never captured
                    half.nxt += missing
                    half.exp32 = half.nxt & _MASK

    def _close(self, conn: _Conn, cause: str, ts: float, out: list[ChunkEvent]) -> None:
        out.append(Closed(conn.conn_id, ts, cause))
        del self._open[conn.conn_id]
        for key in conn.keys:
            self._flows.pop(key, None)
            self._ended[key] = None
        while len(self._ended) > _TOMBSTONES:
            del self._ended[next(iter(self._ended))]

    def _gap(self, half: _Half, length: int, ts: float, out: list[ChunkEvent]) -> None:
        out.append(Gap(half.conn_id, half.direction, ts, length))
        out.append(
            diagnostic(
                half.conn_id,
                "tcp",
                "error",
                "gap",
                f"{length} bytes of {half.direction} never captured "
                f"(at stream offset {half.nxt - half.base})",
                ts=ts,
            )
        )
