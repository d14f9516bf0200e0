"""HTTP/2 connection decoding for a passive observer (RFC 9113, RFC 8441): :class:`H2Decoder`.

One job: tie the layers of one connection together -- framing (:mod:`.framing`), header blocks
(:mod:`.header_blocks`), stream lifecycle (:mod:`.streams`), extended CONNECT (:mod:`.rfc8441`)
-- and give them the public API (``feed``, ``gap``, ``close``, ``start_after_upgrade``) and
what the frames other than DATA mean: header blocks and their CONTINUATION frames (§4.3,
§6.2, §6.10), RST_STREAM (§6.4), SETTINGS (§6.5) and GOAWAY (§6.8).

An observer sees both directions but is neither endpoint, so it cannot use h2's state machine
(which validates one side and would refuse what a real peer tolerates).  The stream lifecycle
is tracked leniently: a protocol error on one stream ends that stream's decoding, a framing or
HPACK error ends the direction's decoding (there is no way to resynchronise either), and
nothing raises out of :meth:`H2Decoder.feed` (a bug becomes an ``h2_internal_error``
diagnostic).
"""

from __future__ import annotations

import json

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.h2 import rfc8441
from h2ws.analysis.core.h2.framing import DirectionState, error_code_name, setting_name
from h2ws.analysis.core.h2.header_blocks import HeaderBlockError, PendingBlock, UnknownIndexError
from h2ws.analysis.core.h2.streams import StreamLayer
from h2ws.analysis.core.headers import HeaderList, redact_text
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import Direction, Record


