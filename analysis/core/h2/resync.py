"""HTTP/2 recognised without its preface (a capture that starts mid-connection), sans-IO.

One job: given the first captured bytes of each direction of a connection whose start was not
captured, find where HTTP/2 frames begin and which side is the client, or say it is not HTTP/2.

Recognition (:func:`find_chain`): from a candidate offset, frame headers must chain -- each
header plausible (:func:`plausible`), the next one starting right after its payload -- over
*every* held byte of the direction (the last frame may be incomplete, its header plausible),
with at least :data:`MIN_FRAMES` complete frames, or fewer when the chain ends exactly at the
end of the bytes and the connection ended (:func:`find_chain` ``final``).  Candidates are every
offset in the first :data:`SEARCH_WINDOW` bytes: a frame cut by the start of the capture is at
most ``MAX_FRAME_SIZE + 9`` bytes long, so the first whole frame starts within it.

A plausible frame header (RFC 9113 §4.1, §6):

* length at most :data:`MAX_FRAME_SIZE` (16 KiB, the SETTINGS_MAX_FRAME_SIZE every peer starts
  with; a peer that raised it and sends larger frames is not recognised);
* a known type (DATA .. CONTINUATION, ALTSVC, ORIGIN, PRIORITY_UPDATE);
* only the flags defined for that type (real peers set no others);
* the reserved bit 0, stream 0 exactly for the connection-level types, and the fixed lengths
  (PRIORITY 5, RST_STREAM 4, PING 8, WINDOW_UPDATE 4, SETTINGS a multiple of 6 and 0 with ACK,
  GOAWAY at least 8).

Random bytes pass one header with a probability of about 10^-6, text (no 0x00 byte) and TLS
records (lengths above 16 KiB) never: a chain of four is not found by chance
(``tests/test_midconn.py`` holds random, TLS, HTTP/1.1 and a length-prefixed binary protocol
to that).

Roles (:func:`role_evidence`): who is the client, from the frames alone -- a request header
block (its first field a request pseudo-header of the static table) or a response block
(``:status``), PUSH_PROMISE (server only), SETTINGS_ENABLE_CONNECT_PROTOCOL (server only, RFC
8441 §3), DATA or HEADERS on an even stream (server push), a GOAWAY naming an odd stream (the
server's), and masked (client) or unmasked (server) WebSocket frames filling a DATA payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FRAME_HEADER_LEN = 9
#: SETTINGS_MAX_FRAME_SIZE's initial value (RFC 9113 §6.5.2): the largest frame recognised.
MAX_FRAME_SIZE = 16384
#: The first whole frame starts within this many bytes of the first captured byte.
SEARCH_WINDOW = MAX_FRAME_SIZE + FRAME_HEADER_LEN
#: Complete frames a chain needs before the direction counts as HTTP/2.
MIN_FRAMES = 4

#: type -> flags defined for it (RFC 9113 §6; RFC 7838 ALTSVC, RFC 8336 ORIGIN, RFC 9218)
_FLAGS = {
    0x0: 0x01 | 0x08,  # DATA: END_STREAM, PADDED
    0x1: 0x01 | 0x04 | 0x08 | 0x20,  # HEADERS: END_STREAM, END_HEADERS, PADDED, PRIORITY
    0x2: 0,  # PRIORITY
    0x3: 0,  # RST_STREAM
    0x4: 0x01,  # SETTINGS: ACK
    0x5: 0x04 | 0x08,  # PUSH_PROMISE: END_HEADERS, PADDED
    0x6: 0x01,  # PING: ACK
    0x7: 0,  # GOAWAY
    0x8: 0,  # WINDOW_UPDATE
    0x9: 0x04,  # CONTINUATION: END_HEADERS
    0xA: 0,  # ALTSVC
    0xC: 0,  # ORIGIN
    0x10: 0,  # PRIORITY_UPDATE
}
_STREAM_ZERO = frozenset({0x4, 0x6, 0x7, 0xC, 0x10})
_STREAM_NONZERO = frozenset({0x0, 0x1, 0x2, 0x3, 0x5, 0x9})
_FIXED_LENGTH = {0x2: 5, 0x3: 4, 0x6: 8, 0x8: 4}


@dataclass(frozen=True, slots=True)
class FrameHead:
    """One frame header of a chain: where it starts, and what it says."""

    pos: int
    length: int
    type: int
    flags: int
    stream_id: int


def plausible(buf: bytes | bytearray, pos: int) -> FrameHead | None:
    """The frame header at ``pos`` (9 bytes must be there) if it is plausible, else None."""
    length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    if length > MAX_FRAME_SIZE:
        return None
    type_ = buf[pos + 3]
    allowed = _FLAGS.get(type_)
    if allowed is None:
        return None
    flags = buf[pos + 4]
    if flags & ~allowed:
        return None
    if buf[pos + 5] & 0x80:
        return None  # the reserved bit
    sid = int.from_bytes(buf[pos + 5 : pos + 9], "big")
    if type_ in _STREAM_ZERO and sid:
        return None
    if type_ in _STREAM_NONZERO and not sid:
        return None
    fixed = _FIXED_LENGTH.get(type_)
    if fixed is not None and length != fixed:
        return None
    if type_ == 0x4 and (length % 6 or (flags & 1 and length)):
        return None
    if type_ == 0x7 and length < 8:
        return None
    return FrameHead(pos, length, type_, flags, sid)


def chain_from(buf: bytes | bytearray, pos: int) -> tuple[list[FrameHead], bool] | None:
    """The frames chaining from ``pos`` to the end of ``buf``, and whether the last one is
    complete; None when a header on the way is not plausible."""
    frames: list[FrameHead] = []
    end = len(buf)
    while end - pos >= FRAME_HEADER_LEN:
        head = plausible(buf, pos)
        if head is None:
            return None
        frames.append(head)
        pos += FRAME_HEADER_LEN + head.length
        if pos > end:
            return frames, False
    return frames, pos == end


@dataclass(frozen=True, slots=True)
class Chain:
    """Where HTTP/2 frames start in a direction's first bytes, and the frames found."""

    start: int
    frames: list[FrameHead]

    @property
    def complete(self) -> int:
        return len(self.frames)


