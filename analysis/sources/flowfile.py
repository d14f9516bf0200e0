"""mitmproxy flows as a source: flow files offline, and the same translation for the live addon.

A mitmproxy flow file (``mitmdump -w flows.mitm``) holds two kinds of flows that matter here:

- **TCP flows** of the connections the h2ws addon relayed byte for byte (observe mode).  With
  ``h2ws_keep_raw=true`` their ``messages`` are the raw chunks, both directions, with mitmproxy's
  receive timestamps: they become chunk events and go through the same decoder core as a capture.
- **HTTP flows** that mitmproxy handled itself (its HTTP/1.1 and HTTP/2 layers, its WebSocket
  relay — the HTTP/1.1 WebSocket baseline).  Their bytes are gone; what is left is mitmproxy's
  model of them.  :class:`HttpFlowRecorder` turns that model into rows of the same tables.  The
  live addon calls the very same class from its hooks, so that a flow file and the live run that
  wrote it give the same tables.

mitmproxy is an optional dependency (``pip install h2ws[live]``): it is imported only when a flow
file is read.  The decoder core never imports this module.

Diagnostic codes (layer ``capture`` unless said otherwise):

- ``not_a_flow_file`` (error): the file cannot be read as mitmproxy flows (or mitmproxy is not
  installed); ``flow_file_truncated`` (warning): it ends inside a flow.
- ``flowfile_no_raw`` (warning): a relayed connection was saved without its raw chunks
  (``h2ws_keep_raw=false``); it cannot be decoded again from the file.
- ``connection_error`` (tcp, warning): mitmproxy reported an error on the connection.
- ``hooks_recorded`` (http1, info): the connection was relayed by mitmproxy's own HTTP layer,
  so its rows come from mitmproxy's model: WebSocket fragments, ``wire_length``, ``compressed``,
  ping/pong and the answering close frame are not observed, byte counts are payload bytes.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsproto.frame_protocol import CloseReason

from h2ws.analysis.core.chunks import (
    ChunkEvent,
    Closed,
    ConnectionInfo,
    Data,
    Opened,
    TlsInfo,
    Wire,
)
from h2ws.analysis.core.decoder import connection_record
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.headers import decode_headers, first, joined, to_json
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    Direction,
    MessageRecord,
    Record,
    StreamRecord,
)
from h2ws.analysis.sources.pipeline import Pipeline

if TYPE_CHECKING:
    from collections import Counter

    from mitmproxy import connection, http, tcp

#: ``flow.metadata`` key under which the addon keeps what it knows about a flow (plain data,
#: so that it survives ``-w``): ``relay`` (a relayed connection), ``ts_end``, ``raw_dropped``,
#: ``mirror`` (a read-only WebSocket flow mirrored from an RFC 8441 stream; never recorded again),
#: ``exchange`` (the number of an HTTP exchange on its connection).
METADATA_KEY = "h2ws"

_TNETSTRING_HEAD = re.compile(rb"^(\d{1,12}):")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Close codes that wsproto reports for endings that carried no close frame on the wire.
_NO_STATUS = CloseReason.NO_STATUS_RCVD
_ABNORMAL = CloseReason.ABNORMAL_CLOSURE


def _h2ws_meta(flow: Any) -> dict[str, Any]:
    meta = flow.metadata.get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


def is_mirror(flow: Any) -> bool:
    """A WebSocket flow the addon made from an RFC 8441 stream: its bytes are in a TCP flow."""
    return bool(_h2ws_meta(flow).get("mirror"))


def is_flow_file(path: str | Path) -> bool:
    """True when ``path`` starts like a mitmproxy flow file (a tnetstring dictionary).

    Decided from the first bytes, without mitmproxy: a pcap or pcapng file never starts with
    ``<digits>:``, and the first flow of a flow file is a dictionary (its payload ends in ``}``).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            match = _TNETSTRING_HEAD.match(head)
            if not match:
                return False
            f.seek(match.end() + int(match.group(1)))
            return f.read(1) == b"}"
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------ connections


#: Listening on every interface: not the address a client connected to.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def _addr(address: Any) -> tuple[str | None, int | None]:
    if not address:
        return None, None
    host, port, *_ = address
    return str(host), int(port)


def tls_version_name(version: str | None) -> str | None:
    """mitmproxy's ``TLSv1.3`` as the tables write it (``TLS 1.3``)."""
    if version and version.startswith("TLSv"):
        return "TLS " + version[4:]
    return version


