"""Metrics on hand-made tables (each with a case that fails when the metric is wrong), on the
tables of real captures, in both table layouts, and partitioned by connection with Dask."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from h2ws.analysis.cli import main as cli_main
from h2ws.analysis.metrics.closes import close_cause_counts, stream_endings, websocket_closes
from h2ws.analysis.metrics.compute import PER_CONNECTION, compute_all
from h2ws.analysis.metrics.concurrency import concurrency_per_connection, concurrency_timeline
from h2ws.analysis.metrics.fallback import (
    TRANSPORT_VERDICTS,
    connect_protocol_support,
    websocket_transport_choice,
)
from h2ws.analysis.metrics.flow_control import flow_control_stalls
from h2ws.analysis.metrics.head_of_line import (
    head_of_line_exposure,
    head_of_line_summary,
    large_transfers,
)
from h2ws.analysis.metrics.interleaving import (
    bytes_share_over_time,
    fairness_over_time,
    fairness_per_connection,
    frame_interleaving,
)
from h2ws.analysis.metrics.latency import latency_cdf, message_interarrival, round_trip_times
from h2ws.analysis.metrics.load import _to_arrow, connect, from_frames
from h2ws.analysis.metrics.messages import message_size_cdf, message_stats
from h2ws.analysis.metrics.overview import RULES, SECTIONS, headline, overview
from h2ws.analysis.metrics.setup_time import websocket_setup
from h2ws.analysis.metrics.sharing import (
    rfc8441_savings,
    streams_per_connection,
    websocket_sharing,
)
from h2ws.analysis.records import TABLES, columns
from h2ws.analysis.sinks.writers import TableSink
from tests.report_fixtures import scenario

from .requires import missing_sample, require_module

ROOT = Path(__file__).resolve().parent.parent
#: A real capture: Node.js 20 http2 client -> hypercorn 0.18, one RFC 8441 WebSocket.
SAMPLE = ROOT / "samples" / "h2c_hypercorn_ws.pcap"


def db(**tables: list[dict[str, Any]]) -> Any:
    """Hand-made tables as lists of rows; timestamps in seconds."""
    return from_frames(**{name: pd.DataFrame(rows) for name, rows in tables.items()})


def row(frame: pd.DataFrame, **where: Any) -> pd.Series:
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, f"{len(sel)} rows match {where}:\n{frame}"
    return sel.iloc[0]


def conn(conn_id: str, start: float, end: float, **kw: Any) -> dict[str, Any]:
    base = {
        "conn_id": conn_id,
        "capture": "hand",
        "http_version": "h2c",
        "tls": False,
        "server_addr": "10.0.0.1",
        "server_port": 443,
        "ts_start": start,
        "ts_end": end,
    }
    return base | kw


def stream(conn_id: str, sid: int | None, kind: str, t0: float, t1: float, **kw: Any) -> dict:
    base = {
        "conn_id": conn_id,
        "stream_id": sid,
        "kind": kind,
        "method": "CONNECT" if kind == "websocket" else "GET",
        "ts_open": t0,
        "ts_close": t1,
        "ws_accepted": True if kind == "websocket" else None,
    }
    return base | kw


# -- loading -------------------------------------------------------------------------------


def test_from_frames_fills_schema_and_rejects_unknown_tables() -> None:
    d = db(streams=[stream("a", 1, "http", 1.0, 2.0)])
    cols = [r[0] for r in d.execute("DESCRIBE messages").fetchall()]
    assert cols == [name for name, _ in columns("messages")]
    ts = d.execute("SELECT ts_open FROM streams").fetchone()[0]
    assert ts.timestamp() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown tables"):
        from_frames(packets=pd.DataFrame())


def test_connect_reports_a_directory_without_tables(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        connect(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no h2ws tables"):
        connect(tmp_path)


# -- streams and coalescing ------------------------------------------------------------------


def test_streams_per_connection_counts_kinds_and_authorities() -> None:
    d = db(
        connections=[conn("a", 0, 10), conn("b", 0, 1)],
        streams=[
            stream("a", 1, "http", 0, 1, authority="x.test"),
            stream("a", 3, "http", 0, 1, authority="x.test"),
            stream("a", 5, "http", 0, 1, authority="y.test"),
            stream("a", 7, "websocket", 1, 9, authority="x.test"),
            stream("a", 9, "websocket", 1, 2, authority="x.test", ws_accepted=False),
            stream("a", 11, "connect", 1, 2, authority="z.test"),
        ],
    )
    out = streams_per_connection(d)
    a = row(out, conn_id="a")
    assert (a.streams, a.websockets, a.websockets_accepted, a.http, a.other) == (6, 2, 1, 3, 1)
    assert a.authorities == 3 and a.authority_list == "x.test, y.test, z.test"
    assert bool(a.mixed)
    b = row(out, conn_id="b")  # a connection without streams is still a row
    assert (b.streams, b.authorities, bool(b.mixed)) == (0, 0, False)


def test_streams_of_a_connection_not_written_yet_still_count() -> None:
    d = db(streams=[stream("live:0", 1, "websocket", 5, 7), stream("live:0", 3, "http", 6, 8)])
    out = streams_per_connection(d)
    assert row(out, conn_id="live:0").streams == 2
    assert row(concurrency_per_connection(d), conn_id="live:0").duration_s == pytest.approx(3)


def test_intercept_mode_tables_count_the_client_leg_only(tmp_path: Path) -> None:
    """Intercept mode writes each proxied connection twice (client leg, server leg); the
    metrics read the client leg, in memory and from files alike, and the server leg stays in
    the tables (``h2ws_all_*``)."""
    legs = {
        "connections": pd.DataFrame(
            [{**conn("c", 0, 10), "leg": "client"}, {**conn("s", 0, 10), "leg": "server"}]
        ),
        "streams": pd.DataFrame(
            [stream(c, sid, "websocket", 1, 9) for c in ("c", "s") for sid in (1, 3)]
        ),
        "diagnostics": pd.DataFrame(
            [{"conn_id": "s", "code": "x"}, {"conn_id": None, "code": "y"}]
        ),
    }
    for table, frame in legs.items():
        pq.write_table(_to_arrow(table, frame), tmp_path / f"{table}.parquet")
    for d in (from_frames(**legs), connect(tmp_path)):
        out = streams_per_connection(d)
        assert list(out["conn_id"]) == ["c"] and row(out, conn_id="c").websockets == 2
        assert d.execute("SELECT count(*) FROM h2ws_all_streams").fetchall() == [(4,)]
        assert d.execute("SELECT code FROM diagnostics").fetchall() == [("y",)]
    plain = from_frames(connections=pd.DataFrame([conn("a", 0, 1), conn("b", 0, 1)]))
    assert len(streams_per_connection(plain)) == 2  # no legs: nothing left out


# -- concurrency ---------------------------------------------------------------------------


def test_concurrency_back_to_back_streams_do_not_overlap() -> None:
    d = db(
        connections=[conn("a", 0, 20)],
        streams=[
            stream("a", 1, "http", 0, 10),
            stream("a", 3, "websocket", 5, 15),
            stream("a", 5, "http", 10, 20),  # opens when stream 1 closes
        ],
    )
    c = row(concurrency_per_connection(d), conn_id="a")
    assert c.peak_streams == 2  # not 3: closes and opens at t=10 net out
    assert c.peak_websockets == 1
    assert c.stream_seconds == pytest.approx(30)
    assert c.mean_open_streams == pytest.approx(1.5)
    assert c.multiplexed_share == pytest.approx(0.5)  # [5, 15) has two streams open
    assert c.mean_open_streams_busy == pytest.approx(1.5)
    tl = concurrency_timeline(d, ["a"])
    assert tl["t_s"].tolist() == [0, 5, 10, 15, 20]
    assert tl["open_streams"].tolist() == [1, 2, 2, 1, 0]
    assert tl["open_websockets"].tolist() == [0, 1, 1, 0, 0]
    assert concurrency_timeline(d, []).empty


def test_concurrency_busy_mean_ignores_idle_time() -> None:
    d = db(
        connections=[conn("a", 0, 100)],
        streams=[stream("a", 1, "http", 0, 10), stream("a", 3, "http", 0, 10)],
    )
    c = row(concurrency_per_connection(d), conn_id="a")
    assert c.mean_open_streams == pytest.approx(0.2)
    assert c.mean_open_streams_busy == pytest.approx(2.0)


# -- sharing -------------------------------------------------------------------------------


def test_websocket_sharing_measures_the_union_of_other_streams() -> None:
    d = db(
        connections=[conn("a", 0, 10), conn("h1", 0, 5, http_version="http/1.1")],
        streams=[
            stream("a", 1, "websocket", 0, 10),
            stream("a", 3, "http", 2, 4),
            stream("a", 5, "websocket", 3, 6),  # overlaps stream 3: the union is [2, 6)
            stream("a", 7, "http", 12, 13),  # after the WebSocket: not shared
            stream("h1", None, "websocket", 0, 5, exchange=0),
        ],
    )
    out = websocket_sharing(d)
    ws = row(out, conn_id="a", stream_id=1)
    assert ws.lifetime_s == pytest.approx(10)
    assert ws.shared_s == pytest.approx(4)  # not 5 (2 + 3): overlapping time counts once
    assert ws.shared_share == pytest.approx(0.4)
    assert ws.shared_with_http_s == pytest.approx(2)
    assert (ws.overlapping_streams, ws.overlapping_websockets) == (2, 1)
    inner = row(out, conn_id="a", stream_id=5)
    assert inner.shared_share == pytest.approx(1.0)
    assert inner.shared_with_http_s == pytest.approx(1)  # [3, 4)
    h1 = row(out, conn_id="h1")
    assert (h1.over, h1.shared_s, h1.overlapping_streams) == ("HTTP/1.1", 0, 0)


# -- what HTTP/1.1 would have cost ---------------------------------------------------------


def _savings_tables() -> Any:
    return db(
        connections=[
            conn("tls12", 0, 10, http_version="h2", tls=True, tls_version="TLSv1.2"),
            conn("tls13", 0, 10, http_version="h2", tls=True, tls_version="TLSv1.3"),
            conn("plain", 0, 10),
            conn("h1", 0, 10, http_version="http/1.1"),
        ],
        streams=[
            stream("tls12", 1, "http", 0.0, 1, ts_response=0.05),
            stream("tls12", 3, "websocket", 0.1, 5, ts_response=0.13),
            stream("tls12", 5, "websocket", 0.2, 5, ts_response=0.23),
            stream("tls12", 7, "websocket", 0.3, 5, ts_response=0.33),
            stream("tls13", 1, "websocket", 0, 5, ts_response=0.04),
            stream("tls13", 3, "websocket", 0, 5, ts_response=0.05),
            stream("plain", 1, "http", 0, 1),  # no WebSocket: nothing to save
            stream("h1", None, "websocket", 0, 5, exchange=0),
        ],
    )


def test_rfc8441_savings_counts_connections_handshakes_round_trips() -> None:
    out = rfc8441_savings(_savings_tables())
    assert sorted(out["conn_id"]) == ["tls12", "tls13"]
    a = row(out, conn_id="tls12")
    assert (a.http1_connections, a.connections_avoided, a.tcp_handshakes_avoided) == (4, 3, 3)
    assert (a.tls_handshakes_avoided, a.handshake_round_trips, a.round_trips_avoided) == (3, 3, 9)
    assert a.rtt_estimate_ms == pytest.approx(30)  # the fastest request -> response
    assert a.setup_time_avoided_ms == pytest.approx(270)
    b = row(out, conn_id="tls13")  # only WebSockets: one of them would have had this connection
    assert (b.http1_connections, b.connections_avoided, b.round_trips_avoided) == (2, 1, 2)


def test_websocket_setup_measures_http1_from_its_connection_start() -> None:
    d = db(
        connections=[
            conn("h1a", 10.0, 20, http_version="http/1.1"),
            conn("h1b", 10.0, 20, http_version="http/1.1"),
            conn("h2", 0, 20),
        ],
        streams=[
            stream("h1a", None, "websocket", 10.05, 15, exchange=0, ts_response=10.08),
            stream("h1b", None, "http", 10.0, 10.2, exchange=0, ts_response=10.1),
            stream("h1b", None, "websocket", 10.3, 15, exchange=1, ts_response=10.33),
            stream("h2", 1, "http", 0, 1),
            stream("h2", 3, "websocket", 2.0, 9, ts_response=2.02),
        ],
    )
    out = websocket_setup(d)
    assert len(out) == 3  # WebSockets only
    a = row(out, conn_id="h1a")
    assert bool(a.first_on_connection)
    assert a.handshake_ms == pytest.approx(30)
    assert a.from_connection_start_ms == pytest.approx(80)
    assert not bool(row(out, conn_id="h1b").first_on_connection)  # a GET came first
    h2 = row(out, conn_id="h2")
    assert h2.over == "HTTP/2" and h2.handshake_ms == pytest.approx(20)
    assert not bool(h2.first_on_connection)


# -- interleaving and fairness ---------------------------------------------------------------


def frame(conn_id: str, index: int, ts: float, d: str, typ: str, sid: int, n: int = 0, **kw: Any):
    return {
        "conn_id": conn_id,
        "index": index,
        "ts": ts,
        "direction": d,
        "type": typ,
        "flags": kw.pop("flags", ""),
        "stream_id": sid,
        "length": n,
    } | kw


def test_frame_interleaving_counts_switches_between_stream_frames_only() -> None:
    seq = [
        ("s2c", "DATA", 1),
        ("s2c", "DATA", 1),
        ("s2c", "SETTINGS", 0),  # connection-level: ignored
        ("s2c", "DATA", 3),
        ("c2s", "WINDOW_UPDATE", 3),  # not HEADERS/DATA: ignored
        ("s2c", "DATA", 3),
        ("s2c", "DATA", 1),
        ("s2c", "HEADERS", 3),
    ]
    frames = [frame("a", i, i * 0.1, d, t, s, 10) for i, (d, t, s) in enumerate(seq)]
    out = frame_interleaving(db(connections=[conn("a", 0, 1)], frames=frames))
    s2c = row(out, conn_id="a", direction="s2c")
    assert (s2c.frames, s2c.streams, s2c.switches) == (6, 2, 3)
    assert s2c.switch_rate == pytest.approx(3 / 5)
    assert s2c.mean_run_frames == pytest.approx(6 / 4)
    assert row(out, conn_id="a", direction="both").switches == 3
    assert "c2s" not in set(out["direction"])


def test_bytes_share_and_jain_index() -> None:
    frames = [
        frame("a", 0, 0.1, "s2c", "DATA", 1, 300),
        frame("a", 1, 0.2, "s2c", "DATA", 3, 100),
        frame("a", 2, 0.6, "s2c", "DATA", 1, 500),  # second bin: one stream alone
    ]
    d = db(
        connections=[conn("a", 0, 1)],
        streams=[stream("a", 1, "http", 0, 1), stream("a", 3, "websocket", 0, 1)],
        frames=frames,
    )
    share = bytes_share_over_time(d, bins=2)
    first = share[share["bin"] == 0].set_index("stream_id")
    assert first.loc[1, "share"] == pytest.approx(0.75)
    assert first.loc[3, "kind"] == "websocket"
    assert set(share["bin_s"]) == {0.5}
    fair = fairness_over_time(d, bins=2)
    assert row(fair, bin=0).jain == pytest.approx(400**2 / (2 * (300**2 + 100**2)))  # 0.8
    assert row(fair, bin=1).jain == pytest.approx(1.0)
    per = row(fairness_per_connection(d, bins=2), conn_id="a", direction="s2c")
    assert (per.bins, per.contended_bins) == (2, 1)
    assert per.mean_jain == pytest.approx(0.8)  # the one-stream bin does not count
    wide = fairness_over_time(d, bin_s=10.0)
    assert len(wide) == 1 and wide["streams"].iloc[0] == 2
    with pytest.raises(ValueError):
        bytes_share_over_time(d, bins=0)


# -- latency -------------------------------------------------------------------------------


def msg(conn_id: str, sid: int | None, d: str, index: int, t: float, op: str = "text", **kw: Any):
    payload = kw.pop("payload", f"{d}{index}")
    return {
        "conn_id": conn_id,
        "stream_id": sid,
        "direction": d,
        "index": index,
        "ts_first": kw.pop("t_first", t),
        "ts_last": t,
        "opcode": op,
        "length": kw.pop("length", len(payload)),
        "sha256": payload,  # any string identifies a payload here
    } | kw


def test_round_trip_times_pair_repeated_payloads_in_order() -> None:
    messages = [
        msg("a", 1, "c2s", 0, 1.0, payload="same"),
        msg("a", 1, "c2s", 1, 1.1, payload="same"),  # sent again before the first echo
        msg("a", 1, "s2c", 0, 1.5, payload="same"),
        msg("a", 1, "s2c", 1, 1.9, payload="same"),
        msg("a", 1, "s2c", 2, 2.0, payload="server says"),  # not an echo
        msg("a", 1, "s2c", 3, 3.0, "ping", payload="p"),  # the server pings,
        msg("a", 1, "c2s", 2, 3.25, "pong", payload="p"),  # the client answers
        msg("a", 1, "c2s", 3, 4.0, payload="late"),
        msg("a", 1, "s2c", 4, 3.9, payload="late"),  # before the request: not its echo
    ]
    d = db(
        connections=[conn("a", 0, 5)],
        streams=[stream("a", 1, "websocket", 0, 5)],
        messages=messages,
    )
    rtt = round_trip_times(d)
    echo = rtt[rtt["pair"] == "echo"].sort_values("request_index")
    assert echo["request_index"].tolist() == [0, 1]
    assert echo["rtt_ms"].tolist() == pytest.approx([500, 800])  # k-th with k-th, not 500, 400
    ping = row(rtt, pair="ping/pong")
    assert ping.request_direction == "s2c" and ping.rtt_ms == pytest.approx(250)
    cdf = latency_cdf(d, points=3)
    median = row(cdf, measure="echo", fraction=0.5)
    assert median.samples == 2 and median.ms in (500, 800)


def test_message_interarrival_and_sizes() -> None:
    messages = [msg("a", 1, "s2c", i, 1.0 + 0.1 * i, length=10 * (i + 1)) for i in range(5)]
    messages.append(msg("a", 1, "s2c", 5, 5.0, "close", length=2))
    d = db(connections=[conn("a", 0, 6)], messages=messages)
    ia = row(message_interarrival(d), conn_id="a", direction="s2c")
    assert ia.messages == 5
    assert ia.median_ms == pytest.approx(100)  # the close frame is not a data message
    sizes = message_size_cdf(d, points=5)
    assert sizes["length_bytes"].tolist() == [10, 20, 30, 40, 50]
    stats = row(message_stats(d), opcode="text")
    assert (stats.messages, stats.bytes, stats.max_bytes) == (5, 150, 50)


def test_flow_control_stalls_replay_the_windows() -> None:
    settings = json.dumps({"INITIAL_WINDOW_SIZE": 100})  # the client's: for s2c DATA
    f = [
        frame("a", 0, 1.00, "s2c", "DATA", 1, 60),
        frame("a", 1, 1.10, "s2c", "DATA", 1, 40),  # stream window 0: blocked
        frame("a", 2, 1.20, "c2s", "WINDOW_UPDATE", 3, window_increment=50),  # another stream
        frame("a", 3, 1.30, "c2s", "WINDOW_UPDATE", 1, window_increment=100),
        frame("a", 4, 1.35, "s2c", "DATA", 1, 100),  # resumes; window 0 again, but
        frame("a", 5, 1.40, "c2s", "WINDOW_UPDATE", 1, window_increment=100),
        frame("a", 6, 1.45, "s2c", "DATA", 1, 100, flags="END_STREAM"),  # ... nothing after
        # stream 3: exhausts the window with END_STREAM: not waiting for anything
        frame("a", 7, 2.00, "s2c", "DATA", 3, 100, flags="END_STREAM"),
    ]
    d = db(
        connections=[conn("a", 0, 3, settings_c2s=settings)],
        streams=[stream("a", 1, "http", 0.5, 2), stream("a", 3, "http", 0.5, 2)],
        frames=f,
    )
    out = flow_control_stalls(d)
    assert len(out) == 2
    first, second = out.iloc[0], out.iloc[1]
    assert (first.stream_id, first.direction, first.limited_by) == (1, "s2c", "stream")
    assert first.waited_ms == pytest.approx(200)
    assert first.t_s == pytest.approx(1.1)
    assert second.waited_ms == pytest.approx(50)
    # the same frames with the default 65,535-byte window: nothing blocks
    assert flow_control_stalls(db(connections=[conn("a", 0, 3)], frames=f)).empty


def test_flow_control_stalls_on_the_connection_window() -> None:
    settings = json.dumps({"INITIAL_WINDOW_SIZE": 1_000_000})
    f = [
        frame("a", 0, 1.0, "s2c", "DATA", 1, 40_000),
        frame("a", 1, 1.1, "s2c", "DATA", 3, 25_535),  # connection window 0
        frame("a", 2, 1.2, "c2s", "WINDOW_UPDATE", 3, window_increment=25_535),
        frame("a", 3, 1.5, "c2s", "WINDOW_UPDATE", 0, window_increment=65_535),
        frame("a", 4, 1.6, "s2c", "DATA", 3, 10),
    ]
    d = db(connections=[conn("a", 0, 3, settings_c2s=settings)], frames=f)
    stall = row(flow_control_stalls(d), stream_id=3)
    assert stall.limited_by == "connection"
    assert stall.waited_ms == pytest.approx(400)  # until the connection-level update


def test_head_of_line_exposure_splits_round_trips_by_large_bodies() -> None:
    big = [frame("a", i, 2.0 + 0.1 * i, "s2c", "DATA", 5, 10_000) for i in range(11)]  # 2-3 s
    messages = []
    for i, (t, rtt) in enumerate([(1.0, 0.010), (1.5, 0.012), (2.5, 0.200), (4.0, 0.011)]):
        messages.append(msg("a", 1, "c2s", i, t, payload=f"m{i}"))
        messages.append(msg("a", 1, "s2c", i, t + rtt, payload=f"m{i}"))
    d = db(
        connections=[conn("a", 0, 5)],
        streams=[stream("a", 1, "websocket", 0, 5), stream("a", 5, "http", 1.9, 3.1)],
        frames=big,
        messages=messages,
    )
    hol = head_of_line_exposure(d, large_bytes=100_000)
    echo = hol[hol["measure"] == "echo"].set_index("exposed")
    assert echo.loc[True, "samples"] == 1 and echo.loc[True, "median_ms"] == pytest.approx(200)
    assert echo.loc[False, "samples"] == 3
    assert echo.loc[False, "median_ms"] == pytest.approx(11)
    # a smaller body is not "large"
    assert not head_of_line_exposure(d, large_bytes=200_000)["exposed"].any()
    t = row(large_transfers(d, 100_000), stream_id=5)
    assert t.bytes == 110_000 and t.in_flight_ms == pytest.approx(1000)


def test_head_of_line_exposure_without_frames_uses_stream_times() -> None:
    messages = [
        msg("a", 1, "c2s", 0, 2.5, payload="x"),
        msg("a", 1, "s2c", 0, 2.7, payload="x"),
    ]
    d = db(
        connections=[conn("a", 0, 5)],
        streams=[
            stream("a", 1, "websocket", 0, 5),
            stream("a", 5, "http", 1.9, 3.1, ts_response=2.0, bytes_s2c=500_000),
        ],
        messages=messages,
    )
    assert row(head_of_line_exposure(d), measure="echo").exposed


def test_head_of_line_compares_each_connection_with_itself() -> None:
    """Known answer: on the HTTP/2 connection echoes take 1 ms, and 5 ms while a large body is
    in flight (5x slower); an HTTP/1.1 WebSocket beside it echoes in 100 ms and never shares
    its connection.  Pooling its echoes into the baseline would say exposed echoes are faster."""
    big = [frame("a", i, 2.0 + 0.1 * i, "s2c", "DATA", 5, 10_000) for i in range(11)]  # 2-3 s
    messages = []
    for i, (t, rtt) in enumerate([(1.0, 0.001), (1.5, 0.001), (2.5, 0.005), (4.0, 0.001)]):
        messages.append(msg("a", 1, "c2s", i, t, payload=f"a{i}"))
        messages.append(msg("a", 1, "s2c", i, t + rtt, payload=f"a{i}"))
    for i in range(6):
        messages.append(msg("b", None, "c2s", i, 1.0 + i * 0.5, payload=f"b{i}", exchange=0))
        messages.append(msg("b", None, "s2c", i, 1.1 + i * 0.5, payload=f"b{i}", exchange=0))
    d = db(
        connections=[conn("a", 0, 5), conn("b", 0, 5, http_version="http/1.1")],
        streams=[
            stream("a", 1, "websocket", 0, 5),
            stream("a", 5, "http", 1.9, 3.1),
            stream("b", None, "websocket", 0, 5, exchange=0),
        ],
        frames=big,
        messages=messages,
    )
    hol = head_of_line_exposure(d, large_bytes=100_000)
    echo = hol[hol["measure"] == "echo"]
    assert set(echo[echo["comparable"]]["conn_id"]) == {"a"}
    assert row(echo, conn_id="b").median_ms == pytest.approx(100)  # there, but not comparable
    summary = row(head_of_line_summary(hol), measure="echo")
    assert summary.connections == 1
    assert (summary.samples_exposed, summary.samples_unexposed) == (1, 3)
    assert summary.median_exposed_ms == pytest.approx(5)
    assert summary.median_unexposed_ms == pytest.approx(1)
    assert summary.slowdown == pytest.approx(5)
    ov = overview({"head_of_line_exposure": hol}).set_index("metric")["value"]
    slowdown = next(v for k, v in ov.items() if "echo round trip slowdown" in k)
    assert slowdown == pytest.approx(5)


# -- closes --------------------------------------------------------------------------------


def test_websocket_closes_classify_and_flag_misbehaviours() -> None:
    def close(c: str, sid: int | None, d: str, i: int, t: float, code: int = 1000, **kw: Any):
        return msg(c, sid, d, i, t, "close", payload=f"close{code}", close_code=code, **kw)

    streams = [
        stream("a", 1, "websocket", 0, 5, close_cause="ws_close:1000", stream_end="end_stream"),
        stream(
            "a", 3, "websocket", 0, 5, close_cause="ws_close:1001", stream_end="rst_stream:CANCEL"
        ),
        stream(
            "a",
            5,
            "websocket",
            0,
            5,
            close_cause="rst_stream:INTERNAL_ERROR",
            stream_end="rst_stream:INTERNAL_ERROR",
        ),
        stream("a", 7, "websocket", 0, 5, close_cause="end_stream", stream_end="end_stream"),
        stream(
            "a",
            9,
            "websocket",
            0,
            5,
            ws_accepted=False,
            status=403,
            close_cause="end_stream",
            stream_end="end_stream",
        ),
        stream(
            "h",
            None,
            "websocket",
            0,
            5,
            exchange=0,
            close_cause="ws_close:1000",
            stream_end="connection_closed",
        ),
    ]
    messages = [
        close("a", 1, "c2s", 0, 1.0),
        close("a", 1, "s2c", 0, 1.1),
        close("a", 3, "c2s", 0, 1.0, 1001),
        close("a", 3, "s2c", 0, 1.1, 1001),
        msg("a", 3, "s2c", 1, 1.2),  # data after its close
        close("h", None, "c2s", 0, 1.0, exchange=0),
        close("h", None, "s2c", 0, 1.1, exchange=0),
    ]
    frames = [
        frame("a", 0, 1.2, "c2s", "DATA", 1, 0, flags="END_STREAM"),
        frame("a", 1, 1.3, "s2c", "DATA", 1, 0, flags="END_STREAM"),
        frame("a", 2, 1.5, "c2s", "RST_STREAM", 3, 4, error_code="CANCEL"),
        frame("a", 3, 1.5, "s2c", "RST_STREAM", 5, 4, error_code="INTERNAL_ERROR"),
        frame("a", 4, 1.6, "c2s", "DATA", 7, 0, flags="END_STREAM"),
        frame("a", 5, 1.7, "s2c", "HEADERS", 7, 10, flags="END_HEADERS,END_STREAM"),
        frame("a", 6, 1.8, "s2c", "HEADERS", 9, 10, flags="END_HEADERS,END_STREAM"),
    ]
    d = db(
        connections=[conn("a", 0, 5), conn("h", 0, 5, http_version="http/1.1")],
        streams=streams,
        messages=messages,
        frames=frames,
    )
    out = websocket_closes(d)
    clean = row(out, conn_id="a", stream_id=1)
    assert clean.cause == "close both ways, then END_STREAM"
    assert pd.isna(clean.misbehaviours) and clean.close_code == 1000
    reset = row(out, conn_id="a", stream_id=3)
    assert reset.cause == "close both ways, then RST_STREAM"
    assert (reset.rst_by, reset.rst_code) == ("c2s", "CANCEL")
    assert reset.misbehaviours == (
        "close_without_end_stream:c2s, close_without_end_stream:s2c, rst_after_close, "
        "data_after_close"
    )
    killed = row(out, conn_id="a", stream_id=5)
    assert killed.cause == "no close frame, then RST_STREAM"
    assert killed.close_handshake == "none" and pd.isna(killed.misbehaviours)
    abrupt = row(out, conn_id="a", stream_id=7)
    assert abrupt.misbehaviours == "end_stream_without_close:c2s, end_stream_without_close:s2c"
    assert row(out, conn_id="a", stream_id=9).cause == "rejected (403)"
    h1 = row(out, conn_id="h")
    assert h1.cause == "close both ways, then TCP close"
    assert pd.isna(h1.end_stream_c2s) and pd.isna(h1.misbehaviours)  # no frames on HTTP/1.1
    counts = close_cause_counts(d)
    assert counts["websockets"].sum() == 6
    ends = stream_endings(d)
    assert row(ends, conn_id="a", stream_end="end_stream").streams == 3


# -- fallback ------------------------------------------------------------------------------


def test_websocket_transport_choice_verdicts() -> None:
    def h1ws(conn_id: str, t: float, authority: str) -> dict:
        return stream(conn_id, None, "websocket", t, t + 1, exchange=0, authority=authority)

    d = db(
        connections=[
            conn(
                "x2",
                0,
                10,
                server_addr="10.0.0.1",
                server_port=443,
                enable_connect_protocol=True,
                ts_enable_connect_protocol=1.0,
            ),
            conn(
                "y2", 0, 10, server_addr="10.0.0.2", server_port=443, enable_connect_protocol=False
            ),
            conn("x1late", 0.5, 10, http_version="http/1.1", server_addr="10.0.0.1"),
            conn("x1gone", 20, 30, http_version="http/1.1", server_addr="10.0.0.1"),
            conn(
                "elsewhere",
                20,
                30,
                http_version="http/1.1",
                server_addr="10.0.0.1",
                capture="another",
            ),
            conn(
                "rotated",
                2,
                10,
                http_version="http/1.1",
                server_addr="10.0.0.1",
                capture="next-file",
            ),
            conn("x1", 2, 10, http_version="http/1.1", server_addr="10.0.0.1"),
            conn("y1", 2, 10, http_version="http/1.1", server_addr="10.0.0.2"),
            conn("z1", 2, 10, http_version="http/1.1", server_addr="10.0.0.3"),
            conn("cdn1", 2, 10, http_version="http/1.1", server_addr="10.9.9.9"),
        ],
        streams=[
            stream("x2", 1, "websocket", 2, 5, authority="x.test"),
            stream("x2", 3, "http", 2, 5, authority="cdn.test"),
            stream("y2", 1, "websocket", 2, 5, authority="y.test"),
            h1ws("x1late", 0.5, "x.test"),  # before x2 advertised
            h1ws("x1gone", 20, "x.test"),  # after x2 closed
            h1ws("elsewhere", 20, "x.test"),  # another capture, another time: unrelated
            h1ws("rotated", 2, "x.test"),  # another file of a capture, while x2 was open
            h1ws("x1", 2, "x.test"),
            h1ws("y1", 2, "y.test"),
            h1ws("z1", 2, "z.test"),
            h1ws("cdn1", 2, "cdn.test"),  # another address, but an authority x2 served
        ],
    )
    out = websocket_transport_choice(d).set_index("conn_id")
    verdicts = out["verdict"].to_dict()
    assert verdicts == {
        "x2": "rfc8441",
        "y2": "rfc8441_without_setting",
        "x1late": "http1_setting_at_other_time",
        "x1gone": "http1_setting_at_other_time",
        "x1": "http1_despite_setting",
        "y1": "http1_setting_never_advertised",
        "z1": "http1_no_http2_seen",
        "cdn1": "http1_despite_setting",
        "elsewhere": "http1_no_http2_seen",
        "rotated": "http1_despite_setting",
    }
    assert out.loc["x1", "h2_conn_id"] == "x2" and pd.isna(out.loc["z1", "h2_conn_id"])
    assert set(verdicts.values()) <= set(TRANSPORT_VERDICTS)
    support = connect_protocol_support(d).set_index("conn_id")
    assert support.loc["x2", "advertised_after_ms"] == pytest.approx(1000)
    assert (support.loc["x2", "http1_websockets"], support.loc["x2", "websockets"]) == (5, 1)
    assert support.loc["x2", "http1_websockets_while_advertised"] == 3
    assert not support.loc["y2", "enable_connect_protocol"]


def test_a_setting_sent_before_the_capture_is_unknown_never_absent() -> None:
    """A connection whose start the capture missed may have advertised RFC 8441 in SETTINGS that
    were not captured: its WebSockets and the HTTP/1.1 WebSockets to its server get the
    ``…_not_captured`` verdicts, and it is not counted as a server that never advertised."""

    def h1ws(conn_id: str, t: float) -> dict:
        return stream(conn_id, None, "websocket", t, t + 1, exchange=0, authority="late.test")

    d = db(
        connections=[
            conn("late", 0, 10, server_addr="10.0.0.4", start_captured=False),
            conn(
                "late_then_set",
                0,
                10,
                server_addr="10.0.0.5",
                start_captured=False,
                enable_connect_protocol=True,
                ts_enable_connect_protocol=1.0,
            ),
            conn("never", 0, 10, server_addr="10.0.0.6", start_captured=True),
            conn("h1_late", 2, 9, http_version="http/1.1", server_addr="10.0.0.4"),
            conn("h1_never", 2, 9, http_version="http/1.1", server_addr="10.0.0.6"),
        ],
        streams=[
            stream("late", 1, "websocket", 0, 10, inferred=True),
            stream("late_then_set", 1, "websocket", 2, 10),
            stream("never", 1, "websocket", 2, 10),
            h1ws("h1_late", 2),
            h1ws("h1_never", 2),
        ],
    )
    verdicts = websocket_transport_choice(d).set_index("conn_id")["verdict"].to_dict()
    assert verdicts == {
        "late": "rfc8441_setting_not_captured",
        "late_then_set": "rfc8441",
        "never": "rfc8441_without_setting",
        "h1_late": "http1_setting_not_captured",
        "h1_never": "http1_setting_never_advertised",
    }
    values = dict(zip(*(overview(compute_all(d))[c] for c in ("metric", "value")), strict=True))
    assert values["HTTP/2 connections whose server never advertised RFC 8441"] == 1
    assert values["HTTP/2 connections whose RFC 8441 setting is unknown (start not captured)"] == 1


# -- overview ------------------------------------------------------------------------------


def test_overview_weights_by_time_not_by_connection() -> None:
    d = db(
        connections=[conn("long", 0, 100), conn("short", 0, 1)],
        streams=[
            stream("long", 1, "http", 0, 100),
            stream("short", 1, "http", 0, 1),
            stream("short", 3, "http", 0, 1),
            stream("short", 5, "http", 0, 1),
        ],
    )
    ov = overview(compute_all(d)).set_index("metric")["value"]
    # 103 stream-seconds over 101 connection-seconds; the mean of means would be 2.0
    assert ov["time-weighted mean open streams per HTTP/2 connection"] == pytest.approx(103 / 101)
    assert ov["TCP connections"] == 2 and ov["streams (all kinds)"] == 4
    partial = overview({"streams_per_connection": streams_per_connection(d)})
    assert set(partial["section"]) == {"connections", "streams", "sharing"}


def test_overview_rules_are_one_per_metric_and_read_what_compute_all_returns() -> None:
    results = compute_all(_savings_tables())
    names = [rule.metric for rule in RULES]
    assert len(names) == len(set(names)), "a metric's wording appears in two rules"
    assert {rule.source for rule in RULES} <= set(results)
    assert {rule.section for rule in RULES} <= set(SECTIONS)
    assert list(overview(results)["metric"]) == sorted(
        names, key=lambda m: SECTIONS.index(next(r.section for r in RULES if r.metric == m))
    )


def test_overview_counts_add_up_over_connections() -> None:
    """Every count of the overview (not a peak, a maximum or a mean) is the sum of the same
    count over each connection's rows alone: the over-all numbers aggregate per-connection rows,
    which is what makes partitioned tables give the same answers."""
    results = compute_all(_savings_tables())
    whole = overview(results).set_index("metric")["value"]
    counts = [
        r.metric
        for r in RULES
        if r.unit in ("connections", "streams", "handshakes", "round trips", "stalls")
        and not any(word in r.metric for word in ("peak", "most", "mean"))
    ]
    conn_ids = sorted(results["streams_per_connection"]["conn_id"])
    parts = [
        overview(
            {n: f[f["conn_id"] == c] for n, f in results.items() if "conn_id" in f.columns}
        ).set_index("metric")["value"]
        for c in conn_ids
    ]
    for metric in counts:
        assert whole[metric] == sum(p[metric] for p in parts), metric
    # the case can tell a sum from a maximum: two connections avoided handshakes
    assert sum(p["TCP handshakes avoided"] > 0 for p in parts) == 2


# -- real captures, both layouts -------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated scenario (tests/report_fixtures/scenario.py) extracted by the CLI."""
    base = tmp_path_factory.mktemp("scenario")
    pcap = base / "scenario.pcap"
    scenario.build(pcap)
    out = base / "out"
    assert cli_main(["extract", str(pcap), "-o", str(out)]) == 0
    return out


