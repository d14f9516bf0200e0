"""Streaming table writers: Parquet (default), CSV and JSON Lines.

Records are buffered per table in columns and written in batches, so memory is bounded by the
batch size, not by the capture.  Files are written under a temporary name and renamed when
complete: a reader never sees a half-written table.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .records import TABLE_OF, TABLES, Record, arrow_schema, columns

FORMATS = ("parquet", "csv", "jsonl")
EXTENSIONS = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
DEFAULT_BATCH_ROWS = 65_536


class _Writer(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...
    def close(self) -> None: ...


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


def _text_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Binary columns as base64 text: CSV and JSON have no bytes."""
    arrays = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_binary(field.type):
            values = [
                None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()
            ]
            arrays.append(pa.array(values, pa.string()))
        else:
            arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class _CsvWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        text_schema = pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema]
        )
        self._writer = pacsv.CSVWriter(path, text_schema)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(_text_batch(batch))

    def close(self) -> None:
        self._writer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value)}")


class _JsonlWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._file = path.open("w", encoding="utf-8")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        for row in _text_batch(batch).to_pylist():
            self._file.write(json.dumps(row, default=_json_default, ensure_ascii=False))
            self._file.write("\n")

    def close(self) -> None:
        self._file.close()


_WRITERS = {"parquet": _ParquetWriter, "csv": _CsvWriter, "jsonl": _JsonlWriter}


def _to_micros(ts: float | None) -> int | None:
    return None if ts is None else round(ts * 1_000_000)


class _TableBuffer:
    """Columns of one table accumulated until a batch is full."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.schema = arrow_schema(table)
        self.names = [f.name for f in fields(TABLES[table])]
        self.timestamp_columns = {name for name, kind in columns(table) if kind == "timestamp"}
        self.columns: dict[str, list[Any]] = {n: [] for n in self.names}
        self.rows = 0

    def append(self, record: Record) -> None:
        for name in self.names:
            self.columns[name].append(getattr(record, name))
        self.rows += 1

    def take_batch(self) -> pa.RecordBatch:
        arrays = []
        for field in self.schema:
            values = self.columns[field.name]
            if field.name in self.timestamp_columns:
                arrays.append(
                    pa.array([_to_micros(v) for v in values], pa.int64()).cast(field.type)
                )
            else:
                arrays.append(pa.array(values, field.type))
        self.columns = {n: [] for n in self.names}
        self.rows = 0
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class TableSink:
    """Writes records to ``out_dir/<table><ext>``, one file per table, all tables always present."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        fmt: str = "parquet",
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.batch_rows = batch_rows
        self.counts: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._buffers = {t: _TableBuffer(t) for t in TABLES}
        self._writers: dict[str, _Writer] = {}
        self._closed = False

    def path(self, table: str) -> Path:
        return self.out_dir / f"{table}{EXTENSIONS[self.fmt]}"

    def _tmp_path(self, table: str) -> Path:
        return self.out_dir / f".{table}{EXTENSIONS[self.fmt]}.partial"

    def write(self, record: Record) -> None:
        table = TABLE_OF[type(record)]
        buffer = self._buffers[table]
        buffer.append(record)
        self.counts[table] += 1
        if buffer.rows >= self.batch_rows:
            self._flush(table)

    def write_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.write(record)

    def _writer(self, table: str) -> _Writer:
        writer = self._writers.get(table)
        if writer is None:
            writer = _WRITERS[self.fmt](self._tmp_path(table), self._buffers[table].schema)
            self._writers[table] = writer
        return writer

    def _flush(self, table: str) -> None:
        buffer = self._buffers[table]
        if buffer.rows:
            self._writer(table).write_batch(buffer.take_batch())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for table in TABLES:
            self._flush(table)
            writer = self._writer(table)  # empty tables still get a file with their schema
            writer.close()
            os.replace(self._tmp_path(table), self.path(table))

    def __enter__(self) -> TableSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_table(out_dir: str | os.PathLike[str], table: str) -> pa.Table:
    """One table of an output directory, whichever format and layout wrote it.

    Accepts ``<table>.parquet`` files, ``<table>/`` partitioned Parquet datasets, and the CSV or
    JSON Lines files this module writes.
    """
    import pyarrow.dataset as ds

    base = Path(out_dir)
    schema = arrow_schema(table)
    parquet_file = base / f"{table}.parquet"
    parquet_dir = base / table
    if parquet_file.exists():
        return pq.read_table(parquet_file, schema=schema)
    if parquet_dir.is_dir():
        return ds.dataset(parquet_dir, format="parquet", schema=schema).to_table()
    csv_file = base / f"{table}.csv"
    if csv_file.exists():
        text = pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema]
        )
        return pacsv.read_csv(csv_file, convert_options=pacsv.ConvertOptions(column_types=text))
    jsonl_file = base / f"{table}.jsonl"
    if jsonl_file.exists():
        rows = [json.loads(line) for line in jsonl_file.open(encoding="utf-8") if line.strip()]
        for row in rows:
            for name in row:
                if name.startswith("ts") and row[name] is not None:
                    row[name] = datetime.fromisoformat(row[name].replace("Z", "+00:00"))
        text_schema = pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema]
        )
        return pa.Table.from_pylist(rows, schema=text_schema)
    raise FileNotFoundError(f"no {table} table in {base} (expected {table}.parquet or {table}/)")


__all__ = ["FORMATS", "UTC", "TableSink", "read_table"]
