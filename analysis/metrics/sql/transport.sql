WITH ws AS (
    SELECT s.conn_id, s.stream_id, s.exchange, s.skey, s.over, s.authority, s.path, s.ts_open,
           s.t_open, c.server, c.capture, c.enable_connect_protocol AS own_setting,
           c.start_captured AS own_start_captured,
           coalesce(epoch_us(c.ts_enable_connect_protocol), c.t_start) AS own_t_setting
    FROM h2ws_streams s JOIN h2ws_conn c USING (conn_id)
    WHERE s.kind = 'websocket'
), h2 AS (
    SELECT conn_id, server, capture, t_start, t_end,
           coalesce(enable_connect_protocol, false) AS setting,
           coalesce(epoch_us(ts_enable_connect_protocol), t_start) AS t_setting,
           -- its first SETTINGS were captured, or it advertised later: "never advertised" is
           -- known, not a capture that started after the SETTINGS
           start_captured OR coalesce(enable_connect_protocol, false) AS known
    FROM h2ws_conn WHERE is_h2
), h2auth AS (
    SELECT DISTINCT conn_id, authority FROM h2ws_streams
    WHERE stream_id IS NOT NULL AND authority IS NOT NULL
), matched AS (
    -- HTTP/2 connections to the same server (TCP endpoint, or an :authority it served) as an
    -- HTTP/1.1 WebSocket, in the same capture or open when it opened (a capture rotated into
    -- several files); "usable": open, with the setting, when the WebSocket opened
    SELECT ws.conn_id, ws.skey, h2.conn_id AS h2_conn_id, h2.setting, h2.known,
           h2.setting AND h2.t_setting <= ws.t_open AND h2.t_end >= ws.t_open AS usable
    FROM ws JOIN h2 ON h2.conn_id <> ws.conn_id
    WHERE ws.over = 'HTTP/1.1'
      AND (h2.capture IS NOT DISTINCT FROM ws.capture
           OR (h2.t_start <= ws.t_open AND h2.t_end >= ws.t_open))
      AND (h2.server = ws.server
           OR EXISTS (SELECT 1 FROM h2auth a
                      WHERE a.conn_id = h2.conn_id AND a.authority = ws.authority))
), agg AS (
    SELECT conn_id, skey,
           min(h2_conn_id) FILTER (WHERE usable) AS usable_conn,
           min(h2_conn_id) FILTER (WHERE setting) AS setting_conn,
           min(h2_conn_id) FILTER (WHERE known) AS known_conn,
           min(h2_conn_id) AS any_conn
    FROM matched GROUP BY conn_id, skey
)
