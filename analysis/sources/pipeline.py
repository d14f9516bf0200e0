"""Chunk events in, records out: one ``ConnectionDecoder`` per connection.

Shared by every source (capture files, flow files, the live addon), which is what makes their
tables identical.  A decoder that fails in an unforeseen way loses its own connection only.
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
            decoder = self.decoders.pop(event.conn_id, None)
            return decoder.close(event.ts, event.cause) if decoder else []
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

    def run(self, events: Iterable[ChunkEvent]) -> Iterator[Record]:
        for event in events:
            yield from self.handle(event)
        yield from self.finish()

    def finish(self, cause: str = "capture_ended") -> list[Record]:
        """Close every connection still open (the capture ended under it)."""
        out: list[Record] = []
        for conn_id in list(self.decoders):
            out.extend(self.decoders.pop(conn_id).close(self.last_ts, cause))
        return out
