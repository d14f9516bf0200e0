"""Real captures cut at named positions (issue #14): each test cuts one real connection exactly
where the issue names -- inside an HTTP/2 frame header, inside a DATA frame, inside a WebSocket
frame header, inside a (fragmented) message, between HEADERS that insert HPACK entries and
HEADERS that refer to them -- and compares the decode of the cut with the decode of the whole
capture through :mod:`tests.cut_oracle` (:func:`tests.test_midconn.assert_exact`): every message
whose bytes are all after the cut decodes exactly (opcode, length, sha256, order), none is
invented, every affected stream and direction has its ``ws_midstream_message``.

The positions are found in the capture's own bytes (the oracle's parse of its frames), so a test
names what it cuts, not an offset that would go stale.  TLS captures are cut in their decrypted
bytes (the key log given; the TLS layer's own mid-handshake cuts are ``tests/test_tls*.py``'s):
the decoder under test sees the same plaintext either way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hyperframe.frame import DataFrame, HeadersFrame

from h2ws.analysis.core.chunks import ConnectionInfo, Data, Opened
from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    MessageRecord,
    Record,
    StreamRecord,
)
from h2ws.analysis.sources.capture import capture_events
from h2ws.testkit.peers import runner
from h2ws.testkit.peers.runner import SEED, EchoServer

from .conftest import require
from .cut_oracle import PREFACE, Oracle, h2_oracle, tcp_oracle, wire_frames
from .paths import SAMPLE_CAPTURES
from .test_midconn import Chunks, assert_exact, codes, cut, decode, of


@dataclass
class Conn:
    """One real connection's plaintext chunks, its whole decode and its oracle."""

    info: ConnectionInfo
    chunks: Chunks
    whole: list[Record]
    oracle: Oracle
    tcp: bool  # an HTTP/1.1 WebSocket (raw frames after the Upgrade), not HTTP/2

    def wire(self, d: str) -> bytes:
        return b"".join(data for dd, data, _ in self.chunks if dd == d)

    def at(self, d: str, pos: int) -> tuple[int, int]:
        """(chunk, offset) of :func:`tests.test_midconn.cut` that loses ``d``'s first ``pos``
        bytes (and the other direction's bytes sent before that chunk)."""
        seen = 0
        for k, (dd, data, _) in enumerate(self.chunks):
            if dd != d:
                continue
            if seen <= pos < seen + len(data):
                return k, pos - seen
            seen += len(data)
        raise AssertionError(f"{d} has no byte {pos}")

    def check(self, k: int, offset: int) -> tuple[int, list[Record]]:
        """The cut's decode against the oracle; (messages checked, records)."""
        part = decode(cut(self.chunks, k, offset), midstream=True, info=self.info)
        (row,) = of(part, ConnectionRecord)
        assert row.start_captured is False
        return assert_exact(self.oracle, k, offset, part, tcp=self.tcp), part


def connection(path: Path, keys: Path | None = None, pick: int | None = None) -> Conn:
    """The capture's (``pick``-th, else only) connection with data, decoded whole."""
    events = list(capture_events(path, Counter(), [keys] if keys else []))
    infos = {e.conn.conn_id: e.conn for e in events if isinstance(e, Opened)}
    by_conn: dict[str, Chunks] = {}
    for e in events:
        if isinstance(e, Data):
            by_conn.setdefault(e.conn_id, []).append((e.direction, e.data, e.ts))
    ids = list(by_conn)
    conn_id = ids[0] if pick is None else ids[pick]
    if pick is None:
        assert len(ids) == 1, ids
    info, chunks = replace(infos[conn_id], midstream=False), by_conn[conn_id]
    whole = decode(chunks, midstream=False, info=info)
    rows = of(whole, MessageRecord)
    tcp = not chunks[0][1].startswith(PREFACE) and not any(
        d == "c2s" and data.startswith(PREFACE) for d, data, _ in chunks
    )
    if tcp:
        oracle = tcp_oracle(chunks, rows)
    else:
        ws = {s.stream_id for s in of(whole, StreamRecord) if s.kind == "websocket"}
        oracle = h2_oracle(chunks, rows, ws)
    return Conn(info, chunks, whole, oracle, tcp)


def ws_data(c: Conn, d: str) -> list[tuple[int, DataFrame]]:
    """The DATA frames of a direction that carry WebSocket bytes."""
    ws = {key[0] for key in c.oracle.carriers}
    return [
        (pos, f)
        for pos, f in wire_frames(c.wire(d), d)
        if isinstance(f, DataFrame) and f.stream_id in ws and f.data
    ]


