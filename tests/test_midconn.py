"""Captures that start mid-connection (issue #14, cleartext): HTTP/2 without its preface, HPACK
placeholders, WebSockets recognised from their bytes.

The cut tests decode a connection whole, then decode it again from a cut -- inside a frame
header, inside a DATA frame, inside a WebSocket frame, between header blocks that depend on
HPACK state -- and compare: the messages of the cut capture are, per stream and direction,
exactly the last ones of the whole decode (opcode, length, sha256, order), never one more.
"""

from __future__ import annotations

import os
import random
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from h2ws.analysis.core.chunks import ConnectionInfo, Data, Opened
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.h2 import resync
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import resync as ws_resync
from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    MessageRecord,
    PayloadPolicy,
    Record,
    StreamRecord,
)
from h2ws.analysis.sources.capture import capture_events
from h2ws.testkit.h2pair import H2Pair, ws_peer

from .cut_oracle import Oracle, h2_oracle, must_recognise, tcp_oracle
from .paths import SAMPLE_CAPTURES

FULL = DecodeOptions(payload=PayloadPolicy(mode="full"))
INFO = ConnectionInfo("t:0", "127.0.0.1", 40000, "127.0.0.1", 8080)
Chunks = list[tuple[str, bytes, float]]


def decode(chunks: Chunks, *, midstream: bool, info: ConnectionInfo = INFO) -> list[Record]:
    decoder = ConnectionDecoder(replace(info, midstream=midstream), FULL)
    out: list[Record] = []
    for direction, data, ts in chunks:
        out += decoder.feed(direction, data, ts)  # type: ignore[arg-type]
    out += decoder.close(chunks[-1][2] if chunks else None, "capture_ended")
    return out


def of(records: list[Record], cls: type) -> list:  # type: ignore[type-arg]
    return [r for r in records if isinstance(r, cls)]


def codes(records: list[Record]) -> list[str]:
    return [r.code for r in of(records, DiagnosticRecord)]


def messages(records: list[Record]) -> dict[tuple[int | None, str], list[tuple[str, int, str]]]:
    out: dict[tuple[int | None, str], list[tuple[str, int, str]]] = {}
    for m in of(records, MessageRecord):
        out.setdefault((m.stream_id, m.direction), []).append((m.opcode, m.length, m.sha256))
    return out


def cut(chunks: Chunks, k: int, offset: int) -> Chunks:
    """The chunks from chunk ``k`` on, its first ``offset`` bytes lost."""
    d, data, ts = chunks[k]
    return [(d, data[offset:], ts), *chunks[k + 1 :]]


def assert_suffix(whole: list[Record], part: list[Record]) -> None:
    """Every stream and direction of ``part`` holds the last messages of ``whole``, exactly, in
    order -- except compressed messages lost with the deflate history, which its
    ``ws_deflate_context_lost`` diagnostic counts, and the message begun before the capture
    (``ws_midstream_message``), which control frames sent inside it may follow."""
    full = messages(whole)
    lost: Counter[tuple[int | None, str]] = Counter()
    for r in of(part, DiagnosticRecord):
        if r.code == "ws_deflate_context_lost":
            d, _, rest = r.message.partition(": ")
            lost[r.stream_id, d] += int(rest.split()[0])
        elif r.code == "ws_midstream_message":  # the one message begun before the capture,
            lost[r.stream_id, r.message.split(":")[0]] += 1  # which a ping inside it may follow
    for key, got in messages(part).items():
        want = full.get(key, [])
        # match from the end: the decode of the cut is the whole decode's tail, minus the lost
        i = len(want)
        for item in reversed(got):
            i -= 1
            while i >= 0 and want[i] != item:
                i -= 1
            assert i >= 0, (key, item)
        assert len(want) - i - len(got) <= lost[key], key  # a lost one may come first


