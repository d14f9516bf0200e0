"""WebSocket messages (RFC 6455 + RFC 7692): each rule with a case that fails when it is broken."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import struct
import tracemalloc
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from h2ws.analysis.core.websocket import (
    DeflateParams,
    MessageDecoder,
    PayloadPolicy,
    negotiated_deflate,
)
from h2ws.analysis.records import DiagnosticRecord, MessageRecord

Rec = MessageRecord | DiagnosticRecord
FULL = PayloadPolicy(mode="full")
BOTH_PATHS = pytest.mark.parametrize("fast", [True, False], ids=["fast", "wsproto"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decoder(direction: str = "s2c", **kw: object) -> MessageDecoder:
    kw.setdefault("payload", FULL)
    return MessageDecoder(
        conn_id="t:0",
        stream_id=1,
        exchange=None,
        direction=direction,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def decode(
    chunks: Iterable[bytes], direction: str = "s2c", finish: bool = True, **kw: object
) -> list[Rec]:
    """Feed ``chunks`` at ts 1, 2, 3, ...; finish at the last ts."""
    dec = decoder(direction, **kw)
    out: list[Rec] = []
    ts = 0.0
    for ts, chunk in enumerate(chunks, 1):
        out += dec.feed(chunk, float(ts))
    if finish:
        out += dec.finish(float(ts))
    return out


def msgs(records: Sequence[Rec]) -> list[MessageRecord]:
    return [r for r in records if isinstance(r, MessageRecord)]


def diags(records: Sequence[Rec]) -> list[DiagnosticRecord]:
    return [r for r in records if isinstance(r, DiagnosticRecord)]


def codes(records: Sequence[Rec]) -> list[str]:
    return [d.code for d in diags(records)]


def no_ts(records: Sequence[Rec]) -> list[Rec]:
    """Records with the timestamps blanked, to compare different chunkings."""
    return [
        r._replace(ts_first=None, ts_last=None)
        if isinstance(r, MessageRecord)
        else replace(r, ts=None)
        for r in records
    ]


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """Hand-built frame; ``length_bytes`` forces a 2- or 8-byte length field (even non-minimal)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if length_bytes == 2 or (length_bytes is None and 126 <= n < 65536):
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    elif length_bytes == 8 or (length_bytes is None and n >= 65536):
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    else:
        head = bytes([b0, mbit | n])
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def masked(opcode: int, payload: bytes = b"", **kw: object) -> bytes:
    return frame(opcode, payload, mask=b"\x37\xfa\x21\x3d", **kw)  # type: ignore[arg-type]


def sender(direction: str, deflate: str | None = None) -> FrameProtocol:
    """wsproto as the peer that sends ``direction``; ``deflate`` is the negotiated parameters."""
    exts = []
    if deflate is not None:
        ext = PerMessageDeflate()
        ext.finalize(deflate)
        exts.append(ext)
    return FrameProtocol(client=direction == "c2s", extensions=exts)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- RFC 6455 §5.7


@BOTH_PATHS
def test_rfc6455_single_unmasked_text(fast: bool) -> None:
    (m,) = decode([bytes.fromhex("810548656c6c6f")], "s2c", fast_path=fast)
    assert isinstance(m, MessageRecord)
    assert (m.opcode, m.payload, m.length, m.wire_length, m.fragments) == (
        "text",
        b"Hello",
        5,
        5,
        1,
    )
    assert (m.compressed, m.sha256, m.index, m.direction) == (False, sha(b"Hello"), 0, "s2c")
    assert (m.conn_id, m.stream_id, m.exchange) == ("t:0", 1, None)


@BOTH_PATHS
def test_rfc6455_single_masked_text(fast: bool) -> None:
    (m,) = msgs(decode([bytes.fromhex("818537fa213d7f9f4d5158")], "c2s", fast_path=fast))
    assert (m.opcode, m.payload, m.wire_length) == ("text", b"Hello", 5)


