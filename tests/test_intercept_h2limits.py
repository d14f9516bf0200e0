"""Issue 13 point 1, intercept mode: mitmproxy's own HTTP/2 connections keep the header limits.

``h2limits.bound`` is applied to mitmproxy's real ``BufferedH2Connection`` (hyper-h2 inside) as
intercept mode does; the bounded decoder is checked against ``hpack.Decoder``, which it
replaces.  The live proxy with a hostile client is ``tests/test_hostile_live.py``.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.errors
import h2.events
import h2.exceptions
import hpack
import pytest
from hpack.hpack import encode_integer
from hpack.struct import NeverIndexedHeaderTuple
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, SettingsFrame
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection

from h2ws.addon import h2limits
from h2ws.analysis.core.h2 import PREFACE
from h2ws.analysis.core.options import HeaderLimits
from tests.test_hostile_hpack import (
    REQUEST,
    MiB,
    continuation,
    encoded_blocks,
    headers_frame,
    hpack_decoder,
    literal_block,
)

DEFAULTS = HeaderLimits()


def proxy_side(limits: HeaderLimits | None = DEFAULTS) -> BufferedH2Connection:
    """mitmproxy's client-facing h2 connection (its ``Http2Server`` configuration)."""
    conn = BufferedH2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
    )
    if limits is not None:
        h2limits.bound(conn, limits)
    conn.initiate_connection()
    conn.data_to_send()
    return conn


def feed(conn: BufferedH2Connection, *frames: bytes) -> list[object]:
    """The events (or the exception) of the client's preface + SETTINGS + ``frames``."""
    data = PREFACE + SettingsFrame(0).serialize() + b"".join(frames)
    try:
        return list(conn.receive_data(data))
    except h2.exceptions.ProtocolError as exc:
        return [exc]


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each header block the bounded decoder was given, and the number of fields it
    returned, as ``[block bytes, fields, ...]``: the work a hostile block cost, instead of a
    timing (a loaded machine makes any time bound flaky)."""
    calls: list[int] = []
    real = h2limits.hpack_fast.decode_block

    def counting(table: Any, data: Any, **kwargs: Any) -> Any:
        calls.append(len(data))
        fields = real(table, data, **kwargs)
        calls.append(len(fields))
        return fields

    monkeypatch.setattr(h2limits.hpack_fast, "decode_block", counting)
    return calls


def goaway_code(conn: BufferedH2Connection) -> int | None:
    data = conn.data_to_send()
    codes = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        if isinstance(frame, GoAwayFrame):
            codes.append(frame.error_code)
        data = data[9 + length :]
    return codes[0] if codes else None


def size_update(size: int) -> bytes:
    """RFC 7541 §6.3: a dynamic table size update."""
    encoded = encode_integer(size, 5)
    encoded[0] |= 0x20
    return bytes(encoded)


def big_block(size: int, frame_size: int = 2**17) -> list[bytes]:
    """A HEADERS + CONTINUATION block of ``size`` bytes of small literals."""
    block = literal_block(size)
    chunks = [block[i : i + frame_size] for i in range(0, len(block), frame_size)]
    last = len(chunks) - 1
    return [
        headers_frame(1, chunks[0], end_headers=last == 0),
        *(continuation(1, c, i == last) for i, c in enumerate(chunks[1:], 1)),
    ]


# ---------------------------------------------------------------- agreement with hpack


@settings(max_examples=300, deadline=None)
@given(blocks=encoded_blocks)
def test_bounded_decoder_agrees_with_hpack_on_valid_blocks(
    blocks: list[tuple[list[tuple[str, bytes, bool]], bool, int | None]],
) -> None:
    encoder = hpack.Encoder()
    theirs = hpack.Decoder()
    ours = h2limits.BoundedDecoder(HeaderLimits())
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        tuples = [
            NeverIndexedHeaderTuple(n.encode(), v) if never else (n.encode(), v)
            for n, v, never in fields
        ]
        block = encoder.encode(tuples, huffman=huffman)
        assert ours.decode(block, raw=True) == theirs.decode(block, raw=True)


@settings(max_examples=1500, deadline=None)
@given(blocks=st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_bounded_decoder_agrees_with_hpack_on_random_bytes(blocks: list[bytes]) -> None:
    """Same headers where hpack decodes; an hpack error (which h2 maps) where it fails."""
    theirs = hpack_decoder()
    ours = h2limits.BoundedDecoder(HeaderLimits(max_list_bytes=2**31, max_table_bytes=2**31))
    ours.max_header_list_size = theirs.max_header_list_size
    ours.max_allowed_table_size = theirs.max_allowed_table_size
    for block in blocks:
        try:
            expected = theirs.decode(block, raw=True)
        except hpack.HPACKError:
            with pytest.raises(hpack.HPACKError):
                ours.decode(block, raw=True)
            return  # h2 ends the connection at the first error
        assert ours.decode(block, raw=True) == expected


def test_bounded_decoder_keeps_the_table_size_h2_allows() -> None:
    decoder = h2limits.BoundedDecoder(HeaderLimits())
    with pytest.raises(hpack.InvalidTableSizeError):
        decoder.decode(size_update(4097))  # h2 allows 4096
    capped = h2limits.BoundedDecoder(HeaderLimits(max_table_bytes=1024))
    capped.max_allowed_table_size = 2**20  # advertised by h2: the cap still applies
    with pytest.raises(hpack.InvalidTableSizeError) as exc:
        capped.decode(size_update(2048))
    assert "h2ws_max_hpack_table_bytes" in str(exc.value)


# ---------------------------------------------------------------- the DATA frame repr fast path


def data_frame(
    sid: int, data: bytes, flags: frozenset[str], pad: int, cls: type[DataFrame] = DataFrame
) -> DataFrame:
    frame = cls(sid, data)
    for flag in flags:
        frame.flags.add(flag)
    frame.pad_length = pad
    return frame


@settings(max_examples=500, deadline=None)
@given(
    sid=st.integers(1, 2**31 - 1),
    data=st.binary(max_size=40) | st.binary(min_size=1000, max_size=20_000),
    flags=st.frozensets(st.sampled_from(["END_STREAM", "PADDED"])),
    pad=st.integers(0, 255),
)
def test_quick_repr_is_hyperframes_repr(
    sid: int, data: bytes, flags: frozenset[str], pad: int
) -> None:
    """The fast path of ``h2limits.QuickReprDataFrame`` against hyperframe's own repr."""
    quick = data_frame(sid, data, flags, pad, h2limits.QuickReprDataFrame)
    assert repr(quick) == repr(data_frame(sid, data, flags, pad))