def connection_info(
    client: connection.Client,
    server: connection.Server,
    source: str,
    capture: str | None,
) -> ConnectionInfo:
    """The two legs of a proxied connection as one: the client's address and the server's.

    ``conn_id`` is mitmproxy's client connection id (a UUID), unique across runs and kept in
    flow files, so a live run and its flow file name their connections alike.  The proxy's
    address on the client leg (``sockname``) is kept for the Community ID, which is the client
    leg's (:func:`~h2ws.analysis.core.decoder.community_id`); a wildcard address is no address.
    """
    client_addr, client_port = _addr(client.peername)
    server_addr, server_port = _addr(server.peername or server.address)
    proxy_addr, proxy_port = _addr(client.sockname)
    if proxy_addr in _WILDCARDS:
        proxy_addr = proxy_port = None
    return ConnectionInfo(
        conn_id=client.id,
        client_addr=client_addr,
        client_port=client_port,
        server_addr=server_addr,
        server_port=server_port,
        source=source,
        capture=capture,
        proxy_addr=proxy_addr,
        proxy_port=proxy_port,
    )


def tls_info(client: connection.Client) -> TlsInfo | None:
    """The client leg's TLS facts (mitmproxy decrypted it: what follows is plaintext)."""
    if not (client.tls and client.tls_established):
        return None
    alpn = client.alpn.decode("ascii", "replace") if client.alpn else None
    return TlsInfo(
        conn_id=client.id,
        ts=client.timestamp_tls_setup or client.timestamp_start,
        version=tls_version_name(client.tls_version),
        cipher=client.cipher,
        sni=client.sni,
        alpn=alpn,
        decrypted=True,
    )


def end_of(flow: tcp.TCPFlow) -> tuple[float | None, str]:
    """When and how a relayed connection ended, as the live addon recorded it.

    The addon stores the time it saw the end in the flow's metadata (``ts_end``) so that a flow
    file gives the same ``ts_end`` as the live run; older or foreign files fall back to
    mitmproxy's own timestamps.
    """
    meta = _h2ws_meta(flow)
    ts = meta.get("ts_end")
    if not isinstance(ts, int | float):
        candidates = [
            t
            for t in (flow.client_conn.timestamp_end, flow.server_conn.timestamp_end)
            if t is not None
        ]
        if flow.messages:
            candidates.append(flow.messages[-1].timestamp)
        ts = max(candidates) if candidates else None
    return (float(ts) if ts is not None else None), ("error" if flow.error else "closed")


def tcp_flow_events(flow: tcp.TCPFlow, source: str, capture: str | None) -> Iterator[ChunkEvent]:
    """A whole TCP flow as chunk events, as the live addon feeds them one hook at a time."""
    info = connection_info(flow.client_conn, flow.server_conn, source, capture)
    conn_id = info.conn_id
    first_ts = flow.messages[0].timestamp if flow.messages else flow.client_conn.timestamp_start
    yield Opened(info, first_ts or 0.0)
    tls = tls_info(flow.client_conn)
    if tls is not None:
        yield tls
    if _h2ws_meta(flow).get("raw_dropped"):
        yield diagnostic(
            conn_id,
            "capture",
            "warning",
            "flowfile_no_raw",
            "this relayed connection was saved without its raw chunks "
            "(h2ws_keep_raw=false); record with --set h2ws_keep_raw=true to analyse it offline",
            ts=first_ts,
        )
    for message in flow.messages:
        direction: Direction = "c2s" if message.from_client else "s2c"
        if tls is not None:
            yield Wire(conn_id, direction, message.timestamp, len(message.content))
        yield Data(conn_id, direction, message.timestamp, message.content)
    ts, cause = end_of(flow)
    if flow.error:
        yield connection_error(conn_id, ts, flow.error.msg)
    yield Closed(conn_id, ts or 0.0, cause)


def connection_error(conn_id: str, ts: float | None, message: str) -> DiagnosticRecord:
    return diagnostic(conn_id, "tcp", "warning", "connection_error", f"mitmproxy: {message}", ts=ts)


