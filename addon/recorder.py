"""Decoding the relayed connections and writing the tables, isolated from the proxy.

One :class:`~h2ws.analysis.core.decoder.ConnectionDecoder` per relayed connection, fed the chunks
mitmproxy relays (the same core as for captures), and one
:class:`~h2ws.analysis.sinks.writers.PartitionedSink` for the records.  Nothing here knows
mitmproxy: the addon translates hooks into calls, which keeps this part testable without a proxy.

A decoder that raises loses its own connection only: the exception becomes a ``decoder_failed``
diagnostic, the connection is no longer decoded, and the relay (which never waits for us beyond
the hook call) goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from h2ws.analysis.core.chunks import ConnectionInfo, TlsInfo
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import (
    Direction,
    MessageRecord,
    PayloadPolicy,
    Record,
    StreamRecord,
    make_message,
)
from h2ws.analysis.sinks.writers import Part, PartitionedSink, warm_up

logger = logging.getLogger(__name__)

_Call = Callable[[], list[Record]]


#: message payloads up to this long wait for the conversion to be trimmed (a column at a time,
#: see ``PayloadPolicy.trim_columns``); longer ones are trimmed at once, which bounds what the
#: rows waiting for conversion hold (CONVERT_ROWS of them: a few MiB)
HOLD_BYTES = 4096


_PAYLOAD = MessageRecord._fields.index("payload")
_TRUNCATED = MessageRecord._fields.index("payload_truncated")
assert _TRUNCATED == _PAYLOAD + 1


def trim_payload(record: MessageRecord, policy: PayloadPolicy) -> MessageRecord:
    """``record`` as ``policy`` keeps it (the decoder may have kept more, for the flows)."""
    payload = record.payload
    kept, truncated = policy.trim(payload, record.length, record.payload_truncated)
    if kept is payload and truncated == record.payload_truncated:
        return record
    # A third of the cost of record._replace(...), once per message of a busy relay.
    return make_message((*record[:_PAYLOAD], kept, truncated, *record[_TRUNCATED + 1 :]))


class TableWriter:
    """The tables of a live run: records in, part files out, flushed on a clock.

    The decoder may keep more payload than the tables (the mirrored flows show whole messages),
    so message payloads are trimmed to the table's policy when the rows are converted to Arrow,
    a column at a time; a payload longer than ``HOLD_BYTES`` is trimmed as it comes in.

    Part files are encoded and written by a thread of their own, in order: pyarrow does that
    without the interpreter lock, so the relay, on the event loop, does not wait for it.
    """

    def __init__(self, out_dir: str | os.PathLike[str], fmt: str, payload: PayloadPolicy) -> None:
        self.sink = PartitionedSink(out_dir, fmt, payload)
        warm_up()  # at start-up, not in the first flush of a busy relay
        self._payload = payload
        self._hold = self._hold_bytes(payload)
        self.failed: str | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2ws-tables")

    @property
    def payload(self) -> PayloadPolicy:
        return self._payload

    @payload.setter
    def payload(self, policy: PayloadPolicy) -> None:
        """For the rows not yet converted, too."""
        self._payload = policy
        self._hold = self._hold_bytes(policy)
        self.sink.payload = policy

    @staticmethod
    def _hold_bytes(policy: PayloadPolicy) -> int | None:
        if policy.mode == "full":
            return None
        if policy.mode == "none":
            return HOLD_BYTES
        return max(HOLD_BYTES, policy.preview_bytes)

    def write(self, records: Iterable[Record]) -> None:
        if self.failed:
            return
        if not isinstance(records, list):
            records = list(records)
        hold = self._hold
        if hold is not None:
            for record in records:
                if (
                    type(record) is MessageRecord
                    and record.payload is not None
                    and len(record.payload) > hold
                ):
                    policy = self._payload
                    records = [
                        trim_payload(r, policy) if type(r) is MessageRecord else r for r in records
                    ]
                    break
        self.sink.write_all(records)

    def flush(self, *, final: bool = False) -> None:
        """Every row written so far goes to part files, which become readable (complete,
        atomically renamed) as soon as the writer thread has written them (``final``: and
        every table without a row an empty one, ``PartitionedSink.take_parts``)."""
        if self.failed or not (final or self.sink.pending):
            return
        try:
            parts = self.sink.take_parts(final=final)
        except Exception as exc:
            self._fail(exc)
            return
        self._writer.submit(self._write, parts)

    def _write(self, parts: list[Part]) -> None:
        """On the writer thread."""
        if self.failed:
            return
        try:
            self.sink.write_parts(parts)
        except Exception as exc:  # a full disk must not take the proxy down
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"
        logger.error(f"h2ws: writing tables to {self.sink.out_dir} failed, stopped: {exc}")

    def close(self) -> None:
        """Flush, and return once every part file is written."""
        self.flush(final=True)
        self._writer.shutdown(wait=True)


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

    def gap(
        self, conn_id: str, direction: Direction, ts: float, length: int | None
    ) -> list[Record]:
        """Bytes of the connection that will never come (``ConnectionDecoder.gap``)."""
        decoder = self._decoders.get(conn_id)
        if decoder is None:
            return []
        return self._guard(conn_id, ts, lambda: decoder.gap(direction, ts, length))

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

    def open_streams(self, conn_id: str) -> list[StreamRecord]:
        """The rows of the HTTP/2 streams still open on a connection, updated in place as the
        decoder learns more (response status, extensions); the mirrored flows start from them.
        """
        decoder = self._decoders.get(conn_id)
        return decoder.open_streams() if decoder is not None else []

    def _guard(self, conn_id: str, ts: float | None, call: _Call) -> list[Record]:
        try:
            return call()
        except Exception as exc:
            decoder = self._decoders.pop(conn_id, None)
            self._failed.add(conn_id)
            logger.warning(f"h2ws: decoding connection {conn_id} failed, relaying only: {exc!r}")
            out: list[Record] = [
                diagnostic(
                    conn_id,
                    "capture",
                    "error",
                    "decoder_failed",
                    f"internal decoder error, the connection is relayed but no longer "
                    f"decoded: {exc!r}",
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
