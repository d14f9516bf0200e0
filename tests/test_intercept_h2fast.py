"""The DATA-frame fast path of mitmproxy's own HTTP/2 connections (``addon/h2fast.py``).

It replaces two hyper-h2 calls (``H2Connection.send_data`` and ``receive_data``), so every
test here runs one connection with it and one without, side by side, and asks that they
agree on everything h2 exposes: events, exceptions, bytes to send, windows, stream and
connection states, what is left in the receive buffer.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection

from h2ws.addon import h2fast, h2limits
from h2ws.analysis.core.h2 import PREFACE
from h2ws.analysis.core.options import HeaderLimits

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]
RESPONSE = [(b":status", b"200")]


def config(client_side: bool) -> h2.config.H2Configuration:
    """mitmproxy's configuration of its HTTP/2 connections (``Http2Server``/``Http2Client``)."""
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=False,
        validate_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        normalize_outbound_headers=False,
    )


def pair(client_side: bool, buffered: bool) -> tuple[Any, Any]:
    """(h2's own, with the fast path): mitmproxy's ``BufferedH2Connection`` with the header
    limits as intercept mode builds it, or h2's plain ``H2Connection`` (65,535-byte windows:
    the window checks are reached)."""
    conns = []
    for fast in (False, True):
        if buffered:
            conn: Any = BufferedH2Connection(config(client_side))
            h2limits.bound(conn, HeaderLimits())
            if fast:
                assert h2fast.accelerate(conn, BufferedH2Connection)
        else:
            cls = h2fast.FastDataH2Connection if fast else h2.connection.H2Connection
            conn = cls(config(client_side))
        conn.initiate_connection()
        conn.data_to_send()
        conns.append(conn)
    return conns[0], conns[1]


# ------------------------------------------------------------------ what the peer sends


@dataclass(frozen=True)
class Data:
    stream_id: int
    size: int
    end_stream: bool = False
    pad: int | None = None
    extra_flags: int = 0  # undefined flag bits, ignored by h2

    def encode(self, _encoder: hpack.Encoder) -> bytes:
        frame = DataFrame(1)
        frame.data = bytes([self.stream_id % 251]) * self.size
        if self.end_stream:
            frame.flags.add("END_STREAM")
        if self.pad is not None:
            frame.flags.add("PADDED")
            frame.pad_length = self.pad
        raw = bytearray(frame.serialize())
        raw[4] |= self.extra_flags
        raw[5:9] = self.stream_id.to_bytes(4)  # 0 and the reserved bit too
        return bytes(raw)


@dataclass(frozen=True)
class Headers:
    stream_id: int
    content_length: int | None = None
    end_stream: bool = False
    split: bool = False  # HEADERS without END_HEADERS, then a CONTINUATION

    def encode(self, encoder: hpack.Encoder, request: bool = True) -> bytes:
        fields = list(REQUEST if request else RESPONSE)
        if self.content_length is not None:
            fields.append((b"content-length", str(self.content_length).encode()))
        block = encoder.encode(fields)
        head = HeadersFrame(self.stream_id)
        head.data = block[:1] if self.split else block
        if self.end_stream:
            head.flags.add("END_STREAM")
        if not self.split:
            head.flags.add("END_HEADERS")
            return head.serialize()
        tail = ContinuationFrame(self.stream_id)
        tail.data = block[1:]
        tail.flags.add("END_HEADERS")
        return head.serialize() + tail.serialize()


@dataclass(frozen=True)
class HalfHeaders:
    """A HEADERS frame whose block never ends: every later frame is inside a header block."""

    stream_id: int

    def encode(self, encoder: hpack.Encoder) -> bytes:
        head = HeadersFrame(self.stream_id)
        head.data = encoder.encode(REQUEST)[:1]
        return head.serialize()


