"""Chunk events in, records out: one ``ConnectionDecoder`` per connection.

One job: route each chunk event to its connection's decoder.  Shared by the offline sources
(capture files, flow files; the live addon has its own router, ``addon.recorder.LiveDecoders``,
with the same guard), which is what makes their tables identical.  A decoder that fails in an
unforeseen way (raises) loses its own connection only: its row is written with what was known,
a ``decoder_failed`` diagnostic says so, the rest of that connection's events are ignored, and
every other connection decodes on (``tests/test_jobs.py`` holds it to that).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from h2ws.analysis.core.chunks import (
    ChunkEvent,
    Closed,
    ConnectionInfo,
    Data,
    Gap,
    Opened,
    TlsInfo,
    Wire,
)
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import DiagnosticRecord, Record


class Pipeline:
    def __init__(self, options: DecodeOptions | None = None) -> None:
        self.options = options or DecodeOptions()
        self.decoders: dict[str, ConnectionDecoder] = {}
        self.last_ts: float | None = None

    def open(self, info: ConnectionInfo, tls: bool = False) -> ConnectionDecoder:
        decoder = ConnectionDecoder(info, self.options, tls=tls)
        self.decoders[info.conn_id] = decoder
        return decoder

    def handle(self, event: ChunkEvent) -> list[Record]:
        try:
            if isinstance(event, Data):
                self.last_ts = event.ts
                decoder = self.decoders.get(event.conn_id)
                return decoder.feed(event.direction, event.data, event.ts) if decoder else []
            if isinstance(event, Opened):
                self.last_ts = event.ts
                self.open(event.conn)
                return []
            if isinstance(event, Gap):
                decoder = self.decoders.get(event.conn_id)
                return decoder.gap(event.direction, event.ts, event.length) if decoder else []
            if isinstance(event, Closed):
                decoder = self.decoders.get(event.conn_id)
                if decoder is None:
                    return []
                out = decoder.close(event.ts, event.cause)
                del self.decoders[event.conn_id]  # after close: a decoder that raises there
                return out  # still gives its row
            if isinstance(event, Wire):
                decoder = self.decoders.get(event.conn_id)
                if decoder:
                    decoder.count_wire(event.direction, event.length, event.ts)
                return []
            if isinstance(event, TlsInfo):
                decoder = self.decoders.get(event.conn_id)
                return decoder.set_tls(event) if decoder else []
            if isinstance(event, DiagnosticRecord):
                return [event]
            raise TypeError(f"not a chunk event: {event!r}")
        except Exception as exc:
            conn_id = event.conn.conn_id if isinstance(event, Opened) else event.conn_id
            if conn_id is None or isinstance(event, DiagnosticRecord):
                raise
            return self._lost(conn_id, event.ts, exc)

    def _lost(self, conn_id: str, ts: float | None, exc: Exception) -> list[Record]:
        """The decoder of ``conn_id`` raised: its row, a diagnostic, and nothing more of it."""
        decoder = self.decoders.pop(conn_id, None)
        out: list[Record] = [
            diagnostic(
                conn_id,
                "capture",
                "error",
                "decoder_failed",
                f"internal decoder error, the rest of connection {conn_id} is not decoded: {exc!r}",
                ts=ts,
            )
        ]
        if decoder is not None:
            # Its connection row still tells what was known before the failure.
            rec = decoder.record
            rec.error = rec.error or f"decoder failed: {exc!r}"
            rec.end_cause = rec.end_cause or "error"
            out.append(rec)
        return out

    def run(self, events: Iterable[ChunkEvent]) -> Iterator[Record]:
        for event in events:
            yield from self.handle(event)
        yield from self.finish()

    def finish(self, cause: str = "capture_ended") -> list[Record]:
        """Close every connection still open (the capture ended under it)."""
        out: list[Record] = []
        for conn_id in list(self.decoders):
            try:
                out.extend(self.decoders[conn_id].close(self.last_ts, cause))
            except Exception as exc:
                out.extend(self._lost(conn_id, self.last_ts, exc))
            else:
                del self.decoders[conn_id]
        return out