@BOTH_PATHS
def test_rfc6455_fragmented_unmasked_text(fast: bool) -> None:
    (m,) = decode([bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")], fast_path=fast)
    assert isinstance(m, MessageRecord)
    assert (m.opcode, m.payload, m.fragments, m.wire_length) == ("text", b"Hello", 2, 5)


def test_rfc6455_ping_and_masked_pong() -> None:
    (ping,) = msgs(decode([bytes.fromhex("890548656c6c6f")], "s2c"))
    (pong,) = msgs(decode([bytes.fromhex("8a8537fa213d7f9f4d5158")], "c2s"))
    assert (ping.opcode, ping.payload, ping.sha256) == ("ping", b"Hello", sha(b"Hello"))
    assert (pong.opcode, pong.payload) == ("pong", b"Hello")
    assert ping.close_code is None and pong.close_reason is None


@BOTH_PATHS
@pytest.mark.parametrize("direction", ["s2c", "c2s"])
def test_rfc6455_extended_lengths(fast: bool, direction: str) -> None:
    body256 = os.urandom(256)
    body64k = os.urandom(65536)
    assert frame(2, body256)[:4] == bytes.fromhex("827e0100")
    assert frame(2, body64k)[:10] == bytes.fromhex("827f0000000000010000")
    build = masked if direction == "c2s" else frame
    stream = build(2, body256) + build(2, body64k) + build(2, b"x" * 125) + build(2, b"y" * 126)
    records = msgs(decode([stream], direction, fast_path=fast))
    assert [m.payload for m in records] == [body256, body64k, b"x" * 125, b"y" * 126]
    assert [m.wire_length for m in records] == [256, 65536, 125, 126]
    assert all(m.opcode == "binary" for m in records)


@pytest.mark.parametrize(
    ("direction", "data"),
    [
        ("c2s", bytes.fromhex("810548656c6c6f")),  # client frames must be masked
        ("s2c", bytes.fromhex("818537fa213d7f9f4d5158")),  # server frames must not be
    ],
)
def test_masking_violation(direction: str, data: bytes) -> None:
    dec = decoder(direction)
    out = dec.feed(data, 1.0)
    (d,) = out
    assert isinstance(d, DiagnosticRecord)
    assert (d.code, d.layer, d.severity, d.ts, d.stream_id) == (
        "ws_bad_mask",
        "ws",
        "error",
        1.0,
        1,
    )
    assert dec.failed
    assert dec.feed(bytes.fromhex("810548656c6c6f"), 2.0) == []


# --------------------------------------------------------------------------- RFC 7692 §7.2.3

DEFLATE = DeflateParams()


@BOTH_PATHS
def test_rfc7692_compressed_hello(fast: bool) -> None:
    (m,) = decode([bytes.fromhex("c107f248cdc9c90700")], deflate=DEFLATE, fast_path=fast)
    assert isinstance(m, MessageRecord)
    assert (m.payload, m.length, m.wire_length, m.compressed) == (b"Hello", 5, 7, True)
    assert m.sha256 == sha(b"Hello")


@BOTH_PATHS
def test_rfc7692_compressed_and_fragmented(fast: bool) -> None:
    data = bytes.fromhex("4103f248cd") + bytes.fromhex("8004c9c90700")
    (m,) = decode([data], deflate=DEFLATE, fast_path=fast)
    assert isinstance(m, MessageRecord)
    assert (m.payload, m.fragments, m.wire_length, m.compressed) == (b"Hello", 2, 7, True)


SHARED_WINDOW = bytes.fromhex("c107f248cdc9c90700") + bytes.fromhex("c105f200110000")


@BOTH_PATHS
def test_rfc7692_shared_sliding_window(fast: bool) -> None:
    records = msgs(decode([SHARED_WINDOW], deflate=DEFLATE, fast_path=fast))
    assert [(m.payload, m.wire_length) for m in records] == [(b"Hello", 7), (b"Hello", 5)]


@BOTH_PATHS
def test_no_context_takeover_of_this_direction_resets_the_window(fast: bool) -> None:
    # s2c uses server_no_context_takeover: the second message refers to a window that is gone.
    reset = DeflateParams(server_no_context_takeover=True)
    records = decode([SHARED_WINDOW], "s2c", deflate=reset, fast_path=fast)
    assert [m.payload for m in msgs(records)] == [b"Hello"]
    assert codes(records) == ["ws_inflate_error"]
    # client_no_context_takeover concerns the other direction.
    other = DeflateParams(client_no_context_takeover=True)
    records = decode([SHARED_WINDOW], "s2c", deflate=other, fast_path=fast)
    assert [m.payload for m in msgs(records)] == [b"Hello", b"Hello"]


@pytest.mark.parametrize(
    "data",
    [
        "c108f348cdc9c9070000",  # §7.2.3.3: BFINAL block
        "c10b000500faff48656c6c6f00",  # §7.2.3.4 (no compression): a stored block
        "c10df24805000000ffffcac9c90700",  # §7.2.3.5: two DEFLATE blocks
    ],
)
def test_rfc7692_other_examples(data: str) -> None:
    (m,) = decode([bytes.fromhex(data) * 2], deflate=DEFLATE)[1:]
    assert isinstance(m, MessageRecord)
    assert (m.payload, m.compressed, m.index) == (b"Hello", True, 1)


def test_rfc7692_bfinal_then_reference_to_lost_window_is_an_error() -> None:
    # After a BFINAL block the zlib stream is over; a message that refers back fails loudly.
    records = decode([bytes.fromhex("c108f348cdc9c9070000") + bytes.fromhex("c105f200110000")])
    assert codes(records) == ["ws_reserved_bits"]  # no deflate negotiated
    records = decode(
        [bytes.fromhex("c108f348cdc9c9070000") + bytes.fromhex("c105f200110000")],
        deflate=DEFLATE,
    )
    assert [m.payload for m in msgs(records)] == [b"Hello"]
    assert codes(records) == ["ws_inflate_error"]


def test_data_after_final_deflate_block_is_an_error() -> None:
    payload = bytes.fromhex("f348cdc9c90700") + b"garbage"
    records = decode([frame(1, payload, rsv=4)], deflate=DEFLATE)
    assert codes(records) == ["ws_inflate_error"]


@BOTH_PATHS
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
@pytest.mark.parametrize(
    "params",
    [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
    ],
)
def test_context_takeover_round_trip_with_wsproto(fast: bool, direction: str, params: str) -> None:
    peer = sender(direction, params)
    texts = ["hello hello hello", "hello hello hello", "x" * 3000, "hello hello hello"]
    stream = b"".join(bytes(peer.send_data(t)) for t in texts)
    stream += bytes(peer.send_data(b"\x00" * 50000))
    deflate = negotiated_deflate(params)
    assert deflate is not None
    records = msgs(decode([stream], direction, deflate=deflate, fast_path=fast))
    assert [m.payload for m in records] == [t.encode() for t in texts] + [b"\x00" * 50000]
    assert all(m.compressed for m in records)
    shared = "no_context_takeover" not in params
    # With a shared window the repeated text costs far fewer bytes the second time.
    assert (records[1].wire_length < records[0].wire_length) is shared
    assert records[2].wire_length < records[2].length


def test_compressed_message_with_deflate_but_uncompressed_frames_too() -> None:
    # RSV1 is per message: an uncompressed message in a deflate session is fine.
    data = bytes.fromhex("c107f248cdc9c90700") + frame(2, b"raw")
    records = msgs(decode([data], deflate=DEFLATE))
    assert [(m.payload, m.compressed) for m in records] == [(b"Hello", True), (b"raw", False)]


# --------------------------------------------------------------------------- chunking and ts


def composite(direction: str) -> tuple[bytes, list[tuple[int, int]]]:
    """A stream exercising every kind of frame; with each record's (first, last) byte offsets."""
    build = masked if direction == "c2s" else frame
    parts: list[tuple[bytes, int | None]] = []  # (frame, record number it completes or None)
    parts.append((build(1, b"plain text"), 0))
    parts.append((build(2, bytes(range(200))), 1))  # 16-bit length
    parts.append((build(9, b"ping"), 2))
    parts.append((build(1, b"caf", fin=False), None))  # fragmented text ...
    parts.append((build(0xA, b"pong"), 3))  # ... with a control frame in between
    parts.append((build(0, "é ünïcödé".encode(), fin=False), None))
    parts.append((build(0, b"", fin=True), 4))  # empty final fragment
    parts.append((build(2, b""), 5))  # empty message
    parts.append((build(2, os.urandom(70000)), 6))  # 64-bit length
    parts.append((build(1, b"ok"), 7))
    parts.append((build(8, struct.pack("!H", 1001) + b"going"), 8))
    stream = b""
    spans: list[tuple[int, int]] = []
    start_of_message: int | None = None
    for data, done in parts:
        start = len(stream)
        stream += data
        is_control = data[0] & 0x08
        if not is_control and start_of_message is None:
            start_of_message = start
        if done is not None:
            first = start if is_control else start_of_message
            assert first is not None
            spans.append((first, len(stream) - 1))
            if not is_control:
                start_of_message = None
    return stream, spans


@BOTH_PATHS
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_every_split_point_gives_the_same_records_and_right_timestamps(
    fast: bool, direction: str
) -> None:
    stream, spans = composite(direction)
    whole = decode([stream], direction, fast_path=fast)
    assert codes(whole) == []
    assert [m.opcode for m in msgs(whole)] == [
        "text",
        "binary",
        "ping",
        "pong",
        "text",
        "binary",
        "binary",
        "text",
        "close",
    ]
    text = msgs(whole)[4]
    assert (text.payload, text.fragments) == ("café ünïcödé".encode(), 3)
    assert [m.index for m in msgs(whole)] == list(range(9))
    close = msgs(whole)[-1]
    assert (close.close_code, close.close_reason) == (1001, "going")
    # Splits near the big frame are all alike; test every split elsewhere, a sample inside.
    big_first, big_last = spans[6]
    points = [i for i in range(1, len(stream)) if not big_first + 40 < i < big_last - 40]
    points += list(range(big_first + 40, big_last - 40, 997))
    for i in points:
        split = decode([stream[:i], stream[i:]], direction, fast_path=fast)
        assert no_ts(split) == no_ts(whole), i
        for m, (first, last) in zip(msgs(split), spans, strict=True):
            assert m.ts_first == (1.0 if first < i else 2.0), (i, m)
            assert m.ts_last == (1.0 if last < i else 2.0), (i, m)


@BOTH_PATHS
def test_byte_by_byte_and_three_feed_timestamps(fast: bool) -> None:
    stream, _ = composite("c2s")
    small = stream[: stream.index(b"\x82\xff")]  # everything before the 64-bit frame
    whole = decode([small], "c2s", fast_path=fast)
    one_by_one = decode([small[i : i + 1] for i in range(len(small))], "c2s", fast_path=fast)
    assert no_ts(one_by_one) == no_ts(whole)
    # A message spread over three feeds: first byte in feed 1, last in feed 3.
    data = masked(2, b"a" * 300)
    (m,) = msgs(decode([data[:1], data[1:100], data[100:]], "c2s", fast_path=fast))
    assert (m.ts_first, m.ts_last, m.payload) == (1.0, 3.0, b"a" * 300)
    # A header whose masking key straddles feeds.
    (m,) = msgs(decode([data[:5], data[5:]], "c2s", fast_path=fast))
    assert (m.ts_first, m.ts_last) == (1.0, 2.0)
    # A frame that starts exactly at a feed boundary starts there.
    two = masked(1, b"one") + masked(1, b"two")
    first, second = msgs(decode([two[:9], two[9:]], "c2s", fast_path=fast))
    assert (first.ts_first, first.ts_last, second.ts_first, second.ts_last) == (1, 1, 2, 2)


def test_control_frame_inside_fragmented_message_comes_first() -> None:
    data = frame(1, b"a", fin=False) + frame(9, b"p") + frame(0, b"b", fin=False)
    data += frame(0xA, b"q") + frame(0, b"c")
    records = msgs(decode([data]))
    assert [(m.index, m.opcode, m.payload, m.fragments) for m in records] == [
        (0, "ping", b"p", 1),
        (1, "pong", b"q", 1),
        (2, "text", b"abc", 3),
    ]


def test_fragment_count_and_wire_length() -> None:
    data = frame(2, b"ab", fin=False) + b"".join(frame(0, b"cd", fin=False) for _ in range(5))
    data += frame(0, b"ef")
    (m,) = msgs(decode([data]))
    assert (m.fragments, m.length, m.wire_length) == (7, 14, 14)


# --------------------------------------------------------------------------- close


@BOTH_PATHS
@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\x03\xe8bye", 1000, "bye"),
        (b"\x03\xe8", 1000, ""),
        (b"", None, None),
        (struct.pack("!H", 4321) + "zürück".encode(), 4321, "zürück"),
    ],
)
def test_close_code_reason_and_hash(
    fast: bool, payload: bytes, code: int | None, reason: str | None
) -> None:
    dec = decoder("s2c", fast_path=fast)
    (m,) = dec.feed(frame(8, payload), 1.0)
    assert isinstance(m, MessageRecord)
    assert (m.opcode, m.close_code, m.close_reason) == ("close", code, reason)
    assert (m.payload, m.length, m.wire_length, m.sha256) == (
        payload,
        len(payload),
        len(payload),
        sha(payload),
    )
    assert dec.close_seen and not dec.in_message and not dec.failed
    assert dec.finish(2.0) == []