@pytest.fixture(scope="module")
def own_h2c(peers_dir: Path, echo_server: EchoServer) -> Conn:
    """Our own real h2c capture (prior knowledge): python-hyper h2 + wsproto
    (``testkit/peers/h2_py_client.py``) -> hypercorn, 3 WebSockets (the 1st and 3rd with
    permessage-deflate), fragmented messages (one with a ping inside), GETs interleaved."""
    require("tcpdump")
    scenario = runner.capture_scenario(
        "midconn_cuts",
        peers_dir,
        echo_server,
        lambda log: runner.python_client_cmd(
            "h2_py_client",
            echo_server.port,
            log,
            "--websockets",
            "3",
            "--gets",
            "3",
            "--big",
            "20000",
            "--seed",
            str(SEED),
        ),
    )
    return connection(scenario.capture)


def sample(name: str) -> Conn:
    path = SAMPLE_CAPTURES / name
    keys = path.with_suffix(".keys")
    if name.startswith("chr_"):  # the WebSocket's own HTTP/1.1 connection
        c = connection(path, keys, pick=-1)
        assert c.tcp
        return c
    return connection(path, keys if keys.exists() else None)


# ---------------------------------------------------------------------- positions


def _busiest(c: Conn) -> str:
    """The direction with the most DATA frames of WebSocket bytes."""
    return max(("c2s", "s2c"), key=lambda d: len(ws_data(c, d)))


def inside_frame_header(c: Conn) -> tuple[int, int]:
    """4 bytes into the header of the first DATA frame of WebSocket bytes."""
    d = _busiest(c)
    pos, _ = ws_data(c, d)[0]
    return c.at(d, pos + 4)


