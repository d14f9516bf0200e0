"""What the tables of a run must hold, given what the client logged (``testkit/peers/plan.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from h2ws.analysis.sinks.reader import read_table
from h2ws.testkit.peers.plan import payload_of

TABLES = ("connections", "streams", "frames", "messages", "diagnostics")
Rows = list[dict[str, Any]]
Tables = dict[str, Rows]


def read_tables(out: Path) -> Tables:
    return {t: read_table(out, t).to_pylist() for t in TABLES}


def logged(messages: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [(m["opcode"], payload_of(m)) for m in messages]


def decoded(rows: Rows) -> list[tuple[str, bytes]]:
    out = []
    for r in sorted(rows, key=lambda r: r["index"]):
        assert not r["payload_truncated"], r
        out.append((r["opcode"], r["payload"] or b""))
    return out


def diff(expected: list[tuple[str, bytes]], got: list[tuple[str, bytes]]) -> str:
    def short(m: tuple[str, bytes]) -> str:
        return f"{m[0]}[{len(m[1])}]{m[1][:16].hex()}"

    for i, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e != g:
            return f"first difference at {i}: expected {short(e)}, got {short(g)}"
    return f"expected {len(expected)} messages, got {len(got)}"


def messages_of(
    tables: Tables, conn_id: str, stream_id: int | None, direction: str, exchange: int | None = None
) -> Rows:
    return [
        m
        for m in tables["messages"]
        if m["conn_id"] == conn_id
        and m["stream_id"] == stream_id
        and m["direction"] == direction
        and (exchange is None or m["exchange"] == exchange)
    ]


def assert_h2_run(tables: Tables, log: dict[str, Any], http_version: str) -> str:
    """One HTTP/2 connection whose streams and messages are exactly the client's log; returns
    its conn_id."""
    conns = [c for c in tables["connections"] if c["http_version"] in ("h2", "h2c")]
    assert len(conns) == 1, tables["connections"]
    conn = conns[0]
    assert conn["http_version"] == http_version, conn
    assert conn["source"] == "live"
    assert conn["enable_connect_protocol"] is True, conn
    assert conn["end_cause"] == "closed", conn
    assert conn["websockets"] == len(log["websockets"])
    assert conn["streams"] == len(log["websockets"]) + len(log["requests"])
    conn_id: str = conn["conn_id"]
    streams = {s["stream_id"]: s for s in tables["streams"] if s["conn_id"] == conn_id}
    expected_ids = {w["stream_id"] for w in log["websockets"]} | {
        r["stream_id"] for r in log["requests"]
    }
    assert set(streams) == expected_ids
    for ws in log["websockets"]:
        s = streams[ws["stream_id"]]
        assert (s["kind"], s["method"], s["protocol"]) == ("websocket", "CONNECT", "websocket")
        assert s["path"] == ws["path"]
        assert s["status"] == ws["status"] == 200
        assert s["ws_accepted"] is True
        assert s["messages_c2s"] == len(ws["sent"])
        assert s["messages_s2c"] == len(ws["received"])
        assert s["error"] is None, s
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            got = decoded(messages_of(tables, conn_id, ws["stream_id"], direction))
            want = logged(ws[key])
            assert got == want, f"{ws['path']} {direction}: {diff(want, got)}"
    for req in log["requests"]:
        s = streams[req["stream_id"]]
        assert (s["kind"], s["method"], s["path"]) == ("http", "GET", req["path"])
        assert s["status"] == req["status"]
        assert s["bytes_s2c"] == req["body_length"]
        assert s["close_cause"] == "end_stream", s
    errors = [d for d in tables["diagnostics"] if d["severity"] == "error"]
    assert not errors, errors
    return conn_id