class ChainSearch:
    """:func:`find_chain` over a growing buffer, without scanning an offset twice.

    An offset from which a header on the way is not plausible stays dead whatever follows, so
    only the offsets still plausible are looked at again when bytes arrive.  A frame header
    starts with a zero byte (lengths are at most 16 KiB), so candidates are found with
    ``bytes.find``, which makes text and random bytes cheap to reject.
    """

    __slots__ = ("alive", "scanned")

    def __init__(self) -> None:
        self.scanned = 0  # offsets below this were looked at
        self.alive: list[int] = []  # of those, the ones whose chain is still plausible

    def search(self, buf: bytes | bytearray, *, final: bool = False) -> Chain | bool | None:
        """A :class:`Chain` (found), ``False`` (no offset in the window can start a chain: not
        HTTP/2) or ``None`` (not enough bytes to tell yet).  ``final``: no more bytes will
        come, so a chain of fewer than :data:`MIN_FRAMES` that ends exactly at the end counts.
        """
        end = len(buf)
        limit = min(SEARCH_WINDOW, end - FRAME_HEADER_LEN + 1)
        pos = self.scanned
        while pos < limit:
            pos = buf.find(0, pos, limit)
            if pos < 0:
                break
            self.alive.append(pos)
            pos += 1
        self.scanned = max(self.scanned, limit)
        still: list[int] = []
        for start in self.alive:
            found = chain_from(buf, start)
            if found is None:
                continue
            frames, last_whole = found
            whole = frames if last_whole else frames[:-1]
            if len(whole) >= MIN_FRAMES or (final and whole and last_whole):
                return Chain(start, whole)
            still.append(start)  # plausible so far: more bytes may make it a chain, or break it
        self.alive = still
        if final:
            return False
        if still or self.scanned < SEARCH_WINDOW:
            return None  # later bytes may still complete a chain, or start one further on
        return False


def find_chain(buf: bytes | bytearray, *, final: bool = False) -> Chain | bool | None:
    """The first offset from which frames chain over all of ``buf`` (see the module doc and
    :meth:`ChainSearch.search`)."""
    return ChainSearch().search(buf, final=final)


