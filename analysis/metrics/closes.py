"""How did WebSockets and streams end?

One job: each WebSocket's close handshake against the end of its stream, with the known
misbehaviours (RFC 6455 §5.5.1, §7.1.5; RFC 8441 §5: :func:`websocket_closes`), the counts of
close causes for the chart (:func:`close_cause_counts`, :func:`count_close_causes`) and how all
streams ended (:func:`stream_endings`).
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, query


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
    return query(
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
    return count_close_causes(websocket_closes(db))


def count_close_causes(closes: pd.DataFrame) -> pd.DataFrame:
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
    return query(
        db,
        """
        SELECT conn_id, over, kind, coalesce(stream_end, 'unknown') AS stream_end,
               count(*) AS streams
        FROM h2ws_streams GROUP BY conn_id, over, kind, stream_end
        ORDER BY conn_id, over, kind, streams DESC, stream_end
        """,
    )


__all__ = [
    "close_cause_counts",
    "count_close_causes",
    "stream_endings",
    "websocket_closes",
]
