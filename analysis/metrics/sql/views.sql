CREATE OR REPLACE TEMP VIEW h2ws_conn AS
WITH known AS (
    SELECT conn_id, capture, http_version, tls, tls_version, sni, server_addr, server_port,
           enable_connect_protocol, ts_enable_connect_protocol, settings_c2s, settings_s2c,
           ts_start, ts_end, end_cause,
           -- null (a table built without the column) reads as the records' default, true
           coalesce(start_captured, true) AS start_captured
    FROM connections
), orphans AS (
    -- streams of a connection not written yet (a live capture still running)
    SELECT conn_id,
           CASE WHEN bool_or(stream_id IS NOT NULL) THEN 'h2' ELSE 'http/1.1' END AS http_version,
           min(coalesce(ts_open, ts_response, ts_close)) AS ts_start,
           max(coalesce(ts_close, ts_response, ts_open)) AS ts_end,
           true AS start_captured  -- live: the addon sees every connection from its start
    FROM streams WHERE conn_id NOT IN (SELECT conn_id FROM connections)
    GROUP BY conn_id
), allc AS (
    SELECT * FROM known UNION ALL BY NAME SELECT * FROM orphans
)
SELECT *,
       epoch_us(ts_start) AS t_start,
       epoch_us(coalesce(ts_end, ts_start)) AS t_end,
       coalesce(server_addr, '?') || ':' || coalesce(CAST(server_port AS VARCHAR), '?') AS server,
       http_version IN ('h2', 'h2c') AS is_h2
FROM allc;

CREATE OR REPLACE TEMP VIEW h2ws_streams AS
SELECT s.*,
       CASE WHEN s.stream_id IS NULL THEN 'HTTP/1.1' ELSE 'HTTP/2' END AS over,
       CASE s.kind WHEN 'websocket' THEN 'websocket' WHEN 'http' THEN 'http' ELSE 'other' END
           AS kind_group,
       coalesce(s.stream_id, -1 - s.exchange) AS skey,
       epoch_us(coalesce(s.ts_open, s.ts_response, s.ts_close, c.ts_start)) AS t_open,
       greatest(epoch_us(coalesce(s.ts_close, c.ts_end, s.ts_open)), t_open) AS t_close,
       c.t_start AS conn_t_start
FROM streams s LEFT JOIN h2ws_conn c USING (conn_id);

CREATE OR REPLACE TEMP VIEW h2ws_messages AS
SELECT m.*,
       CASE WHEN m.stream_id IS NULL THEN 'HTTP/1.1' ELSE 'HTTP/2' END AS over,
       coalesce(m.stream_id, -1 - m.exchange) AS skey,
       epoch_us(m.ts_first) AS t_first,
       epoch_us(coalesce(m.ts_last, m.ts_first)) AS t_last
FROM messages m;

-- The open-stream count of every connection as a step function: one row per instant where it
-- changes (plus the connection's first and last byte), valid until t_next.  Opens and closes
-- at the same instant net out, so back-to-back streams never count as concurrent.
CREATE OR REPLACE TEMP VIEW h2ws_steps AS
WITH ev AS (
    SELECT conn_id, t_open AS t, 1 AS d, CAST(kind = 'websocket' AS INTEGER) AS dw
    FROM h2ws_streams WHERE t_open IS NOT NULL AND kind IS NOT NULL
    UNION ALL
    SELECT conn_id, t_close, -1, -CAST(kind = 'websocket' AS INTEGER)
    FROM h2ws_streams WHERE t_open IS NOT NULL AND kind IS NOT NULL
    UNION ALL SELECT conn_id, t_start, 0, 0 FROM h2ws_conn WHERE t_start IS NOT NULL
    UNION ALL SELECT conn_id, t_end, 0, 0 FROM h2ws_conn WHERE t_end IS NOT NULL
), agg AS (
    SELECT conn_id, t, sum(d) AS d, sum(dw) AS dw FROM ev GROUP BY conn_id, t
)
SELECT conn_id, t,
       CAST(sum(d) OVER w AS BIGINT) AS open_streams,
       CAST(sum(dw) OVER w AS BIGINT) AS open_websockets,
       lead(t) OVER (PARTITION BY conn_id ORDER BY t) AS t_next
FROM agg
WINDOW w AS (PARTITION BY conn_id ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- Request/reply pairs on WebSocket streams, matched by payload hash and occurrence: the k-th
-- client message with a given payload and the k-th server message with the same payload (an
-- echo), and the k-th ping with the k-th pong carrying its payload (RFC 6455 §5.5.3).  Plus the
-- request/response pairs HTTP has anyway: request headers -> response headers.
CREATE OR REPLACE TEMP VIEW h2ws_pairs AS
WITH m0 AS (
    SELECT conn_id, stream_id, exchange, skey, direction, index, opcode, t_first, t_last,
           hash(sha256) AS h, hash(conn_id, skey, direction, opcode, sha256) AS g
    FROM h2ws_messages
    WHERE opcode IN ('text', 'binary', 'ping', 'pong') AND sha256 IS NOT NULL
), dup AS (
    -- payloads sent more than once on a stream in one direction: only these need numbering
    -- (a window over every message costs half again as much).  Found by one 64-bit hash of
    -- the whole key: a collision only numbers a few more messages, by their real keys.
    SELECT g FROM m0 GROUP BY g HAVING count(*) > 1
), m AS (
    SELECT m0.*, 1 AS k FROM m0 ANTI JOIN dup USING (g)
    UNION ALL
    SELECT m0.*,
           row_number() OVER (PARTITION BY conn_id, skey, direction, opcode, h ORDER BY index)
    FROM m0 SEMI JOIN dup USING (g)
), q AS (
    SELECT * FROM m WHERE opcode = 'ping' OR (opcode IN ('text', 'binary') AND direction = 'c2s')
), r AS (
    SELECT *, CASE opcode WHEN 'pong' THEN 'ping' ELSE opcode END AS answers FROM m
    WHERE opcode = 'pong' OR (opcode IN ('text', 'binary') AND direction = 's2c')
), ws AS (
    SELECT CASE q.opcode WHEN 'ping' THEN 'ping/pong' ELSE 'echo' END AS pair,
           q.conn_id, q.stream_id, q.exchange, q.direction AS request_direction,
           q.index AS request_index, q.t_last AS t_request, r.t_first AS t_reply_first,
           r.t_last AS t_reply
    FROM q JOIN r
      ON r.conn_id = q.conn_id AND r.skey = q.skey AND r.h = q.h AND r.k = q.k
     AND r.direction <> q.direction AND r.answers = q.opcode
    WHERE r.t_last >= q.t_last
)
SELECT * FROM ws
UNION ALL
SELECT CASE kind WHEN 'websocket' THEN 'websocket open' ELSE 'http response' END,
       conn_id, stream_id, exchange, 'c2s', NULL, t_open, epoch_us(ts_response),
       epoch_us(ts_response)
FROM h2ws_streams WHERE ts_response IS NOT NULL AND t_open IS NOT NULL;

-- Gaps between consecutive data messages of one stream and direction.
CREATE OR REPLACE TEMP VIEW h2ws_gaps AS
SELECT conn_id, stream_id, exchange, skey, direction, index, t_first,
       lag(t_first) OVER w AS t_prev,
       t_first - lag(t_first) OVER w AS gap_us
FROM h2ws_messages
WHERE opcode IN ('text', 'binary')
WINDOW w AS (PARTITION BY conn_id, skey, direction ORDER BY index);