def assert_exact(oracle: Oracle, k: int, offset: int, part: list[Record], *, tcp: bool) -> int:
    """The decode of the cut (k, offset) against :mod:`tests.cut_oracle`: per WebSocket and
    direction, exactly the whole decode's messages whose bytes are all after the cut (opcode,
    length, sha256, order) -- but for compressed ones that need deflate history from before it,
    which ``ws_deflate_context_lost`` counts -- a ``ws_midstream_message`` exactly where a
    message begun before the cut was lost, and no message anywhere else.  A WebSocket may stay
    unrecognised only when the frames after the cut are fewer than the documented rule needs.
    Returns the number of messages checked."""
    expected = oracle.expected(k, offset)
    ev, has = oracle.evidence(k, offset), oracle.has_bytes(k, offset)
    affected = oracle.affected(k, offset)
    got = messages(part)
    assert set(got) <= set(expected), "messages on a stream that is no WebSocket"
    ws = {s.stream_id for s in of(part, StreamRecord) if s.kind == "websocket"}
    lost: Counter[tuple[int | None, str]] = Counter()
    said: set[tuple[int | None, str]] = set()
    for r in of(part, DiagnosticRecord):
        d = r.message.partition(":")[0]
        if r.code == "ws_deflate_context_lost":
            lost[r.stream_id, d] += int(r.message.partition(": ")[2].split()[0])
        elif r.code == "ws_midstream_message":
            said.add((r.stream_id, d))
    checked = 0
    for key, rows in expected.items():
        if key[0] not in ws:
            assert not must_recognise(ev, has, key[0], tcp), (key, ev, "not recognised")
            continue
        want = [(m.opcode, m.length, m.sha256) for m in rows]
        mine = got.get(key, [])
        # the rows missing may only be compressed ones, as many as the diagnostic counts
        i = 0
        for m in rows:
            item = (m.opcode, m.length, m.sha256)
            if i < len(mine) and mine[i] == item:
                i += 1
            else:
                assert m.compressed, (key, "lost", item)
        assert i == len(mine), (key, "invented or out of order", mine[i:])
        assert len(want) - len(mine) == lost[key], (key, len(want), len(mine), lost[key])
        assert (key in said) == (key in affected), (key, "ws_midstream_message")
        checked += len(mine)
    return checked


# ---------------------------------------------------------------------- traffic


def capture_chunks(name: str) -> tuple[ConnectionInfo, Chunks]:
    events = list(capture_events(SAMPLE_CAPTURES / name, Counter()))
    info = next(e.conn for e in events if isinstance(e, Opened))
    return info, [(e.direction, e.data, e.ts) for e in events if isinstance(e, Data)]


def busy_pair(deflate: bool = False) -> Chunks:
    """Several WebSockets (fragmented, compressed when asked), GETs interleaved, on one h2c
    connection written by python-hyper h2 and wsproto."""
    rng = random.Random(7)
    pair = H2Pair()
    sids = []
    for i in range(3):
        ext = "permessage-deflate" if deflate else None
        sids.append(pair.open_websocket(f"/ws{i}", extensions=ext))
    peers = {}
    for sid in sids:
        for d in ("c2s", "s2c"):
            pmd = None
            if deflate:
                pmd = PerMessageDeflate()
                pmd.finalize("permessage-deflate")
            peers[sid, d] = ws_peer(d, pmd)
    for n in range(40):
        sid = rng.choice(sids)
        d = rng.choice(("c2s", "s2c"))
        payload = os.urandom(rng.randint(0, 300)) if n % 3 else f"text {n} ".encode() * 9
        frame = peers[sid, d]
        if n % 7 == 0:  # a fragmented message, a ping inside it
            wire = frame.send_data(payload[:10], fin=False) + frame.ping(b"p")
            wire += frame.send_data(payload[10:], fin=True)
        else:
            wire = frame.send_data(payload if n % 3 else payload.decode(), fin=True)
        pair.send(d, sid, wire)
        if n % 5 == 0:
            pair.get(f"/r{n}", body=b"b" * rng.randint(1, 3000))
    return pair.chunks


# ---------------------------------------------------------------------- HTTP/2 recognition


def test_whole_capture_is_unchanged_by_the_midstream_flag_when_the_preface_is_there() -> None:
    chunks = busy_pair()
    whole = decode(chunks, midstream=False)
    again = decode(chunks, midstream=True)
    assert messages(whole) == messages(again)
    assert "h2_midstream" not in codes(again)


