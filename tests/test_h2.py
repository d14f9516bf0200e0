"""HTTP/2 + RFC 8441 decoding rules, each with a case that must fail when the rule is broken."""

from __future__ import annotations

import struct

import hpack
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, SettingsFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws.analysis.core.chunks import ConnectionInfo
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.h2 import PREFACE, H2Decoder
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import PayloadPolicy
from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    FrameRecord,
    MessageRecord,
    Record,
    StreamRecord,
)
from h2ws.testkit.h2pair import H2Pair, ws_peer

FULL = DecodeOptions(payload=PayloadPolicy(mode="full"))


def decode(
    chunks: list[tuple[str, bytes, float]], cause: str = "fin", options: DecodeOptions = FULL
) -> list[Record]:
    decoder = ConnectionDecoder(
        ConnectionInfo("t:0", "127.0.0.1", 40000, "127.0.0.1", 8080), options
    )
    out: list[Record] = []
    for direction, data, ts in chunks:
        out += decoder.feed(direction, data, ts)  # type: ignore[arg-type]
    out += decoder.close(chunks[-1][2] if chunks else None, cause)
    return out


def of(records: list[Record], cls: type) -> list:  # type: ignore[type-arg]
    return [r for r in records if isinstance(r, cls)]


def codes(records: list[Record]) -> set[str]:
    return {r.code for r in of(records, DiagnosticRecord)}


def conn(records: list[Record]) -> ConnectionRecord:
    (c,) = of(records, ConnectionRecord)
    return c


def stream(records: list[Record], sid: int) -> StreamRecord:
    (s,) = [r for r in of(records, StreamRecord) if r.stream_id == sid]
    return s


def websocket_exchange(pair: H2Pair, sid: int, messages: list[tuple[str, bytes]]) -> None:
    """Each (direction, text) as one WebSocket message; frames split across DATA frames."""
    peers = {"c2s": ws_peer("c2s"), "s2c": ws_peer("s2c")}
    for direction, payload in messages:
        wire = peers[direction].send_data(payload, fin=True)
        # Split every WebSocket frame over two DATA frames, and glue the tail to the next.
        half = max(1, len(wire) // 2)
        pair.send(direction, sid, wire[:half])
        pair.send(direction, sid, wire[half:])


def test_settings_enable_connect_protocol_recorded_with_time() -> None:
    pair = H2Pair()
    records = decode(pair.chunks)
    c = conn(records)
    assert c.http_version == "h2c"
    assert c.enable_connect_protocol is True
    server_settings_ts = next(ts for d, _, ts in pair.chunks if d == "s2c")
    assert c.ts_enable_connect_protocol == server_settings_ts
    assert '"ENABLE_CONNECT_PROTOCOL":1' in (c.settings_s2c or "")


def test_without_the_setting_it_is_false() -> None:
    records = decode(H2Pair(enable_connect_protocol=False).chunks)
    assert conn(records).enable_connect_protocol is False


def test_websocket_stream_messages_straddling_data_frames() -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    msgs = [("c2s", b"hello"), ("s2c", b"hello"), ("c2s", b"x" * 70000), ("s2c", b"y" * 300)]
    websocket_exchange(pair, sid, msgs)
    records = decode(pair.chunks)
    s = stream(records, sid)
    assert (s.kind, s.method, s.protocol, s.status, s.ws_accepted) == (
        "websocket",
        "CONNECT",
        "websocket",
        200,
        True,
    )
    got = [(m.direction, m.payload) for m in of(records, MessageRecord)]
    assert got == msgs
    assert [m.index for m in of(records, MessageRecord) if m.direction == "c2s"] == [0, 1]
    assert s.messages_c2s == 2 and s.messages_s2c == 2
    assert conn(records).websockets == 1


def test_websocket_close_then_reset_is_classified() -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    client, server = ws_peer("c2s"), ws_peer("s2c")
    from wsproto.frame_protocol import CloseReason

    pair.send("c2s", sid, client.close(CloseReason.NORMAL_CLOSURE, "bye"))
    pair.send("s2c", sid, server.close(CloseReason.NORMAL_CLOSURE, "bye"))
    pair.client.reset_stream(sid, 8)  # CANCEL, as Node does after hypercorn's close
    pair.flush()
    records = decode(pair.chunks)
    s = stream(records, sid)
    assert s.close_cause == "ws_close:1000"
    assert s.stream_end == "rst_stream:CANCEL"
    assert s.ws_close_by == "c2s"
    closes = [m for m in of(records, MessageRecord) if m.opcode == "close"]
    assert [(m.close_code, m.close_reason) for m in closes] == [(1000, "bye"), (1000, "bye")]


def test_rejected_extended_connect_is_a_stream_row_without_messages() -> None:
    pair = H2Pair()
    sid = pair.open_websocket(status=403)
    records = decode(pair.chunks)
    s = stream(records, sid)
    assert s.kind == "websocket" and s.status == 403 and s.ws_accepted is False
    assert "rfc8441_rejected" in codes(records)
    assert not of(records, MessageRecord)


def test_ordinary_get_and_plain_connect_kinds() -> None:
    pair = H2Pair()
    get = pair.get("/hello", body=b"abc")
    records = decode(pair.chunks)
    s = stream(records, get)
    assert (s.kind, s.method, s.path, s.status, s.bytes_s2c, s.stream_end) == (
        "http",
        "GET",
        "/hello",
        200,
        3,
        "end_stream",
    )


def test_padding_is_excluded_from_data_length() -> None:
    pair = H2Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        sid, [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/")]
    )
    pair.client.send_data(sid, b"12345", pad_length=10, end_stream=True)
    pair.flush()
    records = decode(pair.chunks)
    (data,) = [f for f in of(records, FrameRecord) if f.type == "DATA"]
    assert data.data_length == 5 and data.length == 16 and "PADDED" in data.flags
    assert stream(records, sid).bytes_c2s == 5


def test_continuation_frames_reassemble_a_header_block() -> None:
    pair = H2Pair()
    sid = pair.client.get_next_available_stream_id()
    big = "v" * 40000  # more than the 16384-byte default frame size
    pair.client.send_headers(
        sid,
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/big"),
            ("x-big", big),
        ],
        end_stream=True,
    )
    pair.flush()
    records = decode(pair.chunks)
    types = [f.type for f in of(records, FrameRecord) if f.direction == "c2s"]
    assert "CONTINUATION" in types
    assert stream(records, sid).path == "/big"
    assert big in (stream(records, sid).request_headers or "")