class H2Decoder(StreamLayer):
    """Both directions of one HTTP/2 connection, bytes in, records out."""

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
        self.ts_enable_connect_protocol: float | None = None
        self.goaway_code: str | None = None
        self.goaway_last_stream_id: int | None = None

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

    def close(self, ts: float | None, cause: str) -> list[Record]:
        """The connection ended: every stream still open gets its cause."""
        for state in self.dirs.values():
            pending = state.pending_block
            if pending is not None and not state.failed:
                code, message = "h2_truncated_header_block", "header block never completed"
                if pending.skipped is not None:
                    # Over a limit before it ended (where a proxy refuses it): name the limit.
                    code, why = pending.skipped
                    message = f"{why}; {message} ({pending.size} bytes)"
                self._out.append(
                    diagnostic(
                        self.conn_id,
                        "h2",
                        "warning",
                        code,
                        f"{state.name} {message}",
                        ts=ts,
                        stream_id=pending.stream_id,
                    )
                )
            if state.buffer and not state.failed:
                self._out.append(
                    diagnostic(
                        self.conn_id,
                        "h2",
                        "warning",
                        "h2_truncated_frame",
                        f"{len(state.buffer)} bytes of an incomplete {state.name} frame at the end",
                        ts=ts,
                    )
                )
        fields = sum(s.hpack.unknown_fields for s in self.dirs.values())
        if fields:
            blocks = sum(s.hpack.unknown_blocks for s in self.dirs.values())
            self._out.append(
                diagnostic(
                    self.conn_id,
                    "h2",
                    "warning",
                    "h2_hpack_desync",
                    f"{fields} header field(s) in {blocks} block(s) referred to HPACK entries"
                    " from before the capture; shown as <unknown>",
                    ts=ts,
                )
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

    # ------------------------------------------------------------------ frames

    def _on_frame(self, state: DirectionState, frame: Frame, ts: float) -> None:
        d = state.name
        if isinstance(frame, HeadersFrame | PushPromiseFrame):
            state.blocks_seen = True
            opened = PendingBlock(frame.stream_id, frame, bytes(frame.data))
            opened.check_first(self.options.headers)
            if "END_HEADERS" in frame.flags:
                self._on_complete_block(state, opened, ts)
            else:
                state.pending_block = opened
        elif isinstance(frame, ContinuationFrame):
            pending = state.pending_block
            if (
                pending is None
                and self.midstream
                and (not state.blocks_seen or state.skip_continuation == frame.stream_id)
            ):
                # The end of a block whose HEADERS was before the capture: skipped (its
                # table updates are older than every entry known here, so nothing changes).
                state.blocks_seen = True
                end = "END_HEADERS" in frame.flags
                state.skip_continuation = None if end else frame.stream_id
                return
            if pending is None or pending.stream_id != frame.stream_id:
                self._fail_direction(
                    state,
                    ts,
                    "h2_unexpected_continuation",
                    f"CONTINUATION on stream {frame.stream_id} outside a header block",
                )
                return
            pending.add(bytes(frame.data), self.options.headers)
            if "END_HEADERS" in frame.flags:
                state.pending_block = None
                self._on_complete_block(state, pending, ts)
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
                self._out.append(
                    diagnostic(
                        self.conn_id,
                        "h2",
                        "warning",
                        "h2_goaway_error",
                        f"{d} GOAWAY {self.goaway_code}" + (f": {debug}" if debug else ""),
                        ts=ts,
                    )
                )

    def _on_settings(self, state: DirectionState, frame: SettingsFrame, ts: float) -> None:
        for code, value in frame.settings.items():
            state.settings[setting_name(code)] = value
            if code == SettingCodes.HEADER_TABLE_SIZE:
                # The peer's setting bounds the other direction's encoder (RFC 7541 §4.2).
                self.dirs["c2s" if state.name == "s2c" else "s2c"].hpack.allow_table_size(value)
            if code == rfc8441.ENABLE_CONNECT_PROTOCOL and state.name == "s2c":
                problem = rfc8441.setting_problem(self.enable_connect_protocol, value)
                if problem is not None:
                    severity, problem_code, message = problem
                    self._out.append(
                        diagnostic(self.conn_id, "rfc8441", severity, problem_code, message, ts=ts)
                    )
                if value == 1:
                    if not self.enable_connect_protocol:
                        self.ts_enable_connect_protocol = ts
                    self.enable_connect_protocol = True
                elif value == 0:
                    self.enable_connect_protocol = False

    # ------------------------------------------------------------------ headers

    def _on_complete_block(self, state: DirectionState, pending: PendingBlock, ts: float) -> None:
        """A header block with its END_HEADERS: decoded, or skipped over a limit."""
        frame = pending.frame
        assert isinstance(frame, HeadersFrame | PushPromiseFrame)
        if pending.skipped is not None:
            code, why = pending.skipped
            # The skipped block may have changed the table: what follows relies on a lost state.
            state.hpack.forget()
            self._undecoded_block(state, frame, ts, code, f"{why} ({pending.size} bytes)", True)
            return
        try:
            headers = state.hpack.decode(pending.block())
        except UnknownIndexError as exc:
            self._undecoded_block(state, frame, ts, exc.code, str(exc), False)
            return
        except HeaderBlockError as exc:
            # Over the list limit the table was kept in step; any other error lost it.
            lost = exc.code != "h2_header_list_too_large"
            self._undecoded_block(state, frame, ts, exc.code, str(exc), lost)
            return
        if state.hpack_lost and state.hpack.reliable:
            state.hpack_lost = False
            self._out.append(
                diagnostic(
                    self.conn_id,
                    "h2",
                    "info",
                    "h2_hpack_resynchronised",
                    f"{state.name} HPACK table known again (emptied by a size update)",
                    ts=ts,
                    stream_id=frame.stream_id,
                )
            )
        self._on_header_block(state, frame, headers, ts)

    def _undecoded_block(
        self,
        state: DirectionState,
        frame: HeadersFrame | PushPromiseFrame,
        ts: float,
        code: str,
        why: str,
        lost: bool,
    ) -> None:
        """A header block whose headers are unknown: say so, mark its stream, invent nothing.

        Unlike a framing error this does not stop the direction: frames still decode, and later
        blocks decode exactly as far as they use only what is known of the table.
        """
        why = redact_text(why)
        if lost:
            state.hpack_lost = True
        kind = "request" if state.name == "c2s" else "response"
        message = f"{state.name} header block on stream {frame.stream_id} not decoded: {why}"
        if lost:
            message += f"; the {state.name} HPACK table is unreliable until emptied"
        self._out.append(
            diagnostic(
                self.conn_id,
                "h2",
                "error",
                code,
                message,
                ts=ts,
                stream_id=frame.stream_id,
            )
        )
        self.error = self.error or message
        if isinstance(frame, PushPromiseFrame):
            return
        stream = self.streams.get(frame.stream_id)
        if stream is None and state.name == "c2s":
            stream = self._open_stream(frame.stream_id, [], ts, kind_hint=None)
            stream.record.request_headers = None  # unknown, not empty
        if stream is not None:
            stream.incomplete = True
            stream.record.error = stream.record.error or f"{kind} headers not decoded: {why}"
            if "END_STREAM" in frame.flags:
                self._half_close(stream, state.name, ts)

    def _on_header_block(
        self, state: DirectionState, frame: Frame, headers: HeaderList, ts: float
    ) -> None:
        end_stream = "END_STREAM" in frame.flags
        if isinstance(frame, PushPromiseFrame):
            pushed = self._open_stream(frame.promised_stream_id, headers, ts, kind_hint="push")
            pushed.closed_c2s = True
            return
        stream = self.streams.get(frame.stream_id)
        if state.name == "c2s":
            if stream is None and self.midstream and not any(n == ":method" for n, _ in headers):
                stream = self._open_inferred(frame.stream_id, ts)  # trailers of an unseen one
            elif stream is None:
                stream = self._open_stream(frame.stream_id, headers, ts, kind_hint=None)
            # else: trailers (or a protocol error by the client): they carry no new facts.
            if end_stream:
                self._half_close(stream, "c2s", ts)
        else:
            if stream is None and self.midstream:
                stream = self._open_inferred(frame.stream_id, ts)
            if stream is None:
                self._out.append(
                    diagnostic(
                        self.conn_id,
                        "h2",
                        "warning",
                        "h2_headers_unknown_stream",
                        "response headers on a stream whose request was not seen",
                        ts=ts,
                        stream_id=frame.stream_id,
                    )
                )
                return
            if not stream.response_final:
                self._on_response(stream, headers, ts)
            if end_stream:
                self._half_close(stream, "s2c", ts)

    def _fail_direction(
        self, state: DirectionState, ts: float | None, code: str, message: str
    ) -> None:
        """Framing/HPACK state of this direction is lost: stop it, mark open streams."""
        message = redact_text(message)
        state.failed = True
        state.buffer = bytearray()  # not clear(): a memoryview of the old one may still be live
        state.pending_block = None
        self.error = self.error or message
        self._out.append(diagnostic(self.conn_id, "h2", "error", code, message, ts=ts))
        for stream in self.streams.values():
            stream.incomplete = True
            stream.record.error = stream.record.error or message

    def settings_json(self, direction: Direction) -> str | None:
        settings = self.dirs[direction].settings
        return json.dumps(settings, separators=(",", ":")) if settings else None
