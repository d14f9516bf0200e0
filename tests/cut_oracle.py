"""What a capture cut at a given point must decode to: the messages whose bytes are all after
the cut (issue #14), found independently of the decoder under test.

The whole capture is parsed here on its own terms -- HTTP/2 frames with hyperframe from the
preface, WebSocket frame headers by RFC 6455 §5.2 -- so that every WebSocket message knows the
TCP bytes it came from.  The whole decode's message rows (opcode, length, sha256) are matched to
them in order of completion, so a cut's expected messages are rows of the whole decode, never
recomputed.

What "after the cut" means, per carrier:

* HTTP/2: every WebSocket frame of the message lies in DATA frames whose frame header is at or
  after the cut in its direction.  The rest of a DATA frame cut by the capture cannot be told
  apart from any other bytes (its header, which names the stream, is lost), so its messages are
  lost with it -- the decoder resynchronises on the next HTTP/2 frame.
* raw TCP (HTTP/1.1 after its Upgrade): the message's first byte is at or after the cut.

A (stream, direction) is *affected* when its first byte after the cut lies inside a message
(a message begun before the capture that the decoder cannot decode): it must have a
``ws_midstream_message`` diagnostic, and one that is not affected must not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hyperframe.frame import DataFrame, Frame

from h2ws.analysis.records import MessageRecord

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Chunks = list[tuple[str, bytes, float]]
Key = tuple[int | None, str]


@dataclass
class WsMessage:
    frames: list[tuple[int, int]]  # (start, end) in the carrier's WebSocket bytes
    control: bool
    row: MessageRecord | None = None


@dataclass
class Carrier:
    """The WebSocket bytes of one (stream, direction) and where they came from on the wire."""

    #: (first WebSocket byte, TCP position of the bytes' origin): for HTTP/2 the DATA frame's
    #: header, for raw TCP the byte itself (``tcp_exact``)
    segments: list[tuple[int, int]] = field(default_factory=list)
    buf: bytearray = field(default_factory=bytearray)
    tcp_exact: bool = False
    messages: list[WsMessage] = field(default_factory=list)

    def origin(self, ws_pos: int) -> int:
        """The TCP position a WebSocket byte's decoding depends on."""
        seg = max(i for i, (start, _) in enumerate(self.segments) if start <= ws_pos)
        start, tcp = self.segments[seg]
        return tcp + (ws_pos - start) if self.tcp_exact else tcp


def ws_frames(buf: bytes | bytearray, masked: bool) -> list[tuple[int, int, int, bool]]:
    """(start, end, opcode, fin) of each complete RFC 6455 frame of ``buf``."""
    out = []
    pos = 0
    while pos + 2 <= len(buf):
        b0, b1 = buf[pos], buf[pos + 1]
        n, head = b1 & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        head += 4 if masked else 0
        if pos + head + n > len(buf):
            break
        out.append((pos, pos + head + n, b0 & 0x0F, bool(b0 & 0x80)))
        pos += head + n
    return out


def group(frames: list[tuple[int, int, int, bool]]) -> list[WsMessage]:
    """Messages in order of completion (a control frame inside a fragmented message first)."""
    done: list[WsMessage] = []
    current: WsMessage | None = None
    for start, end, opcode, fin in frames:
        if opcode >= 8:
            done.append(WsMessage([(start, end)], True))
            continue
        if current is None:
            current = WsMessage([], False)
        current.frames.append((start, end))
        if fin:
            done.append(current)
            current = None
    return done


@dataclass
class Oracle:
    """Every WebSocket message of a whole capture, with where its bytes were on the wire."""

    chunks: Chunks
    carriers: dict[Key, Carrier]

    def cut_positions(self, k: int, offset: int) -> dict[str, int]:
        """TCP positions per direction of :func:`tests.test_midconn.cut` (k, offset)."""
        pos = {"c2s": 0, "s2c": 0}
        for d, data, _ in self.chunks[:k]:
            pos[d] += len(data)
        pos[self.chunks[k][0]] += offset
        return pos

    def expected(self, k: int, offset: int) -> dict[Key, list[MessageRecord]]:
        cuts = self.cut_positions(k, offset)
        out: dict[Key, list[MessageRecord]] = {}
        for key, c in self.carriers.items():
            cutpos = cuts[key[1]]
            rows = [
                m.row
                for m in c.messages
                if m.row is not None and all(c.origin(a) >= cutpos for a, _ in m.frames)
            ]
            out[key] = rows
        return out

    def first_after(self, key: Key, cutpos: int) -> int:
        """The first WebSocket byte of ``key`` that the decode of a cut at ``cutpos`` sees."""
        c = self.carriers[key]
        if c.tcp_exact:
            return max(0, cutpos - c.segments[0][1])
        return next((s for s, tcp in c.segments if tcp >= cutpos), len(c.buf))

    def evidence(self, k: int, offset: int) -> dict[Key, int]:
        """Per (stream, direction), the frames after the cut the recognition rule counts."""
        cuts = self.cut_positions(k, offset)
        out = {}
        for key, c in self.carriers.items():
            frames = ws_frames(c.buf, key[1] == "c2s")
            out[key] = evidence(frames, self.first_after(key, cuts[key[1]]))
        return out

    def has_bytes(self, k: int, offset: int) -> dict[Key, bool]:
        cuts = self.cut_positions(k, offset)
        return {
            key: self.first_after(key, cuts[key[1]]) < len(c.buf)
            for key, c in self.carriers.items()
        }

    def affected(self, k: int, offset: int) -> set[Key]:
        """The (stream, direction)s whose first byte after the cut is not where a message
        starts: inside a frame, or a control frame inside a message begun before."""
        cuts = self.cut_positions(k, offset)
        out: set[Key] = set()
        for key, c in self.carriers.items():
            first = self.first_after(key, cuts[key[1]])
            if first >= len(c.buf):
                continue
            inside = any(
                m.frames[0][0] < first < m.frames[-1][1] for m in c.messages if not m.control
            )
            starts = {m.frames[0][0] for m in c.messages}
            if inside or first not in starts:
                out.add(key)
        return out


