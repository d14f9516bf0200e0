"""The table writers: records in, the same values out, in every format."""

from __future__ import annotations

import base64
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    FrameRecord,
    MessageRecord,
    StreamRecord,
)
from h2ws.analysis.sinks.reader import read_table
from h2ws.analysis.sinks.writers import CONVERT_ROWS, TableSink, _array, _timestamps

_seconds = st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.none()


@settings(max_examples=300, deadline=None)
@given(st.lists(_seconds, max_size=30))
def test_timestamps_round_as_arrow_does(values: list[float | None]) -> None:
    """numpy's conversion gives what Arrow's compute functions would: microseconds rounded
    half to even, None as null."""
    type_ = pa.timestamp("us", tz="UTC")
    expected = pc.round(pc.multiply(pa.array(values, pa.float64()), 1_000_000.0))
    assert _timestamps(values, type_)[0] == expected.cast(pa.int64()).cast(type_)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            (pa.int64(), st.none() | st.integers(-2, 2)),
            (pa.string(), st.none() | st.sampled_from(["", "a", "b"])),
            (pa.bool_(), st.none() | st.booleans()),
            (pa.binary(), st.none() | st.sampled_from([b"", b"x", b"\0"])),
        ]
    ).flatmap(lambda kind: st.tuples(st.just(kind[0]), st.lists(kind[1], max_size=6)))
)
def test_columns_of_one_value_convert_as_any_other(case: tuple[pa.DataType, list[object]]) -> None:
    type_, values = case
    assert _array(values, type_) == pa.array(values, type_)


def _message(i: int) -> MessageRecord:
    return MessageRecord(
        conn_id=f"c{i % 3}",
        stream_id=None if i % 4 == 0 else i,
        direction="c2s" if i % 2 else "s2c",
        index=i,
        ts_first=None if i % 5 == 0 else 1.5 + i,
        ts_last=2.25 + i,
        opcode="close" if i % 7 == 0 else "binary",
        length=i,
        payload=None if i % 3 == 0 else bytes([i % 256]) * (i % 11),
        sha256=f"{i:064x}",
        close_code=1000 if i % 7 == 0 else None,
        close_reason="bye" if i % 7 == 0 else None,
    )