@BOTH_PATHS
def test_bytes_after_close_are_reported_once_and_ignored(fast: bool) -> None:
    dec = decoder("s2c", fast_path=fast)
    out = dec.feed(frame(8, b"\x03\xe8") + frame(1, b"late"), 1.0)
    assert [type(r) for r in out] == [MessageRecord, DiagnosticRecord]
    (d,) = diags(out)
    assert (d.code, d.severity) == ("ws_data_after_close", "warning")
    assert "6 bytes" in d.message
    assert dec.feed(frame(1, b"later"), 2.0) == []
    assert not dec.failed and dec.close_seen and not dec.in_message
    dec2 = decoder("s2c", fast_path=fast)
    assert msgs(dec2.feed(frame(8, b""), 1.0))
    assert codes(dec2.feed(b"x", 2.0)) == ["ws_data_after_close"]


def test_close_inside_fragmented_message_loses_the_message_with_a_warning() -> None:
    records = decode([frame(1, b"par", fin=False) + frame(8, b"\x03\xe8")])
    assert [m.opcode for m in msgs(records)] == ["close"]
    assert codes(records) == ["ws_incomplete_message"]


# --------------------------------------------------------------------------- payload policy


@BOTH_PATHS
def test_payload_policies(fast: bool) -> None:
    body = bytes(range(256)) * 4
    data = frame(2, body) + frame(2, b"tiny") + frame(2, b"")
    frag = frame(2, body[:300], fin=False) + frame(0, body[300:])
    for stream in (data, data + frag):
        none = msgs(decode([stream], payload=PayloadPolicy(mode="none"), fast_path=fast))
        assert [(m.payload, m.payload_truncated) for m in none[:3]] == [
            (None, True),
            (None, True),
            (None, False),
        ]
        preview = msgs(decode([stream], payload=PayloadPolicy(preview_bytes=10), fast_path=fast))
        assert [(m.payload, m.payload_truncated) for m in preview[:3]] == [
            (body[:10], True),
            (b"tiny", False),
            (b"", False),
        ]
        full = msgs(decode([stream], payload=FULL, fast_path=fast))
        assert [(m.payload, m.payload_truncated) for m in full[:3]] == [
            (body, False),
            (b"tiny", False),
            (b"", False),
        ]
        for policy in (none, preview, full):
            assert [m.sha256 for m in policy[:3]] == [sha(body), sha(b"tiny"), sha(b"")]
            assert [m.length for m in policy[:3]] == [1024, 4, 0]
    frag_preview = msgs(decode([frag], payload=PayloadPolicy(preview_bytes=500)))[0]
    assert (frag_preview.payload, frag_preview.sha256) == (body[:500], sha(body))
    assert PayloadPolicy(preview_bytes=0) != PayloadPolicy()
    (zero,) = msgs(decode([frame(2, b"abc")], payload=PayloadPolicy(preview_bytes=0)))
    assert (zero.payload, zero.payload_truncated) == (b"", True)
    (ping,) = msgs(decode([frame(9, b"abc")], payload=PayloadPolicy(mode="none")))
    assert (ping.payload, ping.length, ping.sha256) == (None, 3, sha(b"abc"))


