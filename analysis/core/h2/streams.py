"""HTTP/2 stream lifecycle (RFC 9113 §5.1) as an observer sees it, and the WebSocket on a stream.

One job: open a stream's row from its request headers (its kind by RFC 8441 §4, see
:mod:`.rfc8441`), fill in the response, hand the DATA of an accepted WebSocket to its decoders
(RFC 8441 §5), hold client data sent before the response (bounded by ``max_early_data``),
half-close on END_STREAM, and emit the row with its end (``stream_end``) and ``close_cause``
when the stream ends -- by END_STREAM both ways, RST_STREAM, GOAWAY or the connection's end.
Leniently: a protocol error on one stream ends that stream's decoding only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.h2 import rfc8441
from h2ws.analysis.core.h2.framing import FrameLayer
from h2ws.analysis.core.headers import HeaderList, first, joined, to_json
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import WebSocketStream
from h2ws.analysis.core.websocket import resync as ws_resync
from h2ws.analysis.records import Direction, StreamRecord


@dataclass(slots=True)
class Stream:
    record: StreamRecord
    closed_c2s: bool = False  # END_STREAM seen from the client
    closed_s2c: bool = False
    response_final: bool = False
    request_headers: HeaderList | None = None
    #: the WebSocket, once the server accepted it
    ws: WebSocketStream | None = None
    early: list[tuple[bytes, float]] = field(default_factory=list)
    early_bytes: int = 0
    incomplete: bool = False
    done: bool = False
    #: an inferred stream's DATA payloads per direction, held until its kind is told
    #: (bounded by ``_MAX_HELD``)
    held: dict[str, list[tuple[bytes, float]]] | None = None
    held_bytes: int = 0


#: DATA held per inferred stream (both directions) while telling whether it is a WebSocket:
#: 1 MiB, since a stream is judged only when both directions end on a frame at once, and
#: messages of ~100 KiB in flight both ways (a real hypercorn echo, ``tests/test_midconn_cuts.py``)
#: kept one of them mid-frame past 256 KiB.
_MAX_HELD = 1024 * 1024
#: DATA held by all inferred streams of one connection, over the connection's life (not at
#: once: so that no release needs counting): 32 MiB bounds the memory many undecided streams
#: could take; past it, streams not yet told stay ``unknown``.
_MAX_HELD_PER_CONNECTION = 32 * 1024 * 1024


class StreamLayer(FrameLayer):
    """The streams of one connection, over its frames."""

    def __init__(
        self,
        conn_id: str,
        options: DecodeOptions,
        *,
        expect_preface: bool = True,
        fast_path: bool = True,
        midstream: bool = False,
    ) -> None:
        super().__init__(
            conn_id,
            options,
            expect_preface=expect_preface,
            fast_path=fast_path,
            midstream=midstream,
        )
        self.streams: dict[int, Stream] = {}
        self.stream_count = 0
        self.websocket_count = 0
        self.enable_connect_protocol: bool | None = None
        #: the WebSocket boundary search's work left for this connection's inferred streams
        self.ws_scan_budget = ws_resync.ScanBudget()
        self.held_total = 0  # bounded by _MAX_HELD_PER_CONNECTION

    def open_streams(self) -> list[StreamRecord]:
        """The rows of the streams still open, in the order they opened.

        They are the live rows the decoder keeps filling in (response status, extensions,
        counters) until it emits them when the stream ends: callers may read them, not change
        them.  The live addon starts the mirrored WebSocket flows from them.
        """
        return [stream.record for stream in self.streams.values()]

    def _open_stream(
        self, stream_id: int, headers: HeaderList, ts: float, kind_hint: str | None
    ) -> Stream:
        method = first(headers, ":method")
        protocol = first(headers, ":protocol")
        kind = kind_hint if kind_hint is not None else rfc8441.stream_kind(method, protocol)
        rec = StreamRecord(
            conn_id=self.conn_id,
            stream_id=stream_id,
            kind=kind,
            method=method,
            protocol=protocol,
            scheme=first(headers, ":scheme"),
            authority=first(headers, ":authority") or first(headers, "host"),
            path=first(headers, ":path"),
            ws_subprotocol=None,
            request_headers=to_json(headers, self.options.redact),
            ts_open=ts,
        )
        stream = Stream(record=rec, request_headers=headers)
        old = self.streams.get(stream_id)
        if old is not None:
            self._out.append(
                diagnostic(
                    self.conn_id,
                    "h2",
                    "warning",
                    "h2_stream_reused",
                    f"stream {stream_id} opened again before it closed",
                    ts=ts,
                    stream_id=stream_id,
                )
            )
            self._finish_stream(old, ts, "incomplete")
        self.streams[stream_id] = stream
        self.stream_count += 1
        if kind == "websocket":
            self.websocket_count += 1
        for severity, code, message in rfc8441.request_problems(
            kind,
            method,
            protocol,
            rec.scheme,
            rec.path,
            headers,
            bool(self.enable_connect_protocol) or self.midstream,
        ):
            self._out.append(
                diagnostic(
                    self.conn_id, "rfc8441", severity, code, message, ts=ts, stream_id=stream_id
                )
            )
        return stream

    def _open_inferred(self, stream_id: int, ts: float) -> Stream:
        """A stream first seen after its request (the capture started later): its row, kind
        ``unknown`` and ``inferred``, its request headers unknown (null)."""
        stream = self._open_stream(stream_id, [], ts, kind_hint="unknown")
        stream.record.request_headers = None
        stream.record.inferred = True
        stream.request_headers = None
        # Not ``incomplete``: its start is lost (``inferred`` says so, and a message cut by the
        # capture's start is a ``ws_midstream_message``), but its end is judged as it was seen:
        # a close handshake and END_STREAM both ways after the cut are a clean end.
        stream.held = {"c2s": [], "s2c": []}
        return stream

    def _hold_inferred(self, stream: Stream, d: Direction, data: bytes, ts: float) -> None:
        """DATA of a stream of unknown kind: a WebSocket once its bytes say so both ways
        (:mod:`h2ws.analysis.core.websocket.resync`), then decoded from the first frame
        boundary; past ``_MAX_HELD`` it stays ``unknown`` (counted, not decoded)."""
        held = stream.held
        assert held is not None
        budget = self.ws_scan_budget
        if budget.spent or self.held_total + len(data) > _MAX_HELD_PER_CONNECTION:
            stream.held = None  # not told in time: stays unknown
            return
        self.held_total += len(data)
        held[d].append((data, ts))
        stream.held_bytes += len(data)
        chains: dict[str, ws_resync.WsChain | None] = {}
        for side in ("c2s", "s2c"):
            if held[side]:
                buf = b"".join(b for b, _ in held[side])
                starts, pos = [], 0
                for b, _ in held[side]:
                    starts.append(pos)
                    pos += len(b)
                chains[side] = ws_resync.find_ws_chain(buf, side == "c2s", starts, budget)
        if budget.spent:
            stream.held = None
            self._out.append(
                diagnostic(
                    self.conn_id,
                    "ws",
                    "warning",
                    "ws_resync_budget",
                    f"the WebSocket boundary search read {ws_resync.SCAN_BUDGET} frame headers"
                    " on this connection without telling its streams: the streams not yet told"
                    " stay unknown",
                    ts=ts,
                    stream_id=stream.record.stream_id,
                )
            )
            return
        if not ws_resync.judge(
            chains.get("c2s"),
            chains.get("s2c"),
            bool(held["c2s"]),
            bool(held["s2c"]),
            carrier="h2",
        ):
            if stream.held_bytes > _MAX_HELD:
                stream.held = None  # not told in time: stays unknown
            return
        rec = stream.record
        rec.kind = "websocket"
        self.websocket_count += 1
        stream.held = None
        stream.ws = WebSocketStream(rec, self.options, inferred=True)
        for side, chain in chains.items():
            assert chain is not None
            if chain.lost_lead:
                self._out.append(
                    diagnostic(
                        self.conn_id,
                        "ws",
                        "warning",
                        "ws_midstream_message",
                        f"{side}: a message begun before the capture is not decoded; messages"
                        f" decoded from its first WebSocket frame boundary (byte {chain.start})",
                        ts=ts,
                        stream_id=rec.stream_id,
                    )
                )
            for piece, piece_ts in ws_resync.pieces(held[side], chain.ranges()):
                self._feed_ws(stream, side, piece, piece_ts)  # type: ignore[arg-type]

    def _on_response(self, stream: Stream, headers: HeaderList, ts: float) -> None:
        rec = stream.record
        status_text = first(headers, ":status")
        try:
            status = int(status_text) if status_text is not None else None
        except ValueError:
            status = None
        if status is not None and 100 <= status < 200:
            return  # informational; the final response follows
        stream.response_final = True
        rec.status = status
        rec.ts_response = ts
        rec.response_headers = to_json(headers, self.options.redact)
        if rec.kind != "websocket":
            return
        rec.ws_extensions = joined(headers, "sec-websocket-extensions")
        rec.ws_subprotocol = first(headers, "sec-websocket-protocol")
        accepted = rfc8441.accepted(status)
        rec.ws_accepted = accepted
        if not accepted:
            self._out.append(
                diagnostic(
                    self.conn_id,
                    "rfc8441",
                    "info",
                    "rfc8441_rejected",
                    f"extended CONNECT answered {status_text}",
                    ts=ts,
                    stream_id=rec.stream_id,
                )
            )
            return
        stream.ws = WebSocketStream(rec, self.options)
        early, stream.early = stream.early, []
        for data, data_ts in early:
            self._feed_ws(stream, "c2s", data, data_ts)

    # ------------------------------------------------------------------ data

    def _on_data(
        self, d: Direction, stream_id: int, data: bytes, end_stream: bool, ts: float
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            if not self.midstream:
                return  # DATA for a stream never seen open: counted in frames
            stream = self._open_inferred(stream_id, ts)
        if d == "c2s":
            stream.record.bytes_c2s += len(data)
        else:
            stream.record.bytes_s2c += len(data)
        if stream.held is not None and data:
            self._hold_inferred(stream, d, data, ts)
        elif stream.record.kind == "websocket" and data:
            if stream.ws is not None:
                self._feed_ws(stream, d, data, ts)
            elif d == "c2s" and not stream.response_final:
                if stream.early_bytes + len(data) <= self.options.max_early_data:
                    stream.early.append((data, ts))
                    stream.early_bytes += len(data)
                elif stream.early_bytes <= self.options.max_early_data:
                    stream.early_bytes += len(data)
                    self._out.append(
                        diagnostic(
                            self.conn_id,
                            "rfc8441",
                            "error",
                            "rfc8441_early_data_overflow",
                            "client sent more than max_early_data before the response; "
                            "its WebSocket messages cannot be decoded",
                            ts=ts,
                            stream_id=stream.record.stream_id,
                        )
                    )
                    stream.incomplete = True
        if end_stream:
            self._half_close(stream, d, ts)

    def _feed_ws(self, stream: Stream, d: Direction, data: bytes, ts: float) -> None:
        if stream.ws is not None:
            stream.ws.feed(d, data, ts, self._out)

    # ------------------------------------------------------------------ lifecycle

    def _half_close(self, stream: Stream, d: Direction, ts: float) -> None:
        if d == "c2s":
            stream.closed_c2s = True
        else:
            stream.closed_s2c = True
        if stream.closed_c2s and stream.closed_s2c:
            self._finish_stream(stream, ts, "end_stream")

    def _finish_stream(self, stream: Stream, ts: float | None, end: str) -> None:
        if stream.done:
            return
        stream.done = True
        rec = stream.record
        # cut: a WebSocket message (or frame) was cut short by the end
        cut = stream.ws.finish(ts, self._out)[1] if stream.ws is not None else False
        # ``stream_end`` is what ended the transport, so a message cut short by a GOAWAY or a
        # closed connection keeps that cause; ``incomplete`` there means that what happened is
        # unknown (bytes lost, decoding failed).  The message cut short is what ``close_cause``
        # says ("incomplete"), with the ``ws_incomplete_message`` diagnostic and ``error``.
        if stream.incomplete and end in ("end_stream", "connection_closed"):
            end = "incomplete"
        rec.stream_end = end
        if stream.incomplete or cut:
            rec.close_cause = "incomplete"
        elif rec.close_cause is None:
            rec.close_cause = end
        rec.ts_close = ts
        self._out.append(rec)
        del self.streams[rec.stream_id or 0]
