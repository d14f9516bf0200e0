"""WebSocket messages (RFC 6455 §5-§7, permessage-deflate RFC 7692) of one direction's bytes.

One job: :class:`MessageDecoder`, bytes and timestamps in, message and diagnostic records out
(sans-IO).  The same decoder serves RFC 8441 WebSockets (the concatenated DATA payloads of one
HTTP/2 stream and direction) and HTTP/1.1 Upgrade WebSockets (the bytes after the 101): framing
does not care what carried it.

Two paths read the frames.  The framing rules (header syntax, masking, control-frame limits,
close payloads, continuation order) are wsproto's ``FrameProtocol`` for every frame that is not
a plain single-frame text or binary message; those -- the common case -- are read by the fast
path of :mod:`.fastpath`, which replaces wsproto's parsing there and which the tests hold equal
to the wsproto path.  Both paths measure, inflate and hash through :class:`.inbound.Inbound`.

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

And ``ws_deflate_context_lost`` (warning, a WebSocket recognised from its bytes): compressed
messages that need deflate history from before the capture, counted and not decoded.
"""

from __future__ import annotations

from wsproto.frame_protocol import CloseReason, FrameProtocol, ParseFailed

from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.websocket.fastpath import split
from h2ws.analysis.core.websocket.inbound import _CLOSE, _OPCODE_NAMES, Inbound
from h2ws.analysis.core.websocket.negotiation import DeflateParams
from h2ws.analysis.records import DiagnosticRecord, Direction, MessageRecord, PayloadPolicy

#: the default payload policy (frozen, so sharing it is safe)
_PREVIEW = PayloadPolicy()


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
        payload: PayloadPolicy = _PREVIEW,
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
        reset = False
        if deflate is not None:
            reset = (
                deflate.client_no_context_takeover
                if client_side
                else deflate.server_no_context_takeover
            )
        self._tap = Inbound(
            masked=client_side,
            deflate=deflate,
            reset_context=reset,
            policy=payload,
            max_message_bytes=max_message_bytes,
        )
        # wsproto's "client" is the side that receives unmasked (server) frames.
        self._proto: FrameProtocol | None = FrameProtocol(
            client=not client_side, extensions=[self._tap]
        )
        #: decode plain single-frame data messages without wsproto (see :mod:`.fastpath`)
        self._fast_path = fast_path
        self._owed = 0  # bytes of the frame being handed to wsproto that are still to come
        #: a frame the fast path took on whose payload goes on in later feeds (``fastpath.stream``)
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
            split(self, data, ts, out)
        except Exception as exc:  # any input must give records, not a crash
            out.append(self._fail(ts, "ws_internal_error", f"internal decoder error: {exc!r}"))
        return out

    def _wsproto(self, data: bytes, ts: float, out: list[MessageRecord | DiagnosticRecord]) -> bool:
        """Let wsproto decode ``data``; False once decoding of this direction has stopped."""
        proto = self._proto
        if proto is None:
            return False
        try:
            proto.receive_bytes(data)
            for frame in proto.received_frames():
                if frame.message_finished:
                    self._emit(out)
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

    def _emit(self, out: list[MessageRecord | DiagnosticRecord]) -> None:
        """The record of the message (or control frame) just finished -- none for a message
        lost with the deflate history from before the capture (``Inbound.m_lost``)."""
        tap = self._tap
        if tap.m_lost and not tap.frame_control:
            tap.m_lost = False
            tap.msg_open = False
            return
        out.append(
            tap.message_record(
                self.conn_id, self.stream_id, self.exchange, self.direction, self._index
            )
        )
        self._index += 1

    @property
    def lost_to_context(self) -> int:
        """Compressed messages not decoded: they need deflate history from before the capture."""
        return self._tap.lost

    def finish(self, ts: float | None) -> list[DiagnosticRecord]:
        """End of the stream: say so if it cut a message short."""
        if self._finished:
            return []
        self._finished = True
        lost: list[DiagnosticRecord] = []
        if self._tap.lost:
            lost.append(
                diagnostic(
                    self.conn_id,
                    "ws",
                    "warning",
                    "ws_deflate_context_lost",
                    f"{self.direction}: {self._tap.lost} compressed message(s) refer to deflate"
                    " history from before the capture; not decoded",
                    ts=ts,
                    stream_id=self.stream_id,
                )
            )
        return lost + self._finish(ts)

    def _finish(self, ts: float | None) -> list[DiagnosticRecord]:
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
        return [
            diagnostic(
                self.conn_id,
                "ws",
                "warning",
                "ws_incomplete_message",
                f"{self.direction}: stream ended inside a {what}",
                ts=ts,
                stream_id=self.stream_id,
            )
        ]

    # internals -----------------------------------------------------------------------------

    def _on_close(self, out: list[MessageRecord | DiagnosticRecord], ts: float) -> None:
        self._close_seen = True
        self._proto = None  # wsproto would keep buffering whatever follows
        tap = self._tap
        if tap.msg_open:
            out.append(
                diagnostic(
                    self.conn_id,
                    "ws",
                    "warning",
                    "ws_incomplete_message",
                    f"{self.direction}: close frame inside an unfinished fragmented"
                    f" {_OPCODE_NAMES[tap.m_opcode]} message ({tap.m_frags} fragment(s));"
                    " the message is lost",
                    ts=ts,
                    stream_id=self.stream_id,
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
            diagnostic(
                self.conn_id,
                "ws",
                "warning",
                "ws_data_after_close",
                f"{self.direction}: {nbytes} bytes after the close frame (RFC 6455 §5.5.1);"
                " these and any later bytes are ignored",
                ts=ts,
                stream_id=self.stream_id,
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
        return diagnostic(
            self.conn_id,
            "ws",
            "error",
            code,
            f"{self.direction}: {message}",
            ts=ts,
            stream_id=self.stream_id,
        )
