"""Rows of the tables from mitmproxy's HTTP flows: :class:`HttpFlowRecorder`.

One job: HTTP flows that mitmproxy relayed with its own HTTP/1.1 and HTTP/2 layers (and its
WebSocket relay) have lost their bytes; what is left is mitmproxy's model of them, which this
recorder turns into connection, stream and message rows, one hook (or one saved flow) at a time.
The live addon calls it from its hooks and the flow-file reader (:mod:`.flowfile`) replays saved
flows through it, so that a flow file and the live run that wrote it give the same tables.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wsproto.frame_protocol import CloseReason

from h2ws.analysis.core.decoder import connection_record
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.headers import decode_headers, first, joined, to_json
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import (
    ConnectionRecord,
    MessageRecord,
    Record,
    StreamRecord,
)
from h2ws.analysis.sources.mitmmodel import (
    METADATA_KEY,
    address,
    connection_info,
    h2ws_meta,
    is_mirror,
    tls_version_name,
)

if TYPE_CHECKING:
    from mitmproxy import connection, http

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Close codes that wsproto reports for endings that carried no close frame on the wire.
_NO_STATUS = CloseReason.NO_STATUS_RCVD
_ABNORMAL = CloseReason.ABNORMAL_CLOSURE


def _header_list(headers: Any) -> list[tuple[str, str]]:
    return decode_headers(headers.fields)


def _http_version(version: str, tls: bool) -> str:
    if version.startswith("HTTP/2"):
        return "h2" if tls else "h2c"
    if version.startswith("HTTP/1"):
        return "http/1.1"
    return "unknown"


@dataclass(slots=True)
class _HookConn:
    """A client connection whose exchanges mitmproxy relayed itself."""

    record: ConnectionRecord
    exchanges: int = 0
    next_exchange: int = 0


@dataclass(slots=True)
class _WsState:
    stream: StreamRecord
    index: dict[str, int]


class HttpFlowRecorder:
    """Rows of the tables from mitmproxy's HTTP flows, one hook (or one saved flow) at a time.

    Used live by the addon's ``requestheaders``/``response``/``error``/``websocket_*`` hooks and
    offline by :func:`flow_records`, so that both give the same rows.  Flows mirrored by the
    addon from RFC 8441 streams (``is_mirror``) are skipped: their bytes are in a TCP flow.

    What mitmproxy's model cannot tell is not invented: messages count one fragment and no
    compression, ``wire_length`` is the payload length, ping/pong frames are absent, and byte
    counts are payload bytes; a ``hooks_recorded`` diagnostic on every such connection says so.
    """

    def __init__(
        self,
        options: DecodeOptions,
        source: str,
        capture: str | None = None,
        *,
        mirrors: bool = False,
    ) -> None:
        self.options = options
        self.source = source
        self.capture = capture
        #: record the addon's mirror flows instead (and only them): a flow file whose relayed
        #: connections were saved without their raw chunks (``flow_records``)
        self.mirrors = mirrors
        self._conns: dict[str, _HookConn] = {}
        #: exchange number of every flow seen but not finished, by flow id
        self._exchange: dict[str, int] = {}
        self._ws: dict[str, _WsState] = {}

    # ---------------------------------------------------------------- connection bookkeeping

    def _conn(self, flow: http.HTTPFlow) -> _HookConn:
        client = flow.client_conn
        conn = self._conns.get(client.id)
        if conn is None:
            info = connection_info(client, flow.server_conn, self.source, self.capture)
            tls = bool(client.tls and client.tls_established)
            record = connection_record(info, tls=tls)
            if tls:
                record.tls_version = tls_version_name(client.tls_version)
                record.sni = client.sni
                record.alpn = client.alpn.decode("ascii", "replace") if client.alpn else None
            record.http_version = _http_version(flow.request.http_version, tls)
            record.ts_start = client.timestamp_start
            conn = self._conns[client.id] = _HookConn(record)
        rec = conn.record
        if rec.server_addr is None and flow.server_conn.peername:
            rec.server_addr, rec.server_port = address(flow.server_conn.peername)
        # The latest time known of the connection: its end, else the end of its latest flow.
        for ts in (
            flow.request.timestamp_end,
            flow.response.timestamp_end if flow.response else None,
            flow.websocket.timestamp_end if flow.websocket else None,
            client.timestamp_end,
        ):
            if ts is not None and (rec.ts_end is None or ts > rec.ts_end):
                rec.ts_end = ts
        return conn

    def _exchange_of(self, flow: http.HTTPFlow, conn: _HookConn) -> int:
        number = self._exchange.get(flow.id)
        if number is None:
            meta = h2ws_meta(flow)
            saved = meta.get("exchange")
            number = saved if isinstance(saved, int) else conn.next_exchange
            conn.next_exchange = max(conn.next_exchange, number + 1)
            conn.exchanges += 1
            self._exchange[flow.id] = number
        return number

    # ---------------------------------------------------------------- hooks

    def _skip(self, flow: http.HTTPFlow) -> bool:
        return is_mirror(flow) != self.mirrors

    def request(self, flow: http.HTTPFlow) -> list[Record]:
        """``requestheaders``: numbers the exchange on its connection (kept in the metadata)."""
        if self._skip(flow):
            return []
        conn = self._conn(flow)
        number = self._exchange_of(flow, conn)
        flow.metadata.setdefault(METADATA_KEY, {})["exchange"] = number
        return []

    def response(self, flow: http.HTTPFlow) -> list[Record]:
        """``response``: a plain exchange is complete; a WebSocket waits for its end."""
        if self._skip(flow) or flow.websocket is not None:
            return []
        return [self._stream(flow, flow.response.timestamp_end if flow.response else None)]

    def error(self, flow: http.HTTPFlow) -> list[Record]:
        if self._skip(flow) or flow.id in self._ws:
            return []
        ts = flow.error.timestamp if flow.error else None
        return [self._stream(flow, ts)]

    def websocket_start(self, flow: http.HTTPFlow) -> list[Record]:
        if self._skip(flow):
            return []
        stream = self._new_stream(flow)
        self._ws[flow.id] = _WsState(stream, {"c2s": 0, "s2c": 0})
        return []

    def websocket_message(self, flow: http.HTTPFlow) -> list[Record]:
        """The message mitmproxy just relayed (``flow.websocket.messages[-1]``)."""
        state = self._ws.get(flow.id)
        if state is None or flow.websocket is None or not flow.websocket.messages:
            return []
        message = flow.websocket.messages[-1]
        direction = "c2s" if message.from_client else "s2c"
        opcode = "text" if int(message.type) == 1 else "binary"
        content = message.content
        rec = self._message(state, direction, message.timestamp, opcode, content)
        if direction == "c2s":
            state.stream.messages_c2s += 1
            state.stream.bytes_c2s += len(content)
        else:
            state.stream.messages_s2c += 1
            state.stream.bytes_s2c += len(content)
        return [rec]

    def websocket_end(self, flow: http.HTTPFlow) -> list[Record]:
        state = self._ws.pop(flow.id, None)
        if state is None or flow.websocket is None:
            return []
        ws = flow.websocket
        out: list[Record] = []
        stream = state.stream
        ts = ws.timestamp_end or (flow.error.timestamp if flow.error else None)
        code = ws.close_code
        if code is not None and code != _ABNORMAL and ws.closed_by_client is not None:
            # The close frame mitmproxy received (it answers and forwards it itself).
            direction = "c2s" if ws.closed_by_client else "s2c"
            reason = ws.close_reason or ""
            payload = b"" if code == _NO_STATUS else struct.pack("!H", code) + reason.encode()
            rec = self._message(state, direction, ts, "close", payload)
            if code != _NO_STATUS:
                rec = rec._replace(close_code=code, close_reason=reason)
            out.append(rec)
            if direction == "c2s":
                stream.messages_c2s += 1
            else:
                stream.messages_s2c += 1
            stream.ws_close_by = direction
            stream.close_cause = f"ws_close:{code}" if code != _NO_STATUS else "ws_close"
        error = flow.error.msg if flow.error else None
        stream.stream_end = "incomplete" if error else "connection_closed"
        if stream.close_cause is None or error:
            stream.close_cause = stream.stream_end
        stream.error = stream.error or error
        stream.ts_close = ts
        self._exchange.pop(flow.id, None)
        self._count_bytes(stream)
        out.append(stream)
        return out

    def connection_closed(self, client: connection.Client, ts: float | None) -> list[Record]:
        """``client_disconnected``: the connection's own row, if any exchange was recorded."""
        return self._close_conn(client.id, ts or client.timestamp_end, "closed")

    def open_ids(self) -> set[str]:
        """The client connections with an exchange recorded and no row yet."""
        return set(self._conns)

    def finish(self, ts: float | None, cause: str = "capture_ended") -> list[Record]:
        """Everything still open when the recording stopped.

        ``ts`` None: each connection ends at the latest time known of it (a flow file has no
        other end marker for the connections of its HTTP flows).
        """
        out: list[Record] = []
        for flow_id, state in list(self._ws.items()):
            stream = state.stream
            stream.stream_end = stream.close_cause = "incomplete"
            stream.ts_close = ts
            out.append(stream)
            del self._ws[flow_id]
        for conn_id in list(self._conns):
            out.extend(self._close_conn(conn_id, ts, cause))
        return out

    # ---------------------------------------------------------------- records

    def _close_conn(self, conn_id: str, ts: float | None, cause: str) -> list[Record]:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return []
        rec = conn.record
        rec.ts_end = ts if ts is not None else rec.ts_end
        rec.streams = conn.exchanges
        rec.end_cause = cause
        note = diagnostic(
            conn_id,
            "http1" if rec.http_version == "http/1.1" else "h2",
            "info",
            "hooks_recorded",
            (
                "relayed byte for byte but saved without its raw chunks: rows come from the "
                "addon's read-only mirror flows (no HTTP bodies, fragments, wire lengths, "
                "compression flags or ping/pong; byte counts are WebSocket payload bytes)"
                if self.mirrors
                else "relayed by mitmproxy's own HTTP layer: rows come from its flows "
                "(no fragments, wire lengths, compression flags, ping/pong or answering close "
                "frames; byte counts are payload bytes)"
            ),
            ts=rec.ts_start,
        )
        return [note, rec]

    def _new_stream(self, flow: http.HTTPFlow) -> StreamRecord:
        conn = self._conn(flow)
        number = self._exchange_of(flow, conn)
        request = flow.request
        req_headers = _header_list(request.headers)
        upgrade = first(req_headers, "upgrade")
        # intercept mode keeps an extended CONNECT's ``:protocol`` as its first header field
        saved_protocol = h2ws_meta(flow).get("protocol")  # a mirror's (no pseudo-headers)
        protocol = (
            first(req_headers, ":protocol")
            or (saved_protocol if isinstance(saved_protocol, str) else None)
            or upgrade
        )
        saved_id = h2ws_meta(flow).get("stream_id")
        websocket = flow.websocket is not None or (upgrade or "").lower() == "websocket"
        if websocket:
            conn.record.websockets += 1
        rec = StreamRecord(
            conn_id=flow.client_conn.id,
            stream_id=saved_id if isinstance(saved_id, int) else None,
            exchange=number,
            kind="websocket" if websocket else "connect" if request.method == "CONNECT" else "http",
            method=request.method,
            protocol=protocol,
            scheme=request.scheme,
            authority=request.authority or request.host_header or None,
            path=request.path,
            request_headers=to_json(req_headers, self.options.redact),
            ts_open=request.timestamp_start,
        )
        if request.raw_content is not None:
            rec.bytes_c2s = len(request.raw_content)
        response = flow.response
        if response is not None:
            headers = _header_list(response.headers)
            rec.status = response.status_code
            rec.ts_response = response.timestamp_start
            rec.response_headers = to_json(headers, self.options.redact)
            if websocket:
                rec.ws_accepted = response.status_code == 101 or (
                    request.http_version.startswith("HTTP/2") and 200 <= response.status_code < 300
                )
                rec.ws_extensions = joined(headers, "sec-websocket-extensions")
                rec.ws_subprotocol = first(headers, "sec-websocket-protocol")
        return rec

    def _stream(self, flow: http.HTTPFlow, ts: float | None) -> StreamRecord:
        rec = self._new_stream(flow)
        response = flow.response
        if response is not None and response.raw_content is not None:
            rec.bytes_s2c = len(response.raw_content)
        if flow.error:
            rec.error = flow.error.msg
            rec.stream_end = rec.close_cause = "incomplete"
        else:
            rec.stream_end = rec.close_cause = "end_stream"
        rec.ts_close = ts
        self._exchange.pop(flow.id, None)
        self._count_bytes(rec)
        return rec

    def _count_bytes(self, stream: StreamRecord) -> None:
        """The connection's byte counts: its streams' payload bytes, all the hooks show (no
        headers, no framing), rather than zeros that look like an idle connection."""
        conn = self._conns.get(stream.conn_id)
        if conn is not None:
            conn.record.bytes_c2s += stream.bytes_c2s
            conn.record.bytes_s2c += stream.bytes_s2c

    def _message(
        self, state: _WsState, direction: str, ts: float | None, opcode: str, content: bytes
    ) -> MessageRecord:
        index = state.index[direction]
        state.index[direction] = index + 1
        length = len(content)
        payload, truncated = self.options.payload.trim(content, length, False)
        return MessageRecord(
            conn_id=state.stream.conn_id,
            stream_id=state.stream.stream_id,
            exchange=state.stream.exchange,
            direction=direction,
            index=index,
            ts_first=ts,
            ts_last=ts,
            opcode=opcode,
            fragments=1,
            wire_length=length,
            length=length,
            compressed=False,
            payload=payload,
            payload_truncated=truncated,
            sha256=hashlib.sha256(content).hexdigest() if content else _EMPTY_SHA256,
        )


__all__ = ["HttpFlowRecorder"]
