"""WebSocket messages (RFC 6455, permessage-deflate RFC 7692) from one direction's byte stream.

The same decoder serves RFC 8441 WebSockets (the concatenated DATA payloads of one HTTP/2 stream
and direction) and HTTP/1.1 Upgrade WebSockets (the bytes after the 101): framing does not care
what carried it.  It is sans-IO: bytes and timestamps in, records out.

Framing rules (header syntax, masking, control-frame limits, close payloads, continuation order)
are wsproto's ``FrameProtocol``, so this module does not re-implement RFC 6455 parsing.  What
wsproto does not do for an observer is done by :class:`_Inbound`, a wsproto extension that sees
every frame header and every chunk of unmasked payload before wsproto's own message layer:

* it measures what the table needs and wsproto does not report (wire length, RSV1, where a frame
  started, how many bytes are still pending);
* it inflates permessage-deflate itself, in bounded steps, so a decompression bomb stops at
  ``max_message_bytes`` instead of allocating what the attacker asked for;
* it hashes, validates UTF-8 and keeps the payload preview chunk by chunk and hands wsproto an
  empty payload for data frames, so a huge message never sits in memory whole (unless the payload
  policy is ``full``, which is what the user asked for).

Diagnostic codes (layer ``ws``).  Every ``error`` ends decoding of that direction (``failed``):

=========================  ========  =============================================================
code                       severity  meaning
=========================  ========  =============================================================
``ws_protocol_error``      error     framing violates RFC 6455 (continuation without a message,
                                     new message inside a fragmented one, fragmented or oversized
                                     control frame, non-minimal length, ...)
``ws_bad_mask``            error     a client frame not masked, or a server frame masked (§5.1)
``ws_reserved_opcode``     error     opcode 0x3-0x7 or 0xB-0xF (§5.2)
``ws_reserved_bits``       error     RSV2/RSV3 set, or RSV1 where permessage-deflate does not allow
                                     it (not negotiated, control frame, continuation frame)
``ws_invalid_utf8``        error     a text message or a close reason is not UTF-8 (§8.1)
``ws_bad_close``           error     close payload of 1 byte, or a close code that may not be sent
``ws_message_too_big``     error     a message exceeds ``max_message_bytes`` (after inflate)
``ws_inflate_error``       error     permessage-deflate data that does not inflate
``ws_internal_error``      error     a bug in this decoder; the input is kept for a report
``ws_data_after_close``    warning   bytes after the close frame (§5.5.1); they are ignored
``ws_incomplete_message``  warning   the stream ended (or a close frame came) inside a message
=========================  ========  =============================================================
"""

from __future__ import annotations

import codecs
import zlib
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING, Literal

import numpy as _np
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed, RsvBits

from h2ws.analysis.records import DiagnosticRecord, Direction, MessageRecord

#: builds a MessageRecord from a tuple of all its fields, without NamedTuple's Python __new__
_new_message = tuple.__new__

if TYPE_CHECKING:
    from hashlib import _Hash

    from wsproto.frame_protocol import FrameDecoder

__all__ = [
    "DeflateParams",
    "MessageDecoder",
    "PayloadPolicy",
    "negotiated_deflate",
]

PayloadMode = Literal["none", "preview", "full"]


@dataclass(frozen=True, slots=True)
class PayloadPolicy:
    """How much of each payload lands in the table; the privacy default is a short preview."""

    mode: PayloadMode = "preview"
    preview_bytes: int = 256

    def __post_init__(self) -> None:
        if self.mode not in ("none", "preview", "full"):
            raise ValueError(f"payload mode must be none, preview or full, not {self.mode!r}")
        if self.preview_bytes < 0:
            raise ValueError("preview_bytes must not be negative")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """Negotiated permessage-deflate parameters (RFC 7692 §7.1).

    The window sizes are recorded for reference only: inflating always uses a 2**15 window,
    which decodes data compressed with any smaller window, while a smaller one would reject
    legal input from a peer that ignored the negotiation.
    """

    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    client_max_window_bits: int = 15
    server_max_window_bits: int = 15


