"""h2ws against real RFC 8441 peers, captured during the run (fixtures in ``conftest.py``).

For every scenario the truth is what the client itself logged (every message it sent and
received, per stream), and tshark is a second, independent reader of the same capture:

- ``test_capture_*``: the capture really holds what the client logged (tshark's bytes, read
  with ``testkit/peers/wsframes.py``), independent of h2ws — a failure here is a peer or
  capture problem, not a decoder problem;
- the other tests: ``h2ws extract CAPTURE -o OUT --payload full`` equals the client's log and
  tshark, table by table.

Messages are compared in completion order (a ping sent between two fragments of a message
comes before that message), as the schema defines ``messages.index``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from h2ws.testkit.live.compare import diff, logged, messages_of
from h2ws.testkit.peers import tshark, wsframes
from h2ws.testkit.peers.runner import NODE_GETS, NODE_WEBSOCKETS, Scenario

from .paths import SHARED_CAPTURES
from .requires import missing_sample, needs_tools

pytestmark = pytest.mark.timeout(180)

TABLES = ("connections", "streams", "frames", "messages", "diagnostics")
SAMPLE = SHARED_CAPTURES / "h2c_hypercorn_ws.pcap"
SAMPLE_PORT = 8080

Rows = list[dict[str, Any]]
Tables = dict[str, Rows]

#: Scenario fixture -> HTTP version h2ws must report for its connections.
H2_SCENARIOS = {"capture_h2c_node": "h2c", "capture_h2c_upgrade": "h2c", "capture_tls_node": "h2"}
ALL_SCENARIOS = [*H2_SCENARIOS, "capture_h1_baseline"]

needs_tshark = needs_tools("tshark")


# ------------------------------------------------------------------------------------- helpers


def extract(capture: Path, out: Path) -> Tables:
    """``h2ws extract CAPTURE -o OUT --payload full``; every table as a list of row dicts."""
    cmd = [
        sys.executable, "-m", "h2ws.analysis.cli", "extract", str(capture),
        "-o", str(out), "--payload", "full",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return {t: pq.read_table(out / f"{t}.parquet").to_pylist() for t in TABLES}


_extracted: dict[Path, Tables] = {}


def extract_once(scenario: Scenario) -> Tables:
    """The scenario's capture through h2ws, once per session (output next to the capture)."""
    if scenario.capture not in _extracted:
        out = scenario.capture.parent / f"{scenario.name}.h2ws"
        _extracted[scenario.capture] = extract(scenario.capture, out)
    return _extracted[scenario.capture]


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Scenario:
    """Indirectly parametrized with the name of a capture fixture of conftest.py."""
    result: Scenario = request.getfixturevalue(request.param)
    return result


@pytest.fixture
def tables(scenario: Scenario) -> Tables:
    return extract_once(scenario)


def decoded(rows: Rows) -> list[tuple[str, bytes]]:
    out = []
    for r in sorted(rows, key=lambda r: r["index"]):
        payload = r["payload"]
        assert payload is not None or r["length"] == 0, r
        assert not r["payload_truncated"], r
        out.append((r["opcode"], payload or b""))
    return out


def connection_of(tables: Tables, client_port: int) -> dict[str, Any]:
    matches = [c for c in tables["connections"] if c["client_port"] == client_port]
    assert len(matches) == 1, (client_port, tables["connections"])
    return matches[0]


def assert_messages(expected: list[tuple[str, bytes]], got: list[tuple[str, bytes]]) -> None:
    assert got == expected, diff(expected, got)


def h2_streams_of(tables: Tables, conn_id: str) -> dict[int, dict[str, Any]]:
    rows = [s for s in tables["streams"] if s["conn_id"] == conn_id]
    by_id = {s["stream_id"]: s for s in rows}
    assert len(by_id) == len(rows), "duplicate stream ids"
    return by_id


#: HTTP/2 flag bits by frame type, by the names h2ws uses (docs/schema.md, frames.flags).
FLAG_NAMES = {
    0: {0x1: "END_STREAM", 0x8: "PADDED"},
    1: {0x1: "END_STREAM", 0x4: "END_HEADERS", 0x8: "PADDED", 0x20: "PRIORITY"},
    4: {0x1: "ACK"},
    5: {0x4: "END_HEADERS", 0x8: "PADDED"},
    6: {0x1: "ACK"},
    9: {0x4: "END_HEADERS"},
}
TYPE_NAMES = {
    0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
    6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION",
}  # fmt: skip


