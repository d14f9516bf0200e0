"""Reading a table back from an output directory, whichever format and layout wrote it.

One job: :func:`read_table`.  Parquet and CSV are read by pyarrow; JSON Lines are read in
batches of :data:`JSONL_BATCH_ROWS` lines, each turned into an Arrow batch before the next is
read, so the Python objects of a whole file never exist at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from h2ws.analysis.records import arrow_schema, columns
from h2ws.analysis.sinks.writers import EXTENSIONS

#: JSON Lines rows parsed at a time (Python objects alive at once while reading)
JSONL_BATCH_ROWS = 8192


def _text_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema]
    )


def _jsonl_batches(
    path: Path, table: str, schema: pa.Schema, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The rows of a JSON Lines file, ``batch_rows`` lines at a time."""
    timestamps = [name for name, kind in columns(table) if kind == "timestamp"]
    rows: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            for name in timestamps:
                value = row.get(name)
                if value is not None:
                    row[name] = datetime.fromisoformat(value.replace("Z", "+00:00"))
            rows.append(row)
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(rows, schema=schema)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def _read_file(path: Path, table: str) -> pa.Table:
    schema = arrow_schema(table)
    if path.suffix == ".parquet":
        return pq.read_table(path, schema=schema)
    text_schema = _text_schema(schema)
    if path.suffix == ".csv":
        options = pacsv.ConvertOptions(column_types=text_schema)
        return pacsv.read_csv(path, convert_options=options)
    return pa.Table.from_batches(
        list(_jsonl_batches(path, table, text_schema, JSONL_BATCH_ROWS)), schema=text_schema
    )


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


__all__ = ["JSONL_BATCH_ROWS", "read_table"]