def test_scenario_tables_answer_every_question(scenario_out: Path) -> None:
    e = scenario.EXPECTED
    d = connect(scenario_out)
    r = compute_all(d)
    main = "scenario.pcap:0"
    spc = row(r["streams_per_connection"], conn_id=main)
    assert (spc.websockets, spc.http, spc.authorities) == (
        e["h2_websockets"],
        e["h2_http"],
        e["h2_authorities"],
    )
    assert len(r["streams_per_connection"]) == e["connections"]
    assert row(r["concurrency_per_connection"], conn_id=main).peak_streams >= 4
    chat = row(r["websocket_sharing"], conn_id=main, stream_id=3)
    assert chat.shared_share > 0.9 and chat.shared_with_http_share > 0.4
    sav = row(r["rfc8441_savings"], conn_id=main)
    assert (sav.http1_connections, sav.connections_avoided) == (4, 3)
    assert 19 < sav.rtt_estimate_ms < 25  # the simulated RTT is 20 ms
    rtt = round_trip_times(d)
    assert (rtt["pair"] == "echo").sum() == e["chat_messages"] + 3 * 5  # + HTTP/1.1 echoes
    assert (rtt["pair"] == "ping/pong").sum() == e["chat_pings"]
    stalls = r["flow_control_stalls"]
    assert len(stalls) >= 2 and set(stalls["stream_id"]) == {9}  # GET /big
    hol = r["head_of_line_exposure"]
    echo = hol[(hol["conn_id"] == main) & (hol["measure"] == "echo")].set_index("exposed")
    assert echo.loc[True, "median_ms"] > 5 * echo.loc[False, "median_ms"]
    closes = r["websocket_closes"].set_index("path")
    assert closes.loc["/chat", "cause"] == "close both ways, then END_STREAM"
    assert "rst_after_close" in closes.loc["/feed", "misbehaviours"]
    assert "close_without_end_stream:s2c" in closes.loc["/feed", "misbehaviours"]
    assert closes.loc["/flaky", "cause"] == "no close frame, then RST_STREAM"
    verdicts = r["websocket_transport_choice"].set_index("conn_id")["verdict"]
    assert verdicts["scenario.pcap:2"] == "http1_despite_setting"
    assert verdicts["scenario.pcap:3"] == "http1_setting_never_advertised"
    assert verdicts["scenario.pcap:4"] == "http1_no_http2_seen"
    inter = row(r["frame_interleaving"], conn_id=main, direction="both")
    assert 0 < inter.switch_rate < 1