# ---------------------------------------------------------------------- roles

#: HPACK static indices (RFC 7541 Appendix A) of request pseudo-headers and of ``:status``.
_REQUEST_INDICES = frozenset(range(1, 8))
_STATUS_INDICES = frozenset(range(8, 15))


def _block_role(first: int, second: int | None) -> str | None:
    """ "client" / "server" from the first field of a header block, None when it tells nothing.

    A dynamic table size update (``001xxxxx``) may come first; it is skipped when it fits one
    byte.  Indexed (``1xxxxxxx``) and literal fields (``01xxxxxx``, ``0000xxxx``, ``0001xxxx``)
    name a static entry by their low bits.
    """
    if first & 0xE0 == 0x20:
        if first & 0x1F == 0x1F or second is None:
            return None
        first = second
    if first & 0x80:
        index = first & 0x7F
    elif first & 0x40:
        index = first & 0x3F
    else:
        index = first & 0x0F
    if index in _REQUEST_INDICES:
        return "client"
    if index in _STATUS_INDICES:
        return "server"
    return None


def _ws_fill(payload: bytes | bytearray) -> bool | None:
    """True when ``payload`` is exactly masked WebSocket frames, False when exactly unmasked
    ones, None otherwise (RFC 6455 §5.2 headers only; at least one frame)."""
    pos, end = 0, len(payload)
    masked: bool | None = None
    opened = False  # a frame that is not a continuation: more than a run of zero bytes
    while pos < end:
        if end - pos < 2:
            return None
        b0, b1 = payload[pos], payload[pos + 1]
        if b0 & 0x30 or (b0 & 0x0F) not in (0, 1, 2, 8, 9, 10):
            return None
        opened = opened or bool(b0 & 0x0F)
        m = bool(b1 & 0x80)
        if masked is None:
            masked = m
        elif masked is not m:
            return None
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            if end - pos < 2:
                return None
            n = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
        elif n == 127:
            if end - pos < 8:
                return None
            n = int.from_bytes(payload[pos : pos + 8], "big")
            pos += 8
        if m:
            if end - pos < 4 or not any(payload[pos : pos + 4]):
                return None  # a client's masking key is random: never all zero
            pos += 4
        pos += n
    return masked if pos == end and opened else None


def role_evidence(
    buf: bytes | bytearray, frames: Sequence[FrameHead]
) -> tuple[int, int, list[str]]:
    """(votes for "this direction's sender is the client", votes for "the server", reasons)."""
    client = server = 0
    why: list[str] = []
    for f in frames:
        body = f.pos + FRAME_HEADER_LEN
        if f.type == 0x1 and f.length:
            pad = 1 if f.flags & 0x08 else 0
            skip = pad + (5 if f.flags & 0x20 else 0)
            if f.length > skip:
                second = buf[body + skip + 1] if f.length > skip + 1 else None
                role = _block_role(buf[body + skip], second)
                if role == "client":
                    client += 1
                    why.append("request header block")
                elif role == "server":
                    server += 1
                    why.append("response header block")
        if f.type == 0x5:
            server += 1
            why.append("PUSH_PROMISE")
        elif f.type == 0x4 and not f.flags & 1:
            for i in range(body, body + f.length, 6):
                if int.from_bytes(buf[i : i + 2], "big") == 0x8:
                    server += 1
                    why.append("SETTINGS_ENABLE_CONNECT_PROTOCOL")
        elif f.type in (0x0, 0x1) and f.stream_id % 2 == 0:
            server += 1
            why.append("frames on a pushed (even) stream")
        elif f.type == 0x7:
            last = int.from_bytes(buf[body : body + 4], "big") & 0x7FFFFFFF
            if last % 2:
                server += 1
                why.append("GOAWAY naming a client stream")
        if f.type == 0x0 and f.length and not f.flags & 0x08:
            fill = _ws_fill(buf[body : body + f.length])
            if fill is True:
                client += 1
                why.append("masked WebSocket frames")
            elif fill is False:
                server += 1
                why.append("unmasked WebSocket frames")
    return client, server, why