def flag_names(ftype: int, flags: int) -> str:
    names = FLAG_NAMES.get(ftype, {})
    return ",".join(sorted(name for bit, name in names.items() if flags & bit))


def tshark_data(frames: list[tshark.H2Frame]) -> dict[tuple[int, int, str], bytes]:
    """(client port, stream id, direction) -> the concatenated DATA payloads, as tshark saw them."""
    out: dict[tuple[int, int, str], bytearray] = defaultdict(bytearray)
    for f in frames:
        if f.type == 0:
            assert f.data is not None
            out[(f.client_port, f.stream_id, f.direction)] += f.data
    return {k: bytes(v) for k, v in out.items()}


# ------------------------------------------------------------- the captures hold what was logged


@needs_tshark
@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_capture_h2_matches_client_log(scenario: Scenario) -> None:
    """tshark's HTTP/2 view of the capture equals the client log (peers and capture sanity)."""
    log = scenario.log
    # TLS: the key log travels inside the pcapng (Decryption Secrets Block).
    frames = tshark.h2_frames(scenario.capture, scenario.port, scenario.log["transport"])
    port = log["local_port"]
    assert {f.client_port for f in frames} == {port}, "one connection, from the logged port"
    settings = [f.settings for f in frames if f.type == 4 and f.direction == "s2c" and f.settings]
    assert settings and settings[0].get(8) == 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL = 1"
    data = tshark_data(frames)
    for ws in log["websockets"]:
        deflate = "permessage-deflate" in (ws.get("extensions") or "")
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            raw = data.get((port, ws["stream_id"], direction), b"")
            got = [(m.opcode, m.payload) for m in wsframes.parse(raw, deflate=deflate)]
            assert_messages(logged(ws[key]), got)
    for req in log["requests"]:
        body = data.get((port, req["stream_id"], "s2c"), b"")
        assert len(body) == req["body_length"], req


@needs_tshark
def test_capture_h1_matches_client_log(capture_h1_baseline: Scenario) -> None:
    log = capture_h1_baseline.log
    frames = tshark.ws_frames(capture_h1_baseline.capture, capture_h1_baseline.port)
    messages = tshark.ws_messages(frames)
    assert {f.masked for f in frames if f.direction == "c2s"} == {True}
    assert {f.masked for f in frames if f.direction == "s2c"} == {False}
    for ws in log["websockets"]:
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            got = [
                m
                for m in messages
                if m.client_port == ws["local_port"] and m.direction == direction
            ]
            expected = logged(ws[key])
            assert [m.opcode for m in got] == [e[0] for e in expected]
            for m, (_, payload) in zip(got, expected, strict=True):
                if m.payload is not None:  # None: tshark does not tell (see tshark.ws_messages)
                    assert m.payload == payload, (ws["path"], direction, m)


# ------------------------------------------------------------------------- h2ws: connections


@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_h2_connection(scenario: Scenario, tables: Tables, request: pytest.FixtureRequest) -> None:
    log = scenario.log
    assert len(tables["connections"]) == 1, tables["connections"]
    conn = tables["connections"][0]
    assert conn["http_version"] == H2_SCENARIOS[request.node.callspec.params["scenario"]]
    assert conn["enable_connect_protocol"] is True
    assert conn["client_port"] == log["local_port"]
    assert conn["server_port"] == scenario.port
    assert conn["server_addr"] == conn["client_addr"] == "127.0.0.1"
    assert conn["h2c_upgrade"] is (log["transport"] == "h2c-upgrade")
    assert conn["tls"] is (log["transport"] == "h2")
    if conn["tls"]:
        assert conn["alpn"] == "h2"
    assert conn["websockets"] == len(log["websockets"])
    assert conn["streams"] == len(log["websockets"]) + len(log["requests"])
    assert conn["error"] is None


def test_h1_connections(capture_h1_baseline: Scenario) -> None:
    tables = extract_once(capture_h1_baseline)
    log = capture_h1_baseline.log
    assert len(tables["connections"]) == len(log["websockets"])
    for ws in log["websockets"]:
        conn = connection_of(tables, ws["local_port"])
        assert conn["http_version"] == "http/1.1"
        assert conn["enable_connect_protocol"] is None
        assert conn["tls"] is False
        assert conn["websockets"] == 1
        assert conn["error"] is None


# ----------------------------------------------------------------------------- h2ws: streams


