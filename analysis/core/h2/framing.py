"""HTTP/2 framing (RFC 9113 §4.1, §5, §6): frames of both directions from their byte streams.

One job: cut each direction's bytes into frames (the client connection preface of §3.4 first),
make the ``frames`` row of every frame, and hand the frames on to the stream layer.  Frames are
parsed by hyperframe, except on the fast path: plain DATA (no padding, not on stream 0) and valid
WINDOW_UPDATE frames -- the two frames of a busy connection -- are read here, because hyperframe's
frame objects cost more than the rest of decoding them.  This fast path replaces hyperframe for
those two frames only; every other frame, and any frame hyperframe might reject, goes to
hyperframe.  ``tests/test_h2.py`` checks that both agree: its hypothesis tests
``test_fast_frame_reader_agrees_with_hyperframe_on_mutated_streams`` and
``test_fast_frame_reader_edge_cases_agree_with_hyperframe`` decode the same streams with
``fast_path`` on and off and compare every record.

A framing error cannot be resynchronised: it ends the direction's decoding (§5.4.1 would make a
real endpoint close the connection).  A header block (HEADERS or PUSH_PROMISE and its
CONTINUATION frames, §4.3) must be contiguous on its direction: any other frame inside one fails
the direction too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

from h2ws.analysis.core.h2.header_blocks import HeaderBlockDecoder, PendingBlock
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import Direction, FrameRecord, Record, make_frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_LEN = 9

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
class DirectionState:
    """Framing state of one direction: a connection is two of these sharing the streams."""

    name: Direction
    buffer: bytearray = field(default_factory=bytearray)
    #: Bytes of the client preface still to be matched (c2s only).
    preface_left: bytes = b""
    hpack: HeaderBlockDecoder = field(default_factory=HeaderBlockDecoder)
    #: A HEADERS/PUSH_PROMISE block waiting for CONTINUATION (bounded, see PendingBlock).
    pending_block: PendingBlock | None = None
    #: a header block was skipped or failed: the HPACK table is (partly) unknown
    hpack_lost: bool = False
    failed: bool = False
    settings: dict[str, int] = field(default_factory=dict)
    #: a header block was seen (mid-connection: a CONTINUATION before any finishes a block
    #: whose HEADERS was before the capture, and is skipped)
    blocks_seen: bool = False
    #: the stream of the block begun before the capture whose CONTINUATIONs are skipped
    skip_continuation: int | None = None


class FrameLayer(ABC):
    """Frames of both directions of one connection, and their rows.

    The stream layer above implements what a frame means (:meth:`_on_data`,
    :meth:`_on_frame`) and what a failed direction does to the streams
    (:meth:`_fail_direction`).
    """

    def __init__(
        self,
        conn_id: str,
        options: DecodeOptions,
        *,
        expect_preface: bool = True,
        fast_path: bool = True,
        midstream: bool = False,
    ) -> None:
        self.conn_id = conn_id
        #: the connection is seen from its middle (:mod:`.resync`): HPACK tables start unknown
        #: (placeholders), streams may first show up by their DATA or response
        self.midstream = midstream
        self.options = options
        #: read plain DATA and WINDOW_UPDATE frames without hyperframe (see ``_feed``); off
        #: only for the tests that check both ways give the same records
        self.fast_path = fast_path
        self.dirs: dict[str, DirectionState] = {
            "c2s": DirectionState(
                "c2s",
                preface_left=PREFACE if expect_preface else b"",
                hpack=HeaderBlockDecoder(
                    options.headers, known=not midstream, placeholders=midstream
                ),
            ),
            "s2c": DirectionState(
                "s2c",
                hpack=HeaderBlockDecoder(
                    options.headers, known=not midstream, placeholders=midstream
                ),
            ),
        }
        self.frame_index = 0
        self.error: str | None = None
        self._out: list[Record] = []

    @abstractmethod
    def _on_data(
        self, d: Direction, stream_id: int, data: bytes, end_stream: bool, ts: float
    ) -> None:
        """The payload of a DATA frame (padding removed)."""

    @abstractmethod
    def _on_frame(self, state: DirectionState, frame: Frame, ts: float) -> None:
        """A frame hyperframe parsed, other than DATA, outside a header block or continuing it."""

    @abstractmethod
    def _fail_direction(
        self, state: DirectionState, ts: float | None, code: str, message: str
    ) -> None:
        """Framing/HPACK state of this direction is lost."""

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out

    def _feed(self, state: DirectionState, data: bytes, ts: float) -> None:
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
                self._parsed_frame(state, frame, length, ts)
        finally:
            view.release()
        if src is buf:
            del buf[:pos]
        elif pos < end and not state.failed:  # a failed direction keeps nothing
            state.buffer += data[pos:]

    def _on_plain_data(
        self, state: DirectionState, stream_id: int, data: bytes, end_stream: int, ts: float
    ) -> None:
        """A DATA frame without padding (read in ``_feed``): as ``_on_frame`` would take it."""
        d = state.name
        if self.options.frames:
            # The factory with every field: half the cost of FrameRecord(...), and this is a
            # row per frame (the tests compare these rows with _parsed_frame's).
            n = len(data)
            end = "END_STREAM" if end_stream else ""
            self._out.append(
                make_frame(
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
                    )
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
        self, state: DirectionState, stream_id: int, increment: int, ts: float
    ) -> None:
        """A valid WINDOW_UPDATE (read in ``_feed``): a row, nothing else to track."""
        if self.options.frames:
            self._out.append(  # as in _on_plain_data
                make_frame(
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
                    )
                )
            )
        self.frame_index += 1
        if state.pending_block is not None:
            self._fail_direction(
                state, ts, "h2_expected_continuation", "WINDOW_UPDATE frame inside a header block"
            )

    def _parsed_frame(self, state: DirectionState, frame: Frame, length: int, ts: float) -> None:
        """A frame hyperframe parsed: its row, then what it means."""
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
        else:
            self._on_frame(state, frame, ts)
