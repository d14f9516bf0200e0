"""RFC 8441 WebSockets of relayed connections as read-only mitmproxy WebSocket flows.

The relay hands mitmproxy a TCP flow only, so without this the console, mitmweb, ``-w`` and
every other addon's ``websocket_*`` hooks would not see the WebSockets inside it.  For each
extended-CONNECT WebSocket stream the decoder core finds, :class:`WebSocketMirror` builds an
``HTTPFlow`` with ``flow.websocket`` filled and yields the hooks mitmproxy's own WebSocket layer
would trigger, in the same order: ``requestheaders``, ``request``, ``responseheaders``,
``response``, ``websocket_start``, ``websocket_message`` per data message, ``websocket_end``
(``error`` for a stream that ended before its response).

The flows are read-only: ``live`` is false (nothing can be intercepted, dropped or injected:
the bytes went through already), and ``flow.metadata["h2ws"]`` says ``mirror`` with the
connection and stream ids, so that h2ws never records them a second time.  Their messages carry
the payload the decoder kept (``h2ws_flow_payload``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import flow as mflow
from mitmproxy import hooks, http, tcp
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.layers.websocket import (
    WebsocketEndHook,
    WebsocketMessageHook,
    WebsocketStartHook,
)
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import Opcode

from h2ws.analysis.capture.flowfile import METADATA_KEY
from h2ws.analysis.records import MessageRecord, Record, StreamRecord

_NO_STATUS = 1005
_ABNORMAL = 1006
_OPCODES = {"text": Opcode.TEXT, "binary": Opcode.BINARY}


def _headers(header_json: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """Regular headers from a row's JSON header list (pseudo-headers are the request line)."""
    if not header_json:
        return ()
    pairs = json.loads(header_json)
    return tuple(
        (str(n).encode("utf-8", "surrogateescape"), str(v).encode("utf-8", "surrogateescape"))
        for n, v in pairs
        if not str(n).startswith(":")
    )


@dataclass(slots=True)
class _Mirrored:
    flow: http.HTTPFlow
    stream: StreamRecord
    responded: bool = False
    started: bool = False