@dataclass(frozen=True)
class Control:
    kind: str
    stream_id: int = 0
    value: int = 0

    def encode(self, _encoder: hpack.Encoder) -> bytes:
        if self.kind == "rst":
            return RstStreamFrame(self.stream_id or 1, error_code=self.value).serialize()
        if self.kind == "window":
            return WindowUpdateFrame(self.stream_id, window_increment=self.value).serialize()
        if self.kind == "frame_size":
            return SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: self.value}).serialize()
        if self.kind == "initial_window":
            settings_ = {SettingsFrame.INITIAL_WINDOW_SIZE: self.value}
            return SettingsFrame(0, settings=settings_).serialize()
        if self.kind == "ping":
            return PingFrame(0, opaque_data=b"12345678").serialize()
        return GoAwayFrame(0, error_code=self.value).serialize()


@dataclass(frozen=True)
class Garbage:
    data: bytes

    def encode(self, _encoder: hpack.Encoder) -> bytes:
        return self.data


# ------------------------------------------------------------------ what the connection does


@dataclass(frozen=True)
class Send:
    stream_id: int
    size: int
    end_stream: bool = False
    memoryview: bool = False


@dataclass(frozen=True)
class Local:
    """Another call of mitmproxy's: open/answer a stream, acknowledge, reset, end, or open
    the connection's receive window alone (which makes a stream's the smaller one)."""

    kind: str
    stream_id: int
    value: int = 0