def test_real_capture_cut_everywhere_decodes_a_suffix() -> None:
    info, chunks = capture_chunks("h2c_hypercorn_ws.pcap")
    whole = decode(chunks, midstream=False, info=info)
    assert sum(map(len, messages(whole).values())) == 24
    recognised = 0
    for k in range(1, len(chunks)):
        for offset in sorted({0, 1, 4, 9, 11, len(chunks[k][1]) // 2}):
            if offset >= len(chunks[k][1]):
                continue
            part = decode(cut(chunks, k, offset), midstream=True, info=info)
            assert_suffix(whole, part)
            (row,) = of(part, ConnectionRecord)
            assert row.start_captured is False
            if row.http_version == "h2c":
                recognised += 1
                assert "h2_midstream" in codes(part)
                assert row.client_port == info.client_port  # the frames agree with the ports
    assert recognised >= 20


def test_cut_after_the_request_infers_the_websocket_and_decodes_every_later_message() -> None:
    info, chunks = capture_chunks("h2c_hypercorn_ws.pcap")
    whole = decode(chunks, midstream=False, info=info)
    # chunk 4 is the first after the extended CONNECT and its response
    part = decode(chunks[4:], midstream=True, info=info)
    (s,) = of(part, StreamRecord)
    assert (s.kind, s.inferred, s.request_headers) == ("websocket", True, None)
    assert messages(part) == messages(whole)


def test_roles_told_from_the_frames_when_the_ports_mislead() -> None:
    chunks = busy_pair()
    whole = decode(chunks, midstream=False)
    # The TCP layer guessed the other way round: labels and ends swapped.
    flipped = [("s2c" if d == "c2s" else "c2s", b, ts) for d, b, ts in chunks[6:]]
    wrong = ConnectionInfo("t:0", "127.0.0.1", 8080, "127.0.0.1", 40000)
    part = decode(flipped, midstream=True, info=wrong)
    (row,) = of(part, ConnectionRecord)
    assert (row.client_port, row.server_port) == (40000, 8080)
    diag = next(r for r in of(part, DiagnosticRecord) if r.code == "h2_midstream")
    assert "swapped" in diag.message
    assert_suffix(whole, part)
    assert messages(part)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_cuts_of_a_busy_connection(data: st.DataObject) -> None:
    chunks = BUSY
    k = data.draw(st.integers(1, len(chunks) - 1))
    offset = data.draw(st.integers(0, len(chunks[k][1]) - 1))
    part = decode(cut(chunks, k, offset), midstream=True)
    assert_suffix(BUSY_WHOLE, part)
    # a stream decoded as a WebSocket whose start was lost says so in each direction that
    # lost a message; nothing is said where nothing was lost
    full = messages(BUSY_WHOLE)
    lost = {
        (r.stream_id, r.message.split(":")[0])
        for r in of(part, DiagnosticRecord)
        if r.code == "ws_midstream_message"
    }
    for s in of(part, StreamRecord):
        if s.kind != "websocket" or not s.inferred:
            continue
        for d in ("c2s", "s2c"):
            got = messages(part).get((s.stream_id, d), [])
            if len(got) < len(full.get((s.stream_id, d), [])) and (s.stream_id, d) in lost:
                assert got == full[s.stream_id, d][len(full[s.stream_id, d]) - len(got) :]


def test_cuts_at_every_frame_boundary_of_a_busy_connection_find_most_messages() -> None:
    """Cut at chunk boundaries (each chunk is whole frames): every message of a recognised
    WebSocket that starts after the cut is decoded."""
    total = sum(map(len, messages(BUSY_WHOLE).values()))
    found = []
    for k in range(10, len(BUSY), 7):
        part = decode(BUSY[k:], midstream=True)
        assert_suffix(BUSY_WHOLE, part)
        found.append(sum(map(len, messages(part).values())))
    assert max(found) > total // 2


def test_compressed_websockets_cut_decode_a_suffix() -> None:
    chunks = busy_pair(deflate=True)
    whole = decode(chunks, midstream=False)
    assert any(m.compressed for m in of(whole, MessageRecord))
    for k in range(8, len(chunks), 9):
        for offset in (0, 5):
            if offset < len(chunks[k][1]):
                part = decode(cut(chunks, k, offset), midstream=True)
                assert_suffix(whole, part)


# ---------------------------------------------------------------------- HPACK


def test_hpack_entries_from_before_the_capture_are_placeholders() -> None:
    pair = H2Pair()
    headers = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "example"),
        (":path", "/a"),
        ("x-token", "indexed-value"),
    ]
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, headers, end_stream=True)  # inserts entries
    pair.flush()
    start = len(pair.chunks)
    sid2 = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid2, headers, end_stream=True)  # refers to them
    pair.flush()
    pair.server.send_headers(sid2, [(":status", "200")], end_stream=True)
    pair.flush()
    sid3 = pair.client.get_next_available_stream_id()
    later = [(":method", "POST"), (":scheme", "http"), (":authority", "other"), (":path", "/b")]
    pair.client.send_headers(sid3, later, end_stream=True)  # new literals, then indexed
    pair.flush()
    sid4 = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid4, later, end_stream=True)
    pair.flush()
    part = decode(pair.chunks[start:], midstream=True)
    rows = {s.stream_id: s for s in of(part, StreamRecord)}
    assert '"<unknown>"' in (rows[sid2].request_headers or "")
    assert rows[sid2].status == 200
    assert (rows[sid3].method, rows[sid3].authority, rows[sid3].path) == ("POST", "other", "/b")
    assert (rows[sid4].method, rows[sid4].authority, rows[sid4].path) == ("POST", "other", "/b")
    desync = [r for r in of(part, DiagnosticRecord) if r.code == "h2_hpack_desync"]
    assert len(desync) == 1
    shown = (rows[sid2].request_headers or "").count('["<unknown>","<unknown>"]')
    assert desync[0].message.startswith(f"{shown} header field(s) in 1 block(s)")