@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_h2_streams(scenario: Scenario, tables: Tables) -> None:
    log = scenario.log
    conn_id = tables["connections"][0]["conn_id"]
    streams = h2_streams_of(tables, conn_id)
    expected_ids = {w["stream_id"] for w in log["websockets"]} | {
        r["stream_id"] for r in log["requests"]
    }
    assert set(streams) == expected_ids
    if scenario.name == "h2c_node":
        assert len(log["websockets"]) == NODE_WEBSOCKETS and len(log["requests"]) == NODE_GETS
    for ws in log["websockets"]:
        s = streams[ws["stream_id"]]
        assert s["kind"] == "websocket", s
        assert s["method"] == "CONNECT"
        assert s["protocol"] == "websocket"
        assert s["path"] == ws["path"]
        assert s["status"] == ws["status"] == 200
        assert s["ws_accepted"] is True
        assert s["exchange"] is None
        assert s["close_cause"] == "ws_close:1000", s
        assert s["stream_end"] == ws["stream_end"] == "rst_stream:CANCEL", s
        assert s["ws_close_by"] == "c2s"
        assert s["messages_c2s"] == len(ws["sent"])
        assert s["messages_s2c"] == len(ws["received"])
        assert (s["ws_extensions"] or None) == (ws.get("extensions") or None)
        assert s["error"] is None, s
    for req in log["requests"]:
        s = streams[req["stream_id"]]
        assert s["kind"] == "http", s
        assert s["method"] == "GET"
        assert s["protocol"] is None
        assert s["path"] == req["path"]
        assert s["status"] == req["status"]
        assert s["bytes_s2c"] == req["body_length"]
        assert s["close_cause"] == s["stream_end"] == "end_stream", s
        assert s["error"] is None, s


def test_h1_streams(capture_h1_baseline: Scenario) -> None:
    tables = extract_once(capture_h1_baseline)
    log = capture_h1_baseline.log
    gets_by_port = {r["local_port"]: r for r in log["requests"]}
    for ws in log["websockets"]:
        conn = connection_of(tables, ws["local_port"])
        rows = sorted(
            (s for s in tables["streams"] if s["conn_id"] == conn["conn_id"]),
            key=lambda s: s["exchange"],
        )
        get = gets_by_port.get(ws["local_port"])
        if get is not None:  # GET /hello, then the Upgrade on the same connection
            assert len(rows) == 2
            plain = rows[0]
            assert (plain["exchange"], plain["kind"], plain["method"]) == (0, "http", "GET")
            assert (plain["path"], plain["status"]) == (get["path"], get["status"])
            assert plain["bytes_s2c"] == get["body_length"]
        else:
            assert len(rows) == 1
        s = rows[-1]
        assert s["exchange"] == len(rows) - 1
        assert s["stream_id"] is None
        assert s["kind"] == "websocket", s
        assert s["method"] == "GET"
        assert (s["protocol"] or "").lower() == "websocket"
        assert s["path"] == ws["path"]
        assert s["status"] == ws["status"] == 101
        assert s["ws_accepted"] is True
        assert s["close_cause"] == "ws_close:1000", s
        assert s["stream_end"] is not None
        assert s["ws_close_by"] == "c2s"
        deflate = ws["extensions"] == "permessage-deflate"
        assert ("permessage-deflate" in (s["ws_extensions"] or "")) is deflate
        assert s["error"] is None, s


# ---------------------------------------------------------------------------- h2ws: messages


@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_h2_messages_match_client_log(scenario: Scenario, tables: Tables) -> None:
    conn_id = tables["connections"][0]["conn_id"]
    for ws in scenario.log["websockets"]:
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            rows = messages_of(tables, conn_id, ws["stream_id"], direction)
            assert_messages(logged(ws[key]), decoded(rows))
            check_message_details(rows, ws[key], ws)


def test_h1_messages_match_client_log(capture_h1_baseline: Scenario) -> None:
    tables = extract_once(capture_h1_baseline)
    log = capture_h1_baseline.log
    ports_with_get = {r["local_port"] for r in log["requests"]}
    for ws in log["websockets"]:
        conn = connection_of(tables, ws["local_port"])
        exchange = 1 if ws["local_port"] in ports_with_get else 0
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            rows = messages_of(tables, conn["conn_id"], None, direction)
            assert_messages(logged(ws[key]), decoded(rows))
            check_message_details(rows, ws[key], ws)
            assert {r["exchange"] for r in rows} == {exchange}