def test_payload_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="payload mode"):
        PayloadPolicy(mode="most")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preview_bytes"):
        PayloadPolicy(preview_bytes=-1)


def test_huge_message_in_preview_mode_is_not_held() -> None:
    body = os.urandom(1 << 20)
    stream = frame(2, b"", fin=False) + b"".join(frame(0, body, fin=False) for _ in range(30))
    stream += frame(0, b"end")
    dec = decoder("s2c", payload=PayloadPolicy(), max_message_bytes=1 << 30)
    out: list[Rec] = []
    tracemalloc.start()
    try:
        for i in range(0, len(stream), 65536):
            out += dec.feed(stream[i : i + 65536], 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (m,) = msgs(out)
    assert m.length == 30 * len(body) + 3
    assert m.sha256 == sha(body * 30 + b"end")
    assert m.payload == body[:256] and m.payload_truncated
    assert peak < 4 << 20, peak


# --------------------------------------------------------------------------- protocol errors


@BOTH_PATHS
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(3, b"x"), "ws_reserved_opcode"),
        (frame(0xB, b"x"), "ws_reserved_opcode"),
        (frame(0, b"x"), "ws_protocol_error"),  # continuation without a message
        (frame(1, b"a", fin=False) + frame(1, b"b"), "ws_protocol_error"),
        (frame(9, b"x", fin=False), "ws_protocol_error"),  # fragmented control frame
        (frame(9, b"x" * 126), "ws_protocol_error"),  # control frame > 125 bytes
        (frame(2, b"x" * 5, length_bytes=2), "ws_protocol_error"),  # non-minimal length
        (frame(2, b"x" * 200, length_bytes=8), "ws_protocol_error"),
        (bytes([0x82, 0x7F]) + struct.pack("!Q", 1 << 63), "ws_protocol_error"),
        (frame(1, b"x", rsv=4), "ws_reserved_bits"),  # RSV1 without permessage-deflate
        (frame(1, b"x", rsv=2), "ws_reserved_bits"),
        (frame(1, b"x", rsv=1), "ws_reserved_bits"),
        (frame(1, b"\xff"), "ws_invalid_utf8"),
        (frame(1, "é".encode()[:1]), "ws_invalid_utf8"),  # truncated sequence at the end
        (frame(1, b"\xed\xa0\x80"), "ws_invalid_utf8"),  # surrogate
        (frame(1, b"ok", fin=False) + frame(0, b"\xc3\x28"), "ws_invalid_utf8"),
        (frame(8, b"\x03"), "ws_bad_close"),  # 1-byte close payload
        (frame(8, struct.pack("!H", 999)), "ws_bad_close"),
        (frame(8, struct.pack("!H", 1005)), "ws_bad_close"),  # local-only code
        (frame(8, struct.pack("!H", 1004)), "ws_bad_close"),  # reserved
        (frame(8, struct.pack("!H", 5000)), "ws_bad_close"),
        (frame(8, b"\x03\xe8\xff"), "ws_invalid_utf8"),  # close reason
        (frame(2, b"x" * 101), "ws_message_too_big"),
        (frame(2, b"x" * 60, fin=False) + frame(0, b"x" * 60), "ws_message_too_big"),
        (bytes([0x82, 0x7F]) + struct.pack("!Q", 1 << 40), "ws_message_too_big"),
    ],
)
def test_protocol_errors(fast: bool, data: bytes, code: str) -> None:
    dec = decoder("s2c", max_message_bytes=100, fast_path=fast)
    good = frame(1, b"before")
    out = dec.feed(good + data, 5.0)
    assert [m.payload for m in msgs(out)] == [b"before"]
    (d,) = diags(out)
    assert (d.code, d.severity, d.layer, d.ts, d.conn_id) == (code, "error", "ws", 5.0, "t:0")
    assert d.message.startswith("s2c: ") and "\n" not in d.message
    assert dec.failed and not dec.in_message
    assert dec.feed(good, 6.0) == [] and dec.finish(7.0) == []


