"""Reading a table back from an output directory, whichever format and layout wrote it.

One job: :func:`read_table`.  Parquet and CSV are read by pyarrow; JSON Lines are read in
batches of :data:`JSONL_BATCH_ROWS` lines, each turned into an Arrow batch of only the wanted
columns before the next is read, so the Python objects of a whole file never exist at once and
an unwanted column (``payload``) is never kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
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
    """The rows of a JSON Lines file, ``batch_rows`` lines at a time, with the columns of
    ``schema`` only."""
    wanted = set(schema.names)
    timestamps = [name for name, kind in columns(table) if kind == "timestamp" and name in wanted]
    project = wanted != set(arrow_schema(table).names)
    rows: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if project:  # drop e.g. ``payload`` at once: a batch never holds it
                row = {name: value for name, value in row.items() if name in wanted}
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


def _read_file(path: Path, table: str, wanted: Sequence[str] | None = None) -> pa.Table:
    schema = arrow_schema(table)
    if path.suffix == ".parquet":
        return pq.read_table(path, schema=schema, columns=wanted)
    text_schema = _text_schema(schema)
    if path.suffix == ".csv":
        options = pacsv.ConvertOptions(column_types=text_schema, include_columns=wanted)
        return pacsv.read_csv(path, convert_options=options)
    if wanted is not None:
        text_schema = pa.schema([text_schema.field(name) for name in wanted])
    batches = _jsonl_batches(path, table, text_schema, JSONL_BATCH_ROWS)
    return pa.Table.from_batches(list(batches), schema=text_schema)


def read_table(
    out_dir: str | os.PathLike[str], table: str, columns: Sequence[str] | None = None
) -> pa.Table:
    """One table of an output directory, whichever format and layout wrote it.

    Accepts ``<table>.parquet|.csv|.jsonl`` files and ``<table>/`` datasets of part files (the
    live addon's layout).  CSV and JSON Lines keep ``payload`` as base64 text.  ``columns``
    reads only those (Parquet and CSV never load the others, e.g. ``payload``).
    """
    base = Path(out_dir)
    for ext in EXTENSIONS.values():
        single = base / f"{table}{ext}"
        if single.exists():
            return _read_file(single, table, columns)
    folder = base / table
    if folder.is_dir():
        parts = sorted(
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.suffix in EXTENSIONS.values()
        )
        if not parts:
            empty = arrow_schema(table).empty_table()
            return empty if columns is None else empty.select(list(columns))
        tables = [_read_file(p, table, columns) for p in parts]
        return pa.concat_tables(tables)
    raise FileNotFoundError(f"no {table} table in {base} (expected {table}.parquet or {table}/)")


__all__ = ["JSONL_BATCH_ROWS", "read_table"]