def _attach(carriers: dict[Key, Carrier], whole: list[MessageRecord], masked_dir: str) -> None:
    rows: dict[Key, list[MessageRecord]] = {}
    for m in whole:
        rows.setdefault((m.stream_id, m.direction), []).append(m)
    for key, c in carriers.items():
        c.messages = group(ws_frames(c.buf, key[1] == masked_dir))
        mine = rows.get(key, [])
        assert len(mine) == len(c.messages), (key, len(mine), len(c.messages))
        for m, row in zip(c.messages, mine, strict=True):
            m.row = row


def wire_frames(wire: bytes, d: str) -> list[tuple[int, Frame]]:
    """(position, frame) of every complete HTTP/2 frame of a direction's bytes (the client's
    after its preface)."""
    out = []
    pos = len(PREFACE) if d == "c2s" else 0
    while pos + 9 <= len(wire):
        frame, length = Frame.parse_frame_header(memoryview(wire[pos : pos + 9]))
        if pos + 9 + length > len(wire):
            break
        frame.parse_body(memoryview(wire[pos + 9 : pos + 9 + length]))
        out.append((pos, frame))
        pos += 9 + length
    return out


def h2_oracle(chunks: Chunks, whole: list[MessageRecord], ws_streams: set[int]) -> Oracle:
    """For an h2c connection that starts with its preface; ``ws_streams``: the WebSockets."""
    carriers: dict[Key, Carrier] = {}
    for d in ("c2s", "s2c"):
        wire = b"".join(data for dd, data, _ in chunks if dd == d)
        for pos, frame in wire_frames(wire, d):
            if isinstance(frame, DataFrame) and frame.stream_id in ws_streams and frame.data:
                c = carriers.setdefault((frame.stream_id, d), Carrier())
                c.segments.append((len(c.buf), pos))
                c.buf += frame.data
    _attach(carriers, whole, "c2s")
    return Oracle(chunks, carriers)


def tcp_oracle(chunks: Chunks, whole: list[MessageRecord]) -> Oracle:
    """For a raw WebSocket connection that starts with its HTTP/1.1 Upgrade."""
    carriers: dict[Key, Carrier] = {}
    for d in ("c2s", "s2c"):
        wire = b"".join(data for dd, data, _ in chunks if dd == d)
        head = wire.index(b"\r\n\r\n") + 4
        carriers[None, d] = Carrier([(0, head)], bytearray(wire[head:]), tcp_exact=True)
    _attach(carriers, whole, "c2s")
    return Oracle(chunks, carriers)


def evidence(frames: list[tuple[int, int, int, bool]], first: int) -> int:
    """Frames from ``first`` on that :func:`~h2ws.analysis.core.websocket.resync.judge` counts:
    every complete frame except the continuations finishing a message begun before ``first``."""
    count = 0
    lead = True
    for start, _, opcode, fin in frames:
        if start < first:
            continue
        if lead and opcode == 0:
            lead = not fin
            continue
        if opcode in (1, 2):
            lead = False
        count += 1
    return count


def must_recognise(ev: dict[Key, int], has: dict[Key, bool], stream: int | None, tcp: bool) -> bool:
    """Whether the documented rule (:func:`~h2ws.analysis.core.websocket.resync.judge`) must
    recognise ``stream``'s WebSocket from the frames after the cut."""
    from h2ws.analysis.core.websocket import resync

    ec, es = ev.get((stream, "c2s"), 0), ev.get((stream, "s2c"), 0)
    hc, hs = has.get((stream, "c2s"), False), has.get((stream, "s2c"), False)
    if tcp and ec < resync.MIN_CLIENT_FRAMES:
        return False
    if hc and hs:
        return ec >= 1 and es >= 1 and ec + es >= resync.MIN_FRAMES
    return max(ec, es) >= resync.MIN_ONE_WAY_FRAMES