class WebSocketMirror:
    """The mirrored flows of all relayed connections, by (conn id, stream id)."""

    def __init__(self) -> None:
        self._flows: dict[tuple[str, int], _Mirrored] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def hooks(
        self,
        tcp_flow: tcp.TCPFlow,
        conn_id: str,
        open_streams: Iterable[StreamRecord],
        records: Iterable[Record],
    ) -> list[hooks.Hook]:
        """The hooks to trigger, in order, for what one chunk of ``tcp_flow`` revealed.

        ``open_streams``: the connection's streams still open after the chunk; ``records``:
        what decoding the chunk emitted (a stream that opened and closed within one chunk is
        only in there).
        """
        records = list(records)
        out: list[hooks.Hook] = []
        candidates = [s for s in open_streams if s.kind == "websocket"]
        candidates += [r for r in records if isinstance(r, StreamRecord) and r.kind == "websocket"]
        for stream in candidates:
            if stream.stream_id is None:
                continue
            key = (conn_id, stream.stream_id)
            mirrored = self._flows.get(key)
            if mirrored is None:
                mirrored = self._flows[key] = self._new_flow(tcp_flow, stream)
                out += [HttpRequestHeadersHook(mirrored.flow), HttpRequestHook(mirrored.flow)]
            if not mirrored.responded and stream.status is not None:
                out += self._respond(mirrored, stream)
        for record in records:
            if isinstance(record, MessageRecord) and record.stream_id is not None:
                mirrored = self._flows.get((conn_id, record.stream_id))
                if mirrored is not None and mirrored.started:
                    out += self._message(mirrored, record)
            elif isinstance(record, StreamRecord) and record.stream_id is not None:
                mirrored = self._flows.pop((conn_id, record.stream_id), None)
                if mirrored is not None:
                    out += self._end(mirrored, record)
        return out

    def close_connection(self, conn_id: str) -> list[hooks.Hook]:
        """The connection ended without a row for some mirrored stream (decoder failure)."""
        out: list[hooks.Hook] = []
        for key in [k for k in self._flows if k[0] == conn_id]:
            mirrored = self._flows.pop(key)
            out += self._end(mirrored, mirrored.stream)
        return out

    # ------------------------------------------------------------------------------ steps

    @staticmethod
    def _new_flow(tcp_flow: tcp.TCPFlow, stream: StreamRecord) -> _Mirrored:
        server = tcp_flow.server_conn
        host, port = (server.address[0], server.address[1]) if server.address else ("", 0)
        ts = stream.ts_open or 0.0
        authority = stream.authority or ""
        request = http.Request(
            host=str(host),
            port=int(port),
            method=(stream.method or "CONNECT").encode(),
            scheme=(stream.scheme or "https").encode(),
            authority=authority.encode("utf-8", "surrogateescape"),
            path=(stream.path or "/").encode("utf-8", "surrogateescape"),
            http_version=b"HTTP/2.0",
            headers=_headers(stream.request_headers),
            content=b"",
            trailers=None,
            timestamp_start=ts,
            timestamp_end=ts,
        )
        flow = http.HTTPFlow(tcp_flow.client_conn, server, live=False)
        flow.request = request
        flow.metadata[METADATA_KEY] = {
            "mirror": True,
            "conn_id": tcp_flow.client_conn.id,
            "stream_id": stream.stream_id,
            "protocol": stream.protocol,
            "tcp_flow": tcp_flow.id,
        }
        return _Mirrored(flow, stream)

    @staticmethod
    def _respond(mirrored: _Mirrored, stream: StreamRecord) -> list[hooks.Hook]:
        mirrored.responded = True
        flow = mirrored.flow
        ts = stream.ts_response or stream.ts_open or 0.0
        flow.response = http.Response(
            http_version=b"HTTP/2.0",
            status_code=stream.status or 0,
            reason=b"",
            headers=_headers(stream.response_headers),
            content=b"",
            trailers=None,
            timestamp_start=ts,
            timestamp_end=ts,
        )
        out: list[hooks.Hook] = [HttpResponseHeadersHook(flow)]
        if stream.ws_accepted:
            # As mitmproxy does: set before the response hook, so addons see a WebSocket follows.
            flow.websocket = WebSocketData()
            mirrored.started = True
            out += [HttpResponseHook(flow), WebsocketStartHook(flow)]
        else:
            out.append(HttpResponseHook(flow))
        return out

    @staticmethod
    def _message(mirrored: _Mirrored, record: MessageRecord) -> list[hooks.Hook]:
        ws = mirrored.flow.websocket
        assert ws is not None
        opcode = _OPCODES.get(record.opcode)
        from_client = record.direction == "c2s"
        if opcode is not None:
            ws.messages.append(
                WebSocketMessage(opcode, from_client, record.payload or b"", record.ts_last)
            )
            return [WebsocketMessageHook(mirrored.flow)]
        if record.opcode == "close" and ws.closed_by_client is None:
            ws.closed_by_client = from_client
            ws.close_code = record.close_code if record.close_code is not None else _NO_STATUS
            ws.close_reason = record.close_reason or ""
            ws.timestamp_end = record.ts_last
        return []  # ping and pong: mitmproxy's model has no messages for control frames

    @staticmethod
    def _end(mirrored: _Mirrored, stream: StreamRecord) -> list[hooks.Hook]:
        flow = mirrored.flow
        flow.metadata[METADATA_KEY]["stream_end"] = stream.stream_end
        if mirrored.started:
            ws = flow.websocket
            assert ws is not None
            if ws.close_code is None:  # no close frame: the stream was reset or cut
                ws.close_code = _ABNORMAL
                ws.close_reason = stream.stream_end or ""
                ws.timestamp_end = stream.ts_close
                flow.error = mflow.Error(
                    f"stream ended without a close frame: {stream.stream_end}",
                    stream.ts_close,
                )
            return [WebsocketEndHook(flow)]
        if not mirrored.responded:
            flow.error = mflow.Error(
                f"stream ended before the response: {stream.stream_end}", stream.ts_close
            )
            return [HttpErrorHook(flow)]
        return []