# ---------------------------------------------------------------------- never mistaken


def _length_prefixed(rng: random.Random, width: int) -> bytes:
    out = b""
    for _ in range(rng.randint(5, 40)):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 120)))
        out += struct.pack(">H" if width == 2 else ">I", len(body)) + body
    return out


def _tls_records(rng: random.Random) -> bytes:
    out = b""
    for _ in range(rng.randint(3, 20)):
        body = os.urandom(rng.randint(20, 3000))
        out += b"\x17\x03\x03" + struct.pack(">H", len(body)) + body
    return out


def _http1(rng: random.Random) -> bytes:
    return b"".join(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello" if rng.random() < 0.5 else b"GET / "
        for _ in range(rng.randint(1, 20))
    )


def _grpc_like(rng: random.Random) -> bytes:
    """A 5-byte prefix (flag, 4-byte length) per message, as gRPC and many binary RPCs frame."""
    out = b""
    for _ in range(rng.randint(5, 40)):
        body = rng.randbytes(rng.randint(0, 400))
        out += bytes([rng.randint(0, 1)]) + struct.pack(">I", len(body)) + body
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["random", "tls", "len2", "len4", "grpc", "http1", "oneway"]),
    st.integers(0, 2**32),
    st.integers(0, 64),
)
def test_non_http2_traffic_is_never_taken_for_http2_or_websocket(
    kind: str, seed: int, skip: int
) -> None:
    rng = random.Random(seed)

    def make() -> bytes:
        if kind in ("random", "oneway"):
            return rng.randbytes(rng.randint(1, 5000))
        if kind == "grpc":
            return _grpc_like(rng)
        if kind == "tls":
            return _tls_records(rng)
        if kind == "http1":
            return _http1(rng)
        return _length_prefixed(rng, 2 if kind == "len2" else 4)

    c2s, s2c = make()[skip:], make()[skip:]
    if kind == "oneway":  # a server that talks to a silent client
        c2s = b""
    chunks: Chunks = []
    for i in range(0, max(len(c2s), len(s2c)), 1000):
        if c2s[i : i + 1000]:
            chunks.append(("c2s", c2s[i : i + 1000], 1.0 + i))
        if s2c[i : i + 1000]:
            chunks.append(("s2c", s2c[i : i + 1000], 1.5 + i))
    if not chunks:
        return
    part = decode(chunks, midstream=True)
    (row,) = of(part, ConnectionRecord)
    assert row.http_version not in ("h2", "h2c")
    assert not of(part, MessageRecord)
    assert not [r for r in of(part, StreamRecord) if r.kind == "websocket"]


def _tls_body(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randint(20, 3000))
    return b"\x17\x03\x03" + struct.pack(">H", len(body)) + body


def test_real_tls_without_keys_cut_anywhere_is_never_http2_or_websocket() -> None:
    """The team's real TLS captures, read below the TLS layer (raw TCP payloads, no keys) and
    cut at every chunk and inside it: TLS, or unknown -- never HTTP/2 or a WebSocket."""
    from h2ws.analysis.sources.pcap import CaptureReader
    from h2ws.analysis.sources.tcp import TcpReassembler

    for name in (
        "tls_node_ws.pcapng",
        "ff153_hypercorn_pmd.pcapng",
        "chr_h1_fallback_newconn.pcapng",
    ):
        reassembler = TcpReassembler(capture=name, conn_id_prefix=name)
        events = []
        for item in CaptureReader(SAMPLE_CAPTURES / name):
            if not isinstance(item, DiagnosticRecord):
                events += reassembler.feed(item)
        events += reassembler.finish()
        by_conn: dict[str, Chunks] = {}
        for e in events:
            if isinstance(e, Data):
                by_conn.setdefault(e.conn_id, []).append((e.direction, e.data, e.ts))
        assert by_conn, name
        for chunks in by_conn.values():
            for k in range(1, min(len(chunks), 40)):
                for offset in (0, 1, 7, len(chunks[k][1]) // 2):
                    if offset >= len(chunks[k][1]):
                        continue
                    part = decode(cut(chunks, k, offset), midstream=True)
                    (row,) = of(part, ConnectionRecord)
                    assert row.http_version not in ("h2", "h2c", "http/1.1"), (name, k, offset)
                    assert not of(part, MessageRecord) and not of(part, StreamRecord)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.booleans())
