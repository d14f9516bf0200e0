"""Do WebSockets and HTTP requests share TCP connections, and what would HTTP/1.1 have needed?

One job: the connection-sharing questions of the report — streams of each kind per connection
and connection coalescing (:func:`streams_per_connection`), how much of each WebSocket's life it
shared its connection with other streams (:func:`websocket_sharing`), and the TCP/TLS
connections, handshakes and round trips RFC 8441 avoided against one connection per WebSocket
over HTTP/1.1 (RFC 6455 §4.1; :func:`rfc8441_savings`).
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query


def streams_per_connection(db: Tables) -> pd.DataFrame:
    """How many streams of each kind each TCP connection carried, and for how many origins.

    One row per connection: ``streams``, ``websockets`` (attempts; ``websockets_accepted`` of
    them opened), ``http``, ``other`` (CONNECT tunnels, pushes), ``authorities`` (distinct
    ``:authority``; more than one means connection coalescing, RFC 9113 §9.1.1),
    ``authority_list``, and ``mixed``: WebSockets and HTTP requests shared the connection.
    ``start_captured`` is false for a connection the capture caught in its middle, and
    ``inferred`` counts its streams known from their bytes only (their opening was before the
    capture): they are streams like any other here, and in every metric.
    """
    return query(
        db,
        """
        WITH agg AS (
            SELECT c.conn_id, any_value(c.capture) AS capture,
                   any_value(c.http_version) AS http_version, any_value(c.tls) AS tls,
                   any_value(c.server) AS server,
                   any_value(c.t_end - c.t_start) / 1e6 AS duration_s,
                   any_value(c.start_captured) AS start_captured,
                   count(s.kind) AS streams,
                   count(*) FILTER (WHERE s.kind = 'websocket') AS websockets,
                   count(*) FILTER (WHERE s.kind = 'websocket' AND s.ws_accepted)
                       AS websockets_accepted,
                   count(*) FILTER (WHERE s.kind = 'http') AS http,
                   count(*) FILTER (WHERE s.kind NOT IN ('websocket', 'http')) AS other,
                   count(*) FILTER (WHERE s.inferred) AS inferred,
                   count(DISTINCT s.authority) AS authorities,
                   string_agg(DISTINCT s.authority, ', ' ORDER BY s.authority) AS authority_list
            FROM h2ws_conn c LEFT JOIN h2ws_streams s USING (conn_id)
            GROUP BY c.conn_id
        )
        SELECT *, websockets > 0 AND http > 0 AS mixed FROM agg
        ORDER BY conn_id
        """,
    )


def websocket_sharing(db: Tables) -> pd.DataFrame:
    """For how much of its life each WebSocket shared its TCP connection with other streams.

    One row per WebSocket: ``lifetime_s`` (request to close), ``shared_s`` (time at least one
    other stream was open on the connection) and ``shared_with_http_s`` (… at least one
    non-WebSocket stream), their shares of the lifetime, and ``overlapping_streams`` /
    ``overlapping_websockets``: how many other streams overlapped it at all.  An HTTP/1.1
    WebSocket owns its connection, so its shares are 0: the baseline.
    """
    return query(
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
    return query(
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


__all__ = [
    "rfc8441_savings",
    "streams_per_connection",
    "websocket_sharing",
]