# ------------------------------------------------------------------------------ HTTP flows


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

    def __init__(self, options: DecodeOptions, source: str, capture: str | None = None) -> None:
        self.options = options
        self.source = source
        self.capture = capture
        self._conns: dict[str, _HookConn] = {}
        #: exchange number of every flow seen but not finished, by flow id
        self._exchange: dict[str, int] = {}
        self._ws: dict[str, _WsState] = {}

    @property
    def open_connections(self) -> int:
        return len(self._conns)

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
            rec.server_addr, rec.server_port = _addr(flow.server_conn.peername)
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
            meta = _h2ws_meta(flow)
            saved = meta.get("exchange")
            number = saved if isinstance(saved, int) else conn.next_exchange
            conn.next_exchange = max(conn.next_exchange, number + 1)
            conn.exchanges += 1
            self._exchange[flow.id] = number
        return number

    # ---------------------------------------------------------------- hooks

    def request(self, flow: http.HTTPFlow) -> list[Record]:
        """``requestheaders``: numbers the exchange on its connection (kept in the metadata)."""
        if is_mirror(flow):
            return []
        conn = self._conn(flow)
        number = self._exchange_of(flow, conn)
        flow.metadata.setdefault(METADATA_KEY, {})["exchange"] = number
        return []

    def response(self, flow: http.HTTPFlow) -> list[Record]:
        """``response``: a plain exchange is complete; a WebSocket waits for its end."""
        if is_mirror(flow) or flow.websocket is not None:
            return []
        return [self._stream(flow, flow.response.timestamp_end if flow.response else None)]

    def error(self, flow: http.HTTPFlow) -> list[Record]:
        if is_mirror(flow) or flow.id in self._ws:
            return []
        ts = flow.error.timestamp if flow.error else None
        return [self._stream(flow, ts)]

    def websocket_start(self, flow: http.HTTPFlow) -> list[Record]:
        if is_mirror(flow):
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
            "relayed by mitmproxy's own HTTP layer: rows come from its flows "
            "(no fragments, wire lengths, compression flags, ping/pong or answering close "
            "frames; byte counts are payload bytes)",
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
        protocol = first(req_headers, ":protocol") or upgrade
        saved_id = _h2ws_meta(flow).get("stream_id")
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


# ------------------------------------------------------------------------------ flow files


def _read_flows(path: Path) -> Iterator[Any]:
    """Flows of the file, in file order; problems become one diagnostic, never an exception."""
    try:
        from mitmproxy import exceptions, io
    except ImportError:
        yield diagnostic(
            None,
            "capture",
            "error",
            "not_a_flow_file",
            "reading mitmproxy flow files needs mitmproxy (h2ws[live])",
        )
        return
    try:
        with open(path, "rb") as f:
            reader = io.FlowReader(f)
            try:
                yield from reader.stream()
            except exceptions.FlowReadException as exc:
                truncated = "truncated" in str(exc).lower() or "eof" in str(exc).lower()
                yield diagnostic(
                    None,
                    "capture",
                    "warning" if truncated else "error",
                    "flow_file_truncated" if truncated else "not_a_flow_file",
                    f"{path.name}: {exc}",
                )
    except OSError as exc:
        yield diagnostic(None, "capture", "error", "not_a_flow_file", f"{path.name}: {exc}")


def flow_events(path: str | Path) -> Iterator[ChunkEvent]:
    """The relayed connections (TCP flows) of a flow file as chunk events (``source=flowfile``).

    HTTP flows are not chunks; :func:`flow_records` handles both kinds.
    """
    path = Path(path)
    for flow in _read_flows(path):
        if isinstance(flow, DiagnosticRecord):
            yield flow
        elif getattr(flow, "type", None) == "tcp":
            yield from tcp_flow_events(flow, "flowfile", path.name)


def flow_records(
    path: str | Path,
    options: DecodeOptions | None = None,
    stats: Counter[str] | None = None,
) -> Iterator[Record]:
    """Every row a flow file gives: relayed connections through the decoder core, mitmproxy's
    own HTTP flows through :class:`HttpFlowRecorder` (mirrored WebSocket flows skipped).

    ``stats["flows"]`` counts the flows read.
    """
    path = Path(path)
    options = options or DecodeOptions()
    pipeline = Pipeline(options)
    http_rows = HttpFlowRecorder(options, "flowfile", path.name)
    for flow in _read_flows(path):
        if isinstance(flow, DiagnosticRecord):
            yield flow
            continue
        if stats is not None:
            stats["flows"] += 1
        kind = getattr(flow, "type", None)
        if kind == "tcp":
            for event in tcp_flow_events(flow, "flowfile", path.name):
                yield from pipeline.handle(event)
        elif kind == "http" and not is_mirror(flow):
            yield from _replay_http(http_rows, flow)
    yield from pipeline.finish()
    yield from http_rows.finish(None, "closed")


def _replay_http(recorder: HttpFlowRecorder, flow: http.HTTPFlow) -> Iterator[Record]:
    """One saved HTTP flow through the recorder, in the order its hooks fired live."""
    yield from recorder.request(flow)
    ws = flow.websocket
    if ws is None:
        if flow.response is not None:
            yield from recorder.response(flow)
        elif flow.error is not None:
            yield from recorder.error(flow)
        return
    messages = ws.messages
    ws.messages = []
    try:
        yield from recorder.websocket_start(flow)
        for message in messages:
            ws.messages.append(message)
            yield from recorder.websocket_message(flow)
        yield from recorder.websocket_end(flow)
    finally:
        ws.messages = messages


__all__ = [
    "METADATA_KEY",
    "HttpFlowRecorder",
    "connection_info",
    "flow_events",
    "flow_records",
    "is_flow_file",
    "is_mirror",
    "tcp_flow_events",
    "tls_info",
]
