"""A WebSocket on a stream: its two message decoders and what they add to the stream's row.

One job, shared by both carriers -- an RFC 8441 stream of HTTP/2 (RFC 8441 §5: the DATA payloads
are the WebSocket's bytes) and an HTTP/1.1 ``Upgrade: websocket`` exchange (RFC 6455 §4): count
the messages per direction, take the first close frame as ``ws_close_by`` and ``close_cause``
(``ws_close:<code>``), carry the first decoding error into the stream's ``error``, and tell at the
end whether a message was cut short.  Byte counts stay with the carrier: HTTP/2 counts DATA
payloads whether or not the WebSocket decodes them.
"""

from __future__ import annotations

from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket.messages import MessageDecoder
from h2ws.analysis.core.websocket.negotiation import DeflateParams, negotiated_deflate
from h2ws.analysis.records import DIRECTIONS, Direction, MessageRecord, Record, StreamRecord


class WebSocketStream:
    """Both directions of the WebSocket whose stream row is ``record``."""

    __slots__ = ("decoders", "record")

    def __init__(
        self, record: StreamRecord, options: DecodeOptions, *, inferred: bool = False
    ) -> None:
        self.record = record
        deflate = negotiated_deflate(record.ws_extensions)
        if inferred:
            # The negotiation was not captured: RSV1 is taken to mean permessage-deflate, with
            # context takeover (which also decodes a peer that resets its context).
            deflate = DeflateParams()
        self.decoders: dict[str, MessageDecoder] = {
            d: MessageDecoder(
                conn_id=record.conn_id,
                stream_id=record.stream_id,
                exchange=record.exchange,
                direction=d,
                deflate=deflate,
                payload=options.payload,
                max_message_bytes=options.max_message_bytes,
            )
            for d in DIRECTIONS
        }
        if inferred:
            for decoder in self.decoders.values():
                decoder._tap.context_unknown = True

    def feed(self, d: Direction, data: bytes, ts: float, out: list[Record]) -> None:
        """The next bytes of direction ``d``: records onto ``out``, the row kept up to date."""
        decoder = self.decoders[d]
        if decoder.failed:
            return
        rec = self.record
        for row in decoder.feed(data, ts):
            if isinstance(row, MessageRecord):
                if d == "c2s":
                    rec.messages_c2s += 1
                else:
                    rec.messages_s2c += 1
                if row.opcode == "close" and rec.ws_close_by is None:
                    rec.ws_close_by = d
                    rec.close_cause = (
                        f"ws_close:{row.close_code}" if row.close_code is not None else "ws_close"
                    )
            else:
                rec.error = rec.error or row.message
            out.append(row)

    def finish(self, ts: float | None, out: list[Record]) -> tuple[bool, bool]:
        """The stream ended: diagnostics of messages cut short onto ``out``; returns (failed,
        cut): a direction's decoding failed, a message (or frame) was cut short by the end."""
        rec = self.record
        failed = cut = False
        for decoder in self.decoders.values():
            for diag in decoder.finish(ts):
                rec.error = rec.error or diag.message
                out.append(diag)
            failed = failed or decoder.failed
            cut = cut or decoder.in_message
        return failed, cut