def test_http2_streams_of_random_data_are_never_websockets(seed: int, both: bool) -> None:
    """Uploads and downloads whose requests were before the capture (random DATA one or both
    ways, several streams): ``unknown`` streams, never WebSockets."""
    with seeded(seed) as rng:
        pair = H2Pair()
        sids = []
        for i in range(3):
            sid = pair.client.get_next_available_stream_id()
            head = [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "x"),
                (":path", f"/{i}"),
            ]
            pair.client.send_headers(sid, head)
            pair.flush()
            pair.server.send_headers(sid, [(":status", "200")])
            pair.flush()
            sids.append(sid)
        start = len(pair.chunks)
        for _ in range(12):
            sid = rng.choice(sids)
            pair.send("s2c", sid, rng.randbytes(rng.randint(1, 20000)))
            if both:
                pair.send("c2s", sid, rng.randbytes(rng.randint(1, 3000)))
        part = decode(pair.chunks[start:], midstream=True)
    kinds = {s.stream_id: s.kind for s in of(part, StreamRecord)}
    assert kinds and set(kinds) <= set(sids) and set(kinds.values()) == {"unknown"}
    assert not of(part, MessageRecord)


def test_frame_header_rules() -> None:
    ok = bytes.fromhex("000004080000000001")  # WINDOW_UPDATE, 4 bytes, stream 1
    assert resync.plausible(ok, 0) is not None
    assert resync.plausible(bytes.fromhex("000004080000000000"), 0) is not None  # stream 0 ok
    assert resync.plausible(bytes.fromhex("000005080000000001"), 0) is None  # length
    assert resync.plausible(bytes.fromhex("000000040000000001"), 0) is None  # SETTINGS sid
    assert resync.plausible(bytes.fromhex("000000004000000001"), 0) is None  # DATA flag 0x40
    assert resync.plausible(bytes.fromhex("004001000000000001"), 0) is None  # > 16 KiB
    assert resync.plausible(bytes.fromhex("0000000b0000000001"), 0) is None  # type 0xb
    assert resync.plausible(bytes.fromhex("000000000080000001"), 0) is None  # reserved bit


def test_websocket_chain_rules() -> None:
    client = ws_peer("c2s")
    wire = b"".join(client.send_data(f"m{i}", fin=True) for i in range(3))
    chain = ws_resync.find_ws_chain(wire, True)
    assert chain is not None and chain.start == 0 and chain.evidence == 3
    # masked frames are not the server's: nothing from the start, too little to be judged one
    wrong = ws_resync.find_ws_chain(wire, False)
    assert wrong is None or wrong.start > 0
    assert not ws_resync.judge(None, wrong, False, True, carrier="h2")
    # from inside the first frame: the first boundary all candidates agree on
    inner = ws_resync.find_ws_chain(wire[3:], True)
    assert inner is not None and inner.lost_lead
    # a 2-byte length-prefixed protocol is a run of continuation frames: no evidence
    assert ws_resync.find_ws_chain(struct.pack(">H", 5) + b"hello" * 1, False) is None


BUSY = busy_pair()
BUSY_WHOLE = decode(BUSY, midstream=False)


# ---------------------------------------------------------------------- HTTP/1.1 after Upgrade

_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def raw_websocket() -> Chunks:
    rng = random.Random(3)
    chunks: Chunks = [("c2s", _UPGRADE, 1.0), ("s2c", _ACCEPT, 1.01)]
    peers = {"c2s": ws_peer("c2s"), "s2c": ws_peer("s2c")}
    ts = 1.02
    for n in range(30):
        d = rng.choice(("c2s", "s2c"))
        frame = peers[d]
        payload = os.urandom(rng.randint(0, 400))
        if n % 6 == 0:
            wire = frame.send_data(payload[:7], fin=False) + frame.ping(b"x")
            wire += frame.send_data(payload[7:], fin=True)
        else:
            wire = frame.send_data(payload, fin=True)
        ts += 0.01
        chunks.append((d, wire, ts))
    return chunks


