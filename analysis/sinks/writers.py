"""Streaming table writers: Parquet (default), CSV and JSON Lines; one file per table
(:class:`TableSink`) or a dataset of part files (:class:`PartitionedSink`, the live addon's).

One job: records in, files out, with bounded memory.  Records are buffered per table in columns
and written in batches, so memory is bounded by the batch size, not by the capture.  Files are
written under a temporary name and renamed when complete: a reader never sees a half-written
table.  Message payloads are trimmed by the payload policy
(:meth:`~h2ws.analysis.records.PayloadPolicy.trim_columns`) when a writer is given one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from h2ws.analysis.records import TABLES, DiagnosticRecord, Record, arrow_schema, columns

if TYPE_CHECKING:
    from h2ws.analysis.records import PayloadPolicy

FORMATS = ("parquet", "csv", "jsonl")
EXTENSIONS = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
DEFAULT_BATCH_ROWS = 65_536
#: PartitionedSink converts a table's rows to Arrow once this many are pending (see convert).
CONVERT_ROWS = 2048
#: ... which it looks at every this many ``write_all`` calls.
CHECK_CALLS = 32


class _Writer(Protocol):
    def write_table(self, table: pa.Table) -> None: ...
    def close(self) -> None: ...


#: string columns whose values are nearly all different: a dictionary only costs time there
_NO_DICTIONARY = frozenset({"sha256", "request_headers", "response_headers", "message"})


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        # Dictionaries for the repetitive string columns only (ids, directions, types, ...):
        # on numbers, timestamps and digests they cost a third of the frames table's write
        # time and made the files larger, not smaller.
        dictionary = [
            f.name for f in schema if pa.types.is_string(f.type) and f.name not in _NO_DICTIONARY
        ]
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=dictionary)

    def write_table(self, table: pa.Table) -> None:
        # One row group of the table's chunks as they are: pyarrow writes them one after the
        # other, so the batches need not be concatenated first.
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self) -> None:
        self._writer.close()


def _text_table(table: pa.Table) -> pa.Table:
    """Binary columns as base64 text: CSV and JSON have no bytes."""
    arrays = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_binary(field.type):
            values = [
                None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()
            ]
            arrays.append(pa.array(values, pa.string()))
        else:
            arrays.append(column)
    return pa.Table.from_arrays(arrays, names=table.schema.names)


class _CsvWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        text_schema = pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_binary(f.type) else f for f in schema]
        )
        self._writer = pacsv.CSVWriter(path, text_schema)

    def write_table(self, table: pa.Table) -> None:
        self._writer.write_table(_text_table(table))

    def close(self) -> None:
        self._writer.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value)}")


class _JsonlWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._file = path.open("w", encoding="utf-8")

    def write_table(self, table: pa.Table) -> None:
        for row in _text_table(table).to_pylist():
            self._file.write(json.dumps(row, default=_json_default, ensure_ascii=False))
            self._file.write("\n")

    def close(self) -> None:
        self._file.close()


_WRITERS: dict[str, type[_ParquetWriter | _CsvWriter | _JsonlWriter]] = {
    "parquet": _ParquetWriter,
    "csv": _CsvWriter,
    "jsonl": _JsonlWriter,
}


#: The timestamps a table holds: years 1 to 9999 (what Python, JSON Lines' ISO 8601 text and
#: every reader can show).  Outside it a timestamp is written as null, with a diagnostic
#: (``timestamp_out_of_range``) -- never wrapped to INT64_MIN.
TS_MIN_SECONDS = -62_135_596_800.0  # 0001-01-01T00:00:00Z
TS_MAX_SECONDS = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def _timestamps(values: Sequence[float | None], type_: pa.DataType) -> tuple[pa.Array, int]:
    """POSIX seconds as ``timestamp[us]``, rounded half to even as ``pyarrow.compute.round``
    would, by numpy (None becomes NaN there, then null): a tenth of the time of the compute
    functions, and a quarter of reading the floats with pyarrow.  Also returns how many values
    were outside ``TS_MIN_SECONDS``..``TS_MAX_SECONDS`` (or infinite) and became null."""
    seconds = np.array(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        outside = ~(np.isnan(seconds) | ((seconds >= TS_MIN_SECONDS) & (seconds <= TS_MAX_SECONDS)))
    bad = int(outside.sum())
    if bad:
        seconds[outside] = np.nan
    micros = np.rint(seconds * 1_000_000.0)
    nulls = np.isnan(micros)
    if not nulls.any():
        return pa.array(micros.astype(np.int64), type_), 0
    micros[nulls] = 0
    return pa.array(micros.astype(np.int64), type_, mask=nulls), bad


def escape_text(value: str) -> str:
    """A value a table cannot hold as UTF-8 -- lone surrogates, which is how mitmproxy and
    ``surrogateescape`` carry bytes that were not UTF-8 (``GET /x\\xff``) -- with each such
    byte written as the four characters ``\\xNN`` (docs/schema.md, "Limits")."""
    raw = value.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def _escaped(values: list[Any]) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                try:
                    v = escape_text(v)
                except UnicodeEncodeError:  # a surrogate that no byte escaped
                    v = v.encode("utf-8", "replace").decode("utf-8")
        out.append(v)
    return out


def _array(values: list[Any], type_: pa.DataType) -> pa.Array:
    """``pa.array(values, type_)``, without reading every value when they are all one.

    Many columns hold one value for a whole batch (the connection, null columns, a fragment
    count of 1, a message size that never changes): comparing the values in C costs a tenth of
    converting them, and on a busy relay it cut the conversion by a third.
    """
    first = values[0] if values else None
    if values and values.count(first) == len(values):
        if first is None:
            return pa.nulls(len(values), type_)
        return pa.repeat(pa.scalar(first, type_), len(values))
    return pa.array(values, type_)


class _TableBuffer:
    """Rows of one table accumulated until they are taken as one Arrow table.

    Rows wait as Python objects and are turned into columns when converted, in C.  The rows of
    the tuple tables (frames, messages) wait as their fields, flattened into one list, which a
    slice per column and pyarrow turn into columns: the record itself is let go at once, so a
    busy relay's thousands of waiting rows are no work for Python's garbage collector (it
    counts every container object alive; held records made it run six times as often), and it
    converts in two thirds of the time of one struct array.  The dataclasses wait as records,
    taken apart by one ``attrgetter`` pass per column.
    A record must not change once written (none does: the writers own them).

    ``payload``: the messages table trims payloads to this policy when converting.
    """

    def __init__(self, table: str, payload: PayloadPolicy | None = None) -> None:
        self.table = table
        self.schema = arrow_schema(table)
        self.names = [name for name, _ in columns(table)]
        self.timestamp_columns = {name for name, kind in columns(table) if kind == "timestamp"}
        tuples = issubclass(TABLES[table], tuple)
        #: values per row in ``pending_values``: the fields of a tuple, or one record
        self.width = len(self.names) if tuples else 1
        self._getters = None if tuples else [attrgetter(name) for name in self.names]
        #: what the messages table keeps of each payload (None: as the records have it)
        self.payload = payload if "payload" in self.names else None
        #: the rows not yet converted: their fields one after the other (tuple tables), or
        #: the records (cleared, never replaced)
        self.pending_values: list[Any] = []
        #: appends one record: the hot path of export
        self.append: Callable[[Any], None] = (
            self.pending_values.extend if tuples else self.pending_values.append
        )
        #: rows already converted to Arrow (``convert``), in order, not yet taken
        self._converted: list[pa.RecordBatch] = []
        self._converted_rows = 0
        #: rows already taken in batches
        self.taken = 0
        #: where a problem with a row is reported (the sink's diagnostics table); rows that
        #: cannot be converted at all are left out, one diagnostic each, and the rest written
        self.report: Callable[[DiagnosticRecord], None] | None = None

    @property
    def pending(self) -> int:
        """Rows not yet converted."""
        return len(self.pending_values) // self.width

    @property
    def rows(self) -> int:
        return self.pending + self._converted_rows

    def convert(self) -> None:
        """Convert the pending rows to Arrow now rather than when the batch is taken.

        The live addon converts every few thousand rows, so that the relay, which runs on the
        same event loop, is held up for a few milliseconds at a time instead of for the
        conversion of a whole flush interval's rows at once (about 0.1 s at 200 MB/s with
        the frames table); the work per row is the same.  ``h2ws extract`` does the same, which
        bounds the records alive at once.
        """
        if self.pending_values:
            self._converted_rows += self.pending
            self._converted.append(self._to_batch())

    def take_table(self) -> pa.Table:
        """Every row so far, as a table of the batches converted (not concatenated: the
        writers take the chunks as they are, and concatenating copied every value once more
        on the thread that relays)."""
        self.convert()
        batches, self._converted = self._converted, []
        self.taken += self._converted_rows
        self._converted_rows = 0
        return pa.Table.from_batches(batches, schema=self.schema)

    def _to_batch(self) -> pa.RecordBatch:
        """The pending rows as a batch; the rows are let go.

        Recording never stops on one bad value: if the batch cannot be converted, text that is
        not UTF-8 is escaped (:func:`escape_text`) and then each row is converted on its own;
        a row that still fails is left out with a ``row_not_written`` diagnostic.
        """
        values = self.pending_values
        try:
            return self._convert(values)
        except (pa.ArrowException, UnicodeError, ValueError, TypeError, OverflowError):
            return self._convert_rows(values)
        finally:
            values.clear()

    def _columns(self, values: list[Any]) -> list[list[Any]]:
        if self._getters is None:
            width = self.width
            return [values[i::width] for i in range(width)]
        return [list(map(getter, values)) for getter in self._getters]

    def _convert(self, values: list[Any], escape: bool = False) -> pa.RecordBatch:
        columns = self._columns(values)
        if escape:
            columns = [_escaped(column) for column in columns]
        if self.payload is not None and self.payload.mode != "full":
            names = self.names
            p, t = names.index("payload"), names.index("payload_truncated")
            columns[p], columns[t] = self.payload.trim_columns(
                columns[p], columns[names.index("length")], columns[t]
            )
        arrays = []
        seconds: tuple[list[Any], pa.Array] | None = None  # a timestamp column, converted
        for field, column in zip(self.schema, columns, strict=True):
            if field.name not in self.timestamp_columns:
                arrays.append(_array(column, field.type))
            elif seconds is not None and column == seconds[0]:
                arrays.append(seconds[1])  # messages of one frame: ts_last is ts_first
            else:
                array, bad = _timestamps(column, field.type)
                if bad:
                    self._note(
                        "timestamp_out_of_range",
                        f"{self.table}.{field.name}: {bad} timestamp(s) outside years 1-9999"
                        " written as null",
                    )
                seconds = (column, array)
                arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _convert_rows(self, values: list[Any]) -> pa.RecordBatch:
        """The slow path of :meth:`_to_batch`: escaped, then row by row if need be."""
        try:
            return self._convert(values, escape=True)
        except (pa.ArrowException, UnicodeError, ValueError, TypeError, OverflowError):
            pass
        width = self.width
        batches = []
        for i in range(0, len(values), width):
            row = values[i : i + width]
            try:
                batches.append(self._convert(row, escape=True))
            except (pa.ArrowException, UnicodeError, ValueError, TypeError, OverflowError) as e:
                self._note("row_not_written", f"{self.table}: a row left out: {type(e).__name__}")
        if not batches:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        return pa.Table.from_batches(batches, schema=self.schema).combine_chunks().to_batches()[0]

    def _note(self, code: str, message: str) -> None:
        if self.report is not None:
            self.report(
                DiagnosticRecord(layer="capture", severity="warning", code=code, message=message)
            )


def warm_up() -> None:
    """Convert one row of every table and drop it: pyarrow's one-time set-up (about 0.2 s,
    mostly its compute functions) then happens now, not inside the first flush of a busy
    relay."""
    for table, record_type in TABLES.items():
        buffer = _TableBuffer(table)
        buffer.append(record_type())
        buffer.take_table()


def _wire_reports(buffers: dict[str, _TableBuffer]) -> None:
    """Problems converting a table's rows go to the diagnostics table (its rows wait as records,
    so appending one while another table converts is safe; diagnostics is converted last)."""
    diagnostics = buffers["diagnostics"]
    for buffer in buffers.values():
        buffer.report = diagnostics.pending_values.append
    diagnostics.report = None  # a diagnostic that cannot be written is not reported in a loop


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
        #: rows are converted to Arrow this many at a time, which bounds the records alive
        self._convert_rows = min(CONVERT_ROWS, batch_rows)
        self._buffers = {t: _TableBuffer(t) for t in TABLES}
        _wire_reports(self._buffers)
        #: record type -> (its table's buffer, its pending values, how many make it due)
        self._by_type = {
            TABLES[t]: (b, b.pending_values, b.width * self._convert_rows)
            for t, b in self._buffers.items()
        }
        self._writers: dict[str, _Writer] = {}
        self._closed = False

    @property
    def counts(self) -> dict[str, int]:
        """Rows written so far, per table."""
        return {t: b.taken + b.rows for t, b in self._buffers.items()}

    def path(self, table: str) -> Path:
        return self.out_dir / f"{table}{EXTENSIONS[self.fmt]}"

    def _tmp_path(self, table: str) -> Path:
        return self.out_dir / f".{table}{EXTENSIONS[self.fmt]}.partial"

    def write(self, record: Record) -> None:
        buffer, values, due = self._by_type[type(record)]
        buffer.append(record)
        if len(values) >= due:
            buffer.convert()
            if buffer.rows >= self.batch_rows:
                self._flush(buffer.table)

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
            self._writer(table).write_table(buffer.take_table())

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


def merge_tables(
    sources: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], fmt: str
) -> None:
    """The tables :class:`TableSink` wrote into each of ``sources`` as one file per table in
    ``out_dir``, rows in the order of ``sources``.  Parquet is re-read batch by batch (memory
    stays flat), CSV and JSON Lines are copied (one CSV header); each file is written under a
    temporary name and renamed when complete, as TableSink does."""
    out = Path(out_dir)
    ext = EXTENSIONS[fmt]
    for table in TABLES:
        final = out / f"{table}{ext}"
        tmp = out / f".{table}{ext}.partial"
        parts = [Path(source) / final.name for source in sources]
        if fmt == "parquet":
            schema = arrow_schema(table)
            writer = _ParquetWriter(tmp, schema)
            for part in parts:
                for batch in pq.ParquetFile(part).iter_batches(batch_size=DEFAULT_BATCH_ROWS):
                    writer.write_table(pa.Table.from_batches([batch], schema=schema))
            writer.close()
        else:
            with tmp.open("wb") as merged:
                for i, part in enumerate(parts):
                    with part.open("rb") as f:
                        if fmt == "csv" and i:
                            f.readline()  # the header, written once
                        shutil.copyfileobj(f, merged)
        os.replace(tmp, final)


class Part(NamedTuple):
    """One part file to write: where, and its rows."""

    path: Path
    table: pa.Table


#: the order a flush writes its parts in: ``connections`` last, so that a reader (or a process
#: killed between two renames) never finds a connection row without the streams, frames,
#: messages and diagnostics that the same flush holds for it
WRITE_ORDER = (*(t for t in TABLES if t != "connections"), "connections")


class PartitionedSink:
    """Writes each table as a dataset of part files: ``out_dir/<table>/part-<n>.<ext>``.

    For long-running sources (the live addon): :meth:`flush` closes the current part of every
    table that has rows, so everything written so far is readable and complete; a process
    killed between flushes loses at most the rows since the last flush, never a file.
    ``payload``: the policy message payloads are trimmed to (see ``PayloadPolicy.trim_columns``).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        fmt: str = "parquet",
        payload: PayloadPolicy | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self._buffers = {t: _TableBuffer(t, payload) for t in TABLES}
        _wire_reports(self._buffers)
        #: (pending values, how many make it due, buffer) of every table, looked up cheaply
        self._due = [(b.pending_values, b.width * CONVERT_ROWS, b) for b in self._buffers.values()]
        #: record type -> the function that appends its row: the one lookup per record
        self._appenders = {TABLES[t]: b.append for t, b in self._buffers.items()}
        self._calls = 0  # of write_all since the tables were last looked at
        # Parts from an earlier run in the same directory are kept: number after them.
        self._run = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._part = 0
        self._written: set[str] = set()  # tables with a part file of this run
        for table in TABLES:
            (self.out_dir / table).mkdir(parents=True, exist_ok=True)

    @property
    def payload(self) -> PayloadPolicy | None:
        return self._buffers["messages"].payload

    @payload.setter
    def payload(self, policy: PayloadPolicy | None) -> None:
        """Applies to the rows not yet converted, too."""
        self._buffers["messages"].payload = policy

    @property
    def counts(self) -> dict[str, int]:
        """Rows written so far, per table (flushed or not)."""
        return {t: b.taken + b.rows for t, b in self._buffers.items()}

    def write(self, record: Record) -> None:
        self.write_all((record,))

    def write_all(self, records: Iterable[Record]) -> None:
        """``write`` for each record, in one loop: the live addon hands over a few records
        per relayed chunk, one per HTTP/2 frame with the frames table."""
        appenders = self._appenders
        for record in records:
            appenders[type(record)](record)
        # Which tables are due for conversion is looked at every CHECK_CALLS calls, not on
        # every call: a relayed chunk brings a few records, and looking at five tables each
        # time cost as much as appending them.
        self._calls += 1
        if self._calls >= CHECK_CALLS:
            self._calls = 0
            for values, due, buffer in self._due:
                if len(values) >= due:
                    buffer.convert()

    @property
    def pending(self) -> int:
        return sum(b.rows for b in self._buffers.values())

    def flush(self) -> None:
        self.write_parts(self.take_parts())

    def take_parts(self, *, final: bool = False) -> list[Part]:
        """The first half of :meth:`flush`: every table's pending rows as one table, with the
        part file it goes to.  The second half, :meth:`write_parts`, mostly runs in pyarrow
        without the interpreter lock, so the live addon runs it on a thread of its own.

        ``final`` (the last call): a table that got no row (no diagnostics, say) gets one
        empty part with its schema, as :class:`TableSink` writes empty tables, so that a query
        over ``<table>/*.parquet`` (DuckDB's ``read_parquet``) finds the table."""
        ext = EXTENSIONS[self.fmt]
        parts = []
        for table in WRITE_ORDER:
            buffer = self._buffers[table]
            if buffer.rows or (final and table not in self._written):
                self._written.add(table)
                path = self.out_dir / table / f"part-{self._run}-{self._part:06d}{ext}"
                parts.append(Part(path, buffer.take_table()))
        self._part += 1
        return parts

    def write_parts(self, parts: list[Part]) -> None:
        """Write each part under a temporary name and rename it when complete."""
        for part in parts:
            tmp = part.path.with_name(f".{part.path.name}.partial")
            writer = _WRITERS[self.fmt](tmp, part.table.schema)
            writer.write_table(part.table)
            writer.close()
            os.replace(tmp, part.path)

    def close(self) -> None:
        self.write_parts(self.take_parts(final=True))


__all__ = [
    "CHECK_CALLS",
    "CONVERT_ROWS",
    "EXTENSIONS",
    "FORMATS",
    "WRITE_ORDER",
    "Part",
    "PartitionedSink",
    "TableSink",
    "merge_tables",
    "warm_up",
]