@BOTH_PATHS
def test_utf8_sequence_split_across_fragments_and_feeds_is_fine(fast: bool) -> None:
    text = "ab€cd😀".encode()
    for cut in range(1, len(text)):
        data = frame(1, text[:cut], fin=False) + frame(0, text[cut:])
        for feed_cut in (0, 3, len(data) - 2):
            chunks = [data[:feed_cut], data[feed_cut:]] if feed_cut else [data]
            (m,) = decode(chunks, fast_path=fast)
            assert isinstance(m, MessageRecord) and m.payload == text


@BOTH_PATHS
def test_deflate_errors(fast: bool) -> None:
    out = decode([frame(1, b"\xff\xff\xff\xff", rsv=4)], deflate=DEFLATE, fast_path=fast)
    assert codes(out) == ["ws_inflate_error"]
    out = decode([frame(9, b"x", rsv=4), frame(0, b"x", rsv=4)], deflate=DEFLATE, fast_path=fast)
    assert codes(out) == ["ws_reserved_bits"]
    out = decode(
        [frame(1, b"", rsv=4, fin=False) + frame(0, b"", rsv=4)], deflate=DEFLATE, fast_path=fast
    )
    assert codes(out) == ["ws_reserved_bits"]
    # Invalid UTF-8 inside a compressed text message is found after inflating.
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = comp.compress(b"ok\xff") + comp.flush(zlib.Z_SYNC_FLUSH)
    out = decode([frame(1, body[:-4], rsv=4)], deflate=DEFLATE, fast_path=fast)
    assert codes(out) == ["ws_invalid_utf8"]
    # A compressed message that inflates beyond the cap.
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = comp.compress(b"a" * 1000) + comp.flush(zlib.Z_SYNC_FLUSH)
    out = decode([frame(2, body[:-4], rsv=4)], deflate=DEFLATE, max_message_bytes=999)
    assert codes(out) == ["ws_message_too_big"]
    out = decode([frame(2, body[:-4], rsv=4)], deflate=DEFLATE, max_message_bytes=1000)
    assert [m.length for m in msgs(out)] == [1000]


