"""Did each WebSocket use RFC 8441 where it could, or fall back to HTTP/1.1?

One job: the transport verdict of every WebSocket against the HTTP/2 connections to the same
server and their SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3;
:func:`websocket_transport_choice`, :data:`TRANSPORT_VERDICTS`), and per HTTP/2 connection
whether its server advertised it (:func:`connect_protocol_support`).  The shared SQL is
``sql/transport.sql``.
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query, read_sql

#: What each verdict of :func:`websocket_transport_choice` means, for reports.
TRANSPORT_VERDICTS = {
    "rfc8441": "WebSocket over HTTP/2 (RFC 8441) on a connection whose server advertised it",
    "rfc8441_without_setting": (
        "WebSocket over HTTP/2 although the server had not sent "
        "SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (a protocol violation)"
    ),
    "rfc8441_setting_not_captured": (
        "WebSocket over HTTP/2 on a connection whose start the capture missed and that sent no "
        "SETTINGS_ENABLE_CONNECT_PROTOCOL=1 after it: whether its server advertised RFC 8441 "
        "is unknown"
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
    "http1_setting_not_captured": (
        "WebSocket over HTTP/1.1; the HTTP/2 connections to the same server started before the "
        "capture and sent no setting after it: whether they advertised RFC 8441 is unknown"
    ),
    "http1_no_http2_seen": "WebSocket over HTTP/1.1; no HTTP/2 connection to that server seen",
}

_TRANSPORT_SQL = read_sql("transport.sql")


def websocket_transport_choice(db: Tables) -> pd.DataFrame:
    """Did each WebSocket use RFC 8441 where it could, or fall back to HTTP/1.1?

    One row per WebSocket with a ``verdict`` (see :data:`TRANSPORT_VERDICTS`) and
    ``h2_conn_id``: the HTTP/2 connection to the same server (same TCP endpoint, or one that
    served the same ``:authority``), in the same capture or open at the time, that the verdict
    refers to.  ``http1_despite_setting`` is the
    observer effect or a client's fallback (a proxy that does not relay the setting, a browser
    that opens RFC 8441 WebSockets only on an existing connection to that origin).
    """
    return query(
        db,
        _TRANSPORT_SQL
        + """
        SELECT ws.conn_id, ws.stream_id, ws.exchange, ws.over, ws.server, ws.authority, ws.path,
               ws.ts_open,
               CASE WHEN ws.over = 'HTTP/2' THEN
                        CASE WHEN coalesce(ws.own_setting, false)
                                  AND ws.own_t_setting <= ws.t_open THEN 'rfc8441'
                             WHEN NOT ws.own_start_captured
                                  AND NOT coalesce(ws.own_setting, false)
                                 THEN 'rfc8441_setting_not_captured'
                             ELSE 'rfc8441_without_setting' END
                    WHEN agg.usable_conn IS NOT NULL THEN 'http1_despite_setting'
                    WHEN agg.setting_conn IS NOT NULL THEN 'http1_setting_at_other_time'
                    WHEN agg.known_conn IS NOT NULL THEN 'http1_setting_never_advertised'
                    WHEN agg.any_conn IS NOT NULL THEN 'http1_setting_not_captured'
                    ELSE 'http1_no_http2_seen' END AS verdict,
               CASE WHEN ws.over = 'HTTP/2' THEN ws.conn_id
                    ELSE coalesce(agg.usable_conn, agg.setting_conn, agg.known_conn,
                                  agg.any_conn) END
                   AS h2_conn_id
        FROM ws LEFT JOIN agg USING (conn_id, skey)
        ORDER BY ws.conn_id, ws.t_open, ws.skey
        """,
    )


def connect_protocol_support(db: Tables) -> pd.DataFrame:
    """Which HTTP/2 connections' servers advertised SETTINGS_ENABLE_CONNECT_PROTOCOL, and what
    the WebSockets to those servers did.

    One row per HTTP/2 connection: ``enable_connect_protocol`` (false also when it was not
    seen), ``start_captured`` (false: the capture missed its first SETTINGS, so a false
    ``enable_connect_protocol`` is unknown, not "never"), ``advertised_after_ms`` (after
    the connection's first byte), ``websockets`` it carried, ``http1_websockets``: HTTP/1.1
    WebSockets to the same server in the same capture (see :func:`websocket_transport_choice`),
    and how many of them opened while this connection was open and had advertised the setting
    (``http1_websockets_while_advertised``).
    """
    return query(
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
               c.start_captured,
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


__all__ = [
    "TRANSPORT_VERDICTS",
    "connect_protocol_support",
    "websocket_transport_choice",
]