def _split_quoted(text: str, sep: str) -> list[str] | None:
    """Split at ``sep`` outside double quotes; None when a quote is left open."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        return None
    parts.append(text[start:])
    return parts


def _window_bits(value: str | None) -> int | None:
    if value is None:  # allowed without a value in an offer; means "the default"
        return 15
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiated_deflate(response_extensions: str | None) -> DeflateParams | None:
    """permessage-deflate as accepted by the server's ``sec-websocket-extensions``, if at all.

    Only the response counts: the client offers, the server decides (RFC 7692 §5).  The first
    ``permessage-deflate`` element is used; other extensions are ignored.  Unknown parameters
    are tolerated because the peers evidently agreed on them, but an element that cannot be
    parsed (open quote, window bits outside 8..15) gives None: guessing parameters would make
    every compressed message fail later with a misleading inflate error instead of the clear
    "RSV1 without permessage-deflate" diagnostic.
    """
    if not response_extensions:
        return None
    elements = _split_quoted(response_extensions, ",")
    if elements is None:
        return None
    for element in elements:
        params = _split_quoted(element, ";")
        if params is None or params[0].strip().lower() != "permessage-deflate":
            continue
        values: dict[str, bool | int] = {}
        for param in params[1:]:
            name, eq, raw = param.partition("=")
            name = name.strip().lower()
            if not name:
                continue  # tolerate "permessage-deflate;" and doubled separators
            if name in ("client_no_context_takeover", "server_no_context_takeover"):
                values[name] = True
            elif name in ("client_max_window_bits", "server_max_window_bits"):
                bits = _window_bits(raw if eq else None)
                if bits is None:
                    return None
                values[name] = bits
        return DeflateParams(
            client_no_context_takeover=bool(values.get("client_no_context_takeover", False)),
            server_no_context_takeover=bool(values.get("server_no_context_takeover", False)),
            client_max_window_bits=int(values.get("client_max_window_bits", 15)),
            server_max_window_bits=int(values.get("server_max_window_bits", 15)),
        )
    return None


# --------------------------------------------------------------------------- the inbound path

_OPCODE_NAMES = {
    Opcode.TEXT: "text",
    Opcode.BINARY: "binary",
    Opcode.CLOSE: "close",
    Opcode.PING: "ping",
    Opcode.PONG: "pong",
}
_EMPTY_SHA256 = sha256(b"").hexdigest()
_BAD_UTF8 = "text message is not valid UTF-8 (RFC 6455 §8.1)"
#: RFC 7692 §7.2.2: the sender strips this empty stored block, the receiver puts it back.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: Inflate output per zlib call: bounds memory in preview/none mode whatever the message size.
_INFLATE_STEP = 1 << 20
_RSV_NONE = RsvBits(False, False, False)
_RSV_DEFLATE = RsvBits(True, False, False)
_PROTOCOL_ERROR = CloseReason.PROTOCOL_ERROR
_CONTINUATION = Opcode.CONTINUATION
_TEXT = Opcode.TEXT
_CLOSE = Opcode.CLOSE
_BINARY = Opcode.BINARY
_utf8_decode = codecs.utf_8_decode
_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]
#: From this payload size on, numpy unmasks (see _unmask).
_NUMPY_UNMASK = 2048
_from_bytes = int.from_bytes


#: 2 + 8-byte length + 4-byte masking key
_MAX_HEADER = 14


def _frame_size(head: bytes) -> int | None:
    """Bytes of the frame starting ``head`` (header included), None until the length is there."""
    n = len(head)
    if n < 2:
        return None
    b1 = head[1]
    length = b1 & 0x7F
    size = 6 if b1 & 0x80 else 2
    if length == 126:
        if n < 4:
            return None
        return size + 2 + ((head[2] << 8) | head[3])
    if length == 127:
        if n < 10:
            return None
        return size + 8 + int.from_bytes(head[2:10], "big")
    return size + length


def _unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (RFC 6455 §5.3).

    Three ways, by size, as measured: one big-int XOR on small payloads, four byte-table
    translates up to a few KiB, and numpy's XOR of 32-bit words beyond (15x faster at 64 KiB,
    where unmasking was a visible part of decoding large client messages).
    """
    n = len(payload)
    if n <= 512:  # one big-int XOR beats four translates on small payloads
        mask = int.from_bytes((key * ((n >> 2) + 1))[:n], "little")
        return (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little")
    if n < _NUMPY_UNMASK:
        out = bytearray(payload)
        for i in range(4):
            out[i::4] = out[i::4].translate(_XOR_TABLES[key[i]])
        return bytes(out)
    words = n >> 2
    head = (
        _np.frombuffer(payload, "<u4", words) ^ _np.uint32(_from_bytes(key, "little"))
    ).tobytes()
    tail = n & 3
    if not tail:
        return head
    rest = n - tail
    return head + bytes(payload[rest + i] ^ key[i] for i in range(tail))


class _Inbound(Extension):
    """wsproto extension that observes, inflates and measures every inbound frame.

    wsproto calls ``frame_inbound_header`` again for the same frame when the masking key had
    not fully arrived, so that hook only validates and remembers the header ("tentative"); the
    frame is taken on ("committed") when its first payload chunk arrives, which happens exactly
    once per frame, even for an empty payload.
    """

    name = "h2ws-inbound"

    def __init__(
        self,
        *,
        masked: bool,
        deflate: DeflateParams | None,
        reset_context: bool,
        keep: int | None,
        max_message_bytes: int,
    ) -> None:
        self.masked_extra = 4 if masked else 0
        self.deflate = deflate is not None
        self.reset_context = reset_context
        #: payload bytes to keep per message: -1 all, n a preview; None: no payload column
        self.no_payload = keep is None
        self.keep = 0 if keep is None else keep
        self.max_message_bytes = max_message_bytes
        self.inflater: zlib._Decompress | None = None
        #: (code, message) of the violation this extension reported to wsproto
        self.error: tuple[str, str] | None = None

        self.ts = 0.0  # ts of the feed being decoded
        self.next_ts: float | None = None  # ts of the first byte of the next frame header
        self.fed = 0
        self.consumed = 0  # header + payload bytes of frames taken on

        # tentative header
        self.t_opcode: Opcode | None = None
        self.t_rsv1 = False
        self.t_len = 0
        self.t_ts = 0.0

        self.frame_open = False  # a frame was taken on and is not complete
        self.frame_control = False
        self.close_done = False  # a close frame has been fully received, record not yet out

        # the control frame last taken on
        self.c_opcode: Opcode = Opcode.PING
        self.c_ts = 0.0
        self.c_payload = b""
        self.c_wire = 0

        # the data message being received
        self.msg_open = False
        self.m_opcode: Opcode = _TEXT
        self.m_text = False
        self.m_ts = 0.0
        self.m_frags = 0
        self.m_wire = 0
        self.m_len = 0
        self.m_comp = False
        self.m_hash: _Hash | None = None
        self.m_parts: list[bytes] = []
        self.m_kept = 0
        self.m_u8 = b""  # an unfinished UTF-8 sequence at the end of the last chunk

    # wsproto's Extension interface -------------------------------------------------------

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False  # never negotiated: this extension only exists on the receiving side

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if rsv.rsv2 or rsv.rsv3:
            return self._fail("ws_reserved_bits", "RSV2/RSV3 set but no extension defines them")
        if opcode is _CONTINUATION:
            if not self.msg_open:
                return self._fail("ws_protocol_error", "continuation frame without a message")
            if rsv.rsv1:
                return self._fail(
                    "ws_reserved_bits", "RSV1 set on a continuation frame (RFC 7692 §6.1)"
                )
            if not self.m_comp and self.m_len + payload_length > self.max_message_bytes:
                return self._too_big(self.m_len + payload_length)
        elif opcode >= 8:
            if rsv.rsv1:
                return self._fail("ws_reserved_bits", f"RSV1 set on a {opcode.name} frame")
        else:
            if self.msg_open:
                return self._fail(
                    "ws_protocol_error",
                    f"{opcode.name} frame inside an unfinished fragmented"
                    f" {_OPCODE_NAMES[self.m_opcode]} message",
                )
            if rsv.rsv1 and not self.deflate:
                return self._fail(
                    "ws_reserved_bits", "RSV1 set but permessage-deflate was not negotiated"
                )
            if not rsv.rsv1 and payload_length > self.max_message_bytes:
                return self._too_big(payload_length)
        self.t_opcode = opcode
        self.t_rsv1 = rsv.rsv1
        self.t_len = payload_length
        self.t_ts = self.ts if self.next_ts is None else self.next_ts
        return _RSV_DEFLATE if self.deflate else _RSV_NONE

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self.t_opcode is not None:
            self._commit(self.t_opcode)
        self.consumed += len(data)
        if self.frame_control:
            self.c_payload += data
            self.c_wire += len(data)
            return data
        self.m_wire += len(data)
        err = self.inflate(data, False) if self.m_comp else self.take(data)
        if err is not None:
            return err
        return b""  # the message layer of wsproto must not buffer what was already handled

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        self.frame_open = False
        if self.frame_control:
            if self.c_opcode is _CLOSE:
                self.close_done = True
            return None
        if not fin:
            return None
        return self.end_message()

    # helpers ------------------------------------------------------------------------------

    def _fail(self, code: str, message: str) -> CloseReason:
        self.error = (code, message)
        return _PROTOCOL_ERROR

    def _too_big(self, length: int) -> CloseReason:
        self.error = (
            "ws_message_too_big",
            f"message of more than {self.max_message_bytes} bytes"
            f" (at least {length}); raise max_message_bytes to decode it",
        )
        return CloseReason.MESSAGE_TOO_BIG

    def _bad_utf8(self) -> CloseReason:
        self.error = ("ws_invalid_utf8", _BAD_UTF8)
        return CloseReason.INVALID_FRAME_PAYLOAD_DATA

    def _commit(self, opcode: Opcode) -> None:
        n = self.t_len
        self.t_opcode = None
        self.consumed += (2 if n < 126 else 4 if n < 65536 else 10) + self.masked_extra
        self.frame_open = True
        if opcode >= 8:
            self.frame_control = True
            self.c_opcode = opcode
            self.c_ts = self.t_ts
            self.c_payload = b""
            self.c_wire = 0
        else:
            self.frame_control = False
            if opcode is _CONTINUATION:
                self.m_frags += 1
            else:
                self.open_message(opcode, self.t_rsv1, self.t_ts)
        # Whatever follows this header in the buffer arrived in the current feed.
        self.next_ts = self.ts

    def open_message(self, opcode: Opcode, compressed: bool, ts: float) -> None:
        self.frame_control = False
        self.msg_open = True
        self.m_opcode = opcode
        self.m_text = opcode is _TEXT
        self.m_ts = ts
        self.m_frags = 1
        self.m_wire = 0
        self.m_len = 0
        self.m_comp = compressed
        self.m_hash = None
        self.m_parts = []
        self.m_kept = 0
        self.m_u8 = b""

    def end_message(self) -> CloseReason | None:
        """The last frame of a data message is complete: flush inflate, finish UTF-8."""
        if self.m_comp:
            err = self.inflate(_DEFLATE_TAIL, True)
            if err is not None:
                return err
        if self.m_text and self.m_u8:
            try:
                _utf8_decode(self.m_u8, "strict", True)
            except UnicodeDecodeError:
                return self._bad_utf8()
        return None

    def take(self, chunk: bytes) -> CloseReason | None:
        """Account one chunk of application payload (unmasked, inflated) of the message."""
        n = len(chunk)
        if not n:
            return None
        total = self.m_len + n
        if total > self.max_message_bytes:
            return self._too_big(total)
        self.m_len = total
        h = self.m_hash
        if h is None:
            self.m_hash = sha256(chunk)
        else:
            h.update(chunk)
        if self.m_text:
            chunk_u8 = self.m_u8 + chunk if self.m_u8 else chunk
            if chunk_u8.isascii():
                self.m_u8 = b""
            else:
                try:
                    _, used = _utf8_decode(chunk_u8, "strict", False)
                except UnicodeDecodeError:
                    return self._bad_utf8()
                self.m_u8 = chunk_u8[used:]
        keep = self.keep
        if keep:
            if keep < 0:
                self.m_parts.append(chunk)
            elif self.m_kept < keep:
                part = chunk[: keep - self.m_kept]
                self.m_parts.append(part)
                self.m_kept += len(part)
        return None

    def inflate(self, data: bytes, final: bool) -> CloseReason | None:
        d = self.inflater
        if d is None:
            d = self.inflater = zlib.decompressobj(-15)
        while True:
            # One byte beyond the budget is enough to know the message is too big.
            budget = self.max_message_bytes - self.m_len + 1
            step = budget if budget < _INFLATE_STEP else _INFLATE_STEP
            try:
                out = d.decompress(data, step)
            except zlib.error as exc:
                self.error = ("ws_inflate_error", f"deflate data does not inflate: {exc}")
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
            if out:
                err = self.take(out)
                if err is not None:
                    return err
            data = d.unconsumed_tail
            if not data and len(out) < step:
                break
        if d.eof:
            # A sender may end a message with a BFINAL block (RFC 7692 §7.2.3.3); what follows
            # may only be the header byte of the empty stored block and our appended tail.
            extra = d.unused_data
            if final and extra.endswith(_DEFLATE_TAIL):
                extra = extra[:-4]
            if extra not in (b"", b"\x00"):
                self.error = ("ws_inflate_error", "data after the final deflate block")
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if final and (self.reset_context or d.eof):
            # After a final block the LZ77 window is gone with the zlib stream; a peer that
            # still refers to it will show up as an inflate error, not as silent garbage.
            self.inflater = None
        return None

    def message_record(
        self, conn_id: str, stream_id: int | None, exchange: int | None, direction: str, index: int
    ) -> MessageRecord:
        """The record of the frame that wsproto just reported finished."""
        keep = self.keep
        if self.frame_control:
            payload = self.c_payload
            close_code: int | None = None
            close_reason: str | None = None
            if self.c_opcode is _CLOSE:
                self.close_done = False
                if len(payload) >= 2:
                    close_code = int.from_bytes(payload[:2], "big")
                    close_reason = payload[2:].decode("utf-8", "replace")  # wsproto validated it
            length = len(payload)
            return MessageRecord(
                conn_id=conn_id,
                stream_id=stream_id,
                exchange=exchange,
                direction=direction,
                index=index,
                ts_first=self.c_ts,
                ts_last=self.ts,
                opcode=_OPCODE_NAMES[self.c_opcode],
                fragments=1,
                wire_length=self.c_wire,
                length=length,
                compressed=False,
                payload=None if self.no_payload else payload if keep < 0 else payload[:keep],
                payload_truncated=length > keep >= 0,
                sha256=sha256(payload).hexdigest(),
                close_code=close_code,
                close_reason=close_reason,
            )
        self.msg_open = False
        length = self.m_len
        parts = self.m_parts
        h = self.m_hash
        return MessageRecord(
            conn_id=conn_id,
            stream_id=stream_id,
            exchange=exchange,
            direction=direction,
            index=index,
            ts_first=self.m_ts,
            ts_last=self.ts,
            opcode=_OPCODE_NAMES[self.m_opcode],
            fragments=self.m_frags,
            wire_length=self.m_wire,
            length=length,
            compressed=self.m_comp,
            payload=(None if self.no_payload else parts[0] if len(parts) == 1 else b"".join(parts)),
            payload_truncated=length > keep >= 0,
            sha256=_EMPTY_SHA256 if h is None else h.hexdigest(),
        )


# --------------------------------------------------------------------------- the decoder


class MessageDecoder:
    """The messages of one direction of one WebSocket.

    ``wire_length`` of a record is the sum of its frames' payload lengths as sent: compressed
    size for permessage-deflate, frame headers and masking keys excluded, so that the
    compression ratio is ``length / wire_length`` and framing overhead is not mistaken for it.
    ``length`` is what the application sees (unmasked, defragmented, inflated; UTF-8 bytes for
    text).  ``ts_first`` is the timestamp of the feed that brought the message's first byte,
    ``ts_last`` that of the feed that completed it.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        stream_id: int | None,
        exchange: int | None,
        direction: Direction,
        deflate: DeflateParams | None = None,
        payload: PayloadPolicy = PayloadPolicy(),  # frozen, so sharing is safe
        max_message_bytes: int = 64 * 2**20,
        fast_path: bool = True,
    ) -> None:
        if direction not in ("c2s", "s2c"):
            raise ValueError(f"direction must be c2s or s2c, not {direction!r}")
        self.conn_id = conn_id
        self.stream_id = stream_id
        self.exchange = exchange
        self.direction = direction
        self.deflate = deflate
        self.payload = payload
        self.max_message_bytes = max_message_bytes
        client_side = direction == "c2s"
        keep: int | None
        if payload.mode == "none":
            keep = None
        elif payload.mode == "full":
            keep = -1
        else:
            keep = payload.preview_bytes
        reset = False
        if deflate is not None:
            reset = (
                deflate.client_no_context_takeover
                if client_side
                else deflate.server_no_context_takeover
            )
        self._tap = _Inbound(
            masked=client_side,
            deflate=deflate,
            reset_context=reset,
            keep=keep,
            max_message_bytes=max_message_bytes,
        )
        # wsproto's "client" is the side that receives unmasked (server) frames.
        self._proto: FrameProtocol | None = FrameProtocol(
            client=not client_side, extensions=[self._tap]
        )
        #: decode plain single-frame data messages without wsproto (see _fast_frames)
        self._fast_path = fast_path
        self._owed = 0  # bytes of the frame being handed to wsproto that are still to come
        #: a frame the fast path took on whose payload goes on in later feeds (see _stream)
        self._rest = 0  # its payload bytes still to come
        self._key = b""  # its masking key (empty: not masked)
        self._key_off = 0  # where in the key the next payload byte is
        self._hdr = b""  # the part of a frame header that wsproto has and that we cannot size yet
        self._index = 0
        self._failed = False
        self._close_seen = False
        self._after_close_reported = False
        self._finished = False

    @property
    def failed(self) -> bool:
        """A protocol error ended decoding of this direction."""
        return self._failed

    @property
    def close_seen(self) -> bool:
        """A close frame was decoded."""
        return self._close_seen

    @property
    def in_message(self) -> bool:
        """Bytes of an unfinished frame or message are pending.

        False once the direction failed or closed: those endings have their own record, and
        callers use this to tell a stream cut short from one that ended cleanly.
        """
        if self._failed or self._close_seen:
            return False
        tap = self._tap
        return tap.msg_open or tap.fed > tap.consumed

    @property
    def messages(self) -> int:
        """Records emitted so far (data and control)."""
        return self._index

    def feed(self, data: bytes, ts: float) -> list[MessageRecord | DiagnosticRecord]:
        """Decode the next bytes of the stream; frames may straddle calls."""
        if self._proto is None or not data:
            if self._close_seen and data and not self._finished:
                return self._after_close(len(data), ts)
            return []
        tap = self._tap
        out: list[MessageRecord | DiagnosticRecord] = []
        tap.ts = ts
        tap.fed += len(data)
        if not self._fast_path:
            if tap.next_ts is None:
                tap.next_ts = ts
            self._wsproto(data, ts, out)
            if tap.fed == tap.consumed:
                tap.next_ts = None  # the next frame starts in a later feed
            return out
        try:
            self._split(data, ts, out)
        except Exception as exc:  # any input must give records, not a crash
            out.append(self._fail(ts, "ws_internal_error", f"internal decoder error: {exc!r}"))
        return out

    def _split(self, data: bytes, ts: float, out: list[MessageRecord | DiagnosticRecord]) -> None:
        """Cut ``data`` at frame boundaries: plain whole frames here, the rest to wsproto.

        Profiling showed wsproto's per-frame machinery (buffer slicing, named tuples, a
        generator, masker objects) costing three quarters of the time on streams of small
        messages, the common case.  So plainly valid single-frame data messages are decoded by
        :meth:`_fast_frames`, also when their payload goes on in later feeds (:meth:`_stream`:
        a message larger than an HTTP/2 DATA frame always does); every other frame -- control
        frames, fragments, headers split over feeds, anything wsproto may reject -- is handed
        to wsproto, exactly up to its end, so that the frame after it can take the fast path
        again.  Frame boundaries only need the length fields, which are read here without
        judging them.
        """
        tap = self._tap
        n = len(data)
        pos = 0
        while pos < n:
            if self._rest:
                pos = self._stream(data, pos, ts, out)
                if self._proto is None:
                    break
                continue
            if self._owed:
                end = pos + self._owed if self._owed < n - pos else n
                self._owed -= end - pos
                ok = self._wsproto(data[pos:end], ts, out)
                pos = end
                if not ok:
                    break
                continue
            if self._hdr:  # a header started in an earlier feed and is already in wsproto
                head = self._hdr + data[pos : pos + _MAX_HEADER]
                size = _frame_size(head)
                if size is None:  # still incomplete, so everything left is header bytes
                    self._hdr = head
                    if not self._wsproto(data[pos:], ts, out):
                        return
                    pos = n
                else:
                    self._owed = size - len(self._hdr)
                    self._hdr = b""
                continue
            # A clean frame boundary: wsproto holds no bytes.
            if not tap.msg_open:
                pos = self._fast_frames(data, pos, ts, out)
                if pos >= n or self._proto is None:
                    break
            tap.next_ts = ts
            size = _frame_size(data[pos : pos + _MAX_HEADER])
            if size is None:
                self._hdr = data[pos:]
                self._wsproto(self._hdr, ts, out)
                pos = n
            else:
                self._owed = size
        if self._close_seen and pos < n:
            out.extend(self._after_close(n - pos, ts))

    def _wsproto(self, data: bytes, ts: float, out: list[MessageRecord | DiagnosticRecord]) -> bool:
        """Let wsproto decode ``data``; False once decoding of this direction has stopped."""
        proto = self._proto
        if proto is None:
            return False
        tap = self._tap
        try:
            proto.receive_bytes(data)
            for frame in proto.received_frames():
                if frame.message_finished:
                    out.append(
                        tap.message_record(
                            self.conn_id, self.stream_id, self.exchange, self.direction, self._index
                        )
                    )
                    self._index += 1
                    if frame.opcode is _CLOSE:
                        self._on_close(out, ts)
                        return False
        except ParseFailed as exc:
            out.append(self._parse_failed(exc, ts))
            return False
        except Exception as exc:  # any input must give records, not a crash
            out.append(self._fail(ts, "ws_internal_error", f"internal decoder error: {exc!r}"))
            return False
        return True

    def _fast_frames(
        self, data: bytes, pos: int, ts: float, out: list[MessageRecord | DiagnosticRecord]
    ) -> int:
        """Decode whole single-frame data messages from ``pos``; return where it stopped.

        A frame qualifies when its header is entirely in ``data`` and it is plainly valid: FIN
        set, text or binary, RSV bits as negotiated, the right mask bit, a minimal length
        (7, 16 or 64 bits, the top bit clear) within ``max_message_bytes``.  Its payload then
        goes through the same extension code (size cap, inflate, UTF-8, hash, preview) as on
        the wsproto path, so both paths give the same records and diagnostics; the tests feed
        the same streams, cut anywhere, through both.  A frame whose payload goes on beyond
        ``data`` is taken on as wsproto would (the message opens when its first payload byte is
        there) and streamed by :meth:`_stream`.
        """
        tap = self._tap
        masked = tap.masked_extra != 0
        need = 6 if masked else 2
        deflate = tap.deflate
        cap = tap.max_message_bytes
        keep = tap.keep
        no_payload = tap.no_payload
        n = len(data)
        while n - pos >= need:
            b0 = data[pos]
            if b0 == 0x81 or b0 == 0x82:
                comp = False
            elif deflate and (b0 == 0xC1 or b0 == 0xC2):
                comp = True
            else:
                break
            b1 = data[pos + 1]
            if (b1 >= 0x80) is not masked:
                break
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < need + 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                if length < 126:
                    break
                start += 2
            elif length == 127:
                if n - pos < need + 8:
                    break
                length = _from_bytes(data[start : start + 8], "big")
                if length <= 0xFFFF or length >> 63:
                    break
                start += 8
            if length > cap and not comp:
                break
            body = start + 4 if masked else start
            end = body + length
            if end > n:
                if body >= n:  # no payload byte yet: wsproto would not have taken it on
                    break
                tap.consumed += body - pos
                tap.open_message(_TEXT if b0 & 1 else _BINARY, comp, ts)
                self._rest = length
                self._key = data[start:body]
                self._key_off = 0
                return self._stream(data, body, ts, out)
            payload = _unmask(data[body:end], data[start:body]) if masked else data[start:end]
            tap.consumed += end - pos
            pos = end
            if not comp:
                # The whole message is at hand: no incremental state is needed.
                if b0 == 0x81 and not payload.isascii():
                    try:
                        _utf8_decode(payload, "strict", True)
                    except UnicodeDecodeError:
                        out.append(self._fail(ts, "ws_invalid_utf8", _BAD_UTF8))
                        return n
                # tuple.__new__ with every field, in MessageRecord's order: a third of the
                # cost of its constructor on a row per message; the tests compare these rows
                # with the wsproto path's.
                out.append(
                    _new_message(
                        MessageRecord,
                        (
                            self.conn_id,
                            self.stream_id,
                            self.exchange,
                            self.direction,
                            self._index,
                            ts,
                            ts,
                            "text" if b0 == 0x81 else "binary",
                            1,
                            length,
                            length,
                            False,
                            None
                            if no_payload
                            else payload
                            if keep < 0 or length <= keep
                            else payload[:keep],
                            length > keep >= 0,
                            sha256(payload).hexdigest(),
                            None,
                            None,
                        ),
                    )
                )
                self._index += 1
                continue
            tap.open_message(_TEXT if b0 & 1 else _BINARY, comp, ts)
            tap.m_wire = length
            err = tap.inflate(payload, False)
            if err is None:
                err = tap.end_message()
            if err is not None:
                code, message = tap.error or ("ws_protocol_error", f"extension said {err!r}")
                out.append(self._fail(ts, code, message))
                return n
            out.append(
                tap.message_record(
                    self.conn_id, self.stream_id, self.exchange, self.direction, self._index
                )
            )
            self._index += 1
        return pos

    def _stream(
        self, data: bytes, pos: int, ts: float, out: list[MessageRecord | DiagnosticRecord]
    ) -> int:
        """The next payload bytes, from ``pos``, of the frame :meth:`_fast_frames` took on;
        return where they end.

        Each feed's part goes through the extension code as wsproto would hand it over
        (unmasked, one chunk per feed), so records, diagnostics and the feed they come in are
        the same as on the wsproto path; on the frame's last byte the message is complete.
        """
        tap = self._tap
        n = len(data)
        left = self._rest
        end = pos + left if left < n - pos else n
        size = end - pos
        chunk = data[pos:end]
        key = self._key
        if key:
            off = self._key_off
            chunk = _unmask(chunk, key[off:] + key[:off] if off else key)
            self._key_off = (off + size) & 3
        self._rest = left - size
        tap.consumed += size
        tap.m_wire += size
        err = tap.inflate(chunk, False) if tap.m_comp else tap.take(chunk)
        if err is None and not self._rest:
            err = tap.end_message()
            if err is None:
                out.append(
                    tap.message_record(
                        self.conn_id, self.stream_id, self.exchange, self.direction, self._index
                    )
                )
                self._index += 1
                return end
        if err is not None:
            self._rest = 0
            code, message = tap.error or ("ws_protocol_error", f"extension said {err!r}")
            out.append(self._fail(ts, code, message))
            return n
        return end

    def finish(self, ts: float | None) -> list[DiagnosticRecord]:
        """End of the stream: say so if it cut a message short."""
        if self._finished:
            return []
        self._finished = True
        proto, self._proto = self._proto, None
        if proto is None or self._failed or self._close_seen:
            return []
        tap = self._tap
        if tap.msg_open:
            what = (
                f"{_OPCODE_NAMES[tap.m_opcode]} message ({tap.m_frags} fragment(s),"
                f" {tap.m_wire} payload bytes on the wire so far)"
            )
        elif tap.fed > tap.consumed:
            what = f"frame ({tap.fed - tap.consumed} bytes of it)"
        else:
            return []
        return [self._diag(ts, "warning", "ws_incomplete_message", f"stream ended inside a {what}")]

    # internals -----------------------------------------------------------------------------

    def _on_close(self, out: list[MessageRecord | DiagnosticRecord], ts: float) -> None:
        self._close_seen = True
        self._proto = None  # wsproto would keep buffering whatever follows
        tap = self._tap
        if tap.msg_open:
            out.append(
                self._diag(
                    ts,
                    "warning",
                    "ws_incomplete_message",
                    f"close frame inside an unfinished fragmented {_OPCODE_NAMES[tap.m_opcode]}"
                    f" message ({tap.m_frags} fragment(s)); the message is lost",
                )
            )
            tap.msg_open = False
        pending = tap.fed - tap.consumed
        if pending > 0:
            out.extend(self._after_close(pending, ts))

    def _after_close(self, nbytes: int, ts: float) -> list[MessageRecord | DiagnosticRecord]:
        if self._after_close_reported:
            return []
        self._after_close_reported = True
        return [
            self._diag(
                ts,
                "warning",
                "ws_data_after_close",
                f"{nbytes} bytes after the close frame (RFC 6455 §5.5.1); these and any"
                " later bytes are ignored",
            )
        ]

    def _parse_failed(self, exc: ParseFailed, ts: float) -> DiagnosticRecord:
        tap = self._tap
        text = str(exc)
        if tap.error is not None:
            code, message = tap.error
        elif "masked" in text:
            code = "ws_bad_mask"
            message = (
                "client frame is not masked (RFC 6455 §5.1)"
                if self.direction == "c2s"
                else "server frame is masked (RFC 6455 §5.1)"
            )
        elif text.startswith("Invalid opcode"):
            code, message = "ws_reserved_opcode", f"reserved opcode: {text} (RFC 6455 §5.2)"
        elif tap.close_done:
            if exc.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA:
                code = "ws_invalid_utf8"
                message = "close reason is not valid UTF-8 (RFC 6455 §5.5.1)"
            else:
                code = "ws_bad_close"
                message = f"invalid close frame {tap.c_payload[:8].hex()}: {text} (RFC 6455 §7.4)"
        elif exc.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA:
            code, message = "ws_invalid_utf8", f"invalid UTF-8: {text}"
        else:
            code, message = "ws_protocol_error", f"protocol error: {text}"
        return self._fail(ts, code, message)

    def _fail(self, ts: float | None, code: str, message: str) -> DiagnosticRecord:
        self._failed = True
        self._proto = None
        return self._diag(ts, "error", code, message)

    def _diag(self, ts: float | None, severity: str, code: str, message: str) -> DiagnosticRecord:
        return DiagnosticRecord(
            conn_id=self.conn_id,
            stream_id=self.stream_id,
            ts=ts,
            layer="ws",
            severity=severity,
            code=code,
            message=f"{self.direction}: {message}",
        )