def test_credentials_are_redacted() -> None:
    pair = H2Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        sid,
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/"),
            ("cookie", "secret=1"),
            ("authorization", "Bearer xyz"),
        ],
        end_stream=True,
    )
    pair.flush()
    headers = stream(decode(pair.chunks), sid).request_headers or ""
    assert "secret" not in headers and "xyz" not in headers
    assert "<redacted 8 bytes>" in headers


def test_rst_stream_code_and_goaway() -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    pair.server.reset_stream(sid, 2)  # INTERNAL_ERROR
    pair.flush()
    sid2 = pair.open_websocket()
    pair.server.close_connection(error_code=0, last_stream_id=sid2)
    pair.flush()
    records = decode(pair.chunks)
    assert stream(records, sid).close_cause == "rst_stream:INTERNAL_ERROR"
    assert stream(records, sid2).stream_end == "goaway"
    assert conn(records).goaway_code == "NO_ERROR"


def test_capture_ended_marks_open_streams_incomplete() -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    records = decode(pair.chunks, cause="capture_ended")
    assert stream(records, sid).close_cause == "incomplete"


def test_push_promise_opens_a_push_stream() -> None:
    pair = H2Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        sid,
        [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
        end_stream=True,
    )
    pair.flush()
    pair.server.push_stream(
        sid, 2, [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/p.js")]
    )
    pair.server.send_headers(2, [(":status", "200")])
    pair.server.send_data(2, b"js", end_stream=True)
    pair.server.send_headers(sid, [(":status", "200")], end_stream=True)
    pair.flush()
    records = decode(pair.chunks)
    pushed = stream(records, 2)
    assert (pushed.kind, pushed.path, pushed.status, pushed.stream_end) == (
        "push",
        "/p.js",
        200,
        "end_stream",
    )


# -- hand-built frames for what a strict library will not write ----------------------------


def frames(*fs: object) -> bytes:
    return b"".join(f.serialize() for f in fs)  # type: ignore[attr-defined]


def request_block(headers: list[tuple[str, str]], encoder: hpack.Encoder | None = None) -> bytes:
    return (encoder or hpack.Encoder()).encode(headers)


def server_settings(ecp: int | None = 1) -> bytes:
    f = SettingsFrame(0)
    if ecp is not None:
        f.settings = {0x8: ecp}
    return f.serialize()


def test_extended_connect_before_the_setting_is_flagged() -> None:
    h = HeadersFrame(1)
    h.data = request_block(
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/ws"),
            ("sec-websocket-version", "13"),
        ]
    )
    h.flags.add("END_HEADERS")
    records = decode(
        [
            ("c2s", PREFACE + SettingsFrame(0).serialize() + h.serialize(), 1.0),
            ("s2c", server_settings(None), 2.0),
        ]
    )
    assert "rfc8441_setting_not_seen" in codes(records)
    # ...and the same request after the setting is not.
    records = decode(
        [
            ("s2c", server_settings(1), 0.5),
            ("c2s", PREFACE + SettingsFrame(0).serialize() + h.serialize(), 1.0),
        ]
    )
    assert "rfc8441_setting_not_seen" not in codes(records)


