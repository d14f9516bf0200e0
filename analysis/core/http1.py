"""HTTP/1.1 seen from the wire, with h11: exchanges, ``Upgrade: websocket`` and ``Upgrade: h2c``.

One job: the request/response exchanges of one HTTP/1.x connection (RFC 9112 message framing,
by h11) up to a protocol switch (RFC 9110 §7.8): a WebSocket after a 101 (RFC 6455 §4; its
frames go to :mod:`.websocket`), HTTP/2 after ``Upgrade: h2c`` (RFC 7540 §3.2; handed to the
caller), or a CONNECT tunnel.

h11 is an endpoint library, so the observer runs two of them: one in the server role parses what
the client sent, one in the client role parses what the server sent.  Each is kept in step with
the other side by feeding it a minimal stand-in of the other side's message (method and target,
or status and whether the connection closes) — enough for h11 to know how the next message is
framed (HEAD, CONNECT, 101, keep-alive), and nothing the tables depend on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import h11

from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.headers import (
    HeaderList,
    decode_headers,
    first,
    joined,
    redact_text,
    to_json,
)
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import WebSocketStream
from h2ws.analysis.records import Direction, Record, StreamRecord

MAX_HEADER_BYTES = 1 * 2**20
#: Server bytes held back until the request they answer has been parsed (they arrive in order
#: in any sane capture; this only bounds memory when they do not).
MAX_PENDING_RESPONSE = 4 * 2**20


@dataclass(slots=True)
class _Exchange:
    record: StreamRecord
    upgrade: str | None  # lower-cased Upgrade token the client asked for
    request_headers: HeaderList
    #: the request line and headers as h11 parsed them (bytes): the stand-in request given to
    #: the response parser is made of these, since a decoded value (U+FFFD for a non-ASCII
    #: byte) is not something h11 can send.
    raw_method: bytes = b"GET"
    raw_target: bytes = b"/"
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()
    #: the WebSocket, once the server switched to it
    ws: WebSocketStream | None = None
    done: bool = False


@dataclass(slots=True)
class Upgrade:
    """What the connection turned into after a 101: the caller hands the bytes on."""

    protocol: str  # "websocket" | "h2c" | other token
    method: str
    target: str
    request_headers: HeaderList
    ts: float
    c2s: bytes
    s2c: bytes


class Http1Decoder:
    """Both directions of one HTTP/1.x connection until (and including) a protocol switch."""

    def __init__(self, conn_id: str, options: DecodeOptions) -> None:
        self.conn_id = conn_id
        self.options = options
        self._requests = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._responses = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._queue: list[_Exchange] = []  # requests parsed, response not yet complete
        self._current_request: _Exchange | None = None
        self._pending_s2c = bytearray()
        self.exchanges = 0
        self.websocket_count = 0
        self.failed = False
        self.error: str | None = None
        #: Set once a 101 (or 2xx to CONNECT) switched protocols; for h2c the caller takes over.
        self.upgrade: Upgrade | None = None
        self._ws_exchange: _Exchange | None = None
        self._out: list[Record] = []

    # ------------------------------------------------------------------ public API

    def feed(self, direction: Direction, data: bytes, ts: float) -> list[Record]:
        if self.failed or not data:
            return self._take()
        try:
            if self._ws_exchange is not None:
                self._feed_ws(self._ws_exchange, direction, data, ts)
            elif self.upgrade is not None:
                pass  # switched to a protocol the caller decodes (h2c) or we do not know
            elif direction == "c2s":
                self._requests.receive_data(data)
                self._pump_requests(ts)
            else:
                if len(self._pending_s2c) + len(data) > MAX_PENDING_RESPONSE:
                    self._fail(
                        ts,
                        "http1_response_without_request",
                        "server sent more than 4 MiB that answers no request seen",
                    )
                else:
                    self._pending_s2c += data
                    self._pump_responses(ts)
        except h11.ProtocolError as exc:
            self._fail(ts, "http1_protocol_error", f"HTTP/1.1 {direction}: {exc}")
        except Exception as exc:
            self._fail(ts, "http1_internal_error", f"internal decoder error: {exc!r}")
        return self._take()

    def gap(self, direction: Direction, ts: float, length: int | None) -> list[Record]:
        if not self.failed:
            lost = f"{length} bytes" if length is not None else "bytes"
            self._fail(
                ts, "http1_gap", f"{lost} missing from the {direction} stream; decoding stops"
            )
        return self._take()

    def close(self, ts: float | None, cause: str) -> list[Record]:
        end = "incomplete" if cause == "capture_ended" else "connection_closed"
        if not self.failed and self.upgrade is None and self._queue:
            # A response delimited by the connection's close ends here.
            try:
                self._responses.receive_data(b"")
                self._pump_responses(ts or 0.0)
            except h11.ProtocolError:
                pass
        for exchange in list(self._queue):
            self._finish(exchange, ts, end)
        if self._current_request is not None:
            self._finish(self._current_request, ts, "incomplete")
        if self._ws_exchange is not None:
            self._finish(self._ws_exchange, ts, end)
        return self._take()

    # ------------------------------------------------------------------ requests

    def _pump_requests(self, ts: float) -> None:
        conn = self._requests
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._current_request = self._on_request(event, ts)
            elif isinstance(event, h11.Data):
                if self._current_request is not None:
                    self._current_request.record.bytes_c2s += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                exchange = self._current_request
                self._current_request = None
                if exchange is not None:
                    self._queue.append(exchange)
                    self._send_stand_in_request(exchange)
                    self._pump_responses(ts)
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _on_request(self, event: h11.Request, ts: float) -> _Exchange:
        headers = decode_headers(event.headers)
        method = event.method.decode("ascii", "replace")
        upgrade_header = first(headers, "upgrade")
        upgrade = upgrade_header.strip().lower() if upgrade_header else None
        if upgrade == "websocket":
            kind = "websocket"
            self.websocket_count += 1
        elif method == "CONNECT":
            kind = "connect"
        else:
            kind = "http"
        target = event.target.decode("utf-8", "replace")
        rec = StreamRecord(
            conn_id=self.conn_id,
            stream_id=None,
            exchange=self.exchanges,
            kind=kind,
            method=method,
            protocol=upgrade,
            scheme=None,
            authority=first(headers, "host"),
            path=target,
            request_headers=to_json(headers, self.options.redact),
            ts_open=ts,
        )
        self.exchanges += 1
        return _Exchange(
            record=rec,
            upgrade=upgrade,
            request_headers=headers,
            raw_method=bytes(event.method),
            raw_target=bytes(event.target),
            raw_headers=tuple((bytes(n), bytes(v)) for n, v in event.headers),
        )

    def _send_stand_in_request(self, exchange: _Exchange) -> None:
        """What the response parser must know of the request: method, Host, Connection and
        Upgrade, byte for byte as received (h11 accepted them, so it can send them)."""
        raw = exchange.raw_headers
        headers = [(n, v) for n, v in raw if n.lower() in (b"host", b"connection", b"upgrade")]
        if not any(n.lower() == b"host" for n, _ in headers):
            headers.insert(0, (b"host", b"unknown"))
        self._responses.send(
            h11.Request(method=exchange.raw_method, target=exchange.raw_target, headers=headers)
        )
        self._responses.send(h11.EndOfMessage())

    # ------------------------------------------------------------------ responses

    def _pump_responses(self, ts: float) -> None:
        conn = self._responses
        if (
            self._pending_s2c
            and self._queue
            and conn.their_state in (h11.SEND_RESPONSE, h11.SEND_BODY)
        ):
            data = bytes(self._pending_s2c)
            self._pending_s2c.clear()
            conn.receive_data(data)
        while self._queue:
            exchange = self._queue[0]
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if conn.their_state is h11.SWITCHED_PROTOCOL:
                    self._switch(exchange, ts)
                return
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    self._on_response(exchange, event, ts)
                    self._switch(exchange, ts)
                    return
            elif isinstance(event, h11.Response):
                self._on_response(exchange, event, ts)
                if conn.their_state is h11.SWITCHED_PROTOCOL:  # 2xx to CONNECT
                    self._switch(exchange, ts)
                    return
            elif isinstance(event, h11.Data):
                exchange.record.bytes_s2c += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._queue.pop(0)
                self._finish(exchange, ts, "end_stream")
                self._next_cycle(exchange)
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _on_response(
        self, exchange: _Exchange, event: h11.Response | h11.InformationalResponse, ts: float
    ) -> None:
        headers = decode_headers(event.headers)
        rec = exchange.record
        rec.status = event.status_code
        rec.ts_response = ts
        rec.response_headers = to_json(headers, self.options.redact)
        if rec.kind == "websocket":
            rec.ws_accepted = event.status_code == 101
            rec.ws_extensions = joined(headers, "sec-websocket-extensions")
            rec.ws_subprotocol = first(headers, "sec-websocket-protocol")

    def _next_cycle(self, exchange: _Exchange) -> None:
        """Tell the request parser the response is over, so it may parse the next request."""
        status = exchange.record.status or 200
        headers = [("content-length", "0")]
        closes = self._responses.their_state is h11.MUST_CLOSE or (
            self._responses.our_state is h11.MUST_CLOSE
        )
        if closes:
            headers.append(("connection", "close"))
        if exchange.record.method == "HEAD" or status in (204, 304):
            headers = [("connection", "close")] if closes else []
        self._requests.send(h11.Response(status_code=status, headers=headers))
        self._requests.send(h11.EndOfMessage())
        if self._requests.our_state is h11.DONE and self._requests.their_state is h11.DONE:
            self._requests.start_next_cycle()
        if self._responses.our_state is h11.DONE and self._responses.their_state is h11.DONE:
            self._responses.start_next_cycle()
        self._pump_requests(exchange.record.ts_response or 0.0)

    # ------------------------------------------------------------------ switching protocols

    def _switch(self, exchange: _Exchange, ts: float) -> None:
        self._queue.remove(exchange)
        status = exchange.record.status or 0
        upgrade_value = next((v for n, v in exchange.raw_headers if n.lower() == b"upgrade"), b"")
        upgrade_headers: list[tuple[bytes, bytes]] = [(b"upgrade", upgrade_value)]
        stand_in: Any = (
            h11.InformationalResponse(status_code=101, headers=upgrade_headers)
            if status == 101
            else h11.Response(status_code=status, headers=[])
        )
        # If the request parser did not see the switch proposal, its bytes are moot now.
        with contextlib.suppress(h11.LocalProtocolError):
            self._requests.send(stand_in)
        c2s, _ = self._requests.trailing_data
        s2c, _ = self._responses.trailing_data
        protocol = exchange.upgrade or ("connect" if exchange.record.method == "CONNECT" else "")
        self.upgrade = Upgrade(
            protocol,
            exchange.record.method or "GET",
            exchange.record.path or "/",
            exchange.request_headers,
            ts,
            bytes(c2s),
            bytes(s2c),
        )
        if exchange.record.kind == "websocket":
            self._ws_exchange = exchange
            exchange.ws = WebSocketStream(exchange.record, self.options)
            if c2s:
                self._feed_ws(exchange, "c2s", bytes(c2s), exchange.record.ts_open or ts)
            if s2c:
                self._feed_ws(exchange, "s2c", bytes(s2c), ts)
        elif exchange.upgrade != "h2c":
            # Some other protocol (or a CONNECT tunnel): the exchange ends at the switch; the
            # caller counts the remaining bytes on the connection.
            self._finish(exchange, ts, "switched_protocols")

    def _feed_ws(self, exchange: _Exchange, d: Direction, data: bytes, ts: float) -> None:
        rec = exchange.record
        if d == "c2s":
            rec.bytes_c2s += len(data)
        else:
            rec.bytes_s2c += len(data)
        if exchange.ws is not None:
            exchange.ws.feed(d, data, ts, self._out)

    # ------------------------------------------------------------------ bookkeeping

    def _finish(self, exchange: _Exchange, ts: float | None, end: str) -> None:
        if exchange.done:
            return
        exchange.done = True
        rec = exchange.record
        failed, cut = (
            exchange.ws.finish(ts, self._out) if exchange.ws is not None else (False, False)
        )
        # As for HTTP/2 streams: a message cut short by the closed connection keeps that cause
        # in ``stream_end`` and makes ``close_cause`` "incomplete"; a decoding failure leaves
        # the end unknown.
        if failed and end == "connection_closed":
            end = "incomplete"
        rec.stream_end = end
        if failed or cut:
            rec.close_cause = "incomplete"
        elif rec.close_cause is None:
            rec.close_cause = end
        rec.ts_close = ts
        self._out.append(rec)

    def _fail(self, ts: float | None, code: str, message: str) -> None:
        message = redact_text(message)  # h11 quotes the offending line, credentials and all
        self.failed = True
        self.error = self.error or message
        self._out.append(diagnostic(self.conn_id, "http1", "error", code, message, ts=ts))
        for exchange in [*self._queue, self._current_request, self._ws_exchange]:
            if exchange is not None and not exchange.done:
                exchange.record.error = exchange.record.error or message
                self._finish(exchange, ts, "incomplete")
        self._queue.clear()
        self._current_request = None

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out
