"""How long did each WebSocket take to open, over HTTP/2 and over HTTP/1.1?

One job: :func:`websocket_setup` — extended CONNECT → 2xx (RFC 8441 §4) or Upgrade → 101
(RFC 6455 §4), and from the connection's first byte.
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query


def websocket_setup(db: Tables) -> pd.DataFrame:
    """How long each WebSocket took to open, over HTTP/2 and over HTTP/1.1 as captured.

    One row per WebSocket attempt: ``handshake_ms`` (extended CONNECT → 2xx, or Upgrade →
    101), ``from_connection_start_ms`` (the connection's first byte → the response: what a
    WebSocket on a connection of its own really waited, TLS handshake included when captured),
    and ``first_on_connection``: no stream opened on the connection before it.  This measures
    the HTTP/1.1 WebSockets actually present against the RFC 8441 ones.
    """
    return query(
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


__all__ = [
    "websocket_setup",
]
