"""Were WebSocket messages slower while a large HTTP body was in flight on their connection?

One job: head-of-line exposure — the large HTTP bodies (:func:`large_transfers`), each round trip
and inter-arrival gap marked exposed or not (:func:`head_of_line_exposure`), and the
like-with-like comparison over connections (:func:`head_of_line_summary`).  HTTP/2 streams
share one TCP byte stream and one connection window (RFC 9113 §5, §6.9), so a large body can
delay a WebSocket's frames queued behind it.
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query

#: A response (or upload) at least this large is "large" for head-of-line exposure: the
#: default initial stream window of HTTP/2 (RFC 9113 §6.9.2), i.e. a body that cannot be sent
#: in one flight without waiting for WINDOW_UPDATEs.
LARGE_RESPONSE_BYTES = 65_535


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
    return query(
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
    return query(
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


__all__ = [
    "LARGE_RESPONSE_BYTES",
    "head_of_line_exposure",
    "head_of_line_summary",
    "large_transfers",
]