stream_ids = st.sampled_from([1, 1, 1, 3, 3, 5, 0, 2, 7, 0x80000001])
header_ids = st.sampled_from([1, 1, 3, 3, 5, 2, 7])  # hyperframe refuses to build 0
peer_frames = st.one_of(
    st.builds(
        Data,
        stream_ids,
        st.one_of(st.integers(0, 40), st.integers(16_000, 17_000), st.integers(60_000, 70_000)),
        st.booleans(),
        st.one_of(st.none(), st.none(), st.integers(0, 20)),
        st.sampled_from([0, 0, 0, 0x2, 0x20]),
    ),
    st.builds(
        Headers,
        header_ids,
        st.one_of(st.none(), st.integers(0, 100)),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(HalfHeaders, header_ids),
    st.builds(
        Control,
        st.sampled_from(["rst", "window", "frame_size", "initial_window", "ping", "goaway"]),
        st.sampled_from([0, 1, 3]),
        st.sampled_from([0, 1, 100, 16_384, 20_000, 65_535, 2**20, 2**31 - 1]),
    ),
    st.builds(Garbage, st.binary(max_size=20)),
)
local_calls = st.one_of(
    st.builds(
        Send,
        st.sampled_from([1, 1, 3, 5, 2]),
        st.one_of(st.integers(0, 40), st.integers(16_000, 17_000), st.integers(60_000, 70_000)),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        Local,
        st.sampled_from(["headers", "ack", "reset", "end", "window"]),
        st.sampled_from([1, 3, 5]),
        st.integers(0, 70_000),
    ),
)
sizes = st.one_of(st.integers(1, 40), st.integers(16_000, 17_000), st.integers(60_000, 70_000))
rarely = st.sampled_from([False] * 19 + [True])
#: what a well-behaved peer sends on the streams :data:`OPENING` opened: mostly DATA
friendly_frames = st.one_of(
    st.builds(Data, st.sampled_from([1, 1, 1, 5, 5, 3]), sizes, rarely),
    st.builds(Data, st.sampled_from([1, 1, 1, 5, 5, 3]), sizes, rarely),
    st.builds(Control, st.just("window"), st.sampled_from([0, 1, 3, 5]), st.integers(1, 70_000)),
)
cuts = st.lists(st.integers(0, 70_000), max_size=6)
#: one step: frames from the peer (delivered in chunks cut at the given points), or a call
friendly_step = st.tuples(st.lists(friendly_frames, min_size=1, max_size=6), cuts)
hostile_step = st.tuples(st.lists(peer_frames, min_size=1, max_size=4), cuts)
friendly_steps = st.one_of(*[friendly_step] * 4, *[local_calls] * 3)
steps = st.one_of(*[friendly_step] * 4, hostile_step, *[local_calls] * 3)


def opening(client_side: bool) -> list[Any]:
    """Streams 1, 3 and 7 (with a content-length from the peer, 7's small) and 5, open both
    ways."""
    peer = (
        [Headers(1), Headers(3, content_length=10**6), Headers(5), Headers(7, content_length=30)],
        [],
    )
    answers = [Local("headers", sid) for sid in (1, 3, 5, 7)]
    return [*answers, peer] if client_side else [peer, *answers]


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        result = call()
    except Exception as exc:  # both sides must raise the same
        return "raised", (type(exc), str(exc), getattr(exc, "error_code", None))
    if isinstance(result, list):
        return "events", [(type(e).__name__, repr(sorted(vars(e).items()))) for e in result]
    return "returned", result


def state(conn: Any) -> tuple[Any, ...]:
    streams = {
        sid: (
            s.state_machine.state,
            s.outbound_flow_control_window,
            s._inbound_window_manager.current_window_size,
            s._inbound_window_manager._bytes_processed,
            s._actual_content_length,
        )
        for sid, s in conn.streams.items()
    }
    buffers = {
        sid: [(bytes(c.data), c.end_stream) for c in q]
        for sid, q in getattr(conn, "stream_buffers", {}).items()
    }
    return (
        conn.state_machine.state,
        conn.outbound_flow_control_window,
        conn._inbound_flow_control_window_manager.current_window_size,
        conn.max_outbound_frame_size,
        streams,
        buffers,
        bytes(conn.incoming_buffer._data),
        len(conn.incoming_buffer._headers_buffer),
        conn.data_to_send(),
    )


def local(conn: Any, call: Send | Local, client_side: bool) -> Any:
    if isinstance(call, Send):
        data: bytes | memoryview = bytes([call.stream_id % 7]) * call.size
        if call.memoryview:
            data = memoryview(data)
        return conn.send_data(call.stream_id, data, end_stream=call.end_stream)
    if call.kind == "headers":
        return conn.send_headers(call.stream_id, REQUEST if client_side else RESPONSE)
    if call.kind == "ack":
        return conn.acknowledge_received_data(call.value, call.stream_id)
    if call.kind == "window":
        return conn.increment_flow_control_window(call.value or 1)
    if call.kind == "reset":
        return conn.reset_stream(call.stream_id)
    return conn.end_stream(call.stream_id)


def run(client_side: bool, buffered: bool, script: list[Any]) -> None:
    """``script`` after :func:`opening`, on both connections of a :func:`pair`."""
    stock, fast = pair(client_side, buffered)
    encoder = hpack.Encoder()
    first = b"" if client_side else PREFACE
    first += SettingsFrame(0).serialize()
    assert outcome(lambda: stock.receive_data(first)) == outcome(lambda: fast.receive_data(first))
    for step in [*opening(client_side), *script]:
        if isinstance(step, tuple):
            frames, cuts = step
            parts = []
            for frame in frames:
                if isinstance(frame, Headers):
                    parts.append(frame.encode(encoder, request=not client_side))
                else:
                    parts.append(frame.encode(encoder))
            data = b"".join(parts)
            points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
            for a, b in itertools.pairwise(points):
                chunk = data[a:b]
                expected = outcome(lambda c=chunk: stock.receive_data(c))  # type: ignore[misc]
                assert outcome(lambda c=chunk: fast.receive_data(c)) == expected  # type: ignore[misc]
        else:
            expected = outcome(lambda s=step: local(stock, s, client_side))  # type: ignore[misc]
            assert outcome(lambda s=step: local(fast, s, client_side)) == expected  # type: ignore[misc]
        assert state(fast) == state(stock)


@pytest.mark.parametrize("buffered", [True, False], ids=["mitmproxy", "plain_h2"])
@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
@settings(max_examples=400, deadline=None)
@given(script=st.lists(friendly_steps, max_size=25), tail=st.lists(steps, max_size=10))
def test_fast_path_agrees_with_h2(
    client_side: bool, buffered: bool, script: list[Any], tail: list[Any]
) -> None:
    """A well-behaved peer for a while (the fast path's case), then anything."""
    run(client_side, buffered, script + tail)


EDGES = {
    "over_content_length": [([Data(7, 35)], [])],
    "content_length_met": [([Data(7, 20), Data(7, 10, end_stream=True)], [])],
    "stream_window_below_connection_window": [
        Local("window", 0, 60_000),
        ([Data(1, 16_000)] * 5, [9, 16_009, 40_000]),
    ],
    "connection_window_exhausted": [([Data(1, 16_000), Data(5, 16_000)] * 3, [])],
    "inside_a_header_block": [([HalfHeaders(9), Data(1, 10)], [])],
    "over_the_frame_size": [([Data(1, 16_385), Data(1, 2**17 + 1)], [])],
    "after_end_stream": [([Data(1, 5, end_stream=True), Data(1, 5)], [])],
    "after_a_local_reset": [Local("reset", 1), ([Data(1, 5), Data(5, 5)], [])],
    "after_a_peer_reset": [([Control("rst", 1), Data(1, 5), Data(5, 5)], [])],
    "after_goaway": [([Control("goaway"), Data(1, 5)], [])],
    "padded": [([Data(1, 10, pad=3), Data(1, 10, pad=0)], [])],
    "invalid_padding": [([Garbage(bytes.fromhex("00000208000000000105ff"))], [])],
    "reserved_bit": [([Data(0x80000001, 10)], [])],
    "stream_zero": [([Data(0, 10)], [])],
    "empty": [([Data(1, 0), Data(1, 1)], [])],
    "undefined_flags": [([Data(1, 10, extra_flags=0x20), Data(1, 10, extra_flags=0x2)], [])],
    "byte_by_byte": [([Data(1, 3), Data(5, 2)], list(range(30)))],
    "send_beyond_windows": [Send(1, 70_000), Send(1, 70_000, memoryview=True)],
    "send_beyond_the_frame_size": [Send(1, 16_385), Send(1, 16_384)],
    "send_beyond_the_connection_window": [
        ([Control("initial_window", 0, 2**20)], []),
        *[Send(1, 16_000)] * 5,
    ],
    "send_beyond_the_stream_window": [
        ([Control("window", 0, 60_000)], []),
        *[Send(1, 16_000, memoryview=True)] * 5,
    ],
    "send_end_stream_and_empty": [Send(1, 0), Send(1, 10, end_stream=True), Send(1, 5)],
    "send_on_unknown_streams": [Send(9, 10), Send(2, 10)],
}


@pytest.mark.parametrize("buffered", [True, False], ids=["mitmproxy", "plain_h2"])
@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("edge", EDGES)
def test_edges_agree_with_h2(edge: str, client_side: bool, buffered: bool) -> None:
    """Each check the fast path makes before it takes a frame, at its boundary."""
    run(client_side, buffered, EDGES[edge])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400)))