def test_protocol_on_non_connect_and_missing_path_are_errors() -> None:
    bad = HeadersFrame(1)
    bad.data = request_block([(":method", "GET"), (":protocol", "websocket"), (":path", "/")])
    bad.flags.add("END_HEADERS")
    enc = hpack.Encoder()
    bad.data = request_block([(":method", "GET"), (":protocol", "websocket"), (":path", "/")], enc)
    nopath = HeadersFrame(3)
    nopath.data = request_block(
        [(":method", "CONNECT"), (":protocol", "websocket"), (":authority", "a")], enc
    )
    nopath.flags.add("END_HEADERS")
    records = decode(
        [
            ("s2c", server_settings(1), 0.5),
            ("c2s", PREFACE + frames(SettingsFrame(0), bad, nopath), 1.0),
        ]
    )
    assert {"rfc8441_protocol_without_connect", "rfc8441_missing_pseudo_header"} <= codes(records)


def test_setting_withdrawn_is_an_error() -> None:
    records = decode(
        [
            ("c2s", PREFACE + SettingsFrame(0).serialize(), 0.1),
            ("s2c", server_settings(1) + server_settings(0), 0.2),
        ]
    )
    assert "rfc8441_setting_withdrawn" in codes(records)
    assert conn(records).enable_connect_protocol is False


def test_hpack_error_stops_one_direction_only() -> None:
    h = HeadersFrame(1)
    h.data = b"\xff\xff\xff\xff\xff"  # an index far beyond any table
    h.flags.add("END_HEADERS")
    resp_ok = server_settings(1)
    records = decode([("c2s", PREFACE + frames(SettingsFrame(0), h), 0.1), ("s2c", resp_ok, 0.2)])
    assert "h2_hpack_error" in codes(records)
    assert conn(records).enable_connect_protocol is True  # the other direction went on


def test_malformed_frame_is_a_diagnostic() -> None:
    bad_settings = struct.pack(">I", 5)[1:] + bytes([0x4, 0, 0, 0, 0, 0]) + b"\x00" * 5
    records = decode([("c2s", PREFACE + bad_settings, 0.1)])
    assert "h2_malformed_frame" in codes(records)
    assert conn(records).error


def test_gap_marks_streams_incomplete() -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    decoder = ConnectionDecoder(ConnectionInfo("t:0"), FULL)
    for d, data, ts in pair.chunks:
        decoder.feed(d, data, ts)  # type: ignore[arg-type]
    out = decoder.gap("c2s", 9.0, 100)
    out += decoder.feed("c2s", b"\x00" * 50, 9.1)
    out += decoder.close(10.0, "fin")
    assert "h2_gap" in codes(out)
    assert stream(out, sid).close_cause == "incomplete"


def test_data_frame_on_the_wire_for_unknown_stream_is_tolerated() -> None:
    d = DataFrame(7)
    d.data = b"abc"
    g = GoAwayFrame(0)
    records = decode([("c2s", PREFACE + frames(SettingsFrame(0), d, g), 0.1)])
    assert [f.type for f in of(records, FrameRecord)] == ["SETTINGS", "DATA", "GOAWAY"]


# -- properties --------------------------------------------------------------------------------


def _reference_pair() -> list[tuple[str, bytes, float]]:
    pair = H2Pair()
    pair.get("/a")
    sid = pair.open_websocket()
    websocket_exchange(pair, sid, [("c2s", b"ping?"), ("s2c", b"pong!"), ("c2s", b"z" * 5000)])
    pair.get("/b", body=b"q" * 20000)
    return pair.chunks


