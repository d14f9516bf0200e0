"""Loading the tables into DuckDB, and the helpers every metric runs its SQL with.

One job: make a DuckDB connection on which the five tables are views with the schema of
:mod:`h2ws.analysis.records` — :func:`connect` over an output directory (one capture or many,
single files or a partitioned dataset), :func:`from_frames` over pandas DataFrames (hand-made
tables in tests, or the partitions of a Dask job) — with the shared views of ``sql/views.sql``
installed on top; and run a metric's SQL into pandas (:func:`query`).

Why DuckDB SQL and not pandas: the same code must answer for a 24-message test capture and for
10 M messages (``bench/bench_metrics.py``).  SQL with window functions, ASOF and range joins is
vectorised, multi-threaded and spills to disk; there is no Python loop over rows in the metrics.

Times are integer microseconds since the epoch (``t_*``) inside the shared views: exact, and
cheap to subtract.  Streams are keyed by ``skey``: the HTTP/2 stream id, or -1 - exchange on
HTTP/1.1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from h2ws.analysis.records import TABLES, arrow_schema, columns
from h2ws.analysis.sinks.reader import read_table
from h2ws.analysis.sinks.writers import EXTENSIONS

#: DuckDB type of each column kind of :mod:`h2ws.analysis.records`.
_SQL_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "binary": "BLOB",
}

Tables = duckdb.DuckDBPyConnection


def _new_db(db: duckdb.DuckDBPyConnection | None) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect() if db is None else db
    # TIMESTAMPTZ values come back to pandas as UTC, whatever the machine's zone.
    db.execute("SET TimeZone = 'UTC'")
    # No progress bar on stdout: it slows long queries down and would land in reports.  (In
    # a Jupyter kernel DuckDB refuses to touch the setting without ipywidgets, and shows none.)
    with contextlib.suppress(duckdb.Error):
        db.execute("SET enable_progress_bar = false")
    return db


def _table_files(out_dir: Path, table: str, suffix: str) -> list[Path]:
    """The files of ``table`` in ``out_dir``: ``<table><suffix>``, a ``<table>/`` dataset of part
    files (any depth, hive-style ``key=value`` folders included), or — when ``out_dir`` holds
    one extract output per capture — the same found in its sub-folders."""

    def visible(paths: list[Path]) -> list[Path]:
        return sorted(p for p in paths if not any(part.startswith(".") for part in p.parts[-2:]))

    single = out_dir / f"{table}{suffix}"
    if single.is_file():
        return [single]
    folder = out_dir / table
    if folder.is_dir():
        return visible([p for p in folder.rglob(f"*{suffix}") if p.is_file()])
    nested = [p for p in out_dir.rglob(f"{table}{suffix}") if p.is_file()]
    nested += [p for d in out_dir.rglob(table) if d.is_dir() for p in d.rglob(f"*{suffix}")]
    return visible(nested)


def _typed_select(source: str, present: set[str], table: str) -> str:
    """SELECT every schema column of ``table`` from ``source``, typed; absent ones as NULL (part
    files written by an older version may lack a newer column)."""
    items = []
    for name, kind in columns(table):
        sql_type = _SQL_TYPES[kind]
        expr = f'CAST("{name}" AS {sql_type})' if name in present else f"CAST(NULL AS {sql_type})"
        items.append(f'{expr} AS "{name}"')
    return f"SELECT {', '.join(items)} FROM {source}"


def connect(
    out_dir: str | os.PathLike[str], db: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose views ``connections`` … ``diagnostics`` read ``out_dir``.

    Parquet is read in place (lazily: a metric reads only the columns it needs), as one file per
    table or as a partitioned dataset, and several captures' outputs in sub-folders are read as
    one; CSV and JSON Lines go through ``sinks.reader.read_table``.  A table that is
    missing reads as empty, but a directory without connections and streams is an error.
    """
    base = Path(out_dir)
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a directory")
    db = _new_db(db)
    found = 0
    for table in TABLES:
        parquet = _table_files(base, table, ".parquet")
        if parquet:
            found += 1
            files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in parquet) + "]"
            source = f"read_parquet({files}, union_by_name = true)"
            present = {
                str(row[0]) for row in db.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            }
            db.execute(f"CREATE OR REPLACE VIEW {table} AS {_typed_select(source, present, table)}")
            continue
        other = [s for s in EXTENSIONS.values() if s != ".parquet" and _table_files(base, table, s)]
        if other:
            found += 1
            _register(db, table, read_table(base, table))
        else:
            _register(db, table, arrow_schema(table).empty_table())
    if found == 0:
        raise FileNotFoundError(f"no h2ws tables in {base} (expected connections.parquet …)")
    client_leg_only(db)
    install_views(db)
    return db