def test_http1_websocket_after_its_upgrade_is_recognised() -> None:
    chunks = raw_websocket()
    whole = decode(chunks, midstream=False)
    assert sum(map(len, messages(whole).values())) >= 30
    for k in range(2, len(chunks) - 6, 3):
        for offset in (0, 1, 3):
            part = decode(cut(chunks, k, offset), midstream=True)
            (row,) = of(part, ConnectionRecord)
            assert_suffix(whole, part)
            if offset and row.http_version == "unknown":
                continue  # too few frames after the first boundary every candidate shares
            assert (row.http_version, row.start_captured, row.websockets) == ("http/1.1", False, 1)
            (s,) = of(part, StreamRecord)
            assert (s.kind, s.inferred) == ("websocket", True)
            assert_suffix(whole, part)
            if offset == 0:  # every later message
                assert len(of(part, MessageRecord)) >= len(chunks) - k - 2
            else:
                assert "ws_midstream_message" in codes(part)


def test_http1_websocket_roles_told_by_masking() -> None:
    chunks = raw_websocket()[5:]
    flipped = [("s2c" if d == "c2s" else "c2s", b, ts) for d, b, ts in chunks]
    part = decode(flipped, midstream=True)
    (row,) = of(part, ConnectionRecord)
    assert row.client_port == 8080  # the masked side, whatever the ports said
    assert of(part, MessageRecord)


def test_websocket_boundary_is_the_first_from_which_frames_chain() -> None:
    server = ws_peer("s2c")
    real = b"".join(server.send_data(f"message {i}", fin=True) for i in range(4))
    # the tail of a frame begun before the capture: no header in it chains onto the frames
    chain = ws_resync.find_ws_chain(b"\xff\x8b\x00" + real, False)
    assert chain is not None and chain.start == 3 and chain.evidence == 4
    assert chain.lost_lead
    # a second boundary inside the tail (a ping inside the message): decoded too
    chain = ws_resync.find_ws_chain(b"\x07\x00" + server.ping(b"in") + real, False)
    assert chain is not None and chain.start == 2 and chain.evidence == 5
    # the documented limit: a chance header in the tail that chains exactly onto the frames
    # (here an empty ping) cannot be told from a real one, and is taken
    chain = ws_resync.find_ws_chain(b"\xff\x89\x00" + real, False)
    assert chain is not None and chain.start == 1
    # a close frame with a code no endpoint sends, or text that is not UTF-8: never a frame
    for fake in (b"\x88\x02\x03\xed", b"\x81\x02\xff\xfe"):
        chain = ws_resync.find_ws_chain(b"\xff" + fake + real, False)
        assert chain is not None and chain.start == 1 + len(fake), fake


# ---------------------------------------------------------------------- exact cuts (#14)


@contextmanager
def seeded(seed: int) -> Iterator[random.Random]:
    """Reproducible traffic: wsproto draws its masking keys from ``os.urandom``."""
    rng = random.Random(seed)
    with patch.object(os, "urandom", rng.randbytes):
        yield rng


def _send_message(rng: random.Random, frame: FrameProtocol, n: int, deflate: bool) -> bytes:
    """One message of a mixed workload: binary, JSON-like text, fragmented with a ping inside,
    now and then one larger than an HTTP/2 frame (so DATA starts inside a WebSocket frame)."""
    kind = n % 6
    if kind == 0:  # fragmented, a ping between its frames
        payload = rng.randbytes(rng.randint(20, 400))
        wire = frame.send_data(payload[:10], fin=False) + frame.ping(b"p")
        return wire + frame.send_data(payload[10:], fin=True)
    if kind == 1:
        items = ", ".join(str(rng.randint(0, 999)) for _ in range(30))
        text = f'{{"n": {n}, "items": [{items}]}}'
        return frame.send_data(text, fin=True)
    if kind == 2 and n % 4 == 2:
        return frame.send_data(rng.randbytes(rng.randint(17000, 40000)), fin=True)
    if kind == 3 and deflate:  # a fragmented text message, compressed
        text = f"é repeated text {n} " * rng.randint(1, 20)
        return frame.send_data(text[:7], fin=False) + frame.send_data(text[7:], fin=True)
    return frame.send_data(rng.randbytes(rng.randint(0, 300)), fin=True)