REFERENCE = _reference_pair()


def _rechunk(chunks: list[tuple[str, bytes, float]], cuts: list[int]) -> list:  # type: ignore[type-arg]
    out = []
    for i, (d, data, ts) in enumerate(chunks):
        cut = cuts[i % len(cuts)] % (len(data) + 1)
        out += [(d, data[:cut], ts), (d, data[cut:], ts)]
    return out


def _comparable(records: list[Record]) -> list[tuple]:  # type: ignore[type-arg]
    return [tuple(sorted(vars(r).items())) if hasattr(r, "__dict__") else repr(r) for r in records]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=70000), min_size=1, max_size=8))
def test_any_chunking_gives_identical_records(cuts: list[int]) -> None:
    assert repr(decode(_rechunk(REFERENCE, cuts))) == repr(decode(REFERENCE))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_random_bytes_after_the_preface_never_raise(c2s: bytes, s2c: bytes) -> None:
    records = decode([("c2s", PREFACE + c2s, 1.0), ("s2c", s2c, 1.1)])
    # The decoder turns its own exceptions into *_internal_error rows: there must be none.
    assert not {c for c in codes(records) if c.endswith("_internal_error")}
    assert of(records, ConnectionRecord)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_streams_never_raise(data: st.DataObject) -> None:
    chunks = list(REFERENCE)
    i = data.draw(st.integers(0, len(chunks) - 1))
    d, raw, ts = chunks[i]
    pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
    raw = raw[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + raw[pos + 1 :]
    chunks[i] = (d, raw, ts)
    records = decode(chunks)
    assert not {c for c in codes(records) if c.endswith("_internal_error")}
    assert of(records, ConnectionRecord)


def _both_ways(chunks: list[tuple[str, bytes, float]], cause: str = "fin") -> list[str]:
    """Records of the fast frame reader and of hyperframe alone, which must be the same."""
    results = []
    for fast in (True, False):
        h2 = H2Decoder("t:0", FULL, fast_path=fast)
        out: list[Record] = []
        for d, data, ts in chunks:
            out += h2.feed(d, data, ts)  # type: ignore[arg-type]
        out += h2.close(chunks[-1][2], cause)
        results.append([repr(r) for r in out])
    assert results[0] == results[1]
    return results[0]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fast_frame_reader_agrees_with_hyperframe_on_mutated_streams(data: st.DataObject) -> None:
    chunks = list(REFERENCE)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(chunks) - 1))
        d, raw, ts = chunks[i]
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        raw = raw[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + raw[pos + 1 :]
        chunks[i] = (d, raw, ts)
    cuts = data.draw(st.lists(st.integers(0, 70000), min_size=1, max_size=8))
    _both_ways(_rechunk(chunks, cuts))


def _frame(type_: int, flags: int, sid: int, body: bytes) -> bytes:
    return len(body).to_bytes(3, "big") + bytes([type_, flags]) + sid.to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "frames",
    [
        [_frame(0x0, 0x1, 0, b"data on stream 0")],
        [_frame(0x0, 0x8, 1, b"\x03abc\0\0\0")],  # padded: hyperframe's
        [_frame(0x0, 0x8, 1, b"\x09abc")],  # padding longer than the frame
        [_frame(0x8, 0, 0, (0).to_bytes(4, "big"))],  # increment 0
        [_frame(0x8, 0, 3, (2**31).to_bytes(4, "big"))],  # increment too large
        [_frame(0x8, 0, 3, b"\0\0\0\1\0")],  # 5-byte WINDOW_UPDATE
        [_frame(0x8, 0xFF, 2**31 + 3, (7).to_bytes(4, "big"))],  # flags and reserved bit
        [_frame(0x0, 0xF7, 2**31 + 1, b"reserved bit, undefined flags, END_STREAM")],
        # DATA and WINDOW_UPDATE inside a header block
        [_frame(0x1, 0x0, 1, b"\x82"), _frame(0x0, 0x0, 1, b"x")],
        [_frame(0x1, 0x0, 1, b"\x82"), _frame(0x8, 0x0, 1, (1).to_bytes(4, "big"))],
    ],
)
def test_fast_frame_reader_edge_cases_agree_with_hyperframe(frames: list[bytes]) -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    assert sid == 1
    chunks = [*pair.chunks, *[("c2s", f, pair.tick()) for f in frames]]
    _both_ways(chunks)
    _both_ways([(d, data, ts) for d, data, ts in chunks if d == "c2s"], "capture_ended")