def test_sample_capture_close_without_end_stream(tmp_path: Path) -> None:
    """hypercorn never ends the stream after the close handshake (tests/PEERS.md)."""
    if not SAMPLE.exists():
        missing_sample("sample capture missing")
    assert cli_main(["extract", str(SAMPLE), "-o", str(tmp_path)]) == 0
    closes = websocket_closes(connect(tmp_path))
    assert closes["misbehaviours"].iloc[0] == "close_without_end_stream:s2c"
    assert closes["close_code"].iloc[0] == 1000


def _split_into_parts(single: Path, parted: Path) -> None:
    """Rewrite single-file tables as datasets of part files, as the live addon writes them;
    the first part of a table lacks a column no metric reads (as if written by an older
    version), and a half-written part is lying around."""
    unused = {"streams": "error", "messages": "close_reason", "connections": "error"}
    for table in TABLES:
        data = pq.read_table(single / f"{table}.parquet")
        folder = parted / table
        folder.mkdir(parents=True)
        half = data.num_rows // 2
        old = data.slice(0, half)
        if table in unused:
            old = old.drop_columns([unused[table]])
        pq.write_table(old, folder / "part-0.parquet")
        pq.write_table(data.slice(half), folder / "part-1.parquet")
        (folder / ".part-2.parquet.partial").write_bytes(b"not yet")


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in a fixed order, values as objects, every kind of missing as None: partitions
    concatenated may hold an all-null text column as object where one query gives str."""
    ordered = frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)
    return ordered.astype(object).where(ordered.notna(), None)


def test_both_layouts_and_many_captures_give_the_same_answers(
    scenario_out: Path, tmp_path: Path
) -> None:
    parted = tmp_path / "parted"
    _split_into_parts(scenario_out, parted)
    single = compute_all(connect(scenario_out))
    split = compute_all(connect(parted))
    for name in single:
        pd.testing.assert_frame_equal(
            _comparable(single[name]), _comparable(split[name]), check_dtype=False, obj=name
        )
    # one extract output per capture below out/: read as one
    many = tmp_path / "many"
    shutil.copytree(scenario_out, many / "capture-a")
    if SAMPLE.exists():
        assert cli_main(["extract", str(SAMPLE), "-o", str(many / "capture-b")]) == 0
    both = streams_per_connection(connect(many))
    assert set(both["capture"]) >= {"scenario.pcap"}
    assert len(both) == len(single["streams_per_connection"]) + (1 if SAMPLE.exists() else 0)


def test_csv_tables_read_too(scenario_out: Path, tmp_path: Path) -> None:
    pcap = tmp_path / "scenario.pcap"
    scenario.build(pcap)
    assert cli_main(["extract", str(pcap), "-o", str(tmp_path / "csv"), "--format", "csv"]) == 0
    from_csv = websocket_closes(connect(tmp_path / "csv"))
    from_parquet = websocket_closes(connect(scenario_out))
    assert from_csv["cause"].tolist() == from_parquet["cause"].tolist()


# -- scale out: Dask -----------------------------------------------------------------------


def _doc_code(name: str) -> str:
    """A ```python block of docs/scale.md that follows a ``<!-- test: name -->`` marker: the
    test runs exactly the code the documentation shows."""
    text = (ROOT / "docs" / "scale.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- test: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no code block marked {name} in docs/scale.md"
    return match.group(1)


def test_dask_on_a_local_cluster_equals_duckdb(scenario_out: Path, tmp_path: Path) -> None:
    require_module("dask.dataframe")
    distributed = require_module("dask.distributed")
    parted = tmp_path / "dataset"
    _split_into_parts(scenario_out, parted)
    namespace: dict[str, Any] = {}
    exec(compile(_doc_code("dask"), "docs/scale.md", "exec"), namespace)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        per_conn = namespace["per_connection_metrics"](str(parted), shards=3)
        per_capture = namespace["per_capture_metrics"]([str(scenario_out)])
    expected = compute_all(connect(scenario_out))
    for name, frame in per_conn.items():
        pd.testing.assert_frame_equal(
            _comparable(expected[name]), _comparable(frame), check_dtype=False, obj=name
        )
    assert set(per_conn) == set(PER_CONNECTION)
    pd.testing.assert_frame_equal(
        _comparable(per_capture["websocket_closes"]),
        _comparable(expected["websocket_closes"]),
        check_dtype=False,
    )
    ov_dask = overview(per_conn).set_index("metric")["value"]
    ov_duck = overview({k: expected[k] for k in PER_CONNECTION}).set_index("metric")["value"]
    pd.testing.assert_series_equal(ov_dask, ov_duck)


def test_empty_tables_give_empty_answers(tmp_path: Path) -> None:
    with TableSink(tmp_path):
        pass  # every table written, empty
    out = compute_all(connect(tmp_path))
    assert all(frame.empty for frame in out.values())
    assert overview(out)["value"].notna().any()  # counts are 0, not missing


# -- live peers (tests/peers: Node.js http2 and wsproto clients against hypercorn) -----------


def test_live_peers_share_one_connection_and_the_baseline_does_not(
    capture_h2c_node: Any, capture_h1_baseline: Any, tmp_path: Path
) -> None:
    """Real RFC 8441 traffic: the Node.js client's WebSockets and GETs on one h2c connection,
    and the wsproto client's HTTP/1.1 WebSockets, one connection each, to the same server."""
    from tests.conftest import NODE_GETS, NODE_WEBSOCKETS

    out = tmp_path / "out"
    args = [str(capture_h2c_node.capture), str(capture_h1_baseline.capture)]
    assert cli_main(["extract", *args, "-o", str(out)]) == 0
    r = compute_all(connect(out))
    spc = r["streams_per_connection"]
    h2 = spc[spc["http_version"] == "h2c"]
    assert len(h2) == 1
    node = h2.iloc[0]
    assert (node.websockets, node.http, bool(node.mixed)) == (NODE_WEBSOCKETS, NODE_GETS, True)
    sav = row(r["rfc8441_savings"], conn_id=node.conn_id)
    assert sav.connections_avoided == NODE_WEBSOCKETS
    assert row(r["concurrency_per_connection"], conn_id=node.conn_id).peak_websockets >= 2
    sharing = r["websocket_sharing"]
    assert (sharing[sharing["over"] == "HTTP/2"]["shared_s"] > 0).all()
    h1 = r["websocket_setup"][lambda f: f["over"] == "HTTP/1.1"]
    assert len(h1) == 2 and h1["conn_id"].nunique() == 2
    verdicts = r["websocket_transport_choice"].set_index("conn_id")["verdict"]
    assert all(v.startswith("http1_") for v in verdicts[h1["conn_id"]])
    rtt = round_trip_times(connect(out))
    assert (rtt["pair"] == "echo").sum() >= NODE_WEBSOCKETS


def test_bench_metrics_runs_on_a_small_synthetic_dataset(tmp_path: Path) -> None:
    """bench/bench_metrics.py at 1/500 of its size: the synthetic tables are what the metrics
    expect (echo pairs, stalls on HTTP bodies), and every metric runs on them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_metrics", ROOT / "bench" / "bench_metrics.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = tmp_path / "bench.json"
    args = [
        "--messages",
        "20000",
        "--connections",
        "10",
        "--data",
        str(tmp_path),
        "--json",
        str(report),
    ]
    assert bench.main(args) == 0
    result = json.loads(report.read_text())
    assert result["tables"]["messages"] == 20_000
    rows = {r["metric"]: r["rows_out"] for r in result["metrics"]}
    assert rows["round_trip_times"] == 10_000 + 10 * 16  # every echo and ping + the HTTP pairs
    assert rows["flow_control_stalls"] > 0
    d = connect(next(tmp_path.glob("metrics-*")))
    assert set(websocket_transport_choice(d)["verdict"]) == {"rfc8441"}


def _overview(values: dict[str, float | None]) -> pd.DataFrame:
    return pd.DataFrame({"metric": list(values), "value": list(values.values())})


def test_headline_says_what_each_set_up_time_measures() -> None:
    rows = _overview(
        {
            "HTTP/2 connections": 3.0,
            "RFC 8441 WebSockets": 12.0,
            "HTTP requests": 18.0,
            "TCP connections HTTP/1.1 would have needed": 15.0,
            "TCP connections the RFC 8441 WebSockets rode on": 3.0,
            "TLS handshakes avoided": 12.0,
            "median RFC 8441 WebSocket open (CONNECT → 200)": 2.1,
            "median HTTP/1.1 WebSocket open from its connection's first byte": 23.1,
            "median HTTP/1.1 WebSocket open (Upgrade → 101)": 1.0,
            "HTTP/1.1 WebSockets seen": None,
        }
    )
    sentence, figures = headline(rows)
    assert sentence == (
        "3 HTTP/2 connections carried 12 WebSockets (RFC 8441) and 18 HTTP requests; "
        "HTTP/1.1 would have needed 12 more TCP connections and 12 more TLS handshakes for "
        "those WebSockets; WebSocket set-up took 2.1 ms over HTTP/2 (CONNECT → 200) vs 23.1 ms "
        "over HTTP/1.1 (new connection's first byte → 101; medians)."
    )
    assert ("12", "TCP connections HTTP/1.1 would have added") in figures
    caption = "WebSocket set-up over HTTP/1.1 (new connection's first byte → 101, median)"
    assert ("23.1 ms", caption) in figures
    # without the connection's first byte, the Upgrade span is shown and labelled as such
    fallback = rows[
        rows["metric"] != "median HTTP/1.1 WebSocket open from its connection's first byte"
    ]
    sentence, figures = headline(fallback)
    assert "1.0 ms over HTTP/1.1 (Upgrade → 101; medians)" in sentence
    assert ("1.0 ms", "WebSocket set-up over HTTP/1.1 (Upgrade → 101, median)") in figures
    # numbers the tables do not hold are left out, never shown as 0
    sentence, figures = headline(_overview({"HTTP/2 connections": 1.0}))
    assert sentence == "1 HTTP/2 connection carried 0 WebSockets (RFC 8441) and 0 HTTP requests."
    assert [caption for _, caption in figures] == [
        "HTTP/2 connections",
        "RFC 8441 WebSockets",
        "HTTP requests beside them",
    ]


def test_connections_caught_in_their_middle_are_counted_and_said() -> None:
    """A capture that missed a connection's start (``start_captured`` false) and the opening of
    some of its streams (``inferred``): those streams count like any other, the overview counts
    both, and the headline says the start was not captured."""
    d = db(
        connections=[
            conn("late", 0, 10, start_captured=False),
            conn("whole", 0, 10, start_captured=True),
        ],
        streams=[
            stream("late", 1, "websocket", 0, 10, inferred=True),
            stream("late", 3, "websocket", 0, 10, inferred=True),
            stream("late", 5, "http", 2, 3, inferred=False),
            stream("whole", 1, "websocket", 1, 9, inferred=False),
        ],
    )
    spc = streams_per_connection(d)
    late = row(spc, conn_id="late")
    assert late.streams == 3 and late.websockets == 2 and late.inferred == 2
    assert not late.start_captured and row(spc, conn_id="whole").start_captured
    rows = overview(compute_all(d))
    values = dict(zip(rows["metric"], rows["value"], strict=False))
    assert values["connections whose start was not captured (recognised from their middle)"] == 1
    assert values["streams whose opening was not captured (recognised from their bytes)"] == 2
    assert row(concurrency_per_connection(d), conn_id="late").peak_streams == 3
    sentence, _ = headline(rows)
    assert "the capture missed the start of 1 connection" in sentence
    whole = db(connections=[conn("whole", 0, 10, start_captured=True)])
    assert "missed the start" not in headline(overview(compute_all(whole)))[0]