def mixed_pair(seed: int = 5) -> Chunks:
    """Four RFC 8441 WebSockets on one h2c connection (python-hyper h2 + wsproto), two of them
    with permessage-deflate; binary, text, fragmented and large messages; GETs with binary
    bodies interleaved."""
    with seeded(seed) as rng:
        pair = H2Pair()
        peers: dict[tuple[int, str], FrameProtocol] = {}
        sids = []
        for i in range(4):
            deflate = i % 2 == 1
            sid = pair.open_websocket(
                f"/ws{i}", extensions="permessage-deflate" if deflate else None
            )
            sids.append(sid)
            for d in ("c2s", "s2c"):
                pmd = None
                if deflate:
                    pmd = PerMessageDeflate()
                    pmd.finalize("permessage-deflate")
                peers[sid, d] = ws_peer(d, pmd)
        for n in range(90):
            sid = rng.choice(sids)
            d = rng.choice(("c2s", "s2c"))
            deflate = sids.index(sid) % 2 == 1
            pair.send(d, sid, _send_message(rng, peers[sid, d], n, deflate))
            if n % 9 == 4:
                pair.get(f"/r{n}", body=rng.randbytes(rng.randint(1, 5000)))
        return pair.chunks


def raw_websocket_mixed(seed: int = 3) -> Chunks:
    """An HTTP/1.1 WebSocket (wsproto frames after an Upgrade), several messages per TCP
    segment now and then, as a sender under load writes them."""
    with seeded(seed) as rng:
        chunks: Chunks = [("c2s", _UPGRADE, 1.0), ("s2c", _ACCEPT, 1.01)]
        peers = {"c2s": ws_peer("c2s"), "s2c": ws_peer("s2c")}
        ts = 1.02
        n = 0
        while n < 60:
            d = rng.choice(("c2s", "s2c"))
            wire = b""
            for _ in range(rng.choice((1, 1, 2, 3))):
                wire += _send_message(rng, peers[d], n, False)
                n += 1
            ts += 0.01
            chunks.append((d, wire, ts))
        return chunks


def _whole(chunks: Chunks) -> list[Record]:
    return decode(chunks, midstream=False)


MIXED = mixed_pair()
MIXED_WHOLE = _whole(MIXED)
MIXED_ORACLE = h2_oracle(
    MIXED,
    of(MIXED_WHOLE, MessageRecord),
    {s.stream_id for s in of(MIXED_WHOLE, StreamRecord) if s.kind == "websocket"},
)
RAW = raw_websocket_mixed()
RAW_ORACLE = tcp_oracle(RAW, of(_whole(RAW), MessageRecord))