# ------------------------------------------------------------------ streams cut short


def _cut_mid_message(goaway: bool, rst: bool = False) -> tuple[H2Pair, int]:
    """A WebSocket whose server sent one whole message, then 300 bytes of a 1000-byte one."""
    pair = H2Pair()
    sid = pair.open_websocket()
    server = ws_peer("s2c")
    pair.send("s2c", sid, server.send_data(b"whole", fin=True))
    pair.send("s2c", sid, server.send_data(b"x" * 1000, fin=True)[:300])
    if rst:
        pair.server.reset_stream(sid, 8)  # CANCEL
        pair.flush()
    if goaway:
        pair.server.close_connection(error_code=0, last_stream_id=sid)
        pair.flush()
    return pair, sid


def _assert_cut(records: list[Record], sid: int, stream_end: str) -> None:
    s = stream(records, sid)
    # stream_end is what ended the transport; the message cut short is the close_cause.
    assert (s.stream_end, s.close_cause) == (stream_end, "incomplete")
    assert "inside a binary message" in (s.error or "")
    (diag,) = of(records, DiagnosticRecord)
    assert (diag.code, diag.severity, diag.stream_id) == ("ws_incomplete_message", "warning", sid)
    assert [m.payload for m in of(records, MessageRecord)] == [b"whole"]
    assert s.messages_s2c == 1


def test_message_cut_by_goaway_keeps_the_cause_and_is_incomplete() -> None:
    pair, sid = _cut_mid_message(goaway=True)
    _assert_cut(decode(pair.chunks, cause="fin"), sid, "goaway")


def test_message_cut_by_the_connection_closing_keeps_the_cause() -> None:
    pair, sid = _cut_mid_message(goaway=False)
    for cause in ("fin", "rst", "closed", "error"):
        _assert_cut(decode(pair.chunks, cause=cause), sid, "connection_closed")


def test_message_cut_by_rst_stream_keeps_the_cause() -> None:
    pair, sid = _cut_mid_message(goaway=False, rst=True)
    _assert_cut(decode(pair.chunks), sid, "rst_stream:CANCEL")


def test_capture_ending_after_goaway_is_incomplete_not_goaway() -> None:
    # The connection outlived the capture: nothing is known to have ended the stream.
    pair, sid = _cut_mid_message(goaway=True)
    _assert_cut(decode(pair.chunks, cause="capture_ended"), sid, "incomplete")


def test_stream_open_at_goaway_without_a_cut_message_ends_goaway() -> None:
    pair = H2Pair()
    sid = pair.open_websocket()
    pair.send("s2c", sid, ws_peer("s2c").send_data(b"whole", fin=True))
    pair.server.close_connection(error_code=0, last_stream_id=sid)
    pair.flush()
    records = decode(pair.chunks)
    s = stream(records, sid)
    assert (s.stream_end, s.close_cause, s.error) == ("goaway", "goaway", None)
    assert not of(records, DiagnosticRecord)


def test_open_streams_are_the_live_rows_until_the_stream_ends() -> None:
    pair = H2Pair()
    get = pair.get("/done")
    ws = pair.open_websocket("/ws/open")
    decoder = ConnectionDecoder(ConnectionInfo("t:0"), FULL)
    assert decoder.open_streams() == []
    emitted: list[Record] = []
    for direction, data, ts in pair.chunks:
        emitted += decoder.feed(direction, data, ts)  # type: ignore[arg-type]
    (open_ws,) = decoder.open_streams()
    assert (open_ws.stream_id, open_ws.kind, open_ws.status, open_ws.path) == (
        ws,
        "websocket",
        200,
        "/ws/open",
    )
    assert stream(emitted, get).stream_end == "end_stream"  # ended, so no longer open
    closed = decoder.close(pair.ts, "fin")
    assert decoder.open_streams() == []
    assert stream(closed, ws) is open_ws  # the very row, emitted when the stream ended


def test_open_streams_of_http1_and_undecided_connections_are_empty() -> None:
    decoder = ConnectionDecoder(ConnectionInfo("t:0"), FULL)
    decoder.feed("c2s", b"GET / HTTP/1.1\r\n", 1.0)
    assert decoder.open_streams() == []