# --------------------------------------------------------------------------- decompression bomb


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros, deflated (~1 MB) and framed as one s2c message in 64 KiB fragments."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    body = b"".join(comp.compress(zeros) for _ in range(1024)) + comp.flush(zlib.Z_SYNC_FLUSH)
    body = body[:-4]
    step = 1 << 16
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    frames = [frame(2, pieces[0], rsv=4, fin=False)]
    frames += [frame(0, p, fin=False) for p in pieces[1:]]
    frames.append(frame(0, b""))
    return b"".join(frames)


@pytest.mark.parametrize(
    ("policy", "cap", "limit"),
    [
        (PayloadPolicy(), 64 << 20, 8 << 20),  # default cap, preview: only inflate steps held
        (PayloadPolicy(mode="none"), 1 << 30, 8 << 20),  # even a 1 GiB cap holds nothing
        (FULL, 16 << 20, 40 << 20),  # full payloads: bounded by the cap
    ],
)
def test_decompression_bomb_is_capped(
    bomb: bytes, policy: PayloadPolicy, cap: int, limit: int
) -> None:
    dec = decoder("s2c", deflate=DEFLATE, payload=policy, max_message_bytes=cap)
    out: list[Rec] = []
    tracemalloc.start()
    try:
        for i in range(0, len(bomb), 16384):
            out += dec.feed(bomb[i : i + 16384], 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if cap < 1 << 30:
        assert codes(out) == ["ws_message_too_big"] and dec.failed
    else:
        (m,) = msgs(out)
        assert m.length == 1 << 30 and m.sha256 == sha(bytes(1 << 30))
        assert m.wire_length * 500 < m.length
    assert peak < limit, peak


# --------------------------------------------------------------------------- finish / in_message


@BOTH_PATHS
@pytest.mark.parametrize(
    ("data", "pending"),
    [
        (frame(1, b"abc")[:3], True),  # inside a frame
        (frame(1, b"abc")[:1], True),  # inside a header
        (masked(1, b"abc")[:4], True),  # inside a masking key
        (frame(1, b"ab", fin=False), True),  # between fragments
        (frame(9, b"abcdef")[:4], True),  # inside a control frame
        (frame(1, b"abc"), False),
    ],
)
def test_finish_reports_a_cut_message(fast: bool, data: bytes, pending: bool) -> None:
    direction = "c2s" if len(data) > 1 and data[1] & 0x80 else "s2c"
    dec = decoder(direction, fast_path=fast)
    dec.feed(data, 1.0)
    assert dec.in_message is pending
    out = dec.finish(2.0)
    assert dec.in_message is pending  # callers ask after finish() to classify the stream end
    assert dec.messages == (0 if pending else 1)
    if pending:
        (d,) = out
        assert (d.code, d.severity, d.ts) == ("ws_incomplete_message", "warning", 2.0)
    else:
        assert out == []
    assert dec.finish(3.0) == [] and dec.feed(data, 4.0) == []


def test_finish_with_no_timestamp() -> None:
    dec = decoder()
    dec.feed(b"\x81", 1.0)
    (d,) = dec.finish(None)
    assert d.ts is None


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("x-webkit-deflate-frame", None),
        ("permessage-deflate", DeflateParams()),
        (
            "Permessage-Deflate ; Server_No_Context_Takeover",
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            "foo; a=1, permessage-deflate; client_no_context_takeover;"
            ' client_max_window_bits="10"; server_max_window_bits=12, bar',
            DeflateParams(True, False, 10, 12),
        ),
        ("permessage-deflate; client_max_window_bits", DeflateParams()),
        ("permessage-deflate; unknown_param=1", DeflateParams()),
        (
            "permessage-deflate; server_max_window_bits=9, permessage-deflate",
            DeflateParams(server_max_window_bits=9),
        ),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits=7", None),
        ("permessage-deflate; server_max_window_bits=abc", None),
        ("permessage-deflate; server_max_window_bits=", None),
        ('permessage-deflate; client_max_window_bits="10', None),
        (",,;;", None),
    ],
)
def test_negotiated_deflate(header: str | None, expected: DeflateParams | None) -> None:
    assert negotiated_deflate(header) == expected


@given(st.text(max_size=80))
def test_negotiated_deflate_never_raises(header: str) -> None:
    result = negotiated_deflate(header)
    assert result is None or isinstance(result, DeflateParams)


# --------------------------------------------------------------------------- properties


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]


