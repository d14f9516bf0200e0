"""``h2ws summary`` names each connection's HTTP version and leg as the tables have them.

Rows as the live addon writes them in both modes: intercept mode's two legs (client and server,
HTTP/2 over TLS each, or an HTTP/1.1 server leg from the WebSocket fallback), observe mode's
relayed h2c connection, and an HTTP/2 exchange recorded from mitmproxy's hooks (no stream id).
"""

from __future__ import annotations

from pathlib import Path

from h2ws.analysis.records import ConnectionRecord, StreamRecord
from h2ws.analysis.report.summary import summarise
from h2ws.analysis.sinks.writers import TableSink


def _section(text: str, title: str) -> list[str]:
    block = text.split(title, 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in block.strip().splitlines()[2:]]


def test_summary_names_versions_and_legs(tmp_path: Path) -> None:
    conns = [
        ConnectionRecord(conn_id="cl", http_version="h2", leg="client", streams=2),
        ConnectionRecord(conn_id="sv", http_version="h2", leg="server", streams=1),
        ConnectionRecord(conn_id="fb", http_version="http/1.1", leg="server", streams=1),
        ConnectionRecord(conn_id="oc", http_version="h2c", streams=1),
        ConnectionRecord(conn_id="hk", http_version="h2", streams=1),
    ]
    streams = [
        StreamRecord(conn_id="cl", stream_id=1, kind="http"),
        StreamRecord(conn_id="cl", stream_id=3, kind="websocket"),
        StreamRecord(conn_id="sv", stream_id=1, kind="http"),
        StreamRecord(conn_id="fb", stream_id=None, exchange=0, kind="websocket"),
        StreamRecord(conn_id="oc", stream_id=1, kind="websocket"),
        StreamRecord(conn_id="hk", stream_id=None, exchange=0, kind="http"),  # from hooks
    ]
    with TableSink(tmp_path, "parquet") as sink:
        for record in [*conns, *streams]:
            sink.write(record)
    text = summarise(tmp_path)
    rows = {tuple(r[:3]) for r in _section(text, "streams by kind")}
    assert rows == {
        ("client", "HTTP/2", "http"),
        ("client", "HTTP/2", "websocket"),
        ("server", "HTTP/2", "http"),
        ("server", "HTTP/1.1", "websocket"),
        ("-", "h2c", "websocket"),
        ("-", "HTTP/2", "http"),
    }, text
    legs = {r[0]: (r[1], r[2]) for r in _section(text, "connections (5)")}
    assert legs == {
        "cl": ("client", "h2"), "sv": ("server", "h2"), "fb": ("server", "http/1.1"),
        "oc": ("-", "h2c"), "hk": ("-", "h2"),
    }  # fmt: skip


def test_summary_says_which_connections_started_before_the_capture(tmp_path: Path) -> None:
    conns = [
        ConnectionRecord(conn_id="whole", http_version="h2c", streams=1, start_captured=True),
        ConnectionRecord(conn_id="late", http_version="h2c", streams=3, start_captured=False),
        ConnectionRecord(conn_id="raw", http_version="http/1.1", streams=1, start_captured=False),
    ]
    streams = [
        StreamRecord(conn_id="whole", stream_id=1, kind="websocket"),
        StreamRecord(conn_id="late", stream_id=1, kind="websocket", inferred=True),
        StreamRecord(conn_id="late", stream_id=3, kind="unknown", inferred=True),
        StreamRecord(conn_id="late", stream_id=5, kind="http"),
        StreamRecord(conn_id="raw", stream_id=None, exchange=0, kind="websocket", inferred=True),
    ]
    with TableSink(tmp_path, "parquet") as sink:
        for record in [*conns, *streams]:
            sink.write(record)
    text = summarise(tmp_path)
    header = text.split("connections (3)", 1)[1].splitlines()[2].split()
    start, inferred = header.index("start"), header.index("inferred")
    rows = {r[0]: (r[start], r[inferred]) for r in _section(text, "connections (3)")}
    assert rows == {
        "whole": ("captured", "0"),
        "late": ("midstream", "2"),
        "raw": ("midstream", "1"),
    }
    kinds = _section(text, "streams by kind")
    header = text.split("streams by kind", 1)[1].splitlines()[2].split()
    col = header.index("inferred")
    by = {(r[1], r[2]): r[col] for r in kinds}
    assert by == {("h2c", "websocket"): "1", ("h2c", "unknown"): "1", ("h2c", "http"): "0",
                  ("HTTP/1.1", "websocket"): "1"}, text  # fmt: skip
