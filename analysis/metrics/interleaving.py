"""Did streams take turns in fine-grained frames, and did they get fair shares of the bytes?

One job: frame interleaving on HTTP/2 connections (:func:`frame_interleaving`), bytes per stream
per time bin (:func:`bytes_share_over_time`) and Jain's fairness index over those bins
(:func:`fairness_over_time`, :func:`fairness_per_connection`).
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query


def frame_interleaving(db: Tables) -> pd.DataFrame:
    """How often consecutive HTTP/2 frames on a connection belong to different streams.

    Counts HEADERS and DATA frames of streams (not connection-level frames), per connection and
    direction, and for both directions together (``direction = 'both'``): ``switches`` between
    consecutive frames of different streams, ``switch_rate`` = switches / (frames - 1) (0:
    streams took turns in long runs; near 1: finely interleaved), ``mean_run_frames`` (frames
    per run of one stream) and ``streams`` that sent such frames.
    """
    return query(
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


def _stream_bytes_per_bin_sql(bins: int, bin_s: float | None, bytes_type: str) -> str:
    """``WITH … b AS (…)``: DATA frame bytes per connection, direction, time bin and stream
    (``b.bytes`` as ``bytes_type``; ``b.width`` the bin's width in µs), for the queries that
    share out a bin's bytes."""
    return f"""WITH w AS ({_bins_sql(bins, bin_s)}),
        d AS (
            SELECT f.conn_id, f.direction, f.stream_id, f.length,
                   CAST(greatest(floor((epoch_us(f.ts) - w.t_start) / w.width), 0) AS BIGINT)
                       AS bin,
                   w.width
            FROM frames f JOIN w USING (conn_id)
            WHERE f.type = 'DATA'
        ), b AS (
            SELECT conn_id, direction, bin, stream_id, any_value(width) AS width,
                   CAST(sum(length) AS {bytes_type}) AS bytes
            FROM d GROUP BY conn_id, direction, bin, stream_id
        )"""


def bytes_share_over_time(db: Tables, bins: int = 60, bin_s: float | None = None) -> pd.DataFrame:
    """Which streams the connection's bytes went to, per time bin.

    DATA frame bytes (frame payload length, padding included: what the connection carried) per
    connection, direction, time bin and stream, with ``share`` of the bin's bytes.  Bins are
    ``bin_s`` seconds wide, or each connection's life cut into ``bins`` equal bins.
    """
    return query(
        db,
        f"""
        {_stream_bytes_per_bin_sql(bins, bin_s, "BIGINT")}
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
    return query(
        db,
        f"""
        {_stream_bytes_per_bin_sql(bins, bin_s, "DOUBLE")}
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


__all__ = [
    "bytes_share_over_time",
    "fairness_over_time",
    "fairness_per_connection",
    "frame_interleaving",
]
