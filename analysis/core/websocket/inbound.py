"""What every inbound WebSocket frame carries, measured as a wsproto extension; RFC 7692 inflate.

One job: the per-message accounting both decoding paths share.  :class:`Inbound` is a wsproto
``Extension`` that sees every frame header and every chunk of unmasked payload before wsproto's
own message layer (the wsproto path), and whose methods the fast path (:mod:`.fastpath`) calls
directly for the frames it reads itself:

* it measures what the table needs and wsproto does not report (wire length, RSV1, where a frame
  started, how many bytes are still pending);
* it inflates permessage-deflate itself (RFC 7692 §7.2.2: the stripped ``00 00 ff ff`` tail put
  back, context takeover per §7.1.1), in bounded steps, so a decompression bomb stops at
  ``max_message_bytes`` instead of allocating what the attacker asked for;
* it hashes, validates UTF-8 (RFC 6455 §8.1) and keeps the payload preview chunk by chunk (the
  :class:`~h2ws.analysis.records.PayloadPolicy` rule, as its ``keep`` number) and hands wsproto
  an empty payload for data frames, so a huge message never sits in memory whole (unless the
  payload policy is ``full``, which is what the user asked for).
"""

from __future__ import annotations

import codecs
import zlib
from hashlib import sha256
from typing import TYPE_CHECKING

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, RsvBits

from h2ws.analysis.core.websocket.negotiation import DeflateParams
from h2ws.analysis.records import MessageRecord, PayloadPolicy

if TYPE_CHECKING:
    from hashlib import _Hash

    from wsproto.frame_protocol import FrameDecoder

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


class Inbound(Extension):
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
        policy: PayloadPolicy,
        max_message_bytes: int,
    ) -> None:
        self.masked_extra = 4 if masked else 0
        self.deflate = deflate is not None
        self.reset_context = reset_context
        self.policy = policy
        keep = policy.keep
        #: payload bytes to keep per message (``PayloadPolicy.keep``): -1 all, n a preview;
        #: with no payload column (``no_payload``) 0, so that any byte makes it truncated
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
        #: the negotiation was not captured (a WebSocket recognised from its bytes): a message
        #: whose deflate data refers to history from before the capture is lost, not an error
        self.context_unknown = False
        self.m_lost = False  # the message being received is such a message
        self.lost = 0  # messages lost so far

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
        self.m_lost = False

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
        if self.m_lost:
            return None  # the rest of a message that cannot be inflated
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
                if self.context_unknown and "too far back" in str(exc):
                    # zlib refuses a distance beyond the history it has, so whatever inflated
                    # before was exact; this message needs lost history.  A fresh inflater
                    # for the next one: references into this message fail the same way.
                    self.m_lost = True
                    self.lost += 1
                    self.inflater = None
                    return None
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
            kept, truncated = self.policy.cut(payload, length)
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
                payload=kept,
                payload_truncated=truncated,
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
