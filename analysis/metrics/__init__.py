"""How well multiplexing and TCP-connection sharing work, computed from the tables.

Every metric is one function named for the question it answers.  It takes a DuckDB connection
on which the five tables are views with the schema of :mod:`h2ws.analysis.records` —
:func:`connect` makes one over an output directory (one capture or many, single files or a
partitioned dataset), :func:`from_frames` over pandas DataFrames (hand-made tables in tests, or
the partitions of a Dask job) — and returns a pandas DataFrame.

Why DuckDB SQL and not pandas: the same code must answer for a 24-message test capture and for
10 M messages (``bench/bench_metrics.py``).  SQL with window functions, ASOF and range joins is
vectorised, multi-threaded and spills to disk; there is no Python loop over rows anywhere here.

Why everything is per connection: a metric's rows are TCP connections, or streams, frames or
messages of one connection, and every over-all number (:func:`overview`) is an aggregate of those
rows.  Partitioning the tables by ``conn_id`` therefore gives exactly the same answers, which is
how captures that outgrow one machine are analysed (``docs/scale.md``).

Conventions of the outputs: durations in seconds (``_s``), latencies in milliseconds (``_ms``),
sizes in bytes; ``t_s`` is seconds since the connection's first byte; ``over`` is ``HTTP/2``
(RFC 8441) or ``HTTP/1.1`` (RFC 6455 Upgrade).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
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

#: A response (or upload) at least this large is "large" for head-of-line exposure: the
#: default initial stream window of HTTP/2 (RFC 9113 §6.9.2), i.e. a body that cannot be sent
#: in one flight without waiting for WINDOW_UPDATEs.
LARGE_RESPONSE_BYTES = 65_535

#: What each verdict of :func:`websocket_transport_choice` means, for reports.
TRANSPORT_VERDICTS = {
    "rfc8441": "WebSocket over HTTP/2 (RFC 8441) on a connection whose server advertised it",
    "rfc8441_without_setting": (
        "WebSocket over HTTP/2 although the server had not sent "
        "SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (a protocol violation)"
    ),
    "http1_despite_setting": (
        "WebSocket over a new HTTP/1.1 connection although an HTTP/2 connection to the same "
        "server was open and had advertised RFC 8441 (fallback or observer effect)"
    ),
    "http1_setting_at_other_time": (
        "WebSocket over HTTP/1.1; an HTTP/2 connection to the same server advertised RFC 8441, "
        "but was not open with the setting when the WebSocket opened"
    ),
    "http1_setting_never_advertised": (
        "WebSocket over HTTP/1.1; HTTP/2 connections to the same server exist but never "
        "advertised RFC 8441"
    ),
    "http1_no_http2_seen": "WebSocket over HTTP/1.1; no HTTP/2 connection to that server seen",
}

Tables = duckdb.DuckDBPyConnection


# -- loading ----------------------------------------------------------------------------------


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
    _client_leg_only(db)
    _install_views(db)
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
    _client_leg_only(db)
    _install_views(db)
    return db


def _client_leg_only(db: duckdb.DuckDBPyConnection) -> None:
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


# -- shared views -----------------------------------------------------------------------------


def _sql(name: str) -> str:
    """A SQL file of ``sql/`` (package data): the long SQL lives in .sql files, where editors
    and linters see SQL, not in Python strings."""
    from importlib.resources import files

    return files("h2ws.analysis.metrics").joinpath("sql", name).read_text(encoding="utf-8")


#
# Times are integer microseconds since the epoch (``t_*``) inside the SQL: exact, and cheap to
# subtract.  Streams are keyed by ``skey``: the HTTP/2 stream id, or -1 - exchange on HTTP/1.1.

_VIEWS = _sql("views.sql")


def _install_views(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(_VIEWS)


#: Arrow -> pandas: nullable integers and booleans stay integers and booleans (not floats).
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _query(db: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    """Run ``sql``; the result through Arrow, which is several times faster than DuckDB's
    row-wise pandas conversion for results of millions of rows (round trips)."""
    table = db.sql(sql).to_arrow_table()
    frame: pd.DataFrame = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    return frame


# -- streams and coalescing -------------------------------------------------------------------


def streams_per_connection(db: Tables) -> pd.DataFrame:
    """How many streams of each kind each TCP connection carried, and for how many origins.

    One row per connection: ``streams``, ``websockets`` (attempts; ``websockets_accepted`` of
    them opened), ``http``, ``other`` (CONNECT tunnels, pushes), ``authorities`` (distinct
    ``:authority``; more than one means connection coalescing, RFC 9113 §9.1.1),
    ``authority_list``, and ``mixed``: WebSockets and HTTP requests shared the connection.
    """
    return _query(
        db,
        """
        WITH agg AS (
            SELECT c.conn_id, any_value(c.capture) AS capture,
                   any_value(c.http_version) AS http_version, any_value(c.tls) AS tls,
                   any_value(c.server) AS server,
                   any_value(c.t_end - c.t_start) / 1e6 AS duration_s,
                   count(s.kind) AS streams,
                   count(*) FILTER (WHERE s.kind = 'websocket') AS websockets,
                   count(*) FILTER (WHERE s.kind = 'websocket' AND s.ws_accepted)
                       AS websockets_accepted,
                   count(*) FILTER (WHERE s.kind = 'http') AS http,
                   count(*) FILTER (WHERE s.kind NOT IN ('websocket', 'http')) AS other,
                   count(DISTINCT s.authority) AS authorities,
                   string_agg(DISTINCT s.authority, ', ' ORDER BY s.authority) AS authority_list
            FROM h2ws_conn c LEFT JOIN h2ws_streams s USING (conn_id)
            GROUP BY c.conn_id
        )
        SELECT *, websockets > 0 AND http > 0 AS mixed FROM agg
        ORDER BY conn_id
        """,
    )


# -- concurrency ------------------------------------------------------------------------------


def concurrency_timeline(db: Tables, conn_ids: list[str] | None = None) -> pd.DataFrame:
    """Open streams and open WebSockets on each connection over time, as a step function.

    One row per instant the counts change: ``ts``, ``t_s`` (since the connection's first
    byte), ``open_streams`` and ``open_websockets`` from that instant on.  ``conn_ids`` limits
    the rows to some connections (a plot needs a few, not millions of rows).
    """
    where = ""
    if conn_ids is not None:
        if not conn_ids:
            where = "WHERE false"
        else:
            listed = ", ".join("'" + c.replace("'", "''") + "'" for c in conn_ids)
            where = f"WHERE st.conn_id IN ({listed})"
    return _query(
        db,
        f"""
        SELECT st.conn_id, CAST(make_timestamp(st.t) AS TIMESTAMPTZ) AS ts,
               (st.t - c.t_start) / 1e6 AS t_s, st.open_streams, st.open_websockets
        FROM h2ws_steps st JOIN h2ws_conn c USING (conn_id)
        {where}
        ORDER BY st.conn_id, st.t
        """,
    )


def concurrency_per_connection(db: Tables) -> pd.DataFrame:
    """Peak and time-weighted mean number of open streams and WebSockets per connection.

    ``mean_open_streams`` averages over the connection's whole life (first to last byte);
    ``mean_open_streams_busy`` only over the time at least one stream was open;
    ``multiplexed_share`` is the share of the connection's life with two or more streams open;
    ``stream_seconds`` (the sum of stream lifetimes) and ``duration_s`` let over-all means be
    weighted correctly.
    """
    return _query(
        db,
        """
        WITH agg AS (
            SELECT c.conn_id, any_value(c.http_version) AS http_version,
                   any_value(c.t_end - c.t_start) / 1e6 AS duration_s,
                   coalesce(max(st.open_streams), 0) AS peak_streams,
                   coalesce(max(st.open_websockets), 0) AS peak_websockets,
                   coalesce(sum(st.open_streams * (st.t_next - st.t)), 0) / 1e6
                       AS stream_seconds,
                   coalesce(sum(st.open_websockets * (st.t_next - st.t)), 0) / 1e6
                       AS websocket_seconds,
                   sum(st.t_next - st.t) FILTER (WHERE st.open_streams > 0) / 1e6 AS busy_s,
                   coalesce(sum(st.t_next - st.t) FILTER (WHERE st.open_streams >= 2), 0) / 1e6
                       AS multiplexed_s
            FROM h2ws_conn c LEFT JOIN h2ws_steps st USING (conn_id)
            GROUP BY c.conn_id
        )
        SELECT conn_id, http_version, duration_s, peak_streams, peak_websockets,
               stream_seconds, websocket_seconds,
               stream_seconds / nullif(duration_s, 0) AS mean_open_streams,
               websocket_seconds / nullif(duration_s, 0) AS mean_open_websockets,
               stream_seconds / nullif(busy_s, 0) AS mean_open_streams_busy,
               multiplexed_s / nullif(duration_s, 0) AS multiplexed_share
        FROM agg
        ORDER BY conn_id
        """,
    )


# -- sharing ----------------------------------------------------------------------------------


def websocket_sharing(db: Tables) -> pd.DataFrame:
    """For how much of its life each WebSocket shared its TCP connection with other streams.

    One row per WebSocket: ``lifetime_s`` (request to close), ``shared_s`` (time at least one
    other stream was open on the connection) and ``shared_with_http_s`` (… at least one
    non-WebSocket stream), their shares of the lifetime, and ``overlapping_streams`` /
    ``overlapping_websockets``: how many other streams overlapped it at all.  An HTTP/1.1
    WebSocket owns its connection, so its shares are 0: the baseline.
    """
    return _query(
        db,
        """
        WITH ws AS (SELECT * FROM h2ws_streams WHERE kind = 'websocket'),
        shared AS (
            SELECT ws.conn_id, ws.skey,
                   sum(least(st.t_next, ws.t_close) - greatest(st.t, ws.t_open))
                       FILTER (WHERE st.open_streams >= 2) AS shared_us,
                   sum(least(st.t_next, ws.t_close) - greatest(st.t, ws.t_open))
                       FILTER (WHERE st.open_streams - st.open_websockets >= 1) AS http_us
            FROM ws JOIN h2ws_steps st
              ON st.conn_id = ws.conn_id AND st.t_next > ws.t_open AND st.t < ws.t_close
            GROUP BY ws.conn_id, ws.skey
        ),
        others AS (
            SELECT ws.conn_id, ws.skey, count(*) AS overlapping_streams,
                   count(*) FILTER (WHERE o.kind = 'websocket') AS overlapping_websockets
            FROM ws JOIN h2ws_streams o
              ON o.conn_id = ws.conn_id AND o.skey <> ws.skey
             AND o.t_open < ws.t_close AND o.t_close > ws.t_open
            GROUP BY ws.conn_id, ws.skey
        )
        SELECT ws.conn_id, ws.stream_id, ws.exchange, ws.over, ws.authority, ws.path,
               ws.ts_open, (ws.t_close - ws.t_open) / 1e6 AS lifetime_s,
               coalesce(shared.shared_us, 0) / 1e6 AS shared_s,
               coalesce(shared.http_us, 0) / 1e6 AS shared_with_http_s,
               CASE WHEN ws.t_close > ws.t_open
                    THEN coalesce(shared.shared_us, 0) / (ws.t_close - ws.t_open) END
                   AS shared_share,
               CASE WHEN ws.t_close > ws.t_open
                    THEN coalesce(shared.http_us, 0) / (ws.t_close - ws.t_open) END
                   AS shared_with_http_share,
               coalesce(others.overlapping_streams, 0) AS overlapping_streams,
               coalesce(others.overlapping_websockets, 0) AS overlapping_websockets
        FROM ws LEFT JOIN shared USING (conn_id, skey) LEFT JOIN others USING (conn_id, skey)
        ORDER BY ws.conn_id, ws.t_open, ws.skey
        """,
    )


# -- what HTTP/1.1 would have cost ------------------------------------------------------------


def rfc8441_savings(db: Tables) -> pd.DataFrame:
    """What RFC 8441 saved on each HTTP/2 connection that carried WebSockets.

    Over HTTP/1.1 every WebSocket needs a TCP connection of its own (RFC 6455 §4.1), plus one
    for the other requests.  One row per HTTP/2 connection with WebSocket attempts:
    ``http1_connections`` it would have taken, ``connections_avoided`` (= TCP handshakes
    avoided), ``tls_handshakes_avoided``, ``round_trips_avoided`` (1 for TCP, plus 1 for TLS 1.3
    or 2 for TLS 1.2 per handshake; the WebSocket handshake itself costs one round trip either
    way), ``rtt_estimate_ms`` (the fastest request→response on the connection, an upper bound
    of its round-trip time) and ``setup_time_avoided_ms`` = round trips x that estimate.
    """
    return _query(
        db,
        """
        WITH per AS (
            SELECT c.conn_id, c.capture, c.server, c.http_version, coalesce(c.tls, false) AS tls,
                   c.tls_version,
                   count(*) FILTER (WHERE s.kind = 'websocket') AS websockets,
                   count(*) FILTER (WHERE s.kind <> 'websocket') AS other_streams,
                   min(epoch_us(s.ts_response) - s.t_open) AS min_response_us
            FROM h2ws_conn c JOIN h2ws_streams s USING (conn_id)
            WHERE c.is_h2 AND s.stream_id IS NOT NULL
            GROUP BY ALL
        )
        SELECT conn_id, capture, server, http_version, tls, tls_version, websockets,
               other_streams,
               1 AS connections_used,
               websockets + CAST(other_streams > 0 AS BIGINT) AS http1_connections,
               http1_connections - 1 AS connections_avoided,
               connections_avoided AS tcp_handshakes_avoided,
               CASE WHEN tls THEN connections_avoided ELSE 0 END AS tls_handshakes_avoided,
               1 + CASE WHEN NOT tls THEN 0
                        WHEN tls_version IS NULL OR tls_version LIKE '%1.3%' THEN 1
                        ELSE 2 END AS handshake_round_trips,
               connections_avoided * handshake_round_trips AS round_trips_avoided,
               min_response_us / 1e3 AS rtt_estimate_ms,
               round_trips_avoided * rtt_estimate_ms AS setup_time_avoided_ms
        FROM per WHERE websockets > 0
        ORDER BY conn_id
        """,
    )


def websocket_setup(db: Tables) -> pd.DataFrame:
    """How long each WebSocket took to open, over HTTP/2 and over HTTP/1.1 as captured.

    One row per WebSocket attempt: ``handshake_ms`` (extended CONNECT → 2xx, or Upgrade →
    101), ``from_connection_start_ms`` (the connection's first byte → the response: what a
    WebSocket on a connection of its own really waited, TLS handshake included when captured),
    and ``first_on_connection``: no stream opened on the connection before it.  This measures
    the HTTP/1.1 WebSockets actually present against the RFC 8441 ones.
    """
    return _query(
        db,
        """
        SELECT s.conn_id, s.stream_id, s.exchange, s.over, coalesce(c.tls, false) AS tls,
               c.server, s.authority, s.path, s.status, s.ws_accepted, s.ts_open,
               row_number() OVER (PARTITION BY s.conn_id ORDER BY s.t_open, s.skey) = 1
                   AS first_on_connection,
               (epoch_us(s.ts_response) - s.t_open) / 1e3 AS handshake_ms,
               (epoch_us(s.ts_response) - c.t_start) / 1e3 AS from_connection_start_ms
        FROM h2ws_streams s JOIN h2ws_conn c USING (conn_id)
        QUALIFY s.kind = 'websocket'
        ORDER BY s.conn_id, s.t_open, s.skey
        """,
    )


# -- interleaving and fairness ----------------------------------------------------------------


def frame_interleaving(db: Tables) -> pd.DataFrame:
    """How often consecutive HTTP/2 frames on a connection belong to different streams.

    Counts HEADERS and DATA frames of streams (not connection-level frames), per connection and
    direction, and for both directions together (``direction = 'both'``): ``switches`` between
    consecutive frames of different streams, ``switch_rate`` = switches / (frames - 1) (0:
    streams took turns in long runs; near 1: finely interleaved), ``mean_run_frames`` (frames
    per run of one stream) and ``streams`` that sent such frames.
    """
    return _query(
        db,
        """
        WITH f AS (
            SELECT conn_id, direction, index, stream_id FROM frames
            WHERE stream_id > 0 AND type IN ('DATA', 'HEADERS')
        ), fb AS (
            SELECT * FROM f UNION ALL SELECT conn_id, 'both', index, stream_id FROM f
        ), l AS (
            SELECT *, lag(stream_id) OVER (PARTITION BY conn_id, direction ORDER BY index) AS prev
            FROM fb
        )
        , agg AS (
            SELECT conn_id, direction, count(*) AS frames, count(DISTINCT stream_id) AS streams,
                   count(*) FILTER (WHERE prev <> stream_id) AS switches,
                   count(prev) AS pairs
            FROM l GROUP BY conn_id, direction
        )
        SELECT conn_id, direction, frames, streams, switches,
               switches / nullif(pairs, 0) AS switch_rate,
               frames / (switches + 1) AS mean_run_frames
        FROM agg
        ORDER BY conn_id, direction
        """,
    )


def _bins_sql(bins: int, bin_s: float | None) -> str:
    """Per connection: ``t_start``, ``width`` (µs) of the time bins DATA frames are put in."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    if bin_s is not None:
        if bin_s <= 0:
            raise ValueError("bin_s must be positive")
        width = f"CAST({float(bin_s) * 1e6!r} AS DOUBLE)"
    else:
        width = f"greatest((t_end - t_start) / {int(bins)}.0, 1.0)"
    return f"SELECT conn_id, t_start, {width} AS width FROM h2ws_conn"