def check_message_details(rows: Rows, log: list[dict[str, Any]], ws: dict[str, Any]) -> None:
    rows = sorted(rows, key=lambda r: r["index"])
    assert [r["index"] for r in rows] == list(range(len(rows)))
    deflate = "permessage-deflate" in (ws.get("extensions") or "")
    for row, msg in zip(rows, log, strict=True):
        assert row["length"] == msg["length"]
        if msg["fragments"] is not None:  # Python clients log no received fragment counts
            assert row["fragments"] == msg["fragments"], (ws["path"], row["index"], msg["opcode"])
        if row["opcode"] == "close":
            assert row["close_code"] == msg["close_code"] == 1000
            assert row["close_reason"] == msg["close_reason"]
        else:
            assert row["close_code"] is None
        if row["opcode"] in ("ping", "pong", "close") or not deflate:
            assert row["compressed"] is False, row
        if not row["compressed"]:
            assert row["wire_length"] == row["length"]


# ---------------------------------------------------------------------------- h2ws vs tshark


@needs_tshark
@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_h2_frames_match_tshark(scenario: Scenario, tables: Tables) -> None:
    """Per direction the same frames in the same order (type, flags, stream, length), and per
    stream and direction the same number of DATA bytes."""
    frames = tshark.h2_frames(scenario.capture, scenario.port, scenario.log["transport"])
    conn_id = tables["connections"][0]["conn_id"]
    ours = sorted(
        (f for f in tables["frames"] if f["conn_id"] == conn_id), key=lambda f: f["index"]
    )
    for direction in ("c2s", "s2c"):
        expected = [
            (TYPE_NAMES.get(f.type, f"UNKNOWN_0x{f.type:x}"), flag_names(f.type, f.flags),
             f.stream_id, f.length)
            for f in frames if f.direction == direction
        ]  # fmt: skip
        got = [
            (f["type"], f["flags"], f["stream_id"], f["length"])
            for f in ours
            if f["direction"] == direction
        ]
        assert got == expected, f"{direction}: {len(got)} frames in h2ws, {len(expected)} in tshark"
    tshark_bytes: Counter[tuple[int, str]] = Counter()
    for (_, stream_id, direction), data in tshark_data(frames).items():
        tshark_bytes[(stream_id, direction)] += len(data)
    h2ws_bytes: Counter[tuple[int, str]] = Counter()
    for f in ours:
        if f["type"] == "DATA":
            h2ws_bytes[(f["stream_id"], f["direction"])] += f["data_length"]
    assert +h2ws_bytes == +tshark_bytes
    for s in tables["streams"]:
        assert s["bytes_c2s"] == tshark_bytes[(s["stream_id"], "c2s")], s
        assert s["bytes_s2c"] == tshark_bytes[(s["stream_id"], "s2c")], s


@needs_tshark
@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_h2_streams_match_tshark(scenario: Scenario, tables: Tables) -> None:
    """Stream ids, methods, :protocol, paths and statuses as tshark decodes the HEADERS."""
    frames = tshark.h2_frames(scenario.capture, scenario.port, scenario.log["transport"])
    requests: dict[int, dict[str, str]] = {}
    statuses: dict[int, int] = {}
    for f in frames:
        if f.type != 1:
            continue
        fields = dict(f.headers)
        if f.direction == "c2s":
            requests[f.stream_id] = fields
        elif ":status" in fields and not fields[":status"].startswith("1"):
            statuses[f.stream_id] = int(fields[":status"])
    conn_id = tables["connections"][0]["conn_id"]
    streams = h2_streams_of(tables, conn_id)
    upgraded = tables["connections"][0]["h2c_upgrade"]
    expected_ids = set(requests) | ({1} if upgraded else set())
    assert set(streams) == expected_ids
    for stream_id, fields in requests.items():
        s = streams[stream_id]
        assert s["method"] == fields[":method"]
        assert s["protocol"] == fields.get(":protocol")
        assert s["path"] == fields[":path"]
        assert s["authority"] == fields[":authority"]
        assert s["status"] == statuses.get(stream_id)
    if upgraded:  # stream 1: the HTTP/1.1 request that asked for h2c, answered over HTTP/2
        assert streams[1]["method"] == "GET" and streams[1]["status"] == statuses[1]