DEFLATE_OFFERS = st.sampled_from(
    [
        None,
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=9; server_max_window_bits=9",
    ]
)
MESSAGE = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=300), st.integers(1, 3)),
    st.tuples(st.just("binary"), st.binary(max_size=300), st.integers(1, 3)),
    st.tuples(st.sampled_from(["ping", "pong"]), st.binary(max_size=125), st.just(1)),
)


def build_stream(
    direction: str, offer: str | None, messages: list[tuple[str, str | bytes, int]]
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode with wsproto; fragments split a data message into ``n`` frames."""
    peer = sender(direction, offer)
    out = bytearray()
    expected: list[tuple[str, bytes]] = []
    for kind, payload, n in messages:
        if kind in ("ping", "pong"):
            assert isinstance(payload, bytes)
            out += peer.ping(payload) if kind == "ping" else peer.pong(payload)
            expected.append((kind, payload))
            continue
        step = max(1, len(payload) // n + 1)
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [payload]
        for i, piece in enumerate(pieces):
            out += peer.send_data(piece, fin=i == len(pieces) - 1)
        raw = payload.encode() if isinstance(payload, str) else payload
        expected.append((kind, raw))
    return bytes(out), expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    direction=st.sampled_from(["c2s", "s2c"]),
    offer=DEFLATE_OFFERS,
    messages=st.lists(MESSAGE, max_size=12),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    fast=st.booleans(),
)
def test_round_trip_random_messages(
    direction: str,
    offer: str | None,
    messages: list[tuple[str, str | bytes, int]],
    cuts: list[int],
    fast: bool,
) -> None:
    stream, expected = build_stream(direction, offer, messages)
    deflate = negotiated_deflate(offer)
    records = decode(chunked(stream, cuts), direction, deflate=deflate, fast_path=fast)
    assert codes(records) == []
    got = msgs(records)
    assert [(m.opcode, m.payload) for m in got] == expected
    assert [m.index for m in got] == list(range(len(expected)))
    assert all(m.sha256 == sha(m.payload or b"") and m.length == len(m.payload or b"") for m in got)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400),
    direction=st.sampled_from(["c2s", "s2c"]),
    deflate=st.sampled_from([None, DEFLATE, DeflateParams(True, True)]),
    cuts=st.lists(st.integers(0, 500), max_size=5),
    policy=st.sampled_from([FULL, PayloadPolicy(), PayloadPolicy(mode="none")]),
)
def test_random_bytes_never_raise(
    data: bytes,
    direction: str,
    deflate: DeflateParams | None,
    cuts: list[int],
    policy: PayloadPolicy,
) -> None:
    for fast in (True, False):
        dec = decoder(
            direction, deflate=deflate, payload=policy, max_message_bytes=1000, fast_path=fast
        )
        out: list[Rec] = []
        for chunk in chunked(data, cuts):
            out += dec.feed(chunk, 1.0)
        out += dec.finish(2.0)
        assert all(isinstance(r, MessageRecord | DiagnosticRecord) for r in out)
        assert "ws_internal_error" not in codes(out)


MUTATION = st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("xid"))


def mutate(stream: bytes, mutations: list[tuple[int, int, str]]) -> bytes:
    data = bytearray(stream)
    for pos, value, kind in mutations:
        if not data:
            break
        i = pos % len(data)
        if kind == "x":
            data[i] ^= value or 1
        elif kind == "i":
            data.insert(i, value)
        else:
            del data[i]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    direction=st.sampled_from(["c2s", "s2c"]),
    offer=DEFLATE_OFFERS,
    messages=st.lists(MESSAGE, min_size=1, max_size=8),
    mutations=st.lists(MUTATION, min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_mutated_streams_never_raise_and_both_paths_agree(
    direction: str,
    offer: str | None,
    messages: list[tuple[str, str | bytes, int]],
    mutations: list[tuple[int, int, str]],
    cuts: list[int],
) -> None:
    stream, _ = build_stream(direction, offer, messages)
    stream = mutate(stream, mutations)
    deflate = negotiated_deflate(offer)
    chunks = chunked(stream, cuts)
    fast = decode(chunks, direction, deflate=deflate, fast_path=True, max_message_bytes=5000)
    slow = decode(chunks, direction, deflate=deflate, fast_path=False, max_message_bytes=5000)
    assert fast == slow
    assert "ws_internal_error" not in codes(fast)


@pytest.mark.parametrize("split", [False, True])
def test_fast_path_data_after_a_ping_is_data(split: bool) -> None:
    """Regression: the fast path once took the message after a ping for another ping."""
    server = FrameProtocol(client=False, extensions=[])
    wire = [server.ping(b"p"), server.send_data("hello"), server.send_data(b"bin")]
    decoder = MessageDecoder(
        conn_id="c",
        stream_id=1,
        exchange=None,
        direction="s2c",
        fast_path=True,
        payload=PayloadPolicy(mode="full"),
    )
    out = []
    for chunk in wire if split else [b"".join(wire)]:
        out += decoder.feed(chunk, 1.0)
    assert [(r.opcode, r.payload) for r in out] == [
        ("ping", b"p"),
        ("text", b"hello"),
        ("binary", b"bin"),
    ]


# --------------------------------------------------------------------------- frames over feeds

#: Sizes around the length-field boundaries (7/16/64 bits) and larger than an HTTP/2 DATA frame.
BIG_SIZES = st.sampled_from([0, 1, 125, 126, 2047, 2048, 2049, 16_384, 65_535, 65_536, 70_001])
BIG_MESSAGE = st.one_of(
    st.tuples(st.just("binary"), BIG_SIZES, st.integers(0, 2**32), st.sampled_from([1, 1, 2])),
    st.tuples(st.just("text"), BIG_SIZES, st.integers(0, 2**32), st.sampled_from([1, 1, 2])),
    st.tuples(
        st.sampled_from(["ping", "pong"]), st.integers(0, 125), st.integers(0, 9), st.just(1)
    ),
)


def big_stream(
    direction: str, offer: str | None, spec: list[tuple[str, int, int, int]]
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Messages of the given sizes (seeded random bytes; text is ASCII or 2-byte UTF-8)."""
    messages: list[tuple[str, str | bytes, int]] = []
    for kind, size, seed, fragments in spec:
        raw = random.Random(seed).randbytes(size)
        if kind == "text":
            alphabet = "aé" if seed % 2 else "ab"
            messages.append((kind, "".join(alphabet[b & 1] for b in raw[: size // 2]), fragments))
        else:
            messages.append((kind, raw, fragments))
    return build_stream(direction, offer, messages)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    direction=st.sampled_from(["c2s", "s2c"]),
    offer=DEFLATE_OFFERS,
    spec=st.lists(BIG_MESSAGE, min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 400_000), max_size=12),
    truncate=st.one_of(st.none(), st.integers(0, 400_000)),
    policy=st.sampled_from([FULL, PayloadPolicy(preview_bytes=100), PayloadPolicy(mode="none")]),
)
def test_frames_over_feeds_fast_path_equals_wsproto(
    direction: str,
    offer: str | None,
    spec: list[tuple[str, int, int, int]],
    cuts: list[int],
    truncate: int | None,
    policy: PayloadPolicy,
) -> None:
    """The fast path streams frames whose payload goes on in later feeds: any cut, any size,
    masked or not, compressed or not, even a stream cut short gives wsproto's records exactly
    (timestamps and the ``finish`` diagnostic included)."""
    stream, expected = big_stream(direction, offer, spec)
    if truncate is not None:
        stream = stream[: truncate % (len(stream) + 1)]
    chunks = chunked(stream, cuts)
    deflate = negotiated_deflate(offer)
    kw: dict[str, object] = {"deflate": deflate, "payload": policy, "max_message_bytes": 200_000}
    fast = decode(chunks, direction, fast_path=True, **kw)
    slow = decode(chunks, direction, fast_path=False, **kw)
    assert fast == slow
    if truncate is None and policy is FULL:
        assert codes(fast) == []
        assert [(m.opcode, m.payload) for m in msgs(fast)] == expected


def test_fast_path_streams_a_big_masked_message_over_many_feeds() -> None:
    payload = random.Random(1).randbytes(200_000)
    data = masked(2, payload)
    chunks = [data[i : i + 16_384] for i in range(0, len(data), 16_384)]
    dec = decoder("c2s", max_message_bytes=1 << 20)
    out: list[Rec] = []
    for ts, chunk in enumerate(chunks, 1):
        out += dec.feed(chunk, float(ts))
        if ts < len(chunks):
            assert out == [] and dec.in_message
    (m,) = msgs(out)
    assert (m.payload, m.length, m.wire_length, m.fragments) == (payload, 200_000, 200_000, 1)
    assert (m.ts_first, m.ts_last, m.sha256) == (1.0, float(len(chunks)), sha(payload))
    assert not dec.in_message and dec.finish(99.0) == []


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_streamed_frame_errors_come_with_the_feed_that_shows_them(direction: str) -> None:
    mask = {"mask": b"\x01\x02\x03\x04"} if direction == "c2s" else {}
    bad = b"a" * 70_000 + b"\xff" + b"b" * 1000
    data = frame(1, bad, **mask)  # type: ignore[arg-type]
    for fast in (True, False):
        out = decode([data[:30_000], data[30_000:70_100], data[70_100:]], direction, fast_path=fast)
        (d,) = diags(out)
        assert (d.code, d.ts) == ("ws_invalid_utf8", 2.0), fast
    too_big = frame(2, b"x" * 70_000, **mask)  # type: ignore[arg-type]
    for fast in (True, False):
        out = decode([too_big[:100], too_big[100:]], direction, fast_path=fast, max_message_bytes=5)
        (d,) = diags(out)
        assert (d.code, d.ts) == ("ws_message_too_big", 1.0), fast


@pytest.mark.parametrize(
    ("length", "code"),
    [
        (65_535, "ws_protocol_error"),  # fits 16 bits: the 64-bit field is not minimal
        (2**63, "ws_protocol_error"),  # the most significant bit must be 0 (RFC 6455 §5.2)
        (65_536, "ws_incomplete_message"),  # valid, and cut short
    ],
)
def test_64_bit_lengths_are_judged_as_wsproto_does(length: int, code: str) -> None:
    data = bytes([0x82, 127]) + struct.pack("!Q", length) + b"x" * 10
    fast = decode([data], "s2c", fast_path=True)
    assert codes(fast) == [code]
    assert fast == decode([data], "s2c", fast_path=False)
