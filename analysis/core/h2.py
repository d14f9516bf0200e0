"""HTTP/2 connection decoding for a passive observer (RFC 9113, RFC 8441).

An observer sees both directions but is neither endpoint, so it cannot use h2's state machine
(which validates one side and would refuse what a real peer tolerates).  Frames come from
hyperframe, header blocks from hpack with one decoder per direction (each direction has its own
dynamic table), and the stream lifecycle is tracked here, leniently: a protocol error on one
stream ends that stream's decoding, a framing or HPACK error ends the direction's decoding (there
is no way to resynchronise either), and nothing raises out of :meth:`H2Decoder.feed`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import hpack
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from h2ws.analysis.core.headers import HeaderList, decode_headers, first, joined, to_json
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import MessageDecoder, negotiated_deflate
from h2ws.analysis.records import (
    DiagnosticRecord,
    Direction,
    FrameRecord,
    MessageRecord,
    Record,
    StreamRecord,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_LEN = 9
ENABLE_CONNECT_PROTOCOL = 0x8
#: builds a FrameRecord from a tuple of all its fields, without NamedTuple's Python __new__
_new_frame = tuple.__new__

FRAME_TYPE_NAMES = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x2: "PRIORITY",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
    0x9: "CONTINUATION",
    0xA: "ALTSVC",
    0xC: "ORIGIN",
    0x10: "PRIORITY_UPDATE",
}


_ADDRESS = re.compile(r" from <memory at 0x[0-9a-f]+>")


def _without_addresses(message: str) -> str:
    """hpack names the buffer it failed on by its memory address, which tells a reader nothing
    and makes two decodes of the same bytes differ."""
    return _ADDRESS.sub("", message)


def error_code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


def setting_name(code: int) -> str:
    try:
        return SettingCodes(code).name
    except ValueError:
        return f"0x{code:x}"


def frame_type_name(type_: int) -> str:
    return FRAME_TYPE_NAMES.get(type_, f"UNKNOWN_0x{type_:x}")


@dataclass(slots=True)
class _Direction:
    """Framing state of one direction: a connection is two of these sharing the streams."""

    name: Direction
    buffer: bytearray = field(default_factory=bytearray)
    #: Bytes of the client preface still to be matched (c2s only).
    preface_left: bytes = b""
    hpack: hpack.Decoder = field(default_factory=lambda: _new_hpack_decoder())
    #: A HEADERS/PUSH_PROMISE block waiting for CONTINUATION: (stream, frame, fragments).
    pending_block: tuple[int, Frame, list[bytes]] | None = None
    failed: bool = False
    settings: dict[str, int] = field(default_factory=dict)


def _new_hpack_decoder() -> hpack.Decoder:
    # An observer must accept whatever the real decoder accepted: lift hpack's own limits.
    decoder = hpack.Decoder(max_header_list_size=2**31)
    decoder.max_allowed_table_size = 2**31
    return decoder


@dataclass(slots=True)
class _Stream:
    record: StreamRecord
    closed_c2s: bool = False  # END_STREAM seen from the client
    closed_s2c: bool = False
    response_final: bool = False
    request_headers: HeaderList | None = None
    ws: dict[str, MessageDecoder] = field(default_factory=dict)
    early: list[tuple[bytes, float]] = field(default_factory=list)
    early_bytes: int = 0
    incomplete: bool = False
    done: bool = False


class H2Decoder:
    """Both directions of one HTTP/2 connection, bytes in, records out."""

    def __init__(
        self,
        conn_id: str,
        options: DecodeOptions,
        *,
        expect_preface: bool = True,
        fast_path: bool = True,
    ) -> None:
        self.conn_id = conn_id
        self.options = options
        #: read plain DATA and WINDOW_UPDATE frames without hyperframe (see ``_feed``); off
        #: only for the tests that check both ways give the same records
        self.fast_path = fast_path
        self.dirs: dict[str, _Direction] = {
            "c2s": _Direction("c2s", preface_left=PREFACE if expect_preface else b""),
            "s2c": _Direction("s2c"),
        }
        self.streams: dict[int, _Stream] = {}
        self.frame_index = 0
        self.stream_count = 0
        self.websocket_count = 0
        self.enable_connect_protocol: bool | None = None
        self.ts_enable_connect_protocol: float | None = None
        self.goaway_code: str | None = None
        self.goaway_last_stream_id: int | None = None
        self.error: str | None = None
        self._out: list[Record] = []

    # ------------------------------------------------------------------ public API

    def feed(self, direction: Direction, data: bytes, ts: float) -> list[Record]:
        state = self.dirs[direction]
        if state.failed or not data:
            return self._take()
        try:
            self._feed(state, data, ts)
        except Exception as exc:
            self._fail_direction(state, ts, "h2_internal_error", f"internal decoder error: {exc!r}")
        return self._take()

    def gap(self, direction: Direction, ts: float, length: int | None) -> list[Record]:
        """Bytes were lost: framing and HPACK state of that direction cannot be recovered."""
        state = self.dirs[direction]
        if not state.failed:
            lost = f"{length} bytes" if length is not None else "bytes"
            self._fail_direction(
                state, ts, "h2_gap", f"{lost} missing from the {direction} stream; decoding stops"
            )
        return self._take()

    def start_after_upgrade(self, request: HeaderList, ts: float) -> list[Record]:
        """h2c Upgrade (RFC 7540 §3.2): the HTTP/1.1 request becomes stream 1, half-closed."""
        stream = self._open_stream(1, request, ts, kind_hint=None)
        stream.closed_c2s = True
        return self._take()

    def open_streams(self) -> list[StreamRecord]:
        """The rows of the streams still open, in the order they opened.

        They are the live rows the decoder keeps filling in (response status, extensions,
        counters) until it emits them when the stream ends: callers may read them, not change
        them.  The live addon starts the mirrored WebSocket flows from them.
        """
        return [stream.record for stream in self.streams.values()]

    def close(self, ts: float | None, cause: str) -> list[Record]:
        """The connection ended: every stream still open gets its cause."""
        for state in self.dirs.values():
            if state.pending_block is not None and not state.failed:
                self._diag(
                    ts,
                    "h2",
                    "warning",
                    "h2_truncated_header_block",
                    f"{state.name} header block never completed",
                    state.pending_block[0],
                )
            if state.buffer and not state.failed:
                self._diag(
                    ts,
                    "h2",
                    "warning",
                    "h2_truncated_frame",
                    f"{len(state.buffer)} bytes of an incomplete {state.name} frame at the end",
                )
        if cause == "capture_ended":
            stream_end = "incomplete"  # the connection went on, unseen: nothing ended the stream
        elif self.goaway_code is not None:
            stream_end = "goaway"
        else:
            stream_end = "connection_closed"
        for stream in list(self.streams.values()):
            self._finish_stream(stream, ts, stream_end)
        return self._take()

    # ------------------------------------------------------------------ framing

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out

    def _feed(self, state: _Direction, data: bytes, ts: float) -> None:
        if state.preface_left:
            n = min(len(state.preface_left), len(data))
            if data[:n] != state.preface_left[:n]:
                self._fail_direction(
                    state, ts, "h2_bad_preface", "client connection preface is not HTTP/2's"
                )
                return
            state.preface_left = state.preface_left[n:]
            data = data[n:]
            if not data:
                return
        buf = state.buffer
        src: bytes | bytearray
        if buf:
            buf += data
            src = buf
        else:
            # Nothing held over: frames are read from the chunk itself, and only the start of
            # an unfinished frame is copied into the buffer (most chunks end on a frame).
            src = data
        pos = 0
        end = len(src)
        view = memoryview(src)
        fast = self.fast_path
        try:
            while end - pos >= FRAME_HEADER_LEN and not state.failed:
                length = (src[pos] << 16) | (src[pos + 1] << 8) | src[pos + 2]
                if end - pos < FRAME_HEADER_LEN + length:
                    break
                # The two frames of a busy connection -- DATA without padding, WINDOW_UPDATE --
                # are read here: hyperframe's objects cost more than the rest of decoding them.
                # Only frames hyperframe would accept take this way; any other goes to it.
                type_ = src[pos + 3]
                if fast and (type_ == 0x0 or type_ == 0x8):
                    sid = (
                        ((src[pos + 5] & 0x7F) << 24)
                        | (src[pos + 6] << 16)
                        | (src[pos + 7] << 8)
                        | src[pos + 8]
                    )
                    body = pos + FRAME_HEADER_LEN
                    if type_ == 0x0:
                        flags = src[pos + 4]
                        if sid and not flags & 0x8:  # stream 0 and PADDED: hyperframe's
                            pos = body + length
                            self._on_plain_data(state, sid, bytes(view[body:pos]), flags & 1, ts)
                            continue
                    elif length == 4:
                        increment = int.from_bytes(view[body : body + 4])
                        if 1 <= increment <= 0x7FFFFFFF:
                            pos = body + length
                            self._on_window_update(state, sid, increment, ts)
                            continue
                try:
                    frame, _ = Frame.parse_frame_header(view[pos : pos + FRAME_HEADER_LEN])
                    frame.parse_body(view[pos + FRAME_HEADER_LEN : pos + FRAME_HEADER_LEN + length])
                except HyperframeError as exc:
                    self._fail_direction(
                        state,
                        ts,
                        "h2_malformed_frame",
                        f"malformed {frame_type_name(src[pos + 3])} frame: {exc}",
                    )
                    break
                pos += FRAME_HEADER_LEN + length
                self._on_frame(state, frame, length, ts)
        finally:
            view.release()
        if src is buf:
            del buf[:pos]
        elif pos < end and not state.failed:  # a failed direction keeps nothing
            state.buffer += data[pos:]

    def _on_plain_data(
        self, state: _Direction, stream_id: int, data: bytes, end_stream: int, ts: float
    ) -> None:
        """A DATA frame without padding (read in ``_feed``): as ``_on_frame`` would take it."""
        d = state.name
        if self.options.frames:
            # tuple.__new__ with every field: half the cost of FrameRecord(...), and this is a
            # row per frame (the tests compare these rows with _on_frame's).
            n = len(data)
            end = "END_STREAM" if end_stream else ""
            self._out.append(
                _new_frame(
                    FrameRecord,
                    (
                        self.conn_id,
                        self.frame_index,
                        ts,
                        d,
                        "DATA",
                        end,
                        stream_id,
                        n,
                        n,
                        None,
                        None,
                    ),
                )
            )
        self.frame_index += 1
        if state.pending_block is not None:
            self._fail_direction(
                state, ts, "h2_expected_continuation", "DATA frame inside a header block"
            )
            return
        self._on_data(d, stream_id, data, bool(end_stream), ts)

    def _on_window_update(
        self, state: _Direction, stream_id: int, increment: int, ts: float
    ) -> None:
        """A valid WINDOW_UPDATE (read in ``_feed``): a row, nothing else to track."""
        if self.options.frames:
            self._out.append(  # as in _on_plain_data
                _new_frame(
                    FrameRecord,
                    (
                        self.conn_id,
                        self.frame_index,
                        ts,
                        state.name,
                        "WINDOW_UPDATE",
                        "",
                        stream_id,
                        4,
                        None,
                        increment,
                        None,
                    ),
                )
            )
        self.frame_index += 1
        if state.pending_block is not None:
            self._fail_direction(
                state, ts, "h2_expected_continuation", "WINDOW_UPDATE frame inside a header block"
            )

    def _on_frame(self, state: _Direction, frame: Frame, length: int, ts: float) -> None:
        d = state.name
        if self.options.frames:
            data_length = window_increment = error_code = None
            if isinstance(frame, DataFrame):
                data_length = len(frame.data)
            elif isinstance(frame, WindowUpdateFrame):
                window_increment = frame.window_increment
            elif isinstance(frame, RstStreamFrame | GoAwayFrame):
                error_code = error_code_name(frame.error_code)
            self._out.append(
                FrameRecord(
                    conn_id=self.conn_id,
                    index=self.frame_index,
                    ts=ts,
                    direction=d,
                    type=frame_type_name(frame.type if frame.type is not None else -1),
                    flags=",".join(sorted(frame.flags)),
                    stream_id=frame.stream_id,
                    length=length,
                    data_length=data_length,
                    window_increment=window_increment,
                    error_code=error_code,
                )
            )
        self.frame_index += 1

        if state.pending_block is not None and not isinstance(frame, ContinuationFrame):
            self._fail_direction(
                state,
                ts,
                "h2_expected_continuation",
                f"{frame_type_name(frame.type or 0)} frame inside a header block",
            )
            return

        if isinstance(frame, DataFrame):
            self._on_data(d, frame.stream_id, frame.data, "END_STREAM" in frame.flags, ts)
        elif isinstance(frame, HeadersFrame | PushPromiseFrame):
            if "END_HEADERS" in frame.flags:
                self._on_header_block(state, frame, bytes(frame.data), ts)
            else:
                state.pending_block = (frame.stream_id, frame, [bytes(frame.data)])
        elif isinstance(frame, ContinuationFrame):
            if state.pending_block is None or state.pending_block[0] != frame.stream_id:
                self._fail_direction(
                    state,
                    ts,
                    "h2_unexpected_continuation",
                    f"CONTINUATION on stream {frame.stream_id} outside a header block",
                )
                return
            state.pending_block[2].append(bytes(frame.data))
            if "END_HEADERS" in frame.flags:
                _, first_frame, fragments = state.pending_block
                state.pending_block = None
                self._on_header_block(state, first_frame, b"".join(fragments), ts)
        elif isinstance(frame, RstStreamFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                self._finish_stream(stream, ts, f"rst_stream:{error_code_name(frame.error_code)}")
        elif isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self._on_settings(state, frame, ts)
        elif isinstance(frame, GoAwayFrame):
            self.goaway_code = error_code_name(frame.error_code)
            self.goaway_last_stream_id = frame.last_stream_id
            if frame.error_code != ErrorCodes.NO_ERROR:
                debug = bytes(frame.additional_data or b"").decode("utf-8", "replace")[:200]
                self._diag(
                    ts,
                    "h2",
                    "warning",
                    "h2_goaway_error",
                    f"{d} GOAWAY {self.goaway_code}" + (f": {debug}" if debug else ""),
                )

    def _on_settings(self, state: _Direction, frame: SettingsFrame, ts: float) -> None:
        for code, value in frame.settings.items():
            state.settings[setting_name(code)] = value
            if code == ENABLE_CONNECT_PROTOCOL and state.name == "s2c":
                if value == 1:
                    if not self.enable_connect_protocol:
                        self.ts_enable_connect_protocol = ts
                    self.enable_connect_protocol = True
                elif value == 0:
                    if self.enable_connect_protocol:
                        self._diag(
                            ts,
                            "rfc8441",
                            "error",
                            "rfc8441_setting_withdrawn",
                            "server sent SETTINGS_ENABLE_CONNECT_PROTOCOL=0 after 1 "
                            "(RFC 8441 §3 forbids it)",
                        )
                    self.enable_connect_protocol = False
                else:
                    self._diag(
                        ts,
                        "rfc8441",
                        "error",
                        "rfc8441_setting_invalid",
                        f"SETTINGS_ENABLE_CONNECT_PROTOCOL={value}; only 0 and 1 are valid",
                    )

    # ------------------------------------------------------------------ headers

    def _on_header_block(self, state: _Direction, frame: Frame, block: bytes, ts: float) -> None:
        try:
            raw = state.hpack.decode(block, raw=True)
        except (hpack.HPACKError, ValueError, IndexError) as exc:
            self._fail_direction(
                state,
                ts,
                "h2_hpack_error",
                f"HPACK decoding of the {state.name} header block on stream "
                f"{frame.stream_id} failed: {_without_addresses(str(exc))}",
            )
            return
        headers = decode_headers(raw)
        end_stream = "END_STREAM" in frame.flags
        if isinstance(frame, PushPromiseFrame):
            pushed = self._open_stream(frame.promised_stream_id, headers, ts, kind_hint="push")
            pushed.closed_c2s = True
            return
        stream = self.streams.get(frame.stream_id)
        if state.name == "c2s":
            if stream is None:
                stream = self._open_stream(frame.stream_id, headers, ts, kind_hint=None)
            # else: trailers (or a protocol error by the client): they carry no new facts.
            if end_stream:
                self._half_close(stream, "c2s", ts)
        else:
            if stream is None:
                self._diag(
                    ts,
                    "h2",
                    "warning",
                    "h2_headers_unknown_stream",
                    "response headers on a stream whose request was not seen",
                    frame.stream_id,
                )
                return
            if not stream.response_final:
                self._on_response(stream, headers, ts)
            if end_stream:
                self._half_close(stream, "s2c", ts)

    def _open_stream(
        self, stream_id: int, headers: HeaderList, ts: float, kind_hint: str | None
    ) -> _Stream:
        method = first(headers, ":method")
        protocol = first(headers, ":protocol")
        if kind_hint is not None:
            kind = kind_hint
        elif method == "CONNECT":
            kind = (
                "websocket"
                if protocol is not None and protocol.lower() == "websocket"
                else "connect"
            )
        else:
            kind = "http"
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
        stream = _Stream(record=rec, request_headers=headers)
        old = self.streams.get(stream_id)
        if old is not None:
            self._diag(
                ts,
                "h2",
                "warning",
                "h2_stream_reused",
                f"stream {stream_id} opened again before it closed",
                stream_id,
            )
            self._finish_stream(old, ts, "incomplete")
        self.streams[stream_id] = stream
        self.stream_count += 1
        self._check_rfc8441(stream, headers, ts)
        return stream

    def _check_rfc8441(self, stream: _Stream, headers: HeaderList, ts: float) -> None:
        rec = stream.record
        sid = rec.stream_id
        if rec.protocol is None:
            return
        if rec.method != "CONNECT":
            self._diag(
                ts,
                "rfc8441",
                "error",
                "rfc8441_protocol_without_connect",
                f":protocol {rec.protocol!r} on a {rec.method} request (RFC 8441 §4)",
                sid,
            )
            return
        if rec.scheme is None or rec.path is None:
            self._diag(
                ts,
                "rfc8441",
                "error",
                "rfc8441_missing_pseudo_header",
                "extended CONNECT without :scheme or :path (RFC 8441 §4)",
                sid,
            )
        if not self.enable_connect_protocol:
            self._diag(
                ts,
                "rfc8441",
                "warning",
                "rfc8441_setting_not_seen",
                "extended CONNECT before the server's SETTINGS_ENABLE_CONNECT_PROTOCOL=1 "
                "was seen (RFC 8441 §3)",
                sid,
            )
        if rec.kind == "websocket":
            self.websocket_count += 1
            version = first(headers, "sec-websocket-version")
            if version != "13":
                self._diag(
                    ts,
                    "rfc8441",
                    "warning",
                    "rfc8441_websocket_version",
                    f"sec-websocket-version is {version!r}, not '13' (RFC 8441 §5)",
                    sid,
                )

    def _on_response(self, stream: _Stream, headers: HeaderList, ts: float) -> None:
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
        accepted = status is not None and 200 <= status < 300
        rec.ws_accepted = accepted
        if not accepted:
            self._diag(
                ts,
                "rfc8441",
                "info",
                "rfc8441_rejected",
                f"extended CONNECT answered {status_text}",
                rec.stream_id,
            )
            return
        deflate = negotiated_deflate(rec.ws_extensions)
        for d in ("c2s", "s2c"):
            stream.ws[d] = MessageDecoder(
                conn_id=self.conn_id,
                stream_id=rec.stream_id,
                exchange=None,
                direction=d,
                deflate=deflate,
                payload=self.options.payload,
                max_message_bytes=self.options.max_message_bytes,
            )
        early, stream.early = stream.early, []
        for data, data_ts in early:
            self._feed_ws(stream, "c2s", data, data_ts)

    # ------------------------------------------------------------------ data

    def _on_data(
        self, d: Direction, stream_id: int, data: bytes, end_stream: bool, ts: float
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # DATA for a stream we never saw open (capture started late): counted in frames
        if d == "c2s":
            stream.record.bytes_c2s += len(data)
        else:
            stream.record.bytes_s2c += len(data)
        if stream.record.kind == "websocket" and data:
            if stream.ws:
                self._feed_ws(stream, d, data, ts)
            elif d == "c2s" and not stream.response_final:
                if stream.early_bytes + len(data) <= self.options.max_early_data:
                    stream.early.append((data, ts))
                    stream.early_bytes += len(data)
                elif stream.early_bytes <= self.options.max_early_data:
                    stream.early_bytes += len(data)
                    self._diag(
                        ts,
                        "rfc8441",
                        "error",
                        "rfc8441_early_data_overflow",
                        "client sent more than max_early_data before the response; "
                        "its WebSocket messages cannot be decoded",
                        stream.record.stream_id,
                    )
                    stream.incomplete = True
        if end_stream:
            self._half_close(stream, d, ts)

    def _feed_ws(self, stream: _Stream, d: str, data: bytes, ts: float) -> None:
        decoder = stream.ws.get(d)
        if decoder is None or decoder.failed:
            return
        for rec in decoder.feed(data, ts):
            if isinstance(rec, MessageRecord):
                if d == "c2s":
                    stream.record.messages_c2s += 1
                else:
                    stream.record.messages_s2c += 1
                if rec.opcode == "close" and stream.record.ws_close_by is None:
                    stream.record.ws_close_by = d
                    stream.record.close_cause = (
                        f"ws_close:{rec.close_code}" if rec.close_code is not None else "ws_close"
                    )
            else:
                stream.record.error = stream.record.error or rec.message
            self._out.append(rec)

    # ------------------------------------------------------------------ lifecycle

    def _half_close(self, stream: _Stream, d: str, ts: float) -> None:
        if d == "c2s":
            stream.closed_c2s = True
        else:
            stream.closed_s2c = True
        if stream.closed_c2s and stream.closed_s2c:
            self._finish_stream(stream, ts, "end_stream")

    def _finish_stream(self, stream: _Stream, ts: float | None, end: str) -> None:
        if stream.done:
            return
        stream.done = True
        rec = stream.record
        cut = False  # a WebSocket message (or frame) was cut short by the end
        for decoder in stream.ws.values():
            for diag in decoder.finish(ts):
                rec.error = rec.error or diag.message
                self._out.append(diag)
            cut = cut or decoder.in_message
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

    def _fail_direction(self, state: _Direction, ts: float | None, code: str, message: str) -> None:
        """Framing/HPACK state of this direction is lost: stop it, mark open streams."""
        state.failed = True
        state.buffer = bytearray()  # not clear(): a memoryview of the old one may still be live
        state.pending_block = None
        self.error = self.error or message
        self._diag(ts, "h2", "error", code, message)
        for stream in self.streams.values():
            stream.incomplete = True
            stream.record.error = stream.record.error or message

    def _diag(
        self,
        ts: float | None,
        layer: str,
        severity: str,
        code: str,
        message: str,
        stream_id: int | None = None,
    ) -> None:
        self._out.append(
            DiagnosticRecord(
                conn_id=self.conn_id,
                stream_id=stream_id,
                ts=ts,
                layer=layer,
                severity=severity,
                code=code,
                message=message,
            )
        )

    def settings_json(self, direction: Direction) -> str | None:
        settings = self.dirs[direction].settings
        return json.dumps(settings, separators=(",", ":")) if settings else None