def test_fast_path_agrees_with_h2_on_random_bytes(data: bytes, cuts: list[int]) -> None:
    """Random bytes on open streams: frames, fragments and garbage alike."""
    run(False, True, [([Garbage(data)], cuts)])
    run(False, False, [([Garbage(data)], cuts)])


def test_websocket_like_exchange_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived stream with many DATA frames each way: the fast connection neither parses
    nor serializes a ``DataFrame`` -- and still agrees with h2 on every byte."""
    counts = {"parsed": 0, "serialized": 0}
    parse_body, serialize = DataFrame.parse_body, DataFrame.serialize

    def counting_parse(self: DataFrame, data: memoryview) -> None:
        counts["parsed"] += 1
        parse_body(self, data)

    def counting_serialize(self: DataFrame) -> bytes:
        counts["serialized"] += 1
        return serialize(self)

    monkeypatch.setattr(DataFrame, "parse_body", counting_parse)
    monkeypatch.setattr(DataFrame, "serialize", counting_serialize)
    rng = random.Random(8441)
    sizes = [rng.choice([1, 125, 1024, 16_384, 65_536, 131_072]) for _ in range(200)]
    stock, fast = pair(False, True)
    client = h2.connection.H2Connection(config(True))
    client.initiate_connection()
    client.send_headers(1, REQUEST)
    opening = client.data_to_send()
    for conn in (stock, fast):
        conn.receive_data(opening)
        conn.send_headers(1, RESPONSE)
        conn.data_to_send()
    inbound = b"".join(Data(1, size).encode(hpack.Encoder()) for size in sizes if size <= 16_384)
    sent = []
    for conn in (stock, fast):
        before = dict(counts)
        events = conn.receive_data(inbound)
        assert [len(e.data) for e in events] == [s for s in sizes if s <= 16_384]
        conn.receive_data(WindowUpdateFrame(0, window_increment=2**30).serialize())
        conn.receive_data(WindowUpdateFrame(1, window_increment=2**30).serialize())
        for size in sizes:
            conn.send_data(1, bytes(size))
        sent.append(conn.data_to_send())
        done = {k: counts[k] - before[k] for k in counts}
        if conn is stock:
            assert done["parsed"] > 100 and done["serialized"] > 100
        else:
            assert done == {"parsed": 0, "serialized": 0}, "the fast path was not taken"
    assert sent[0] == sent[1]


def test_only_mitmproxys_connection_is_accelerated() -> None:
    """Only exactly mitmproxy's class: a subclass of it, or h2's plain connection, keeps h2's
    path (a subclass may override what the fast path skips)."""

    class Other(BufferedH2Connection):
        pass

    assert not h2fast.accelerate(Other(config(False)), BufferedH2Connection)
    assert not h2fast.accelerate(h2.connection.H2Connection(config(False)), BufferedH2Connection)
    conn = BufferedH2Connection(config(False))
    assert h2fast.accelerate(conn, BufferedH2Connection)
    assert type(conn) is h2fast.fast_class(BufferedH2Connection)


def test_a_real_logger_gets_h2s_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """mitmproxy's ``proxy_debug`` hands h2 a logger: then every frame is h2's (and logged)."""
    lines: list[str] = []

    class Logger(h2.config.DummyLogger):
        def debug(self, fmtstr: str, *args: Any) -> None:
            lines.append(fmtstr % args)

        def trace(self, fmtstr: str, *args: Any) -> None:
            lines.append(fmtstr % args)

    cfg = config(False)
    cfg.logger = Logger()
    conn = BufferedH2Connection(cfg)
    h2fast.accelerate(conn, BufferedH2Connection)
    conn.initiate_connection()
    encoder = hpack.Encoder()
    conn.receive_data(PREFACE + SettingsFrame(0).serialize() + Headers(1).encode(encoder))
    conn.send_headers(1, RESPONSE)
    lines.clear()
    conn.receive_data(Data(1, 10).encode(encoder))
    conn.send_data(1, b"x" * 10)
    assert any("Received frame: DataFrame" in line for line in lines)
    assert any("Send data on stream ID 1" in line for line in lines)


@pytest.mark.parametrize("fast_data", [True, False])
def test_mitmproxys_own_connections_take_the_fast_path_unless_switched_off(
    fast_data: bool,
) -> None:
    """``Http2Connection.__init__`` as patched, with ``h2ws_fast_data`` on and off."""
    from mitmproxy.proxy.layers.http._http2 import Http2Client, Http2Server

    from h2ws.addon import intercept
    from tests.layer_harness import make_context

    saved = (intercept.STATE.header_limits, intercept.STATE.fast_data)
    applied_before = bool(intercept.STATE.applied)
    intercept.apply()
    try:
        intercept.STATE.header_limits = HeaderLimits()
        intercept.STATE.fast_data = fast_data
        context = make_context()
        for layer in (Http2Server(context), Http2Client(context)):
            assert (type(layer.h2_conn) is h2fast.fast_class(BufferedH2Connection)) is fast_data
            assert isinstance(layer.h2_conn.incoming_buffer, h2limits.BoundedFrameBuffer)
    finally:
        intercept.STATE.header_limits, intercept.STATE.fast_data = saved
        if not applied_before:
            intercept.revert()