def _frame(i: int) -> FrameRecord:
    return FrameRecord(
        "c", i, 1.0 + i / 8, "s2c", "DATA", "END_STREAM" if i % 9 == 0 else "", 1, i,
        i if i % 2 else None, None, None if i % 5 else "CANCEL",
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_every_value_comes_back(tmp_path: Path, fmt: str) -> None:
    """Rows of every table, nulls in every nullable column, across several conversions (the
    tuple tables wait flattened, the dataclasses as records) and two batches per file."""
    n = 2 * CONVERT_ROWS + 17
    messages = [_message(i) for i in range(n)]
    frames = [_frame(i) for i in range(n)]
    others = [
        ConnectionRecord(conn_id="c0", ts_start=1.0, bytes_c2s=5, enable_connect_protocol=True),
        StreamRecord(conn_id="c0", stream_id=1, kind="websocket", status=200, ts_open=1.5),
        DiagnosticRecord(conn_id=None, ts=None, code="x", message="y"),
    ]
    with TableSink(tmp_path, fmt, batch_rows=CONVERT_ROWS + 5) as sink:
        for message, frame in zip(messages, frames, strict=True):
            sink.write(message)
            sink.write(frame)
        for other in others:
            sink.write(other)
    got = read_table(tmp_path, "messages").to_pylist()
    assert len(got) == n
    for row, record in zip(got, messages, strict=True):
        for name, value in record._asdict().items():
            if name.startswith("ts_"):
                value = None if value is None else round(value * 1_000_000)
                row[name] = None if row[name] is None else round(row[name].timestamp() * 1e6)
            elif name == "payload" and fmt != "parquet" and value is not None:
                value = base64.b64encode(value).decode()
            if fmt == "csv" and value is None and isinstance(row[name], str):
                value = ""  # CSV has no null text
            assert row[name] == value, (name, row, record)
    assert [r["data_length"] for r in read_table(tmp_path, "frames").to_pylist()] == [
        f.data_length for f in frames
    ]
    no_text = "" if fmt == "csv" else None
    assert [r["error_code"] for r in read_table(tmp_path, "frames").to_pylist()] == [
        no_text if f.error_code is None else f.error_code for f in frames
    ]
    assert read_table(tmp_path, "connections").to_pylist()[0]["enable_connect_protocol"] is True
    assert read_table(tmp_path, "streams").to_pylist()[0]["status"] == 200
    assert read_table(tmp_path, "diagnostics").to_pylist()[0]["ts"] is None


def test_a_timestamp_column_equal_to_the_one_before(tmp_path: Path) -> None:
    """Messages of one frame have ts_last == ts_first, converted once; a null column after
    another keeps its own type."""
    with TableSink(tmp_path) as sink:
        for i in range(3):
            sink.write(MessageRecord(index=i, ts_first=1.0 + i, ts_last=1.0 + i))
            sink.write(ConnectionRecord(conn_id=f"c{i}"))
    rows = read_table(tmp_path, "messages").to_pylist()
    assert [r["ts_last"].timestamp() for r in rows] == [1.0, 2.0, 3.0]
    assert [r["ts_first"] for r in rows] == [r["ts_last"] for r in rows]
    connections = read_table(tmp_path, "connections")
    assert connections.column("ts_enable_connect_protocol").null_count == 3
    assert connections.column("enable_connect_protocol").null_count == 3


def test_json_lines_are_read_in_batches_not_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON Lines reader parses a bounded number of lines at a time: the Python objects
    alive while reading stay far below those of the whole file, and the table is the same."""
    import tracemalloc

    from h2ws.analysis.sinks import reader

    n = 20_000
    with TableSink(tmp_path, "jsonl") as sink:
        for i in range(n):
            sink.write(_message(i))
    whole = read_table(tmp_path, "messages")

    def peak_reading(batch_rows: int) -> tuple[int, pa.Table]:
        monkeypatch.setattr(reader, "JSONL_BATCH_ROWS", batch_rows)
        tracemalloc.start()
        try:
            table = read_table(tmp_path, "messages")
            return tracemalloc.get_traced_memory()[1], table
        finally:
            tracemalloc.stop()

    batched_peak, batched = peak_reading(500)
    all_peak, _ = peak_reading(n)
    assert batched.equals(whole) and batched.num_rows == n
    assert batched_peak * 5 < all_peak, (batched_peak, all_peak)


def test_json_lines_read_with_columns_never_hold_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_table(..., columns=[...])`` of JSON Lines (what ``h2ws summary`` does) drops the
    other columns line by line: the Python objects alive while reading hold no payloads, far
    below those of reading every column, and the table equals the projection of the whole."""
    import tracemalloc

    from h2ws.analysis.sinks import reader

    with TableSink(tmp_path, "jsonl") as sink:
        for i in range(2_000):
            sink.write(_message(i)._replace(payload=bytes([i % 256]) * 8_192))
    wanted = ["direction", "opcode", "length", "compressed"]
    whole = read_table(tmp_path, "messages")
    monkeypatch.setattr(reader, "JSONL_BATCH_ROWS", 500)

    def peak_reading(columns: list[str] | None) -> tuple[int, pa.Table]:
        tracemalloc.start()
        try:
            table = read_table(tmp_path, "messages", columns)
            return tracemalloc.get_traced_memory()[1], table
        finally:
            tracemalloc.stop()

    projected_peak, projected = peak_reading(wanted)
    all_peak, _ = peak_reading(None)
    assert projected.equals(whole.select(wanted))
    assert projected.column_names == wanted
    assert projected_peak * 5 < all_peak, (projected_peak, all_peak)
