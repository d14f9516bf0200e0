"""Which connections are worth a timeline, and what happened on one of them?

One job: the rows the report's per-connection plots draw — the busiest connections
(:func:`busiest_connections`) and one connection's streams and thinned messages
(:func:`connection_timeline`).
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query


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
    streams = query(
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
    messages = query(
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


__all__ = [
    "busiest_connections",
    "connection_timeline",
]