def bytes_share_over_time(db: Tables, bins: int = 60, bin_s: float | None = None) -> pd.DataFrame:
    """Which streams the connection's bytes went to, per time bin.

    DATA frame bytes (frame payload length, padding included: what the connection carried) per
    connection, direction, time bin and stream, with ``share`` of the bin's bytes.  Bins are
    ``bin_s`` seconds wide, or each connection's life cut into ``bins`` equal bins.
    """
    return _query(
        db,
        f"""
        WITH w AS ({_bins_sql(bins, bin_s)}),
        d AS (
            SELECT f.conn_id, f.direction, f.stream_id, f.length,
                   CAST(greatest(floor((epoch_us(f.ts) - w.t_start) / w.width), 0) AS BIGINT)
                       AS bin,
                   w.width
            FROM frames f JOIN w USING (conn_id)
            WHERE f.type = 'DATA'
        ), b AS (
            SELECT conn_id, direction, bin, stream_id, any_value(width) AS width,
                   CAST(sum(length) AS BIGINT) AS bytes
            FROM d GROUP BY conn_id, direction, bin, stream_id
        )
        SELECT b.conn_id, b.direction, b.bin, b.bin * b.width / 1e6 AS t_s,
               b.width / 1e6 AS bin_s, b.stream_id, s.kind, b.bytes,
               b.bytes / sum(b.bytes) OVER (PARTITION BY b.conn_id, b.direction, b.bin) AS share
        FROM b LEFT JOIN h2ws_streams s ON s.conn_id = b.conn_id AND s.stream_id = b.stream_id
        ORDER BY b.conn_id, b.direction, b.bin, b.stream_id
        """,
    )