@needs_tshark
@pytest.mark.parametrize("scenario", list(H2_SCENARIOS), indirect=True)
def test_h2_messages_match_tshark(scenario: Scenario, tables: Tables) -> None:
    """h2ws's messages equal tshark's DATA bytes read as RFC 6455 frames by ``wsframes``
    (opcode, payload, fragments, compression), stream by stream."""
    frames = tshark.h2_frames(scenario.capture, scenario.port, scenario.log["transport"])
    data = tshark_data(frames)
    conn = tables["connections"][0]
    for s in tables["streams"]:
        if s["kind"] != "websocket":
            continue
        deflate = "permessage-deflate" in (s["ws_extensions"] or "")
        for direction in ("c2s", "s2c"):
            raw = data.get((conn["client_port"], s["stream_id"], direction), b"")
            parsed = wsframes.parse(raw, deflate=deflate)
            rows = sorted(
                messages_of(tables, conn["conn_id"], s["stream_id"], direction),
                key=lambda r: r["index"],
            )
            assert_messages([(m.opcode, m.payload) for m in parsed], decoded(rows))
            assert [r["fragments"] for r in rows] == [m.fragments for m in parsed]
            assert [r["compressed"] for r in rows] == [m.compressed for m in parsed]


@needs_tshark
def test_h1_messages_match_tshark(capture_h1_baseline: Scenario) -> None:
    """tshark's WebSocket dissector (``websocket.payload.*``, ``data.data``) and h2ws agree
    message by message (payloads of compressed fragmented messages: tshark does not inflate
    those, only their opcode is compared)."""
    tables = extract_once(capture_h1_baseline)
    frames = tshark.ws_frames(capture_h1_baseline.capture, capture_h1_baseline.port)
    theirs = tshark.ws_messages(frames)
    for conn in tables["connections"]:
        for direction in ("c2s", "s2c"):
            expected = [
                m
                for m in theirs
                if m.client_port == conn["client_port"] and m.direction == direction
            ]
            rows = sorted(
                messages_of(tables, conn["conn_id"], None, direction), key=lambda r: r["index"]
            )
            assert [r["opcode"] for r in rows] == [m.opcode for m in expected]
            assert [r["fragments"] for r in rows] == [m.fragments for m in expected]
            assert [r["compressed"] for r in rows] == [m.compressed for m in expected]
            for row, m in zip(rows, expected, strict=True):
                if m.payload is not None:
                    assert row["payload"] == m.payload or (row["length"] == 0 and not m.payload)


# --------------------------------------------------------------------- the shared sample capture


@pytest.fixture(scope="module")
def sample_tables(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    if not SAMPLE.exists():
        missing_sample(f"{SAMPLE} is not on this machine")
    return extract(SAMPLE, tmp_path_factory.mktemp("sample"))


def test_sample_capture(sample_tables: Tables) -> None:
    """``h2c_hypercorn_ws.pcap`` (Node.js 20 -> hypercorn 0.18, README of /work/shared/captures):
    one extended-CONNECT WebSocket, 10 text + 1 binary message each way, close both ways."""
    t = sample_tables
    assert len(t["connections"]) == 1
    conn = t["connections"][0]
    assert (conn["http_version"], conn["enable_connect_protocol"]) == ("h2c", True)
    assert conn["server_port"] == SAMPLE_PORT
    ws = [s for s in t["streams"] if s["kind"] == "websocket"]
    assert len(ws) == len(t["streams"]) == 1
    s = ws[0]
    assert (s["method"], s["protocol"], s["status"]) == ("CONNECT", "websocket", 200)
    assert s["close_cause"] == "ws_close:1000"
    assert len(t["messages"]) == 24
    for direction in ("c2s", "s2c"):
        rows = sorted(
            messages_of(t, conn["conn_id"], s["stream_id"], direction), key=lambda r: r["index"]
        )
        assert [r["opcode"] for r in rows] == ["text"] * 10 + ["binary", "close"]
        assert rows[-1]["close_code"] == 1000
    c2s = decoded(messages_of(t, conn["conn_id"], s["stream_id"], "c2s"))
    s2c = decoded(messages_of(t, conn["conn_id"], s["stream_id"], "s2c"))
    assert c2s == s2c, "an echo server: every message comes back, the close frame too"
    assert [p for _, p in c2s[:10]] == [b"hello from node #%d" % i for i in range(10)]
    assert c2s[11] == ("close", b"\x03\xe8bye")


@needs_tshark
def test_sample_capture_matches_tshark(sample_tables: Tables) -> None:
    frames = tshark.h2_frames(SAMPLE, SAMPLE_PORT)
    data = tshark_data(frames)
    conn = sample_tables["connections"][0]
    for s in sample_tables["streams"]:
        for direction in ("c2s", "s2c"):
            raw = data.get((conn["client_port"], s["stream_id"], direction), b"")
            assert s[f"bytes_{direction}"] == len(raw)
            parsed = wsframes.parse(raw)
            rows = messages_of(sample_tables, conn["conn_id"], s["stream_id"], direction)
            assert_messages([(m.opcode, m.payload) for m in parsed], decoded(rows))
