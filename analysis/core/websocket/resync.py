"""WebSockets recognised from their bytes (RFC 6455 §5.2), when the handshake was not captured.

One job: given the first bytes seen of both directions of a carrier -- the DATA of an HTTP/2
stream whose extended CONNECT was before the capture, or a TCP connection caught after its
HTTP/1.1 Upgrade -- say whether they are WebSocket frames, where the first frame starts in
each direction, and which frames at the start continue a message begun before the capture.

A direction *chains* from an offset when frame headers follow each other exactly over all its
bytes (the last frame may be incomplete) and every header is valid for that direction:

* RSV2 and RSV3 clear; RSV1 only on the first frame of a data message (permessage-deflate);
* a defined opcode (continuation, text, binary, close, ping, pong);
* control frames with FIN and at most 125 payload bytes;
* the shortest length encoding (RFC 6455 §5.2), the 64-bit length's top bit clear;
* client frames masked with a non-zero key (a client draws its keys at random, §5.3),
  server frames unmasked;
* message order: a new data message only after the previous one ended, a continuation only
  inside one -- except for the continuation frames at the very start, which finish a message
  begun before the capture (the *lead-in*; never decoded).

Candidate offsets: every offset of the first :data:`SEARCH_WINDOW` bytes, and the carrier's
own boundaries after it (the start of each HTTP/2 DATA payload or TCP chunk: senders write a
message at a time); when the first boundary found is beyond the window (a longer frame was cut),
every offset up to it.  The start is the first frame boundary from which frames chain
(:func:`find_ws_chain`), so every whole message after it is decoded.  Evidence: only the frames
from the first one that opens a message or is a control frame count (a run of continuation
frames is what a 2-byte length-prefixed protocol looks like).

The rule (:func:`judge`): a carrier is a WebSocket when both directions with bytes chain, their
frames ending exactly where the bytes do (a chance chain through random bytes nearly always ends
in a frame whose length runs past the end; the carrier is judged again when more bytes came --
except at a raw TCP connection's last try, ``final``), and

* both directions have bytes: at least 1 evidence frame each and :data:`MIN_FRAMES` (3)
  together -- so a stream with fewer than 3 frames after the cut stays ``unknown``;
* one direction is silent (a feed the client only listens to): :data:`MIN_ONE_WAY_FRAMES` (4)
  in the other;
* on a TCP connection (nothing but the frames to go by), the client's masked frames number at
  least :data:`MIN_CLIENT_FRAMES` (2) in any case: unmasked server frames alone are weak
  evidence (any unmasked bytes may chain by chance where a masked frame's non-zero key and
  mask bit would not), so a raw connection seen only from the server stays ``unknown``.  On
  HTTP/2 the stream's own framing backs them: 6000 random buffers of 300 B - 16 KiB gave no
  chain with even 4 evidence frames.

A chance frame header in the tail of the frame cut by the capture that chains exactly onto the
real frames cannot be told from a real one, and is taken: the rules above (message order, text
that begins as UTF-8, close codes that may be sent, non-zero masking keys) make it rare --
``tests/test_midconn.py`` cuts mixed traffic at random points and at every 7th byte, and found
none.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from dataclasses import dataclass

#: Offsets of a direction's first bytes tried as the first frame boundary.
SEARCH_WINDOW = 16384
#: Evidence frames (both directions together) for a WebSocket seen both ways.
MIN_FRAMES = 3
#: ... and in the client's direction alone, where only framing tells (a TCP connection).
MIN_CLIENT_FRAMES = 2
#: Evidence frames of the one direction that has bytes, when the other has none.
MIN_ONE_WAY_FRAMES = 4
#: A control frame's payload limit (RFC 6455 §5.5).
_MAX_CONTROL = 125
#: WebSocket frame headers the boundary search may read per connection, over all its tries
#: (about a second of Python): every try walks a chain from up to ``SEARCH_WINDOW`` offsets,
#: and bytes made of tiny valid frames (a run of ``0x81``, of zeros) chain from every offset to
#: the end, which made one try cost minutes.  Past it, what is not recognised stays unknown.
SCAN_BUDGET = 2_000_000


class ScanBudget:
    """What is left of :data:`SCAN_BUDGET` for one connection."""

    __slots__ = ("left",)

    def __init__(self, frames: int | None = None) -> None:
        self.left = SCAN_BUDGET if frames is None else frames

    @property
    def spent(self) -> bool:
        return self.left <= 0


@dataclass(frozen=True, slots=True)
class WsFrame:
    """One frame of a chain: its bytes ``[pos, end)`` and what its header says."""

    pos: int
    end: int
    opcode: int
    fin: bool
    lead: bool  # continues a message begun before the capture


@dataclass(frozen=True, slots=True)
class WsChain:
    start: int
    frames: list[WsFrame]  # complete frames only
    #: the frames end exactly at the end of the bytes (no incomplete last frame)
    whole: bool = True

    @property
    def evidence(self) -> int:
        return sum(1 for f in self.frames if not f.lead)

    def ranges(self) -> list[tuple[int, int | None]]:
        """The byte ranges to decode: control frames of the lead-in, then everything from the
        first frame that is not part of the lead-in (``None``: to the end)."""
        out: list[tuple[int, int | None]] = []
        for f in self.frames:
            if f.lead:
                continue
            if f.opcode >= 8 and any(g.lead and g.pos > f.pos for g in self.frames):
                out.append((f.pos, f.end))
                continue
            out.append((f.pos, None))
            return out
        last = self.frames[-1].end if self.frames else self.start
        out.append((last, None))
        return out

    @property
    def lost_lead(self) -> bool:
        """Bytes before ``start`` or lead-in frames: a message began before the capture."""
        return self.start > 0 or any(f.lead for f in self.frames)


#: Close codes an endpoint may send (RFC 6455 §7.4.1, §7.4.2; 1004-1006 and 1015 never on the
#: wire), below 3000; 3000-4999 are registered or private.
_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
#: Payload bytes of a text frame checked as UTF-8 while chaining (a prefix: cheap, and enough
#: to refuse almost every chance header inside binary or masked bytes).
_UTF8_PREFIX = 64
_utf8 = codecs.getincrementaldecoder("utf-8")


def _payload(buf: bytes | bytearray, at: int, n: int, key: bytes | None) -> bytes:
    data = bytes(buf[at : at + n])
    if key is None:
        return data
    return bytes(b ^ key[i & 3] for i, b in enumerate(data))


def _payload_ok(
    buf: bytes | bytearray, opcode: int, rsv1: bool, fin: bool, at: int, n: int, key: bytes | None
) -> bool:
    """What RFC 6455 asks of a payload, as far as it is cheap to tell: a text frame that begins
    an uncompressed message is UTF-8 (§8.1; a prefix of it, or all of it when it is the whole
    message), a close frame carries nothing or a code that may be sent and a UTF-8 reason."""
    if opcode == 1 and not rsv1:
        take = min(n, _UTF8_PREFIX)
        try:
            _utf8().decode(_payload(buf, at, take, key), final=fin and take == n)
        except UnicodeDecodeError:
            return False
        return True
    if opcode == 8:
        if n == 0:
            return True
        if n == 1:
            return False
        data = _payload(buf, at, n, key)
        code = int.from_bytes(data[:2], "big")
        if code not in _CLOSE_CODES and not 3000 <= code <= 4999:
            return False
        try:
            data[2:].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def chain_from(
    buf: bytes | bytearray, pos: int, masked: bool, budget: ScanBudget | None = None
) -> tuple[list[WsFrame], int] | None:
    """The complete frames chaining from ``pos`` over all of ``buf``, and where the chain
    stopped (``len(buf)``, or the start of an incomplete last frame whose header is valid so
    far); None when a frame on the way is not valid (the module doc's rules), or when
    ``budget`` runs out on the way."""
    frames: list[WsFrame] = []
    end = len(buf)
    lead = True  # continuation frames may finish a message begun before the capture
    open_msg = False  # a data message is open (begun in the capture, or the lead-in's)
    while pos < end:
        if budget is not None:
            budget.left -= 1
            if budget.left < 0:
                return None
        if end - pos < 2:
            return frames, pos
        b0, b1 = buf[pos], buf[pos + 1]
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        rsv1 = bool(b0 & 0x40)
        if b0 & 0x30 or bool(b1 & 0x80) is not masked:
            return None
        n = b1 & 0x7F
        head = 2
        if opcode >= 8:
            if opcode > 10 or not fin or n > _MAX_CONTROL or rsv1:
                return None
        elif opcode == 0:
            if rsv1:
                return None
            if not lead and not open_msg:
                return None
        elif opcode <= 2:
            if open_msg:
                return None  # a new message inside one (the lead-in's, or one begun here)
            lead = False
        else:
            return None
        if n == 126:
            if end - pos < 4:
                return frames, pos
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            if n < 126:
                return None
            head = 4
        elif n == 127:
            if end - pos < 10:
                return frames, pos
            n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if n <= 0xFFFF or n >> 63:
                return None
            head = 10
        key: bytes | None = None
        if masked:
            if end - pos < head + 4:
                return frames, pos
            key = bytes(buf[pos + head : pos + head + 4])
            if not any(key):
                return None
            head += 4
        stop = pos + head + n
        if opcode in (1, 8) and not _payload_ok(
            buf, opcode, rsv1, fin, pos + head, min(n, end - pos - head), key
        ):
            return None
        if stop > end:
            return frames, pos
        is_lead = lead and opcode == 0
        frames.append(WsFrame(pos, stop, opcode, fin, is_lead))
        if opcode == 0:
            if is_lead:
                open_msg = not fin  # the lead-in's message goes on, or it ended here
                lead = not fin
            elif fin:
                open_msg = False
        elif opcode <= 2:
            open_msg = not fin
        pos = stop
    return frames, pos


def find_ws_chain(
    buf: bytes | bytearray,
    masked: bool,
    boundaries: Iterable[int] = (),
    budget: ScanBudget | None = None,
) -> WsChain | None:
    """Where frames certainly start in ``buf``, and the frames from there; None when no
    candidate offset (see the module doc) chains.

    Offset 0 is taken when it chains (the carrier's bytes began on a frame boundary, the
    common case).  Otherwise the candidates that chain with a complete frame are grouped by
    where their chain stops: the real frames' chain and every chance chain that fell onto it
    stop at the same place (the end, or the last frame's start), while a chance chain that
    never meets the real frames ends in a frame of its own (a length running past the end).
    The real group is the largest of those that stop at the end (else the largest; ties: the
    one stopping first), and its earliest
    candidate is the start: the first frame boundary, so no whole message after it is lost.
    A chance header before it that chains onto the real frames is taken for a frame; the
    rules on the way (message order, UTF-8 text, close codes, non-zero masking keys) make
    that rare, and ``tests/test_midconn.py`` measures how rare on random cuts.
    """
    if budget is not None and budget.spent:
        return None
    found = chain_from(buf, 0, masked, budget)
    if found is not None and WsChain(0, found[0]).evidence:
        return WsChain(0, found[0], found[1] == len(buf))
    end = len(buf)
    candidates = list(range(1, min(SEARCH_WINDOW, end)))
    candidates += [b for b in boundaries if SEARCH_WINDOW <= b < end]
    groups: dict[int, list[tuple[int, list[WsFrame]]]] = {}
    if found is not None and found[0]:
        # Offset 0 chains, with too little evidence yet (the lead-in of a message begun before
        # the capture, say): it is still the earliest candidate of its group, so that a chance
        # header inside that lead-in, which chains onto the same end, is not taken for the
        # first boundary (a "pong" invented from a continuation's payload, seen on real cuts).
        groups[found[1]] = [(0, found[0])]

    def scan(offsets: Iterable[int]) -> None:
        for offset in offsets:
            found = chain_from(buf, offset, masked, budget)
            if found is not None and found[0]:
                groups.setdefault(found[1], []).append((offset, found[0]))

    def best() -> tuple[int, list[WsFrame]]:
        stop = min(groups, key=lambda s: (s != end, -len(groups[s]), s))
        return min(groups[stop], key=lambda c: c[0])

    def stop_of(frames: list[WsFrame]) -> int:
        return next(s for s, members in groups.items() if any(m[1] is frames for m in members))

    scan(candidates)
    if not groups or (budget is not None and budget.spent):
        return None
    start, frames = best()
    if start > SEARCH_WINDOW:
        # a frame longer than the window was cut, and the first boundary found is a carrier
        # boundary after it: the frames between it and the cut frame's end are looked for too
        seen = set(candidates)
        scan(o for o in range(SEARCH_WINDOW, start) if o not in seen)
        if budget is not None and budget.spent:
            return None
        start, frames = best()
    chain = WsChain(start, frames, stop_of(frames) == end)
    return chain if chain.evidence else None


def judge(
    c2s: WsChain | None,
    s2c: WsChain | None,
    has_c2s: bool,
    has_s2c: bool,
    *,
    carrier: str,
    final: bool = False,
) -> bool:
    """Whether the two directions' chains make a WebSocket (the rule of the module doc).

    ``carrier`` is ``h2`` (the HTTP/2 framing already holds) or ``tcp`` (nothing else does:
    the client's masked frames must show :data:`MIN_CLIENT_FRAMES` times)."""
    if (has_c2s and c2s is None) or (has_s2c and s2c is None):
        return False
    if not final and not all(c.whole for c in (c2s, s2c) if c is not None):
        # an incomplete last frame is what most chance chains end in (a length running past
        # the end): judged again when more bytes came, once the frames end where they do
        return False
    ec = c2s.evidence if c2s is not None else 0
    es = s2c.evidence if s2c is not None else 0
    if has_c2s and has_s2c:
        if carrier == "tcp" and ec < MIN_CLIENT_FRAMES:
            return False
        return ec >= 1 and es >= 1 and ec + es >= MIN_FRAMES
    if carrier == "tcp" and ec < MIN_CLIENT_FRAMES:
        return False
    return max(ec, es) >= MIN_ONE_WAY_FRAMES


def pieces(
    chunks: list[tuple[bytes, float]], ranges: list[tuple[int, int | None]]
) -> list[tuple[bytes, float]]:
    """The parts of ``chunks`` (consecutive bytes, each with its ts) within ``ranges``."""
    out: list[tuple[bytes, float]] = []
    for a, b in ranges:
        pos = 0
        for data, ts in chunks:
            end = pos + len(data)
            lo, hi = max(a, pos), end if b is None else min(b, end)
            if lo < hi:
                out.append((data[lo - pos : hi - pos], ts))
            pos = end
    return out
