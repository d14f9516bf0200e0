"""Streaming table writers: Parquet (default), CSV and JSON Lines.

Records are buffered per table in columns and written in batches, so memory is bounded by the
batch size, not by the capture.  Files are written under a temporary name and renamed when
complete: a reader never sees a half-written table.
"""

from __future__ import annotations

import base64
import json
import operator
import os
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
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


_WRITERS: dict[str, type[_ParquetWriter | _CsvWriter | _JsonlWriter]] = {
    "parquet": _ParquetWriter,
    "csv": _CsvWriter,
    "jsonl": _JsonlWriter,
}


class _TableBuffer:
    """Columns of one table accumulated until a batch is full."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.schema = arrow_schema(table)
        self.names = [f.name for f in fields(TABLES[table])]
        self.timestamp_columns = {name for name, kind in columns(table) if kind == "timestamp"}
        # One C-level call per record instead of one getattr per column: the hot path of export.
        self._row_of = operator.attrgetter(*self.names)
        self._rows: list[tuple[Any, ...]] = []

    @property
    def rows(self) -> int:
        return len(self._rows)

    def append(self, record: Record) -> None:
        self._rows.append(self._row_of(record))

    def take_batch(self) -> pa.RecordBatch:
        transposed = list(zip(*self._rows, strict=True))
        self._rows = []
        arrays = []
        for field, values in zip(self.schema, transposed, strict=True):
            if field.name in self.timestamp_columns:
                seconds = pa.array(values, pa.float64())
                micros = pc.round(pc.multiply(seconds, 1_000_000.0))
                arrays.append(pc.cast(micros, pa.int64()).cast(field.type))
            else:
                arrays.append(pa.array(values, field.type))
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
        if table not in self._writers:
            factory = _WRITERS[self.fmt]
            self._writers[table] = factory(self._tmp_path(table), self._buffers[table].schema)
        return self._writers[table]

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


class PartitionedSink:
    """Writes each table as a dataset of part files: ``out_dir/<table>/part-<n>.<ext>``.

    For long-running sources (the live addon): :meth:`flush` closes the current part of every
    table that has rows, so everything written so far is readable and complete; a process
    killed between flushes loses at most the rows since the last flush, never a file.
    """

    def __init__(self, out_dir: str | os.PathLike[str], fmt: str = "parquet") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.counts: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._buffers = {t: _TableBuffer(t) for t in TABLES}
        # Parts from an earlier run in the same directory are kept: number after them.
        self._run = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._part = 0
        for table in TABLES:
            (self.out_dir / table).mkdir(parents=True, exist_ok=True)

    def write(self, record: Record) -> None:
        table = TABLE_OF[type(record)]
        self._buffers[table].append(record)
        self.counts[table] += 1

    def write_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.write(record)

    @property
    def pending(self) -> int:
        return sum(b.rows for b in self._buffers.values())

    def flush(self) -> None:
        ext = EXTENSIONS[self.fmt]
        for table, buffer in self._buffers.items():
            if not buffer.rows:
                continue
            final = self.out_dir / table / f"part-{self._run}-{self._part:06d}{ext}"
            tmp = final.with_name(f".{final.name}.partial")
            writer = _WRITERS[self.fmt](tmp, buffer.schema)
            writer.write_batch(buffer.take_batch())
            writer.close()
            os.replace(tmp, final)
        self._part += 1

    def close(self) -> None:
        self.flush()


def _text_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema]
    )


def _read_file(path: Path, table: str) -> pa.Table:
    schema = arrow_schema(table)
    if path.suffix == ".parquet":
        return pq.read_table(path, schema=schema)
    if path.suffix == ".csv":
        options = pacsv.ConvertOptions(column_types=_text_schema(schema))
        return pacsv.read_csv(path, convert_options=options)
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    timestamps = {name for name, kind in columns(table) if kind == "timestamp"}
    for row in rows:
        for name in timestamps:
            if row.get(name) is not None:
                row[name] = datetime.fromisoformat(row[name].replace("Z", "+00:00"))
    return pa.Table.from_pylist(rows, schema=_text_schema(schema))


def read_table(out_dir: str | os.PathLike[str], table: str) -> pa.Table:
    """One table of an output directory, whichever format and layout wrote it.

    Accepts ``<table>.parquet|.csv|.jsonl`` files and ``<table>/`` datasets of part files (the
    live addon's layout).  CSV and JSON Lines keep ``payload`` as base64 text.
    """
    base = Path(out_dir)
    for ext in EXTENSIONS.values():
        single = base / f"{table}{ext}"
        if single.exists():
            return _read_file(single, table)
    folder = base / table
    if folder.is_dir():
        parts = sorted(
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.suffix in EXTENSIONS.values()
        )
        if not parts:
            return arrow_schema(table).empty_table()
        tables = [_read_file(p, table) for p in parts]
        return pa.concat_tables(tables)
    raise FileNotFoundError(f"no {table} table in {base} (expected {table}.parquet or {table}/)")


__all__ = ["FORMATS", "PartitionedSink", "TableSink", "read_table"]