def _to_arrow(table: str, frame: pd.DataFrame | pa.Table) -> pa.Table:
    """A pandas frame (or Arrow table) as an Arrow table of ``table``'s exact schema: absent
    columns are null, and timestamps may be given as POSIX seconds (floats) for brevity."""
    schema = arrow_schema(table)
    if isinstance(frame, pa.Table):
        frame = frame.to_pandas()
    arrays = []
    for field in schema:
        if field.name not in frame.columns:
            arrays.append(pa.nulls(len(frame), field.type))
            continue
        values = frame[field.name]
        if pa.types.is_timestamp(field.type) and not isinstance(values.dtype, pd.DatetimeTZDtype):
            if pd.api.types.is_numeric_dtype(values):
                micros = (values.astype("float64") * 1e6).round().astype("Int64")
                values = pd.to_datetime(micros, unit="us", utc=True)
            else:
                values = pd.to_datetime(values, utc=True)
        arrays.append(pa.array(values, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _register(db: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    source = f"h2ws_src_{table}"
    db.register(source, _to_arrow(table, data) if data.schema != arrow_schema(table) else data)
    present = set(arrow_schema(table).names)
    db.execute(f"CREATE OR REPLACE VIEW {table} AS {_typed_select(source, present, table)}")


def from_frames(
    db: duckdb.DuckDBPyConnection | None = None, **tables: pd.DataFrame | pa.Table
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over in-memory tables, e.g. ``from_frames(streams=df, frames=df2)``.

    Tables not given are empty; columns not given are null; timestamp columns may be floats
    (POSIX seconds).  This is how tests state hand-made tables, and how a Dask partition is
    analysed with the same SQL (``docs/scale.md``).
    """
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown tables: {', '.join(sorted(unknown))}")
    db = _new_db(db)
    for table in TABLES:
        given = tables.get(table)
        data = arrow_schema(table).empty_table() if given is None else _to_arrow(table, given)
        _register(db, table, data)
    client_leg_only(db)
    install_views(db)
    return db


def client_leg_only(db: duckdb.DuckDBPyConnection) -> None:
    """The metrics describe the clients' connections: the server legs of intercept mode are
    left out of the views (the tables keep them).

    In intercept mode (``connections.leg``) every proxied connection is two rows, the client's
    and mitmproxy's own to the server, with the same streams and messages: counted both, every
    number of the report would be doubled.  The client leg is what the client did (its SETTINGS,
    stream ids, multiplexing, fallbacks), which is what the report is about; what happened on
    the server side is in the tables, for a query of its own.
    """
    row = db.execute("SELECT count(*) FROM connections WHERE leg = 'server'").fetchone()
    if not row or not row[0]:
        return
    for table in TABLES:
        db.execute(f"DROP VIEW IF EXISTS h2ws_all_{table}")
        db.execute(f"ALTER VIEW {table} RENAME TO h2ws_all_{table}")
    db.execute(
        "CREATE VIEW connections AS SELECT * FROM h2ws_all_connections "
        "WHERE leg IS DISTINCT FROM 'server'"
    )
    for table in TABLES:
        if table != "connections":
            db.execute(
                f"CREATE VIEW {table} AS SELECT * FROM h2ws_all_{table} WHERE conn_id IS NULL "
                "OR conn_id NOT IN (SELECT conn_id FROM h2ws_all_connections WHERE leg = 'server')"
            )


def read_sql(name: str) -> str:
    """A SQL file of ``sql/`` (package data): the long SQL lives in .sql files, where editors
    and linters see SQL, not in Python strings."""
    from importlib.resources import files

    return files("h2ws.analysis.metrics").joinpath("sql", name).read_text(encoding="utf-8")


_VIEWS = read_sql("views.sql")


def install_views(db: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the shared views of ``sql/views.sql`` over the five tables."""
    db.execute(_VIEWS)


#: Arrow -> pandas: nullable integers and booleans stay integers and booleans (not floats).
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def query(db: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    """Run ``sql``; the result through Arrow, which is several times faster than DuckDB's
    row-wise pandas conversion for results of millions of rows (round trips)."""
    table = db.sql(sql).to_arrow_table()
    frame: pd.DataFrame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    return frame


def quantile_fractions(points: int) -> str:
    """``points`` evenly spaced fractions 0 … 1 as a DuckDB ``DOUBLE[]`` literal (the x axis
    of a CDF given as quantiles)."""
    if points < 2:
        raise ValueError("points must be at least 2")
    return "[" + ", ".join(f"{i / (points - 1)!r}" for i in range(points)) + "]::DOUBLE[]"


@contextlib.contextmanager
def materialized(
    db: Tables, views: tuple[str, ...] = ("h2ws_pairs", "h2ws_gaps")
) -> Iterator[None]:
    """Compute the shared intermediate views once (request/reply pairs, message gaps) while
    several metrics use them; they are views again afterwards, so new data is seen."""
    for view in views:
        db.execute(f"CREATE OR REPLACE TEMP TABLE {view}_cache AS SELECT * FROM {view}")
        db.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {view}_cache")
    try:
        yield
    finally:
        install_views(db)
        for view in views:
            db.execute(f"DROP TABLE IF EXISTS {view}_cache")


__all__ = [
    "Tables",
    "connect",
    "from_frames",
    "install_views",
    "materialized",
    "quantile_fractions",
    "query",
    "read_sql",
]