class TraceLines(h2.config.DummyLogger):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def trace(self, fmtstr: str, *args: object) -> None:
        self.lines.append(fmtstr % args)


def test_bound_connection_receives_data_as_h2_does() -> None:
    """Events and trace lines of DATA frames (plain, padded, empty, ending the stream) are the
    same on a bound connection as on h2's own, and DATA went through the quick repr."""
    frames = [headers_frame(1, hpack.Encoder().encode(REQUEST), end_stream=False)]
    data_frames = [
        (b"x" * 5, frozenset(), 0),
        (bytes(range(256)) * 60, frozenset(), 0),
        (b"padded", frozenset({"PADDED"}), 7),
        (b"", frozenset({"END_STREAM"}), 0),
    ]
    frames += [data_frame(1, data, flags, pad).serialize() for data, flags, pad in data_frames]
    results = []
    for limits in (None, DEFAULTS):
        conn = proxy_side(limits)
        conn.config.logger = logger = TraceLines()
        events = feed(conn, *frames)
        results.append((repr(events), logger.lines))
    assert results[0] == results[1]
    assert sum("DataFrame(stream_id=1" in line for line in results[1][1]) == 4
    buffer = h2limits.BoundedFrameBuffer(DEFAULTS)
    buffer.max_frame_size = 2**14
    buffer.add_data(frames[1])
    assert type(next(buffer)) is h2limits.QuickReprDataFrame


def test_data_inside_a_header_block_is_still_refused() -> None:
    request = hpack.Encoder().encode(REQUEST)
    events = feed(
        proxy_side(),
        headers_frame(1, request[:3], end_headers=False),
        data_frame(1, b"x", frozenset(), 0).serialize(),
    )
    assert isinstance(events[-1], h2.exceptions.ProtocolError), events
    assert "Invalid frame during header block" in str(events[-1])


# ---------------------------------------------------------------- mitmproxy's h2 connection


def test_normal_request_decodes_and_the_list_limit_is_advertised() -> None:
    conn = proxy_side(HeaderLimits(max_list_bytes=100_000))
    assert conn.local_settings.max_header_list_size == 100_000
    events = feed(conn, headers_frame(1, hpack.Encoder().encode(REQUEST)))
    received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert received and received[0].headers == [(n.encode(), v.encode()) for n, v in REQUEST]