def fairness_over_time(db: Tables, bins: int = 60, bin_s: float | None = None) -> pd.DataFrame:
    """Jain's fairness index of the bytes the streams got, per connection, direction and bin.

    ``jain`` = (Σx)² / (n·Σx²) over the n streams that sent DATA in the bin: 1 when they got
    equal bytes, 1/n when one took everything.  A low value is unfair only when the others had
    data waiting — read it with :func:`head_of_line_exposure` and :func:`flow_control_stalls`.
    """
    return _query(
        db,
        f"""
        WITH w AS ({_bins_sql(bins, bin_s)}),
        d AS (
            SELECT f.conn_id, f.direction, f.stream_id, f.length,
                   CAST(greatest(floor((epoch_us(f.ts) - w.t_start) / w.width), 0) AS BIGINT)
                       AS bin,
                   w.width
            FROM frames f JOIN w USING (conn_id)
            WHERE f.type = 'DATA'
        ), b AS (
            SELECT conn_id, direction, bin, stream_id, any_value(width) AS width,
                   CAST(sum(length) AS DOUBLE) AS bytes
            FROM d GROUP BY conn_id, direction, bin, stream_id
        )
        SELECT conn_id, direction, bin, bin * any_value(width) / 1e6 AS t_s,
               count(*) AS streams, CAST(sum(bytes) AS BIGINT) AS bytes,
               sum(bytes) * sum(bytes) / nullif(count(*) * sum(bytes * bytes), 0) AS jain
        FROM b WHERE bytes > 0
        GROUP BY conn_id, direction, bin
        ORDER BY conn_id, direction, bin
        """,
    )


def fairness_per_connection(db: Tables, bins: int = 60, bin_s: float | None = None) -> pd.DataFrame:
    """Jain's index per connection and direction, over the bins where streams competed.

    ``contended_bins``: bins in which two or more streams sent DATA; ``mean_jain`` and
    ``min_jain`` over those (null when streams never competed).
    """
    fair = fairness_over_time(db, bins, bin_s)
    if fair.empty:
        return pd.DataFrame(
            {
                "conn_id": pd.Series(dtype="str"),
                "direction": pd.Series(dtype="str"),
                "bins": pd.Series(dtype="int64"),
                "contended_bins": pd.Series(dtype="int64"),
                "mean_jain": pd.Series(dtype="float64"),
                "min_jain": pd.Series(dtype="float64"),
            }
        )
    contended = fair["jain"].where(fair["streams"] >= 2)
    out = (
        fair.assign(contended=contended, is_contended=contended.notna())
        .groupby(["conn_id", "direction"], as_index=False)
        .agg(
            bins=("bin", "size"),
            contended_bins=("is_contended", "sum"),
            mean_jain=("contended", "mean"),
            min_jain=("contended", "min"),
        )
    )
    out["contended_bins"] = out["contended_bins"].astype("int64")
    return out


# -- latency and stalls -----------------------------------------------------------------------


def message_stats(db: Tables) -> pd.DataFrame:
    """Message counts and sizes per transport, direction and opcode.

    ``length`` is the payload the application sees (inflated); ``wire_ratio`` = wire bytes /
    application bytes (below 1 when permessage-deflate helped).
    """
    return _query(
        db,
        """
        SELECT over, direction, opcode, count(*) AS messages,
               CAST(sum(length) AS BIGINT) AS bytes,
               median(length) AS median_bytes, quantile_cont(length, 0.95) AS p95_bytes,
               max(length) AS max_bytes, avg(CAST(compressed AS INTEGER)) AS compressed_share,
               sum(wire_length) / nullif(sum(length), 0) AS wire_ratio,
               avg(fragments) AS mean_fragments
        FROM h2ws_messages
        GROUP BY over, direction, opcode
        ORDER BY over, direction, opcode
        """,
    )


def _fractions(points: int) -> str:
    if points < 2:
        raise ValueError("points must be at least 2")
    return "[" + ", ".join(f"{i / (points - 1)!r}" for i in range(points)) + "]::DOUBLE[]"


def message_size_cdf(db: Tables, points: int = 101) -> pd.DataFrame:
    """The distribution of data-message sizes, as ``points`` quantiles per transport and
    direction: plot ``length_bytes`` against ``fraction``.  Quantiles, not rows, so that a
    CDF of 10 M messages is 100 points."""
    fr = _fractions(points)
    return _query(
        db,
        f"""
        SELECT over, direction, count(*) AS messages,
               unnest({fr}) AS fraction, unnest(quantile_disc(length, {fr})) AS length_bytes
        FROM h2ws_messages WHERE opcode IN ('text', 'binary')
        GROUP BY over, direction
        ORDER BY over, direction, fraction
        """,
    )


def round_trip_times(db: Tables) -> pd.DataFrame:
    """Round-trip times wherever requests and replies can be paired.

    ``pair``: ``echo`` (a client message and the server message with the same payload, the
    k-th with the k-th), ``ping/pong`` (either side's ping and the pong carrying its payload),
    ``http response`` and ``websocket open`` (request headers → response headers).
    ``rtt_ms`` runs from the request's last byte to the reply's last byte, both as seen where
    the capture was taken.
    """
    return _query(
        db,
        """
        SELECT pair, conn_id, stream_id, exchange, request_direction, request_index,
               CAST(make_timestamp(t_request) AS TIMESTAMPTZ) AS ts,
               (t_reply - t_request) / 1e3 AS rtt_ms
        FROM h2ws_pairs
        ORDER BY conn_id, ts, pair
        """,
    )


def message_interarrival(db: Tables) -> pd.DataFrame:
    """Time between consecutive data messages of each WebSocket and direction.

    One row per stream and direction: ``messages``, and the ``median_ms``, ``p90_ms``,
    ``p99_ms`` and ``max_ms`` of the gaps between their first bytes.
    """
    return _query(
        db,
        """
        SELECT conn_id, stream_id, exchange, direction, count(*) AS messages,
               median(gap_us) / 1e3 AS median_ms, quantile_cont(gap_us, 0.9) / 1e3 AS p90_ms,
               quantile_cont(gap_us, 0.99) / 1e3 AS p99_ms, max(gap_us) / 1e3 AS max_ms
        FROM h2ws_gaps
        GROUP BY conn_id, stream_id, exchange, direction
        ORDER BY conn_id, stream_id, exchange, direction
        """,
    )


def latency_cdf(db: Tables, points: int = 101) -> pd.DataFrame:
    """The distributions of every latency, as ``points`` quantiles per ``measure``: each pair
    kind of :func:`round_trip_times` (``echo``, ``ping/pong``, ``http response``,
    ``websocket open``) and ``inter-arrival c2s`` / ``s2c``; plot ``ms`` against ``fraction``."""
    fr = _fractions(points)
    return _query(
        db,
        f"""
        WITH x AS (
            SELECT pair AS measure, (t_reply - t_request) / 1e3 AS ms FROM h2ws_pairs
            UNION ALL
            SELECT 'inter-arrival ' || direction, gap_us / 1e3 FROM h2ws_gaps
            WHERE gap_us IS NOT NULL
        )
        SELECT measure, count(*) AS samples,
               unnest({fr}) AS fraction, unnest(quantile_disc(ms, {fr})) AS ms
        FROM x GROUP BY measure
        ORDER BY measure, fraction
        """,
    )