def inside_data_frame(c: Conn) -> tuple[int, int]:
    """Half-way into the payload of the first DATA frame of WebSocket bytes."""
    d = _busiest(c)
    pos, f = ws_data(c, d)[0]
    return c.at(d, pos + 9 + len(f.data) // 2)


def _ws_frame_starts(c: Conn, d: str) -> list[int]:
    """TCP positions of the WebSocket frame headers of a direction (every carrier)."""
    out = []
    for key, car in c.oracle.carriers.items():
        if key[1] != d:
            continue
        for m in car.messages:
            for start, _ in m.frames:
                seg = max(i for i, (s, _) in enumerate(car.segments) if s <= start)
                s, tcp = car.segments[seg]
                out.append(tcp + (start - s) + (0 if car.tcp_exact else 9))
    return sorted(out)


def inside_ws_frame_header(c: Conn) -> tuple[int, int]:
    """1 byte into the header of the second WebSocket frame (HTTP/2: the payload's first
    frame may start the DATA frame; the second is inside it)."""
    d = _busiest(c)
    return c.at(d, _ws_frame_starts(c, d)[1] + 1)


def inside_message(c: Conn) -> tuple[int, int]:
    """Inside a message: at the DATA frame (or byte, on raw TCP) that carries a later fragment
    of a fragmented message when there is one, else half-way into the payload of the third
    message's frame."""
    for key, car in c.oracle.carriers.items():
        for m in car.messages:
            if len(m.frames) < 2:
                continue
            start = m.frames[-1][0]
            first = car.origin(m.frames[0][0])
            # the later fragment begins a DATA frame of its own: not merely lies in a later one,
            # whose first bytes may be the tail of the frame before, where a chance header
            # chaining onto the real frames is the documented ambiguity (docs/schema.md)
            begins = any(s == start for s, _ in car.segments)
            if begins and car.origin(start) > first:
                return c.at(key[1], car.origin(start))
    d = _busiest(c)
    car = c.oracle.carriers[next(k for k in c.oracle.carriers if k[1] == d)]
    a, b = car.messages[2].frames[0]
    mid = (a + b) // 2
    if car.tcp_exact:
        return c.at(d, car.origin(mid))
    seg = max(i for i, (s, _) in enumerate(car.segments) if s <= mid)
    s, tcp = car.segments[seg]
    return c.at(d, tcp + 9 + mid - s)


def between_hpack_headers(c: Conn) -> tuple[int, int]:
    """At the client's second HEADERS frame: the first inserted HPACK entries that it and
    later blocks refer to (every browser and python-hyper index ``:authority``,
    ``user-agent``, ...)."""
    heads = [pos for pos, f in wire_frames(c.wire("c2s"), "c2s") if isinstance(f, HeadersFrame)]
    assert len(heads) >= 2
    return c.at("c2s", heads[1])


# ---------------------------------------------------------------------- the tests

H2_CAPTURES = [
    "own_h2c",
    "h2c_hypercorn_ws.pcap",
    "tls_node_ws.pcapng",
    "ff153_hypercorn_pmd.pcapng",
]
ALL_CAPTURES = [*H2_CAPTURES, "chr_h1_fallback_newconn.pcapng"]
_SAMPLES: dict[str, Conn] = {}


@pytest.fixture
def conn(request: pytest.FixtureRequest) -> Conn:
    name: str = request.param
    if name == "own_h2c":
        own: Conn = request.getfixturevalue("own_h2c")
        return own
    if name not in _SAMPLES:
        _SAMPLES[name] = sample(name)
    return _SAMPLES[name]


def _exact(c: Conn, k: int, offset: int) -> tuple[int, list[Record]]:
    checked, part = c.check(k, offset)
    assert checked >= 1, "nothing decoded after the cut"
    assert "h2_midstream" in codes(part) or "ws_midstream" in codes(part)
    return checked, part


@pytest.mark.parametrize("conn", H2_CAPTURES, indirect=True)
def test_cut_inside_a_frame_header(conn: Conn) -> None:
    _exact(conn, *inside_frame_header(conn))


@pytest.mark.parametrize("conn", H2_CAPTURES, indirect=True)
def test_cut_inside_a_data_frame(conn: Conn) -> None:
    _exact(conn, *inside_data_frame(conn))


@pytest.mark.parametrize("conn", ALL_CAPTURES, indirect=True)
def test_cut_inside_a_websocket_frame_header(conn: Conn) -> None:
    k, offset = inside_ws_frame_header(conn)
    _exact(conn, k, offset)
    if conn.tcp:  # the raw bytes start inside a frame: the message is lost, and said
        assert conn.oracle.affected(k, offset)


@pytest.mark.parametrize("conn", ALL_CAPTURES, indirect=True)
def test_cut_inside_a_message(conn: Conn) -> None:
    k, offset = inside_message(conn)
    _exact(conn, k, offset)


def test_cut_between_the_fragments_of_a_message_says_it_was_lost(own_h2c: Conn) -> None:
    """Our own capture has fragmented messages whose later fragments start DATA frames of
    their own: cut there, the DATA chains, the message is lost and ``ws_midstream_message``
    says so for that stream and direction (and nowhere else, :func:`assert_exact`)."""
    k, offset = inside_message(own_h2c)
    assert own_h2c.oracle.affected(k, offset)
    _exact(own_h2c, k, offset)


@pytest.mark.parametrize("conn", ["own_h2c", "ff153_hypercorn_pmd.pcapng"], indirect=True)
def test_cut_between_headers_that_insert_hpack_entries_and_headers_that_refer_to_them(
    conn: Conn,
) -> None:
    k, offset = between_hpack_headers(conn)
    _, part = _exact(conn, k, offset)
    (desync,) = [r for r in of(part, DiagnosticRecord) if r.code == "h2_hpack_desync"]
    assert int(desync.message.split()[0]) >= 1
    rows = of(part, StreamRecord)
    # every stream is there, the ones whose request was cut away included, none dropped
    assert {s.stream_id for s in rows} >= {s.stream_id for s in of(conn.whole, StreamRecord)} - {
        1,
        3,
    }
    shown = [s for s in rows if s.request_headers is not None]
    assert any("<unknown>" in (s.request_headers or "") for s in shown)


def test_permessage_deflate_whose_negotiation_was_not_seen_is_marked_never_guessed() -> None:
    """Firefox's permessage-deflate WebSocket cut after its extended CONNECT and response:
    RSV1 says compressed; a message that inflates without the lost history decodes exactly
    (the oracle's rows), one that refers to history from before the cut is counted by
    ``ws_deflate_context_lost``, never shown (Firefox keeps its context: some are lost)."""
    c = sample("ff153_hypercorn_pmd.pcapng")
    data = ws_data(c, "c2s")
    for index, some_lost in ((0, False), (2, True)):
        # at the first message no history is missing; from the third, Firefox's refer to it
        k, offset = c.at("c2s", data[index][0])
        _, part = _exact(c, k, offset)
        decoded = [m for m in of(part, MessageRecord) if m.compressed]
        lost = [r for r in of(part, DiagnosticRecord) if r.code == "ws_deflate_context_lost"]
        assert decoded and bool(lost) is some_lost, (index, lost)
        assert "ws_inflate_error" not in codes(part)
