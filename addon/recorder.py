"""Decoding the relayed connections and writing the tables, isolated from the proxy.

One :class:`~h2ws.analysis.decoder.ConnectionDecoder` per relayed connection, fed with the chunks
mitmproxy relays (the same core as for captures), and one
:class:`~h2ws.analysis.export.PartitionedSink` for the records.  Nothing here knows mitmproxy:
the addon translates hooks into calls, which keeps this part testable without a proxy.

A decoder that raises loses its own connection only: the exception becomes a ``decoder_failed``
diagnostic, the connection is no longer decoded, and the relay (which never waits for us beyond
the hook call) goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator

from h2ws.analysis.chunks import ConnectionInfo, TlsInfo
from h2ws.analysis.decoder import ConnectionDecoder
from h2ws.analysis.export import PartitionedSink
from h2ws.analysis.options import DecodeOptions
from h2ws.analysis.records import (
    DiagnosticRecord,
    Direction,
    MessageRecord,
    Record,
    StreamRecord,
)
from h2ws.analysis.websocket import PayloadPolicy

logger = logging.getLogger(__name__)

_Call = Callable[[], list[Record]]


def trim_payload(record: MessageRecord, policy: PayloadPolicy) -> MessageRecord:
    """``record`` as ``policy`` keeps it (the decoder may have kept more, for the flows).

    Trims in place: the writer owns the records it is given, and copying a record per message
    measured as a noticeable part of the cost of recording.
    """
    payload = record.payload
    if policy.mode == "full" or payload is None:
        return record
    if policy.mode == "none":
        record.payload = None
        record.payload_truncated = False
    elif len(payload) > policy.preview_bytes:
        record.payload = payload[: policy.preview_bytes]
        record.payload_truncated = record.length > policy.preview_bytes
    return record


class TableWriter:
    """The tables of a live run: records in, part files out, flushed on a clock.

    The decoder may keep more payload than the tables (the mirrored flows show whole messages),
    so message payloads are trimmed to the table's policy here, in place: whoever else needs a
    record's payload (the mirror) takes it before the records are written.
    """

    def __init__(self, out_dir: str | os.PathLike[str], fmt: str, payload: PayloadPolicy) -> None:
        self.sink = PartitionedSink(out_dir, fmt)
        self.payload = payload
        self.last_flush = time.monotonic()
        self.failed: str | None = None

    def write(self, records: Iterable[Record]) -> None:
        if self.failed:
            return
        policy = self.payload
        trim = policy.mode != "full"
        write = self.sink.write
        for record in records:
            if trim and isinstance(record, MessageRecord):
                trim_payload(record, policy)
            write(record)

    def flush(self) -> None:
        """Every row written so far becomes readable (complete part files, atomically renamed)."""
        self.last_flush = time.monotonic()
        if self.failed or not self.sink.pending:
            return
        try:
            self.sink.flush()
        except Exception as exc:  # a full disk must not take the proxy down
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.error(f"h2ws: writing tables to {self.sink.out_dir} failed, stopped: {exc}")

    def close(self) -> None:
        self.flush()


class LiveDecoders:
    """The decoder of every relayed connection, by conn id."""

    def __init__(self, options: DecodeOptions) -> None:
        self.options = options
        self._decoders: dict[str, ConnectionDecoder] = {}
        #: connections whose decoder failed: still relayed, no longer decoded
        self._failed: set[str] = set()

    def __contains__(self, conn_id: str) -> bool:
        return conn_id in self._decoders or conn_id in self._failed

    def __len__(self) -> int:
        return len(self._decoders)

    def open(self, info: ConnectionInfo, tls: TlsInfo | None) -> list[Record]:
        decoder = ConnectionDecoder(info, self.options)
        self._decoders[info.conn_id] = decoder
        if tls is None:
            return []
        return self._guard(info.conn_id, tls.ts, lambda: decoder.set_tls(tls))

    def feed(
        self, conn_id: str, direction: Direction, data: bytes, ts: float, wire: bool
    ) -> list[Record]:
        """One chunk; ``wire``: the leg is TLS, so the chunk also counts as the wire bytes."""
        decoder = self._decoders.get(conn_id)
        if decoder is None:
            return []

        def feed() -> list[Record]:
            if wire:
                decoder.count_wire(direction, len(data), ts)
            return decoder.feed(direction, data, ts)

        return self._guard(conn_id, ts, feed)

    def close(self, conn_id: str, ts: float, cause: str, error: str | None = None) -> list[Record]:
        self._failed.discard(conn_id)
        decoder = self._decoders.pop(conn_id, None)
        if decoder is None:
            return []

        def close() -> list[Record]:
            if error:
                decoder.record.error = decoder.record.error or error
            return decoder.close(ts, cause)

        return self._guard(conn_id, ts, close)

    def close_all(self, ts: float, cause: str) -> list[Record]:
        out: list[Record] = []
        for conn_id in list(self._decoders):
            out.extend(self.close(conn_id, ts, cause))
        self._failed.clear()
        return out

    def open_streams(self, conn_id: str) -> Iterator[StreamRecord]:
        """The rows of the HTTP/2 streams still open on a connection, updated in place as the
        decoder learns more (response status, extensions); the mirrored flows start from them.
        """
        decoder = self._decoders.get(conn_id)
        h2 = getattr(decoder, "_h2", None)  # see the report: a public accessor is requested
        streams = getattr(h2, "streams", None)
        if isinstance(streams, dict):
            for stream in list(streams.values()):
                record = getattr(stream, "record", None)
                if isinstance(record, StreamRecord):
                    yield record

    def _guard(self, conn_id: str, ts: float | None, call: _Call) -> list[Record]:
        try:
            return call()
        except Exception as exc:
            decoder = self._decoders.pop(conn_id, None)
            self._failed.add(conn_id)
            logger.warning(f"h2ws: decoding connection {conn_id} failed, relaying only: {exc!r}")
            out: list[Record] = [
                DiagnosticRecord(
                    conn_id=conn_id,
                    ts=ts,
                    layer="capture",
                    severity="error",
                    code="decoder_failed",
                    message=f"internal decoder error, the connection is relayed but no longer "
                    f"decoded: {exc!r}",
                )
            ]
            if decoder is not None:
                # Its connection row still tells what was known before the failure.
                rec = decoder.record
                rec.error = rec.error or f"decoder failed: {exc!r}"
                rec.end_cause = rec.end_cause or "error"
                out.append(rec)
            return out
