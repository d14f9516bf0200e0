"""TCP reassembly rules, each with a case that must fail when the rule is broken."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws.analysis.core.chunks import ChunkEvent, Closed, Data, Gap, Opened
from h2ws.analysis.records import DiagnosticRecord
from h2ws.analysis.sources.tcp import ACK, FIN, RST, SYN, TcpReassembler, TcpSegment, new_segment

C, S = ("10.0.0.1", 40000), ("10.0.0.2", 443)
CISN, SISN = 1000, 9000
T0 = 1_700_000_000.0


class Wire:
    """Builds the segments of one connection; sequence numbers are stream offsets + ISN."""

    def __init__(
        self,
        client: tuple[str, int] = C,
        server: tuple[str, int] = S,
        cisn: int = CISN,
        sisn: int = SISN,
    ) -> None:
        self.ends = {"c2s": (client, server), "s2c": (server, client)}
        self.isn = {"c2s": cisn, "s2c": sisn}
        self.ts = T0

    def seg(
        self,
        direction: str,
        offset: int = 0,
        payload: bytes = b"",
        flags: int = ACK,
        ack: int | None = None,
    ) -> TcpSegment:
        """``offset`` counts data bytes from 0 (the SYN's own number is offset -1)."""
        (src, sport), (dst, dport) = self.ends[direction]
        other = "s2c" if direction == "c2s" else "c2s"
        ack_no = (self.isn[other] + 1 + (ack or 0)) & 0xFFFFFFFF if flags & ACK else 0
        self.ts += 0.001
        seq = (self.isn[direction] + 1 + offset) & 0xFFFFFFFF
        return TcpSegment(self.ts, src, sport, dst, dport, seq, ack_no, flags, payload)

    def handshake(self) -> list[TcpSegment]:
        return [
            self.seg("c2s", -1, flags=SYN),
            self.seg("s2c", -1, flags=SYN | ACK),
            self.seg("c2s", 0),
        ]


def run(segments: Iterable[TcpSegment], **kw: int) -> list[ChunkEvent]:
    tcp = TcpReassembler("/tmp/cap.pcap", **kw)  # type: ignore[arg-type]
    out: list[ChunkEvent] = []
    for seg in segments:
        out += tcp.feed(seg)
    return out + tcp.finish()


def stream(events: list[ChunkEvent], direction: str = "c2s", conn_id: str = "cap.pcap:0") -> bytes:
    return b"".join(
        e.data
        for e in events
        if isinstance(e, Data) and e.direction == direction and e.conn_id == conn_id
    )


def kinds(events: list[ChunkEvent]) -> list[str]:
    return [e.code if isinstance(e, DiagnosticRecord) else type(e).__name__ for e in events]


def gaps(events: list[ChunkEvent]) -> list[tuple[str, int | None]]:
    return [(e.direction, e.length) for e in events if isinstance(e, Gap)]


# -- order -------------------------------------------------------------------------------------


def test_in_order_connection() -> None:
    w = Wire()
    segs = [
        *w.handshake(),
        w.seg("c2s", 0, b"hello "),
        w.seg("s2c", 0, b"HI", ack=6),
        w.seg("c2s", 6, b"world", ack=2),
        w.seg("c2s", 11, flags=FIN | ACK, ack=2),
        w.seg("s2c", 2, flags=FIN | ACK, ack=12),
        w.seg("c2s", 12, ack=3),  # the last ACK: not a new connection
    ]
    events = run(segs)
    assert kinds(events) == ["Opened", "Data", "Data", "Data", "Closed"]
    opened = events[0]
    assert isinstance(opened, Opened)
    info = opened.conn
    assert (
        info.conn_id,
        info.client_addr,
        info.client_port,
        info.server_addr,
        info.server_port,
    ) == (
        "cap.pcap:0",
        *C,
        *S,
    )
    assert info.capture == "/tmp/cap.pcap" and info.source == "pcap"
    assert "midstream_start" not in kinds(events)  # the handshake was seen
    assert stream(events) == b"hello world" and stream(events, "s2c") == b"HI"
    closed = events[-1]
    assert isinstance(closed, Closed) and closed.cause == "fin" and closed.ts == segs[-2].ts


def test_data_is_emitted_as_soon_as_in_order() -> None:
    w = Wire()
    tcp = TcpReassembler(None, conn_id_prefix="x")
    for seg in w.handshake():
        tcp.feed(seg)
    first = tcp.feed(w.seg("c2s", 0, b"ab"))
    assert [e.data for e in first if isinstance(e, Data)] == [b"ab"]
    assert tcp.feed(w.seg("c2s", 4, b"ef")) == []  # waits for the hole
    filled = tcp.feed(w.seg("c2s", 2, b"cd"))
    assert [(e.data, e.ts) for e in filled if isinstance(e, Data)] == [(b"cdef", w.ts)]


def test_out_of_order_duplicates_and_overlaps_keep_the_first_copy() -> None:
    w = Wire()
    events = run(
        [
            *w.handshake(),
            w.seg("c2s", 0, b"AAAA"),
            w.seg("c2s", 0, b"AAAA"),  # duplicate
            w.seg("c2s", 2, b"BBBBBB"),  # overlaps the first 2 bytes: only "BBBB" is new
            w.seg("c2s", 14, b"DDDD"),  # out of order
            w.seg("c2s", 12, b"xxxxxx"),  # overlaps buffered D: only "xx" at 12 is new
            w.seg("c2s", 8, b"CCCC"),  # fills the hole
            w.seg("c2s", 3, b"zzzzzzzzz"),  # all old
        ]
    )
    assert stream(events) == b"AAAABBBBCCCCxxDDDD"
    assert gaps(events) == []


def test_sequence_wraparound() -> None:
    w = Wire(cisn=2**32 - 5)
    events = run(
        [*w.handshake(), w.seg("c2s", 0, b"0123"), w.seg("c2s", 8, b"89"), w.seg("c2s", 4, b"4567")]
    )
    assert stream(events) == b"0123456789"


def test_streams_longer_than_4_gib() -> None:
    w = Wire(cisn=2**32 - 100)
    chunk = bytes(range(256)) * 4096  # 1 MiB, the same object every time
    tcp = TcpReassembler(None)
    for seg in w.handshake():
        tcp.feed(seg)
    total = 0
    n = 4100
    for i in range(n):
        for e in tcp.feed(w.seg("c2s", i * len(chunk), chunk)):
            assert isinstance(e, Data)
            total += len(e.data)
    # past 4 GiB an out-of-order pair still lands where it belongs
    end = n * len(chunk)
    assert tcp.feed(w.seg("c2s", end + 3, b"def")) == []
    late = tcp.feed(w.seg("c2s", end, b"abc"))
    assert [e.data for e in late if isinstance(e, Data)] == [b"abcdef"]
    assert total == n * len(chunk) > 2**32


# -- SYN, FIN, RST -------------------------------------------------------------------------------


def test_syn_and_fin_consume_one_sequence_number() -> None:
    w = Wire()
    events = run(
        [
            w.seg("c2s", -1, b"fast open", flags=SYN),  # data on a SYN starts after it
            w.seg("s2c", -1, flags=SYN | ACK, ack=9),
            w.seg("c2s", 9, b"!", flags=FIN | ACK),
            w.seg("s2c", 0, b"late", flags=ACK, ack=11),  # server data after the client's FIN
            w.seg("s2c", 4, flags=FIN | ACK, ack=11),
        ]
    )
    assert stream(events) == b"fast open!" and stream(events, "s2c") == b"late"
    assert kinds(events)[-1] == "Closed" and events[-1].cause == "fin"  # type: ignore[union-attr]


def test_fin_waits_for_the_data_before_it() -> None:
    w = Wire()
    events = run(
        [
            *w.handshake(),
            w.seg("c2s", 3, flags=FIN | ACK),
            w.seg("s2c", 0, flags=FIN | ACK),
            w.seg("c2s", 0, b"abc"),
        ]
    )
    assert kinds(events) == ["Opened", "Data", "Closed"]
    assert stream(events) == b"abc" and events[-1].cause == "fin"  # type: ignore[union-attr]


def test_rst_closes_and_stragglers_are_ignored() -> None:
    w = Wire()
    events = run(
        [
            *w.handshake(),
            w.seg("c2s", 0, b"x"),
            w.seg("s2c", 0, flags=RST | ACK, ack=1),
            w.seg("c2s", 1, b"y"),
        ]
    )
    assert kinds(events) == ["Opened", "Data", "Closed"]
    assert events[-1].cause == "rst"  # type: ignore[union-attr]


def test_refused_connection_is_a_connection() -> None:
    w = Wire()
    events = run([w.seg("c2s", -1, flags=SYN), w.seg("s2c", -1, flags=RST | ACK)])
    assert kinds(events) == ["Opened", "Closed"]


def test_syn_without_data_is_opened_and_closed_at_the_end() -> None:
    w = Wire()
    events = run([w.seg("c2s", -1, flags=SYN), w.seg("c2s", -1, flags=SYN)])  # + retransmission
    assert kinds(events) == ["Opened", "Closed"]
    assert events[-1].cause == "capture_ended"  # type: ignore[union-attr]


def test_stray_rst_is_not_a_connection() -> None:
    assert run([Wire().seg("c2s", 5, flags=RST)]) == []


def test_four_tuple_reuse_after_close_is_a_new_connection() -> None:
    w1, w2 = Wire(), Wire(cisn=777, sisn=888)
    old = [
        *w1.handshake(),
        w1.seg("c2s", 0, b"one", flags=FIN | ACK),
        w1.seg("s2c", 0, flags=FIN | ACK, ack=4),
    ]
    new = [*w2.handshake(), w2.seg("c2s", 0, b"two")]
    events = run(old + new)
    assert kinds(events) == ["Opened", "Data", "Closed", "Opened", "Data", "Closed"]
    assert stream(events) == b"one" and stream(events, conn_id="cap.pcap:1") == b"two"


def test_new_syn_on_an_open_four_tuple_ends_the_old_connection() -> None:
    w1, w2 = Wire(), Wire(cisn=777, sisn=888)
    events = run(
        [*w1.handshake(), w1.seg("c2s", 0, b"one"), *w2.handshake(), w2.seg("c2s", 0, b"two")]
    )
    assert kinds(events) == ["Opened", "Data", "port_reuse", "Closed", "Opened", "Data", "Closed"]
    assert events[3].cause == "closed"  # type: ignore[union-attr]
    assert stream(events, conn_id="cap.pcap:1") == b"two"


# -- losses ------------------------------------------------------------------------------------


def test_lost_segment_becomes_a_gap_and_reassembly_continues() -> None:
    w = Wire()
    events = run(
        [*w.handshake(), w.seg("c2s", 0, b"abc"), w.seg("c2s", 6, b"ghi"), w.seg("c2s", 9, b"jkl")]
    )
    assert kinds(events) == ["Opened", "Data", "Gap", "gap", "Data", "Closed"]
    assert gaps(events) == [("c2s", 3)]
    assert stream(events) == b"abcghijkl"
    diag = events[3]
    assert isinstance(diag, DiagnosticRecord)
    assert (diag.conn_id, diag.layer, diag.severity) == ("cap.pcap:0", "tcp", "error")


def test_hole_before_fin_has_the_length_the_fin_tells() -> None:
    w = Wire()
    events = run([*w.handshake(), w.seg("c2s", 0, b"abc"), w.seg("c2s", 10, flags=FIN | ACK)])
    assert gaps(events) == [("c2s", 7)]


def test_acknowledged_hole_is_declared_at_once() -> None:
    w = Wire()
    tcp = TcpReassembler(None)
    for seg in [*w.handshake(), w.seg("c2s", 0, b"abc"), w.seg("c2s", 6, b"ghi")]:
        tcp.feed(seg)
    # the server acknowledges all 9 bytes: it got "def", the capture did not
    events = tcp.feed(w.seg("s2c", 0, ack=9))
    assert kinds(events) == ["Gap", "gap", "Data"]
    assert gaps(events) == [("c2s", 3)]


def test_acknowledged_but_never_captured_tail_is_a_gap() -> None:
    w = Wire()
    events = run([*w.handshake(), w.seg("c2s", 0, b"abc"), w.seg("s2c", 0, ack=8)])
    assert gaps(events) == [("c2s", 5)]


def test_full_buffer_declares_the_hole_lost() -> None:
    w = Wire()
    tcp = TcpReassembler(None, max_buffer_segments=3)
    for seg in [*w.handshake(), w.seg("c2s", 0, b"a")]:
        tcp.feed(seg)
    for i in range(3):
        assert tcp.feed(w.seg("c2s", 2 + i, b"cde"[i : i + 1])) == []
    events = tcp.feed(w.seg("c2s", 10, b"k"))
    assert kinds(events) == ["Gap", "gap", "Data"]
    assert [e.data for e in events if isinstance(e, Data)] == [b"cde"]
    late = tcp.feed(w.seg("c2s", 1, b"b"))  # too late: dropped, not inserted
    assert late == []
    assert gaps(tcp.finish()) == [("c2s", 5)]


def test_buffer_byte_limit() -> None:
    w = Wire()
    tcp = TcpReassembler(None, max_buffer_bytes=10)
    for seg in w.handshake():
        tcp.feed(seg)
    assert tcp.feed(w.seg("c2s", 5, b"x" * 10)) == []
    assert gaps(tcp.feed(w.seg("c2s", 15, b"y"))) == [("c2s", 5)]


# -- mid-stream --------------------------------------------------------------------------------


def test_midstream_start_infers_the_client_from_the_server_port() -> None:
    w = Wire()
    events = run([w.seg("s2c", 100, b"response", ack=50), w.seg("c2s", 50, b"request", ack=108)])
    assert kinds(events) == ["Opened", "midstream_start", "Data", "Data", "Closed"]
    info = events[0].conn  # type: ignore[union-attr]
    assert (info.client_addr, info.client_port) == C
    assert events[1].severity == "warning" and events[1].conn_id == "cap.pcap:0"  # type: ignore[union-attr]
    assert stream(events) == b"request" and stream(events, "s2c") == b"response"


def test_midstream_start_without_server_port_takes_the_first_sender() -> None:
    w = Wire(client=("10.0.0.1", 50000), server=("10.0.0.2", 40000))
    events = run([w.seg("s2c", 0, b"x")])
    assert (events[0].conn.client_port, events[0].conn.server_port) == (40000, 50000)  # type: ignore[union-attr]


def test_midstream_peer_starts_at_the_acknowledged_byte() -> None:
    w = Wire()
    # the client acknowledged 10 server bytes; the first server segment seen starts at 14
    events = run([w.seg("c2s", 0, b"req", ack=10), w.seg("s2c", 14, b"tail")])
    assert gaps(events) == [("s2c", 4)]


def test_events_interleave_in_capture_order_across_connections() -> None:
    a, b = Wire(), Wire(client=("10.0.0.3", 40001))
    segs = [
        a.seg("c2s", -1, flags=SYN),
        b.seg("c2s", -1, flags=SYN),
        a.seg("c2s", 0, b"a"),
        b.seg("c2s", 0, b"b"),
    ]
    events = run(segs)
    assert [
        (type(e).__name__, getattr(e, "conn_id", None) or e.conn.conn_id) for e in events[:4]
    ] == [  # type: ignore[union-attr]
        ("Opened", "cap.pcap:0"),
        ("Opened", "cap.pcap:1"),
        ("Data", "cap.pcap:0"),
        ("Data", "cap.pcap:1"),
    ]


# -- properties ---------------------------------------------------------------------------------


@st.composite
def segmented(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]], int]:
    data = draw(st.binary(min_size=1, max_size=3000))
    cuts = sorted(
        draw(st.sets(st.integers(1, len(data) - 1), max_size=40)) if len(data) > 1 else set()
    )
    bounds = [0, *cuts, len(data)]
    pieces = list(itertools.pairwise(bounds))
    isn = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 3000, 2**32 - 1)))
    return data, pieces, isn


