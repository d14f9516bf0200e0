"""A capture that starts in the middle of its connections, end to end, as a user meets it.

``bench/make_capture.py`` writes a protocol-exact h2c capture (three connections, four RFC 8441
WebSockets each, GETs between them, close handshakes at the end); the test keeps its second half
as a pcap file of its own — what tcpdump started late, or a ring buffer, leaves — and runs
``h2ws extract`` on both files, then ``h2ws summary`` and the report's metrics on the late one.
The chunk-level cut tests (``test_midconn*.py``) prove the decoding exact at every offset; this
one proves that what they decode reaches the tables, the summary and the report as a user reads
them: every connection started before the file, every WebSocket recognised from its bytes, its
messages the whole capture's last ones, its end as the whole capture saw it, and no verdict that
claims what the lost start would have said.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import dpkt
import pytest

from h2ws.analysis.cli import main as cli_main
from h2ws.analysis.metrics.compute import compute_all
from h2ws.analysis.metrics.fallback import websocket_transport_choice
from h2ws.analysis.metrics.load import connect
from h2ws.analysis.metrics.overview import headline, overview
from h2ws.analysis.sinks.reader import read_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import make_capture


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("late")
    whole = work / "whole.pcap"
    params = make_capture.Params(messages=2000, connections=3, streams=4, seed=5)
    make_capture.generate(params, whole)
    with whole.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        packets = list(reader)
        linktype = reader.datalink()
    late = work / "late.pcap"
    with late.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=linktype)
        for ts, buf in packets[len(packets) // 2 :]:
            writer.writepkt(buf, ts)
    out = {}
    for name, path in (("whole", whole), ("late", late)):
        out[name] = work / name
        assert cli_main(["extract", str(path), "-o", str(out[name])]) == 0
    return out


def _rows(out: Path, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_table(out, table).to_pylist()
    return rows


def _port_of(out: Path) -> dict[str, int]:
    """conn_id → the client's port: the two files number their connections independently."""
    return {c["conn_id"]: c["client_port"] for c in _rows(out, "connections")}


def _by_stream(out: Path, table: str) -> dict[tuple[int, int], list[dict[str, Any]]]:
    port = _port_of(out)
    grouped: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in _rows(out, table):
        grouped[port[row["conn_id"]], row["stream_id"]].append(row)
    return grouped


def test_every_connection_is_recognised_from_its_middle(tables: dict[str, Path]) -> None:
    late = _rows(tables["late"], "connections")
    assert len(late) == 3
    assert all(c["http_version"] == "h2c" and not c["start_captured"] for c in late)
    assert all(c["start_captured"] for c in _rows(tables["whole"], "connections"))
    codes = {d["code"] for d in _rows(tables["late"], "diagnostics")}
    assert "h2_midstream" in codes


def test_websockets_are_recognised_and_end_as_the_whole_capture_saw_them(
    tables: dict[str, Path],
) -> None:
    whole = _by_stream(tables["whole"], "streams")
    late = _by_stream(tables["late"], "streams")
    websockets = {k for k, (s,) in whole.items() if s["kind"] == "websocket"}
    assert len(websockets) == 12 and websockets <= set(late)
    for key in websockets:
        (before,), (after,) = whole[key], late[key]
        assert after["kind"] == "websocket" and after["inferred"], key
        assert after["request_headers"] is None  # unknown, not empty
        # the close handshake and END_STREAM were both captured: a clean end, not "incomplete"
        assert (after["close_cause"], after["stream_end"]) == (
            before["close_cause"],
            before["stream_end"],
        ), key
        assert after["close_cause"].startswith("ws_close:")


def test_messages_are_the_whole_captures_last_ones(tables: dict[str, Path]) -> None:
    def key(m: dict[str, Any]) -> tuple[Any, ...]:
        return m["direction"], m["opcode"], m["length"], m["sha256"]

    whole = _by_stream(tables["whole"], "messages")
    late = _by_stream(tables["late"], "messages")
    assert late and set(late) <= set(whole)
    total = 0
    for stream, messages in late.items():
        for direction in ("c2s", "s2c"):
            got = [key(m) for m in messages if m["direction"] == direction]
            full = [key(m) for m in whole[stream] if m["direction"] == direction]
            assert got and got == full[len(full) - len(got) :], (stream, direction)
            total += len(got)
    assert total >= 0.4 * sum(len(m) for m in whole.values())


def test_summary_and_report_count_them_and_say_the_start_was_missed(
    tables: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["summary", str(tables["late"])]) == 0
    text = capsys.readouterr().out
    assert text.count("midstream") >= 3

    db = connect(tables["late"])
    rows = overview(compute_all(db))
    values = dict(zip(rows["metric"], rows["value"], strict=True))
    assert values["connections whose start was not captured (recognised from their middle)"] == 3
    assert values["streams whose opening was not captured (recognised from their bytes)"] >= 12
    assert values["RFC 8441 WebSockets"] == 12
    assert values["peak open WebSockets on one connection"] == 4
    assert values["WebSockets with a close handshake both ways"] == 12
    # the SETTINGS that advertised RFC 8441 came before the file: unknown, not a violation
    verdicts = set(websocket_transport_choice(db)["verdict"])
    assert verdicts == {"rfc8441_setting_not_captured"}
    assert values["HTTP/2 connections whose server never advertised RFC 8441"] == 0
    assert "the capture missed the start of 3 connections" in headline(rows)[0]


def test_the_html_report_says_it(tables: dict[str, Path], tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    assert cli_main(["report", str(tables["late"]), "-o", str(html)]) == 0
    text = html.read_text()
    assert "the capture missed the start of 3 connections" in text
    assert "rfc8441_setting_not_captured" in text and "protocol violation" not in text