@pytest.mark.parametrize("size", [1 * MiB, 8 * MiB - 2**17])
def test_big_block_is_refused_before_decoding(size: int, decoded: list[int]) -> None:
    """Stock h2 spends ~0.2 s (1 MiB) and ~1.9 s (8 MiB) of CPU decoding these blocks; here no
    byte of them reaches the decoder, and the gathered fragments are dropped."""
    conn = proxy_side()
    events = feed(conn, *big_block(size))
    assert isinstance(events[-1], h2limits.HeaderBlockLimitError), events
    assert "h2ws_max_header_block_bytes" in str(events[-1])
    assert goaway_code(conn) == h2.errors.ErrorCodes.COMPRESSION_ERROR
    assert decoded == []
    assert conn.incoming_buffer._headers_buffer == []


def test_block_within_the_size_but_over_the_list_limit_stops_early(decoded: list[int]) -> None:
    conn = proxy_side()
    events = feed(conn, *big_block(250 * 2**10, 2**14))
    assert isinstance(events[-1], h2.exceptions.DenialOfServiceError), events
    assert "h2ws_max_header_list_bytes" in str(events[-1])
    # decoding stopped at the limit (the whole block would be ~1 MB of fields)
    over = int(str(events[-1]).split("(")[1].split()[0])
    assert HeaderLimits().max_list_bytes < over < HeaderLimits().max_list_bytes + 100, over
    assert goaway_code(conn) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert len(decoded) == 1  # one block, and it raised: no fields list was built


def test_continuation_count_is_the_configured_one() -> None:
    """h2's fixed 64 gives way to ``h2ws_max_continuations`` (the core's limit, too)."""
    request = hpack.Encoder().encode(REQUEST)
    tiny = [headers_frame(1, request[:1], end_headers=False)] + [
        continuation(1, request[i : i + 1], i == len(request) - 1) for i in range(1, len(request))
    ]
    events = feed(proxy_side(HeaderLimits(max_continuations=len(request) - 1)), *tiny)
    assert any(isinstance(e, h2.events.RequestReceived) for e in events), events
    conn = proxy_side(HeaderLimits(max_continuations=len(request) - 2))
    events = feed(conn, *tiny)
    assert isinstance(events[-1], h2limits.HeaderBlockLimitError), events
    assert "h2ws_max_continuations" in str(events[-1])
    flood = [headers_frame(1, b"", end_headers=False)] + [continuation(1, b"", False)] * 100_000
    conn = proxy_side()
    events = feed(conn, *flood)
    assert isinstance(events[-1], h2limits.HeaderBlockLimitError), events
    assert "h2ws_max_continuations" in str(events[-1])
    assert conn.incoming_buffer._headers_buffer == []  # the gathered frames are dropped


def test_table_size_bomb_is_a_decoding_error() -> None:
    """A size update to 2**30, above the 4096 this side allows (RFC 7541 §4.2)."""
    bomb = size_update(2**30)
    conn = proxy_side()
    events = feed(conn, headers_frame(1, bomb + hpack.Encoder().encode(REQUEST)))
    assert isinstance(events[-1], h2.exceptions.ProtocolError), events
    assert "h2ws_max_hpack_table_bytes" in str(events[-1])
    assert goaway_code(conn) is not None


def test_unbound_connection_is_h2s_own() -> None:
    """Without ``bound`` (observe mode, plain mitmproxy): h2's limits (64 KiB list)."""
    conn = proxy_side(None)
    assert conn.local_settings.max_header_list_size == 2**16
    assert not isinstance(conn.incoming_buffer, h2limits.BoundedFrameBuffer)


@pytest.mark.parametrize("intercept_mode", [True, False])
def test_mitmproxys_own_connections_get_the_limits_in_both_modes(intercept_mode: bool) -> None:
    """``Http2Connection.__init__`` as patched: every HTTP/2 connection mitmproxy terminates
    is bounded once the addon set its limits, in observe mode too (where mitmproxy still
    terminates the legs it does not relay); before that, h2's own."""
    from mitmproxy.proxy.layers.http._http2 import Http2Server

    from h2ws.addon import intercept
    from tests.layer_harness import make_context

    saved = (intercept.STATE.enabled, intercept.STATE.header_limits)
    applied_before = bool(intercept.STATE.applied)
    intercept.apply()
    try:
        intercept.STATE.enabled = intercept_mode
        intercept.STATE.header_limits = None
        context = make_context()
        plain = Http2Server(context)
        assert not isinstance(plain.h2_conn.incoming_buffer, h2limits.BoundedFrameBuffer)
        intercept.STATE.header_limits = DEFAULTS
        bounded = Http2Server(context)
        assert isinstance(bounded.h2_conn.incoming_buffer, h2limits.BoundedFrameBuffer)
        expected = DEFAULTS.max_list_bytes
        assert bounded.h2_conn.local_settings.max_header_list_size == expected
    finally:
        intercept.STATE.enabled, intercept.STATE.header_limits = saved
        if not applied_before:
            intercept.revert()