def _feed_pieces(data: bytes, ranges: list[tuple[int, int]], isn: int) -> list[ChunkEvent]:
    w = Wire(cisn=isn)
    segs = [w.seg("c2s", -1, flags=SYN)]
    segs += [w.seg("c2s", a, data[a:b], flags=0) for a, b in ranges]
    segs.append(w.seg("c2s", len(data), flags=FIN))
    return run(segs)


@settings(max_examples=300, deadline=None)
@given(seg=segmented(), rnd=st.randoms(use_true_random=False))
def test_reassembly_restores_any_shuffled_stream(
    seg: tuple[bytes, list[tuple[int, int]], int], rnd: random.Random
) -> None:
    data, pieces, isn = seg
    ranges = list(pieces)
    for _ in range(rnd.randrange(10)):
        ranges.append(rnd.choice(pieces))  # duplicates
        a = rnd.randrange(len(data))
        ranges.append((a, rnd.randrange(a + 1, len(data) + 1)))  # overlaps
    rnd.shuffle(ranges)
    events = _feed_pieces(data, ranges, isn)
    assert all(e.data for e in events if isinstance(e, Data))  # no empty chunks
    assert stream(events) == data
    assert gaps(events) == []
    assert not any(isinstance(e, DiagnosticRecord) for e in events)