def test_the_mixed_traffic_is_what_the_cut_tests_need() -> None:
    rows = of(MIXED_WHOLE, MessageRecord)
    assert len(rows) > 100 and not codes(MIXED_WHOLE)
    assert {m.opcode for m in rows} >= {"text", "binary", "ping"}
    assert any(m.compressed for m in rows) and any(m.fragments > 1 and m.compressed for m in rows)
    assert any(m.length > 16384 for m in rows)
    assert sum(s.kind == "http" for s in of(MIXED_WHOLE, StreamRecord)) >= 9
    raw = of(_whole(RAW), MessageRecord)
    assert len(raw) >= 60 and any(
        len(RAW_ORACLE.carriers[None, d].messages) for d in ("c2s", "s2c")
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_cuts_of_mixed_h2c_traffic_decode_exactly(data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(MIXED) - 1), label="chunk")
    offset = data.draw(st.integers(0, len(MIXED[k][1]) - 1), label="offset")
    part = decode(cut(MIXED, k, offset), midstream=True)
    assert_exact(MIXED_ORACLE, k, offset, part, tcp=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_cuts_of_an_http1_websocket_decode_exactly(data: st.DataObject) -> None:
    k = data.draw(st.integers(2, len(RAW) - 1), label="chunk")
    offset = data.draw(st.integers(0, len(RAW[k][1]) - 1), label="offset")
    part = decode(cut(RAW, k, offset), midstream=True)
    assert_exact(RAW_ORACLE, k, offset, part, tcp=True)


def _server_only(frames: int) -> Chunks:
    with seeded(9) as rng:
        pair = H2Pair()
        sid = pair.open_websocket("/feed")
        start = len(pair.chunks)
        server = ws_peer("s2c")
        for _ in range(frames):
            pair.send("s2c", sid, server.send_data(rng.randbytes(rng.randint(1, 200)), fin=True))
        return pair.chunks[start:]


def test_a_websocket_whose_client_is_silent_needs_four_server_frames() -> None:
    """Unmasked frames alone are weak evidence: one way, a stream is a WebSocket from
    MIN_ONE_WAY_FRAMES chained frames on; with fewer it stays ``unknown``, nothing decoded."""
    assert ws_resync.MIN_ONE_WAY_FRAMES == 4
    for frames, kind in ((3, "unknown"), (4, "websocket"), (12, "websocket")):
        part = decode(_server_only(frames), midstream=True)
        (s,) = [r for r in of(part, StreamRecord) if r.inferred]
        assert (s.kind, len(of(part, MessageRecord))) == (kind, frames if kind != "unknown" else 0)


def test_an_http1_websocket_seen_only_from_the_server_is_not_guessed() -> None:
    """A raw TCP connection has no framing of its own to back unmasked frames: without two
    masked client frames it stays ``unknown``."""
    chunks = [c for c in raw_websocket_mixed()[2:] if c[0] == "s2c"]
    part = decode(chunks, midstream=True)
    (row,) = of(part, ConnectionRecord)
    assert row.http_version != "http/1.1" and not of(part, MessageRecord)
    assert "unknown_protocol" in codes(part)


def test_websocket_boundary_search_is_bounded_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DATA of an inferred stream made of tiny valid WebSocket frames (a run of 0x81: masked
    one-byte text frames) chains from every offset of the search window: without a bound on
    the frame headers read, each DATA frame re-ran a search of minutes.  With it: the stream
    stays unknown, one ws_resync_budget diagnostic, and the search stops."""
    monkeypatch.setattr(ws_resync, "SCAN_BUDGET", 50_000)
    frames = [
        (d, struct.pack(">I", 4096)[1:] + b"\x00\x00" + struct.pack(">I", 1) + b"\x81" * 4096)
        for _ in range(24)
        for d in ("c2s", "s2c")
    ]
    calls = Counter[str]()
    real = ws_resync.chain_from

    def counted(*args: object, **kwargs: object) -> object:
        calls["chain_from"] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ws_resync, "chain_from", counted)
    part = decode([(d, b, 1.0 + i) for i, (d, b) in enumerate(frames)], midstream=True)
    assert codes(part).count("ws_resync_budget") == 1, codes(part)
    assert [s.kind for s in of(part, StreamRecord)] == ["unknown"]
    assert not of(part, MessageRecord)
    assert calls["chain_from"] <= 50_000  # every call reads at least one header


def test_scan_budget_stops_a_chain() -> None:
    frame = b"\x82\x82\x01\x02\x03\x04ab"  # a masked two-byte binary frame
    budget = ws_resync.ScanBudget(5)
    assert ws_resync.chain_from(frame * 10, 0, True, budget) is None and budget.spent
    assert ws_resync.chain_from(frame * 10, 0, True) is not None


def test_data_held_by_undecided_streams_is_bounded_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many streams whose requests were before the capture, each sending DATA that is not
    WebSocket framing: what they hold while undecided is bounded per connection, so a later
    stream is no longer held (it stays unknown)."""
    from h2ws.analysis.core.h2 import streams

    monkeypatch.setattr(streams, "_MAX_HELD_PER_CONNECTION", 40_000)
    head = struct.pack(">I", 9000)[1:] + b"\x00\x00"
    body = b"\x00" * 9000
    chunks = [("c2s", head + struct.pack(">I", sid) + body, 1.0) for sid in range(1, 21, 2)]
    decoder = ConnectionDecoder(replace(INFO, midstream=True), FULL)
    for direction, data, ts in chunks:
        decoder.feed(direction, data, ts)  # type: ignore[arg-type]
    layer = decoder._h2
    assert layer is not None
    assert layer.held_total <= 40_000
    held = [s for s in layer.streams.values() if s.held is not None]
    assert 0 < len(held) < 10


def test_a_chance_header_inside_the_lead_in_is_not_the_first_boundary() -> None:
    """The bytes begin on a real frame -- the continuation that ends a message begun before
    the capture, too little evidence on its own -- whose payload happens to hold a valid
    masked pong header that ends exactly where the continuation does.  The search must not
    take that chance pong for the first boundary (it did on about one real cut in six): it
    waits for more frames, and then starts at offset 0."""
    n, length = 20, 200
    payload = bytearray(length)  # masked bytes as on the wire: zeros chain nowhere
    j = length - 6 - n
    payload[j : j + 6] = bytes([0x8A, 0x80 | n, 1, 2, 3, 4])  # masked pong, FIN, 20 bytes
    lead_in = bytes([0x80, 0x80 | 126]) + length.to_bytes(2, "big") + b"\x05\x06\x07\x08"
    lead_in += payload
    assert ws_resync.find_ws_chain(lead_in, True) is None
    later = bytes([0x82, 0x83, 9, 9, 9, 9]) + b"abc"  # the next message: a real binary frame
    chain = ws_resync.find_ws_chain(lead_in + later, True)
    assert chain is not None and chain.start == 0