def _running_sums(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` within runs of equal ``groups`` (rows sorted by group)."""
    if len(values) == 0:
        return values.copy()
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    before = (total - values)[starts]
    run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    result: np.ndarray = total - before[run]
    return result


def _next_in_group(groups: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For every row, the position of the next row after it with ``mask`` set in the same run
    of ``groups`` (rows sorted by group), or -1."""
    n = len(mask)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    candidates = np.where(mask, np.arange(n), n)
    nearest = np.minimum.accumulate(candidates[::-1])[::-1]  # at or after each row
    after = np.r_[nearest[1:], n]
    found = after < n
    found[found] = groups[after[found]] == groups[found]
    result: np.ndarray = np.where(found, after, -1)
    return result


def flow_control_stalls(db: Tables, threshold_bytes: int = 0) -> pd.DataFrame:
    """When a stream's DATA was blocked by flow control, and how long until a WINDOW_UPDATE.

    The send windows of every stream and of the connection are replayed in capture order (RFC
    9113 §6.9: initial stream window from the receiver's SETTINGS_INITIAL_WINDOW_SIZE, its last
    value; connection window 65,535; minus DATA lengths, plus WINDOW_UPDATEs).  A stall starts at
    a DATA frame without END_STREAM after which the stream's or the connection's window is at
    most ``threshold_bytes``, and ends at the WINDOW_UPDATE that reopened the limiting window —
    counted only when the stream's next DATA frame came after it (it had been waiting).  One row
    per stall: ``t_s`` (since the connection's first byte), ``limited_by`` (``stream``,
    ``connection`` or ``both``), ``window_bytes`` left, ``waited_ms``.

    Measured where the capture was taken: near the sender this is the sender's window exactly;
    near the receiver WINDOW_UPDATEs are seen before they arrive and DATA after it left, so
    windows look larger and stalls are a lower bound.

    How: DuckDB selects and sorts the DATA and WINDOW_UPDATE frames once, by connection,
    direction and order; NumPy replays the windows with vectorised running sums (the stream
    windows after a stable sort by stream) and finds the updates that released each block.
    Two SQL window functions over 10 M frames cost three times as much.
    """
    thr = int(threshold_bytes)
    events = db.sql(
        """
        WITH cfg AS (
            SELECT conn_id, row_number() OVER (ORDER BY conn_id) AS cid,
                   coalesce(TRY_CAST(json_extract_string(settings_s2c, '$.INITIAL_WINDOW_SIZE')
                                     AS BIGINT), 65535) AS init_c2s,
                   coalesce(TRY_CAST(json_extract_string(settings_c2s, '$.INITIAL_WINDOW_SIZE')
                                     AS BIGINT), 65535) AS init_s2c
            FROM (SELECT DISTINCT conn_id FROM frames)
            LEFT JOIN h2ws_conn USING (conn_id)
        ), ev AS (
            -- up: the DATA flows client -> server (a WINDOW_UPDATE for it travels back);
            -- what: 0 WINDOW_UPDATE, 1 DATA, 2 DATA with END_STREAM
            SELECT cfg.cid, f.index, f.direction = 'c2s' AS up, f.stream_id,
                   CAST(CASE WHEN coalesce(f.flags, '') LIKE '%END_STREAM%' THEN 2 ELSE 1 END
                        AS TINYINT) AS what,
                   -f.length AS delta,
                   CASE WHEN f.direction = 'c2s' THEN cfg.init_c2s ELSE cfg.init_s2c END
                       AS init,
                   epoch_us(f.ts) AS t
            FROM frames f JOIN cfg USING (conn_id) WHERE f.type = 'DATA'
            UNION ALL
            SELECT cfg.cid, f.index, f.direction = 's2c', f.stream_id, CAST(0 AS TINYINT),
                   f.window_increment,
                   CASE WHEN f.direction = 's2c' THEN cfg.init_c2s ELSE cfg.init_s2c END,
                   epoch_us(f.ts)
            FROM frames f JOIN cfg USING (conn_id)
            WHERE f.type = 'WINDOW_UPDATE' AND f.window_increment > 0
        )
        SELECT cid, up, index, stream_id, what, delta, init, t FROM ev ORDER BY cid, up, index
        """
    ).to_arrow_table()
    col = {name: events[name].to_numpy(zero_copy_only=False) for name in events.column_names}
    up = col["up"].astype(np.int64)
    stream, what, delta, index = col["stream_id"], col["what"], col["delta"], col["index"]
    flow = col["cid"] * 2 + up  # one connection and direction; rows sorted by flow, index
    conn_window = 65_535 + _running_sums(flow, np.where((what > 0) | (stream == 0), delta, 0))
    key = flow * (1 << 32) + stream
    by_stream = np.argsort(key, kind="stable")  # stream by stream, frame order kept
    skey = key[by_stream]
    stream_sum = np.empty_like(delta)
    stream_sum[by_stream] = _running_sums(skey, delta[by_stream])
    stream_window = col["init"] + stream_sum
    # the next stream WINDOW_UPDATE and DATA frame of each row's stream, the next
    # connection-level WINDOW_UPDATE of its flow (positions in flow order, or -1)
    in_stream = np.empty(len(key), dtype=np.int64)
    in_stream[by_stream] = np.arange(len(key))
    s_next = _next_in_group(skey, what[by_stream] == 0)
    d_next = _next_in_group(skey, what[by_stream] > 0)
    s_pos = np.where(s_next >= 0, by_stream[s_next], -1)[in_stream]
    d_pos = np.where(d_next >= 0, by_stream[d_next], -1)[in_stream]
    c_pos = _next_in_group(flow, (what == 0) & (stream == 0))

    by_stream_limit = stream_window <= thr
    by_conn_limit = conn_window <= thr
    rows = np.flatnonzero((what == 1) & (stream > 0) & (by_stream_limit | by_conn_limit))
    limit_s, limit_c = by_stream_limit[rows], by_conn_limit[rows]
    s_at, c_at, d_at = s_pos[rows], c_pos[rows], d_pos[rows]
    # the update that released the block: of the limiting window, the later of both if both
    u_pos = np.where(
        limit_s & limit_c,
        np.where((s_at < 0) | (c_at < 0), -1, np.maximum(s_at, c_at)),
        np.where(limit_s, s_at, c_at),
    )
    waited = (u_pos >= 0) & (d_at >= 0)
    waited[waited] = index[d_at[waited]] > index[u_pos[waited]]
    rows, u_pos = rows[waited], u_pos[waited]
    limit_s, limit_c = limit_s[waited], limit_c[waited]
    stalls = pa.table(
        {
            "cid": col["cid"][rows],
            "direction": np.where(up[rows] == 1, "c2s", "s2c"),
            "stream_id": stream[rows],
            "index": index[rows],
            "t": col["t"][rows],
            "u_t": col["t"][u_pos],
            "limited_by": np.where(
                limit_s & limit_c, "both", np.where(limit_s, "stream", "connection")
            ),
            "window_bytes": np.minimum(stream_window[rows], conn_window[rows]),
        }
    )
    name = f"h2ws_stalls_{uuid.uuid4().hex}"
    db.register(name, stalls)
    try:
        return _query(
            db,
            f"""
            WITH cfg AS (
                SELECT conn_id, row_number() OVER (ORDER BY conn_id) AS cid
                FROM (SELECT DISTINCT conn_id FROM frames)
            )
            SELECT cfg.conn_id, st.direction, st.stream_id, s.kind,
                   CAST(make_timestamp(st.t) AS TIMESTAMPTZ) AS ts_blocked,
                   CAST(make_timestamp(st.u_t) AS TIMESTAMPTZ) AS ts_unblocked,
                   (st.t - c.t_start) / 1e6 AS t_s,
                   (st.u_t - st.t) / 1e3 AS waited_ms,
                   st.limited_by, st.window_bytes
            FROM {name} st
            JOIN cfg USING (cid)
            LEFT JOIN h2ws_streams s ON s.conn_id = cfg.conn_id AND s.stream_id = st.stream_id
            LEFT JOIN h2ws_conn c ON c.conn_id = cfg.conn_id
            ORDER BY cfg.conn_id, st.index
            """,
        )
    finally:
        db.unregister(name)


def _large_transfers_sql(large_bytes: int) -> str:
    """Large HTTP bodies in flight: per stream and direction, first to last DATA frame (or,
    without frames, response headers / request to stream close)."""
    large = int(large_bytes)
    return f"""
        SELECT f.conn_id, f.stream_id, f.direction, CAST(sum(f.length) AS BIGINT) AS bytes,
               min(epoch_us(f.ts)) AS t0, max(epoch_us(f.ts)) AS t1
        FROM frames f JOIN h2ws_streams s
          ON s.conn_id = f.conn_id AND s.stream_id = f.stream_id AND s.kind <> 'websocket'
        WHERE f.type = 'DATA'
        GROUP BY f.conn_id, f.stream_id, f.direction
        HAVING sum(f.length) >= {large}
        UNION ALL
        SELECT conn_id, stream_id, d.direction,
               CASE d.direction WHEN 's2c' THEN bytes_s2c ELSE bytes_c2s END,
               CASE d.direction WHEN 's2c' THEN epoch_us(coalesce(ts_response, ts_open))
                    ELSE t_open END,
               t_close
        FROM h2ws_streams, (VALUES ('c2s'), ('s2c')) d(direction)
        WHERE kind <> 'websocket' AND stream_id IS NOT NULL
          AND CASE d.direction WHEN 's2c' THEN bytes_s2c ELSE bytes_c2s END >= {large}
          AND conn_id NOT IN (SELECT DISTINCT conn_id FROM frames)
    """


def large_transfers(db: Tables, large_bytes: int = LARGE_RESPONSE_BYTES) -> pd.DataFrame:
    """HTTP bodies of at least ``large_bytes`` and when they were in flight (first to last DATA
    frame), per connection, stream and direction: what WebSocket messages may queue behind."""
    return _query(
        db,
        f"""
        SELECT conn_id, stream_id, direction, bytes,
               CAST(make_timestamp(t0) AS TIMESTAMPTZ) AS ts_first,
               CAST(make_timestamp(t1) AS TIMESTAMPTZ) AS ts_last, (t1 - t0) / 1e3 AS in_flight_ms
        FROM ({_large_transfers_sql(large_bytes)})
        ORDER BY conn_id, ts_first
        """,
    )


def head_of_line_exposure(db: Tables, large_bytes: int = LARGE_RESPONSE_BYTES) -> pd.DataFrame:
    """Were WebSocket messages slower while a large HTTP body was in flight on the connection?

    A round trip (``echo``, ``ping/pong``) is *exposed* when a body of at least ``large_bytes``
    travelled in the reply's direction between request and reply; an inter-arrival gap
    (``inter-arrival c2s|s2c``) when one travelled in its direction between the two messages.
    One row per connection, measure and exposure: ``samples``, ``median_ms``, ``p95_ms``,
    ``max_ms``, and ``comparable``: the connection has samples both ways for that measure.
    Exposed values well above unexposed ones are head-of-line blocking: HTTP/2 streams share one
    TCP byte stream and one connection window.

    Compare like with like: only ``comparable`` rows, each connection against itself.  A
    connection that never carried a large body (every HTTP/1.1 WebSocket's) has only unexposed
    samples, with its own, often much longer, round trips; pooling those into the baseline once
    made exposed echoes look 12x *faster* (:func:`head_of_line_summary` does it right).
    """
    return _query(
        db,
        f"""
        WITH big AS ({_large_transfers_sql(large_bytes)}),
        x AS (
            SELECT pair AS measure, conn_id,
                   CASE request_direction WHEN 'c2s' THEN 's2c' ELSE 'c2s' END AS dir,
                   t_request AS t0, t_reply AS t1
            FROM h2ws_pairs WHERE pair IN ('echo', 'ping/pong')
            UNION ALL
            SELECT 'inter-arrival ' || direction, conn_id, direction, t_prev, t_first
            FROM h2ws_gaps WHERE gap_us IS NOT NULL
        ), e AS (
            -- a semi and an anti join, not EXISTS: DuckDB would decorrelate EXISTS through a
            -- DISTINCT over every sample
            SELECT x.*, true AS exposed FROM x SEMI JOIN big b
              ON b.conn_id = x.conn_id AND b.direction = x.dir AND b.t0 <= x.t1 AND b.t1 >= x.t0
            UNION ALL
            SELECT x.*, false FROM x ANTI JOIN big b
              ON b.conn_id = x.conn_id AND b.direction = x.dir AND b.t0 <= x.t1 AND b.t1 >= x.t0
        )
        , g AS (
            SELECT conn_id, measure, exposed, count(*) AS samples,
                   median(t1 - t0) / 1e3 AS median_ms,
                   quantile_cont(t1 - t0, 0.95) / 1e3 AS p95_ms, max(t1 - t0) / 1e3 AS max_ms
            FROM e GROUP BY conn_id, measure, exposed
        )
        SELECT *, count(*) OVER (PARTITION BY conn_id, measure) = 2 AS comparable
        FROM g ORDER BY conn_id, measure, exposed
        """,
    )


def head_of_line_summary(hol: pd.DataFrame) -> pd.DataFrame:
    """Head-of-line exposure over all connections, like with like: per measure, only the
    connections with samples both with and without a large body in flight (``comparable``
    rows of :func:`head_of_line_exposure`), each compared with itself.

    Columns: ``measure``, ``connections``, ``samples_exposed``, ``samples_unexposed``,
    ``median_exposed_ms`` and ``median_unexposed_ms`` (per-connection medians, weighted by
    samples), and ``slowdown``: the median over those connections of exposed / unexposed median
    (above 1: slower while a large body was in flight).
    """
    out_columns = ["measure", "connections", "samples_exposed", "samples_unexposed",
                   "median_exposed_ms", "median_unexposed_ms", "slowdown"]  # fmt: skip
    if hol.empty or "comparable" not in hol:
        return pd.DataFrame(columns=out_columns)
    both = hol[hol["comparable"].astype(bool)]
    rows = []
    for measure, part in both.groupby("measure", sort=True):
        wide = part.pivot_table(
            index="conn_id", columns="exposed", values=["median_ms", "samples"], aggfunc="first"
        )
        med, n = wide["median_ms"], wide["samples"]
        rows.append(
            {
                "measure": measure,
                "connections": len(wide),
                "samples_exposed": int(n[True].sum()),
                "samples_unexposed": int(n[False].sum()),
                "median_exposed_ms": float((med[True] * n[True]).sum() / n[True].sum()),
                "median_unexposed_ms": float((med[False] * n[False]).sum() / n[False].sum()),
                "slowdown": float((med[True] / med[False]).median()),
            }
        )
    return pd.DataFrame(rows, columns=out_columns)


# -- closes -----------------------------------------------------------------------------------


def websocket_closes(db: Tables) -> pd.DataFrame:
    """How each WebSocket ended: close frames against the end of its HTTP/2 stream.

    One row per WebSocket: ``close_handshake`` (``both``, ``client only``, ``server only``,
    ``none``), ``close_code`` (of the first close frame), ``ended_by`` (``end_stream``,
    ``rst_stream``, ``goaway``, ``connection_closed``, ``incomplete``), ``end_stream_c2s`` /
    ``s2c`` and ``rst_by`` / ``rst_code`` from the frames (null without frames), ``cause`` (one
    label for charts) and ``misbehaviours``: ``close_without_end_stream:<dir>`` (a side sent its
    close frame but never END_STREAM — RFC 8441 §5 maps TCP's orderly close to END_STREAM),
    ``rst_after_close`` (the stream was reset after a close frame instead of ending),
    ``end_stream_without_close:<dir>`` (END_STREAM without a close frame: an abnormal closure,
    1006, RFC 6455 §7.1.5), ``data_after_close`` (messages after that side's close frame,
    RFC 6455 §5.5.1).
    """
    return _query(
        db,
        """
        WITH ws AS (SELECT * FROM h2ws_streams WHERE kind = 'websocket'),
        mc AS (
            SELECT conn_id, skey, direction, opcode, t_first, index,
                   min(CASE WHEN opcode = 'close' THEN index END)
                       OVER (PARTITION BY conn_id, skey, direction) AS close_index
            FROM h2ws_messages
        ), cl AS (
            SELECT conn_id, skey,
                   min(t_first) FILTER (WHERE opcode = 'close' AND direction = 'c2s') AS t_c2s,
                   min(t_first) FILTER (WHERE opcode = 'close' AND direction = 's2c') AS t_s2c,
                   count(*) FILTER (WHERE index > close_index) AS after_close
            FROM mc GROUP BY conn_id, skey
        ), fr AS (
            SELECT conn_id, stream_id,
                   bool_or(direction = 'c2s' AND type IN ('DATA', 'HEADERS')
                           AND flags LIKE '%END_STREAM%') AS es_c2s,
                   bool_or(direction = 's2c' AND type IN ('DATA', 'HEADERS')
                           AND flags LIKE '%END_STREAM%') AS es_s2c,
                   min(epoch_us(ts)) FILTER (WHERE type = 'RST_STREAM') AS t_rst,
                   arg_min(direction, index) FILTER (WHERE type = 'RST_STREAM') AS rst_by,
                   arg_min(error_code, index) FILTER (WHERE type = 'RST_STREAM') AS rst_code
            FROM frames
            WHERE stream_id > 0 AND (type = 'RST_STREAM' OR flags LIKE '%END_STREAM%')
            GROUP BY conn_id, stream_id
        ), hasf AS (SELECT DISTINCT conn_id FROM frames),
        j AS (
            SELECT ws.conn_id, ws.stream_id, ws.exchange, ws.over, ws.authority, ws.path,
                   ws.status, ws.ws_accepted, ws.ts_close, ws.close_cause, ws.stream_end,
                   ws.ws_close_by AS close_by,
                   TRY_CAST(regexp_extract(ws.close_cause, 'ws_close:([0-9]+)', 1) AS BIGINT)
                       AS close_code,
                   cl.t_c2s IS NOT NULL AS close_c2s, cl.t_s2c IS NOT NULL AS close_s2c,
                   coalesce(cl.after_close, 0) AS messages_after_close,
                   split_part(coalesce(ws.stream_end, 'incomplete'), ':', 1) AS ended_by,
                   hasf.conn_id IS NOT NULL AND ws.stream_id IS NOT NULL AS framed,
                   CASE WHEN framed THEN coalesce(fr.es_c2s, false) END AS end_stream_c2s,
                   CASE WHEN framed THEN coalesce(fr.es_s2c, false) END AS end_stream_s2c,
                   fr.rst_by, fr.rst_code,
                   fr.t_rst >= least(cl.t_c2s, cl.t_s2c) AS rst_after_close
            FROM ws
            LEFT JOIN cl USING (conn_id, skey)
            LEFT JOIN fr ON fr.conn_id = ws.conn_id AND fr.stream_id = ws.stream_id
            LEFT JOIN hasf ON hasf.conn_id = ws.conn_id
        )
        SELECT * EXCLUDE (framed),
               CASE WHEN close_c2s AND close_s2c THEN 'both'
                    WHEN close_c2s THEN 'client only'
                    WHEN close_s2c THEN 'server only' ELSE 'none' END AS close_handshake,
               CASE WHEN ws_accepted = false
                    THEN 'rejected (' || coalesce(CAST(status AS VARCHAR), '?') || ')'
                    ELSE CASE close_handshake WHEN 'both' THEN 'close both ways'
                                              WHEN 'none' THEN 'no close frame'
                                              ELSE 'close from ' || close_handshake END
                         || ', then '
                         || CASE ended_by WHEN 'end_stream' THEN
                                              CASE over WHEN 'HTTP/2' THEN 'END_STREAM'
                                                        ELSE 'end of exchange' END
                                          WHEN 'rst_stream' THEN 'RST_STREAM'
                                          WHEN 'goaway' THEN 'GOAWAY'
                                          WHEN 'connection_closed' THEN 'TCP close'
                                          ELSE replace(ended_by, '_', ' ') END
               END AS cause,
               nullif(concat_ws(', ',
                   CASE WHEN close_c2s AND end_stream_c2s = false
                        THEN 'close_without_end_stream:c2s' END,
                   CASE WHEN close_s2c AND end_stream_s2c = false
                        THEN 'close_without_end_stream:s2c' END,
                   CASE WHEN rst_after_close THEN 'rst_after_close' END,
                   CASE WHEN ws_accepted AND NOT close_c2s AND end_stream_c2s
                        THEN 'end_stream_without_close:c2s' END,
                   CASE WHEN ws_accepted AND NOT close_s2c AND end_stream_s2c
                        THEN 'end_stream_without_close:s2c' END,
                   CASE WHEN messages_after_close > 0 THEN 'data_after_close' END), '')
                   AS misbehaviours
        FROM j
        ORDER BY conn_id, stream_id, exchange
        """,
    )


def close_cause_counts(db: Tables) -> pd.DataFrame:
    """How many WebSockets ended each way: counts of :func:`websocket_closes` by transport,
    ``cause`` and ``close_code`` — the close-cause chart's table."""
    return _close_counts(websocket_closes(db))


def _close_counts(closes: pd.DataFrame) -> pd.DataFrame:
    if closes.empty:
        return pd.DataFrame(
            {
                "over": pd.Series(dtype="str"),
                "cause": pd.Series(dtype="str"),
                "close_code": pd.Series(dtype="Int64"),
                "websockets": pd.Series(dtype="int64"),
            }
        )
    out = (
        closes.groupby(["over", "cause", "close_code"], dropna=False)
        .size()
        .rename("websockets")
        .reset_index()
        .sort_values(["over", "websockets", "cause"], ascending=[True, False, True])
        .reset_index(drop=True)
    )
    out["close_code"] = out["close_code"].astype("Int64")
    return out


def stream_endings(db: Tables) -> pd.DataFrame:
    """How all streams ended, per connection and kind: counts per ``stream_end`` —
    END_STREAM, RST_STREAM with its error code, GOAWAY, connection close, incomplete.  Sum
    ``streams`` over connections for the whole capture."""
    return _query(
        db,
        """
        SELECT conn_id, over, kind, coalesce(stream_end, 'unknown') AS stream_end,
               count(*) AS streams
        FROM h2ws_streams GROUP BY conn_id, over, kind, stream_end
        ORDER BY conn_id, over, kind, streams DESC, stream_end
        """,
    )


# -- fallback and observer effect -------------------------------------------------------------

_TRANSPORT_SQL = _sql("transport.sql")


def websocket_transport_choice(db: Tables) -> pd.DataFrame:
    """Did each WebSocket use RFC 8441 where it could, or fall back to HTTP/1.1?

    One row per WebSocket with a ``verdict`` (see :data:`TRANSPORT_VERDICTS`) and
    ``h2_conn_id``: the HTTP/2 connection to the same server (same TCP endpoint, or one that
    served the same ``:authority``), in the same capture or open at the time, that the verdict
    refers to.  ``http1_despite_setting`` is the
    observer effect or a client's fallback (a proxy that does not relay the setting, a browser
    that opens RFC 8441 WebSockets only on an existing connection to that origin).
    """
    return _query(
        db,
        _TRANSPORT_SQL
        + """
        SELECT ws.conn_id, ws.stream_id, ws.exchange, ws.over, ws.server, ws.authority, ws.path,
               ws.ts_open,
               CASE WHEN ws.over = 'HTTP/2' THEN
                        CASE WHEN coalesce(ws.own_setting, false)
                                  AND ws.own_t_setting <= ws.t_open THEN 'rfc8441'
                             ELSE 'rfc8441_without_setting' END
                    WHEN agg.usable_conn IS NOT NULL THEN 'http1_despite_setting'
                    WHEN agg.setting_conn IS NOT NULL THEN 'http1_setting_at_other_time'
                    WHEN agg.any_conn IS NOT NULL THEN 'http1_setting_never_advertised'
                    ELSE 'http1_no_http2_seen' END AS verdict,
               CASE WHEN ws.over = 'HTTP/2' THEN ws.conn_id
                    ELSE coalesce(agg.usable_conn, agg.setting_conn, agg.any_conn) END
                   AS h2_conn_id
        FROM ws LEFT JOIN agg USING (conn_id, skey)
        ORDER BY ws.conn_id, ws.t_open, ws.skey
        """,
    )


def connect_protocol_support(db: Tables) -> pd.DataFrame:
    """Which HTTP/2 connections' servers advertised SETTINGS_ENABLE_CONNECT_PROTOCOL, and what
    the WebSockets to those servers did.

    One row per HTTP/2 connection: ``enable_connect_protocol``, ``advertised_after_ms`` (after
    the connection's first byte), ``websockets`` it carried, ``http1_websockets``: HTTP/1.1
    WebSockets to the same server in the same capture (see :func:`websocket_transport_choice`),
    and how many of them opened while this connection was open and had advertised the setting
    (``http1_websockets_while_advertised``).
    """
    return _query(
        db,
        _TRANSPORT_SQL
        + """
        , own AS (SELECT conn_id, count(*) AS websockets FROM ws WHERE over = 'HTTP/2'
                  GROUP BY conn_id),
        h1 AS (SELECT h2_conn_id AS conn_id, count(*) AS http1_websockets,
                      count(*) FILTER (WHERE usable) AS http1_websockets_while_advertised
               FROM matched GROUP BY h2_conn_id)
        SELECT c.conn_id, c.server, c.sni, c.http_version,
               coalesce(c.enable_connect_protocol, false) AS enable_connect_protocol,
               (epoch_us(c.ts_enable_connect_protocol) - c.t_start) / 1e3 AS advertised_after_ms,
               coalesce(own.websockets, 0) AS websockets,
               coalesce(h1.http1_websockets, 0) AS http1_websockets,
               coalesce(h1.http1_websockets_while_advertised, 0)
                   AS http1_websockets_while_advertised
        FROM h2ws_conn c LEFT JOIN own USING (conn_id) LEFT JOIN h1 USING (conn_id)
        WHERE c.is_h2
        ORDER BY c.conn_id
        """,
    )


# -- for plots --------------------------------------------------------------------------------


def busiest_connections(db: Tables, n: int = 3) -> list[str]:
    """The ``n`` connections with the most streams (WebSockets first on ties): the ones worth a
    timeline."""
    rows = db.execute(
        f"""
        SELECT conn_id FROM h2ws_streams GROUP BY conn_id
        ORDER BY count(*) DESC, count(*) FILTER (WHERE kind = 'websocket') DESC, conn_id
        LIMIT {int(n)}
        """
    ).fetchall()
    return [str(r[0]) for r in rows]


def connection_timeline(
    db: Tables, conn_id: str, max_messages: int = 5_000
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The streams and WebSocket messages of one connection, for a timeline plot.

    Returns ``(streams, messages)``: streams with ``t_open_s`` / ``t_close_s`` (since the
    connection's first byte), ``kind``, ``label``; messages with ``t_s``, ``direction``,
    ``opcode``, ``length`` and the stream they belong to — evenly thinned to at most about
    ``max_messages`` per connection, so that a plot of a 10 M-message capture stays readable.
    """
    cid = conn_id.replace("'", "''")
    streams = _query(
        db,
        f"""
        SELECT conn_id, stream_id, exchange, skey, kind, over, method, path, status,
               (t_open - conn_t_start) / 1e6 AS t_open_s,
               (t_close - conn_t_start) / 1e6 AS t_close_s,
               coalesce(CAST(stream_id AS VARCHAR), 'x' || CAST(exchange AS VARCHAR)) || ' '
                   || coalesce(CASE kind WHEN 'websocket' THEN 'WS' ELSE method END, '?') || ' '
                   || coalesce(path, '') AS label
        FROM h2ws_streams WHERE conn_id = '{cid}'
        ORDER BY t_open, skey
        """,
    )
    messages = _query(
        db,
        f"""
        WITH m AS (
            SELECT m.skey, m.stream_id, m.exchange, m.direction, m.opcode, m.length,
                   (m.t_first - c.t_start) / 1e6 AS t_s,
                   row_number() OVER (ORDER BY m.t_first, m.skey, m.direction, m.index) AS rn,
                   count(*) OVER () AS n
            FROM h2ws_messages m JOIN h2ws_conn c USING (conn_id)
            WHERE m.conn_id = '{cid}'
        )
        SELECT skey, stream_id, exchange, direction, opcode, length, t_s FROM m
        WHERE (rn - 1) % greatest(CAST(ceil(n / {max(int(max_messages), 1)}) AS BIGINT), 1) = 0
        ORDER BY t_s
        """,
    )
    return streams, messages


# -- everything at once -----------------------------------------------------------------------

#: The metrics whose rows are connections, streams or events of one connection: computed on
#: tables partitioned by conn_id and concatenated, they equal the whole-table result.
PER_CONNECTION: dict[str, Callable[[Tables], pd.DataFrame]] = {
    "streams_per_connection": streams_per_connection,
    "concurrency_per_connection": concurrency_per_connection,
    "websocket_sharing": websocket_sharing,
    "rfc8441_savings": rfc8441_savings,
    "websocket_setup": websocket_setup,
    "frame_interleaving": frame_interleaving,
    "fairness_per_connection": fairness_per_connection,
    "message_interarrival": message_interarrival,
    "flow_control_stalls": flow_control_stalls,
    "head_of_line_exposure": head_of_line_exposure,
    "websocket_closes": websocket_closes,
    "stream_endings": stream_endings,
}


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
        _install_views(db)
        for view in views:
            db.execute(f"DROP TABLE IF EXISTS {view}_cache")


def compute_all(db: Tables, large_bytes: int = LARGE_RESPONSE_BYTES) -> dict[str, pd.DataFrame]:
    """Every metric the report shows, by name (the per-connection ones, the CDFs, message
    stats and the transport verdicts); :func:`overview` summarises them."""
    results: dict[str, pd.DataFrame] = {}
    with materialized(db):
        for name, metric in PER_CONNECTION.items():
            if name == "head_of_line_exposure":
                results[name] = head_of_line_exposure(db, large_bytes)
            else:
                results[name] = metric(db)
        results["close_cause_counts"] = _close_counts(results["websocket_closes"])
        results["message_stats"] = message_stats(db)
        results["message_size_cdf"] = message_size_cdf(db)
        results["latency_cdf"] = latency_cdf(db)
        results["websocket_transport_choice"] = websocket_transport_choice(db)
        results["connect_protocol_support"] = connect_protocol_support(db)
        results["large_transfers"] = large_transfers(db, large_bytes)
    return results


def _median(frame: pd.DataFrame, column: str) -> float | None:
    values = frame[column].dropna()
    return float(values.median()) if len(values) else None


def _quantile(cdf: pd.DataFrame, measure: str, fraction: float) -> float | None:
    rows = cdf[(cdf["measure"] == measure) & ((cdf["fraction"] - fraction).abs() < 1e-9)]
    return float(rows["ms"].iloc[0]) if len(rows) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def overview(results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The headline numbers over all connections, as (``section``, ``metric``, ``value``,
    ``unit``) rows, from :func:`compute_all`'s results.

    Over-all values are aggregates of per-connection rows — sums, and means weighted by time
    (stream-seconds / connection-seconds), never means of means — so they are the same whether
    the per-connection rows came from one DuckDB query or from many partitions (Dask).  Sections
    whose inputs are missing from ``results`` are left out; ``value`` is NaN where a number
    does not exist (e.g. no HTTP/1.1 WebSocket to measure).
    """
    rows: list[tuple[str, str, float, str]] = []

    def add(section: str, metric: str, value: Any, unit: str) -> None:
        number = float("nan") if value is None or pd.isna(value) else float(value)
        rows.append((section, metric, number, unit))

    def h2_only(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["http_version"].isin(["h2", "h2c"])]

    if "streams_per_connection" in results:
        spc = results["streams_per_connection"]
        h2 = h2_only(spc)
        add("connections", "TCP connections", len(spc), "connections")
        add("connections", "HTTP/2 connections", len(h2), "connections")
        add(
            "connections",
            "HTTP/1.1 connections",
            (spc["http_version"] == "http/1.1").sum(),
            "connections",
        )
        add("streams", "streams (all kinds)", spc["streams"].sum(), "streams")
        add("streams", "WebSocket attempts", spc["websockets"].sum(), "streams")
        add("streams", "HTTP requests", spc["http"].sum(), "streams")
        add("streams", "other streams (CONNECT tunnels, pushes)", spc["other"].sum(), "streams")
        add(
            "streams",
            "mean streams per HTTP/2 connection",
            h2["streams"].mean() if len(h2) else None,
            "streams",
        )
        add("streams", "most streams on one connection", spc["streams"].max(), "streams")
        add(
            "streams",
            "connections serving several :authority (coalescing)",
            (spc["authorities"] > 1).sum(),
            "connections",
        )
        with_ws = spc[spc["websockets"] > 0]
        add(
            "sharing",
            "connections with WebSockets that also carried HTTP requests",
            with_ws["mixed"].mean() if len(with_ws) else None,
            "fraction",
        )
        h2_ws = h2[h2["websockets"] > 0]
        add(
            "sharing",
            "HTTP/2 connections with WebSockets that also carried HTTP requests",
            h2_ws["mixed"].mean() if len(h2_ws) else None,
            "fraction",
        )

    if "concurrency_per_connection" in results:
        cpc = results["concurrency_per_connection"]
        h2c = h2_only(cpc)
        seconds = h2c["duration_s"].sum()
        add(
            "concurrency",
            "peak open streams on one connection",
            cpc["peak_streams"].max(),
            "streams",
        )
        add(
            "concurrency",
            "peak open WebSockets on one connection",
            cpc["peak_websockets"].max(),
            "streams",
        )
        add(
            "concurrency",
            "time-weighted mean open streams per HTTP/2 connection",
            _ratio(h2c["stream_seconds"].sum(), seconds),
            "streams",
        )
        add(
            "concurrency",
            "time-weighted mean open WebSockets per HTTP/2 connection",
            _ratio(h2c["websocket_seconds"].sum(), seconds),
            "streams",
        )
        add(
            "concurrency",
            "share of HTTP/2 connection time with ≥ 2 streams open",
            _ratio((h2c["multiplexed_share"].fillna(0) * h2c["duration_s"]).sum(), seconds),
            "fraction",
        )

    if "websocket_sharing" in results:
        share = results["websocket_sharing"]
        h2ws = share[share["over"] == "HTTP/2"]
        life = h2ws["lifetime_s"].sum()
        add("sharing", "RFC 8441 WebSockets", len(h2ws), "streams")
        add(
            "sharing",
            "share of RFC 8441 WebSocket lifetime with other streams open",
            _ratio(h2ws["shared_s"].sum(), life),
            "fraction",
        )
        add(
            "sharing",
            "share of RFC 8441 WebSocket lifetime with HTTP requests open",
            _ratio(h2ws["shared_with_http_s"].sum(), life),
            "fraction",
        )

    if "rfc8441_savings" in results:
        sav = results["rfc8441_savings"]
        add(
            "HTTP/1.1 cost",
            "TCP connections the RFC 8441 WebSockets rode on",
            len(sav),
            "connections",
        )
        add(
            "HTTP/1.1 cost",
            "TCP connections HTTP/1.1 would have needed",
            sav["http1_connections"].sum(),
            "connections",
        )
        add(
            "HTTP/1.1 cost",
            "TCP handshakes avoided",
            sav["tcp_handshakes_avoided"].sum(),
            "handshakes",
        )
        add(
            "HTTP/1.1 cost",
            "TLS handshakes avoided",
            sav["tls_handshakes_avoided"].sum(),
            "handshakes",
        )
        add(
            "HTTP/1.1 cost",
            "handshake round trips avoided",
            sav["round_trips_avoided"].sum(),
            "round trips",
        )
        add(
            "HTTP/1.1 cost",
            "setup time avoided (round trips x RTT estimate)",
            sav["setup_time_avoided_ms"].sum(),
            "ms",
        )
    if "websocket_setup" in results:
        setup = results["websocket_setup"]
        h1 = setup[setup["over"] == "HTTP/1.1"]
        add("HTTP/1.1 cost", "HTTP/1.1 WebSockets seen", len(h1), "streams")
        add("HTTP/1.1 cost", "TCP connections they used", h1["conn_id"].nunique(), "connections")
        add(
            "HTTP/1.1 cost",
            "median RFC 8441 WebSocket open (CONNECT → 200)",
            _median(setup[setup["over"] == "HTTP/2"], "handshake_ms"),
            "ms",
        )
        add(
            "HTTP/1.1 cost",
            "median HTTP/1.1 WebSocket open (Upgrade → 101)",
            _median(h1, "handshake_ms"),
            "ms",
        )
        add(
            "HTTP/1.1 cost",
            "median HTTP/1.1 WebSocket open from its connection's first byte",
            _median(h1[h1["first_on_connection"].astype(bool)], "from_connection_start_ms"),
            "ms",
        )

    if "frame_interleaving" in results:
        inter = results["frame_interleaving"]
        both = inter[inter["direction"] == "both"]
        add(
            "interleaving",
            "consecutive HTTP/2 frames on different streams",
            _ratio(both["switches"].sum(), (both["frames"] - 1).clip(lower=0).sum()),
            "fraction",
        )
    if "fairness_per_connection" in results:
        fair = results["fairness_per_connection"]
        weights = fair["contended_bins"].sum()
        add(
            "interleaving",
            "mean Jain's index where streams competed (1 = equal shares)",
            _ratio((fair["mean_jain"].fillna(0) * fair["contended_bins"]).sum(), weights),
            "index",
        )

    if "latency_cdf" in results:
        lat = results["latency_cdf"]
        for measure in ("echo", "ping/pong", "websocket open", "http response"):
            add("latency", f"median {measure} round trip", _quantile(lat, measure, 0.5), "ms")
            add("latency", f"p95 {measure} round trip", _quantile(lat, measure, 0.95), "ms")
        for direction in ("c2s", "s2c"):
            add(
                "latency",
                f"median message inter-arrival {direction}",
                _quantile(lat, f"inter-arrival {direction}", 0.5),
                "ms",
            )
    if "flow_control_stalls" in results:
        stalls = results["flow_control_stalls"]
        add("stalls", "flow-control stalls", len(stalls), "stalls")
        add(
            "stalls",
            "streams that stalled",
            len(stalls[["conn_id", "stream_id"]].drop_duplicates()),
            "streams",
        )
        add(
            "stalls", "total time streams waited for WINDOW_UPDATE", stalls["waited_ms"].sum(), "ms"
        )
        add(
            "stalls",
            "longest wait for WINDOW_UPDATE",
            stalls["waited_ms"].max() if len(stalls) else None,
            "ms",
        )
    if "head_of_line_exposure" in results:
        summary = head_of_line_summary(results["head_of_line_exposure"]).set_index("measure")
        for measure in ("echo", "ping/pong"):
            found = measure in summary.index
            sel = summary.loc[measure] if found else None
            what = f"{measure} round trip, on connections that carried a large HTTP body"
            add(
                "head-of-line",
                f"{what}: while it was in flight",
                sel["median_exposed_ms"] if sel is not None else None,
                "ms",
            )
            add(
                "head-of-line",
                f"{what}: otherwise (same connections)",
                sel["median_unexposed_ms"] if sel is not None else None,
                "ms",
            )
            add(
                "head-of-line",
                f"{measure} round trip slowdown while a large body was in flight "
                "(median over those connections)",
                sel["slowdown"] if sel is not None else None,
                "x",
            )

    if "websocket_closes" in results:
        closes = results["websocket_closes"]
        add(
            "closes",
            "WebSockets with a close handshake both ways",
            (closes["close_handshake"] == "both").sum(),
            "streams",
        )
        add(
            "closes",
            "WebSockets without any close frame",
            (closes["close_handshake"] == "none").sum(),
            "streams",
        )
        flags = closes["misbehaviours"].fillna("")
        for name in (
            "close_without_end_stream",
            "rst_after_close",
            "end_stream_without_close",
            "data_after_close",
        ):
            add("closes", f"WebSockets with {name}", flags.str.contains(name).sum(), "streams")

    if "websocket_transport_choice" in results:
        choice = results["websocket_transport_choice"]
        for verdict in TRANSPORT_VERDICTS:
            add(
                "fallback",
                f"WebSockets: {verdict}",
                (choice["verdict"] == verdict).sum(),
                "streams",
            )
    if "connect_protocol_support" in results:
        support = results["connect_protocol_support"]
        add(
            "fallback",
            "HTTP/2 connections whose server never advertised RFC 8441",
            (~support["enable_connect_protocol"].astype(bool)).sum(),
            "connections",
        )

    out = pd.DataFrame(rows, columns=["section", "metric", "value", "unit"])
    order = {name: i for i, name in enumerate(dict.fromkeys(_SECTIONS + list(out["section"])))}
    return (
        out.assign(_order=out["section"].map(order))
        .sort_values("_order", kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _plural(n: float, one: str, many: str | None = None) -> str:
    count = round(n)
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def headline(overview_rows: pd.DataFrame) -> tuple[str, list[tuple[str, str]]]:
    """The report's answer in words and a few big numbers, from :func:`overview`'s rows: what
    the HTTP/2 connections carried, what HTTP/1.1 would have needed, and WebSocket set-up on
    each transport.  Returns ``(sentence, [(value, caption), …])``; numbers that do not exist in
    these tables are left out, never shown as 0."""
    values = dict(zip(overview_rows["metric"], overview_rows["value"], strict=False))

    def get(metric: str) -> float | None:
        v = values.get(metric)
        return None if v is None or pd.isna(v) else float(v)

    h2 = get("HTTP/2 connections") or 0.0
    ws = get("RFC 8441 WebSockets") or 0.0
    requests = get("HTTP requests") or 0.0
    needed = get("TCP connections HTTP/1.1 would have needed")
    rode = get("TCP connections the RFC 8441 WebSockets rode on")
    tls_avoided = get("TLS handshakes avoided")
    open_h2 = get("median RFC 8441 WebSocket open (CONNECT → 200)")
    # HTTP/1.1 set-up counts from its new connection's first byte (TCP and TLS handshakes
    # included: that is the cost RFC 8441 avoids); HTTP/2's from the CONNECT on a connection
    # already open.  The labels say which was measured.
    open_h1 = get("median HTTP/1.1 WebSocket open from its connection's first byte")
    h1_span = "new connection's first byte → 101"
    if open_h1 is None:
        open_h1 = get("median HTTP/1.1 WebSocket open (Upgrade → 101)")
        h1_span = "Upgrade → 101"
    h1_ws = get("HTTP/1.1 WebSockets seen") or 0.0

    parts = [
        f"{_plural(h2, 'HTTP/2 connection')} carried {_plural(ws, 'WebSocket')} (RFC 8441) "
        f"and {_plural(requests, 'HTTP request')}"
    ]
    extra = None if needed is None or rode is None else needed - rode
    if extra is not None and ws:
        more = f"{_plural(extra, 'more TCP connection')}"
        if tls_avoided:
            more += f" and {_plural(tls_avoided, 'more TLS handshake')}"
        parts.append(f"HTTP/1.1 would have needed {more} for those WebSockets")
    if open_h2 is not None and open_h1 is not None:
        parts.append(
            f"WebSocket set-up took {open_h2:.1f} ms over HTTP/2 (CONNECT → 200) vs "
            f"{open_h1:.1f} ms over HTTP/1.1 ({h1_span}; medians)"
        )
    elif open_h2 is not None:
        parts.append(f"WebSocket set-up took {open_h2:.1f} ms over HTTP/2 (CONNECT → 200, median)")
    if h1_ws:
        parts.append(f"{_plural(h1_ws, 'WebSocket')} went over HTTP/1.1")
    sentence = "; ".join(parts) + "."

    figures = [
        (f"{round(h2):,}", "HTTP/2 connections"),
        (f"{round(ws):,}", "RFC 8441 WebSockets"),
        (f"{round(requests):,}", "HTTP requests beside them"),
    ]
    if extra is not None and ws:
        figures.append((f"{round(extra):,}", "TCP connections HTTP/1.1 would have added"))
    if open_h2 is not None:
        figures.append(
            (f"{open_h2:.1f} ms", "WebSocket set-up over HTTP/2 (CONNECT → 200, median)")
        )
    if open_h1 is not None:
        figures.append((f"{open_h1:.1f} ms", f"WebSocket set-up over HTTP/1.1 ({h1_span}, median)"))
    peak = get("peak open streams on one connection")
    if peak is not None:
        figures.append((f"{round(peak):,}", "most streams open at once on one connection"))
    return sentence, figures


_SECTIONS = [
    "connections",
    "streams",
    "concurrency",
    "sharing",
    "HTTP/1.1 cost",
    "interleaving",
    "latency",
    "stalls",
    "head-of-line",
    "closes",
    "fallback",
]


__all__ = [
    "LARGE_RESPONSE_BYTES",
    "PER_CONNECTION",
    "TRANSPORT_VERDICTS",
    "busiest_connections",
    "bytes_share_over_time",
    "close_cause_counts",
    "compute_all",
    "concurrency_per_connection",
    "concurrency_timeline",
    "connect",
    "connect_protocol_support",
    "connection_timeline",
    "fairness_over_time",
    "fairness_per_connection",
    "flow_control_stalls",
    "frame_interleaving",
    "from_frames",
    "head_of_line_exposure",
    "head_of_line_summary",
    "headline",
    "large_transfers",
    "latency_cdf",
    "materialized",
    "message_interarrival",
    "message_size_cdf",
    "message_stats",
    "overview",
    "rfc8441_savings",
    "round_trip_times",
    "stream_endings",
    "streams_per_connection",
    "websocket_closes",
    "websocket_setup",
    "websocket_sharing",
    "websocket_transport_choice",
]