@settings(max_examples=300, deadline=None)
@given(seg=segmented(), rnd=st.randoms(use_true_random=False))
def test_one_lost_segment_is_exactly_one_gap(
    seg: tuple[bytes, list[tuple[int, int]], int], rnd: random.Random
) -> None:
    data, pieces, isn = seg
    lost = rnd.choice(pieces)
    kept = [p for p in pieces if p != lost]
    ranges = kept + [rnd.choice(kept) for _ in range(rnd.randrange(5))] if kept else []
    for _ in range(rnd.randrange(5)):  # overlaps that stay clear of the lost range
        a, b = sorted(rnd.sample(range(len(data) + 1), 2)) if len(data) > 1 else (0, 1)
        if b <= lost[0] or a >= lost[1]:
            ranges.append((a, b))
    rnd.shuffle(ranges)
    events = _feed_pieces(data, ranges, isn)
    assert stream(events) == data[: lost[0]] + data[lost[1] :]
    assert gaps(events) == [("c2s", lost[1] - lost[0])]
    assert [e.code for e in events if isinstance(e, DiagnosticRecord)] == ["gap"]


def test_fast_segment_constructor_builds_the_same_frozen_segment() -> None:
    args = (T0, "10.0.0.1", 1, "::1", 2, 3, 4, ACK, b"x")
    seg = new_segment(*args)
    assert seg == TcpSegment(*args) and type(seg) is TcpSegment
    assert (seg.seq, seg.flags, seg.payload) == (3, ACK, b"x")
    with pytest.raises(AttributeError):
        seg.seq = 5  # type: ignore[misc]
