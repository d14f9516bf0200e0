"""How many streams and WebSockets were open at once on each connection (multiplexing)?

One job: the open-stream step function per connection (:func:`concurrency_timeline`, from the
shared view ``h2ws_steps``) and its peak and time-weighted means
(:func:`concurrency_per_connection`).
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query


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
    return query(
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
    return query(
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


__all__ = [
    "concurrency_per_connection",
    "concurrency_timeline",
]
