"""When did HTTP/2 flow control hold a stream's DATA back, and for how long?

One job: :func:`flow_control_stalls`, a replay of every stream's and connection's send window
(RFC 9113 §6.9) from the frames table.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa

from h2ws.analysis.metrics.load import Tables, query


def _running_sums(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` within runs of equal ``groups`` (rows sorted by group)."""
    if len(values) == 0:
        return values.copy()
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    before = (total - values)[starts]
    run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    result: np.ndarray = total - before[run]
    return result


def _next_in_group(groups: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For every row, the position of the next row after it with ``mask`` set in the same run
    of ``groups`` (rows sorted by group), or -1."""
    n = len(mask)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    candidates = np.where(mask, np.arange(n), n)
    nearest = np.minimum.accumulate(candidates[::-1])[::-1]  # at or after each row
    after = np.r_[nearest[1:], n]
    found = after < n
    found[found] = groups[after[found]] == groups[found]
    result: np.ndarray = np.where(found, after, -1)
    return result


def flow_control_stalls(db: Tables, threshold_bytes: int = 0) -> pd.DataFrame:
    """When a stream's DATA was blocked by flow control, and how long until a WINDOW_UPDATE.

    The send windows of every stream and of the connection are replayed in capture order (RFC
    9113 §6.9: initial stream window from the receiver's SETTINGS_INITIAL_WINDOW_SIZE, its last
    value; connection window 65,535; minus DATA lengths, plus WINDOW_UPDATEs).  A stall starts at
    a DATA frame without END_STREAM after which the stream's or the connection's window is at
    most ``threshold_bytes``, and ends at the WINDOW_UPDATE that reopened the limiting window —
    counted only when the stream's next DATA frame came after it (it had been waiting).  One row
    per stall: ``t_s`` (since the connection's first byte), ``limited_by`` (``stream``,
    ``connection`` or ``both``), ``window_bytes`` left, ``waited_ms``.

    Measured where the capture was taken: near the sender this is the sender's window exactly;
    near the receiver WINDOW_UPDATEs are seen before they arrive and DATA after it left, so
    windows look larger and stalls are a lower bound.

    How: DuckDB selects and sorts the DATA and WINDOW_UPDATE frames once, by connection,
    direction and order; NumPy replays the windows with vectorised running sums (the stream
    windows after a stable sort by stream) and finds the updates that released each block.
    Two SQL window functions over 10 M frames cost three times as much.
    """
    thr = int(threshold_bytes)
    events = db.sql(
        """
        WITH cfg AS (
            SELECT conn_id, row_number() OVER (ORDER BY conn_id) AS cid,
                   coalesce(TRY_CAST(json_extract_string(settings_s2c, '$.INITIAL_WINDOW_SIZE')
                                     AS BIGINT), 65535) AS init_c2s,
                   coalesce(TRY_CAST(json_extract_string(settings_c2s, '$.INITIAL_WINDOW_SIZE')
                                     AS BIGINT), 65535) AS init_s2c
            FROM (SELECT DISTINCT conn_id FROM frames)
            LEFT JOIN h2ws_conn USING (conn_id)
        ), ev AS (
            -- up: the DATA flows client -> server (a WINDOW_UPDATE for it travels back);
            -- what: 0 WINDOW_UPDATE, 1 DATA, 2 DATA with END_STREAM
            SELECT cfg.cid, f.index, f.direction = 'c2s' AS up, f.stream_id,
                   CAST(CASE WHEN coalesce(f.flags, '') LIKE '%END_STREAM%' THEN 2 ELSE 1 END
                        AS TINYINT) AS what,
                   -f.length AS delta,
                   CASE WHEN f.direction = 'c2s' THEN cfg.init_c2s ELSE cfg.init_s2c END
                       AS init,
                   epoch_us(f.ts) AS t
            FROM frames f JOIN cfg USING (conn_id) WHERE f.type = 'DATA'
            UNION ALL
            SELECT cfg.cid, f.index, f.direction = 's2c', f.stream_id, CAST(0 AS TINYINT),
                   f.window_increment,
                   CASE WHEN f.direction = 's2c' THEN cfg.init_c2s ELSE cfg.init_s2c END,
                   epoch_us(f.ts)
            FROM frames f JOIN cfg USING (conn_id)
            WHERE f.type = 'WINDOW_UPDATE' AND f.window_increment > 0
        )
        SELECT cid, up, index, stream_id, what, delta, init, t FROM ev ORDER BY cid, up, index
        """
    ).to_arrow_table()
    col = {name: events[name].to_numpy(zero_copy_only=False) for name in events.column_names}
    up = col["up"].astype(np.int64)
    stream, what, delta, index = col["stream_id"], col["what"], col["delta"], col["index"]
    flow = col["cid"] * 2 + up  # one connection and direction; rows sorted by flow, index
    conn_window = 65_535 + _running_sums(flow, np.where((what > 0) | (stream == 0), delta, 0))
    key = flow * (1 << 32) + stream
    by_stream = np.argsort(key, kind="stable")  # stream by stream, frame order kept
    skey = key[by_stream]
    stream_sum = np.empty_like(delta)
    stream_sum[by_stream] = _running_sums(skey, delta[by_stream])
    stream_window = col["init"] + stream_sum
    # the next stream WINDOW_UPDATE and DATA frame of each row's stream, the next
    # connection-level WINDOW_UPDATE of its flow (positions in flow order, or -1)
    in_stream = np.empty(len(key), dtype=np.int64)
    in_stream[by_stream] = np.arange(len(key))
    s_next = _next_in_group(skey, what[by_stream] == 0)
    d_next = _next_in_group(skey, what[by_stream] > 0)
    s_pos = np.where(s_next >= 0, by_stream[s_next], -1)[in_stream]
    d_pos = np.where(d_next >= 0, by_stream[d_next], -1)[in_stream]
    c_pos = _next_in_group(flow, (what == 0) & (stream == 0))

    by_stream_limit = stream_window <= thr
    by_conn_limit = conn_window <= thr
    rows = np.flatnonzero((what == 1) & (stream > 0) & (by_stream_limit | by_conn_limit))
    limit_s, limit_c = by_stream_limit[rows], by_conn_limit[rows]
    s_at, c_at, d_at = s_pos[rows], c_pos[rows], d_pos[rows]
    # the update that released the block: of the limiting window, the later of both if both
    u_pos = np.where(
        limit_s & limit_c,
        np.where((s_at < 0) | (c_at < 0), -1, np.maximum(s_at, c_at)),
        np.where(limit_s, s_at, c_at),
    )
    waited = (u_pos >= 0) & (d_at >= 0)
    waited[waited] = index[d_at[waited]] > index[u_pos[waited]]
    rows, u_pos = rows[waited], u_pos[waited]
    limit_s, limit_c = limit_s[waited], limit_c[waited]
    stalls = pa.table(
        {
            "cid": col["cid"][rows],
            "direction": np.where(up[rows] == 1, "c2s", "s2c"),
            "stream_id": stream[rows],
            "index": index[rows],
            "t": col["t"][rows],
            "u_t": col["t"][u_pos],
            "limited_by": np.where(
                limit_s & limit_c, "both", np.where(limit_s, "stream", "connection")
            ),
            "window_bytes": np.minimum(stream_window[rows], conn_window[rows]),
        }
    )
    name = f"h2ws_stalls_{uuid.uuid4().hex}"
    db.register(name, stalls)
    try:
        return query(
            db,
            f"""
            WITH cfg AS (
                SELECT conn_id, row_number() OVER (ORDER BY conn_id) AS cid
                FROM (SELECT DISTINCT conn_id FROM frames)
            )
            SELECT cfg.conn_id, st.direction, st.stream_id, s.kind,
                   CAST(make_timestamp(st.t) AS TIMESTAMPTZ) AS ts_blocked,
                   CAST(make_timestamp(st.u_t) AS TIMESTAMPTZ) AS ts_unblocked,
                   (st.t - c.t_start) / 1e6 AS t_s,
                   (st.u_t - st.t) / 1e3 AS waited_ms,
                   st.limited_by, st.window_bytes
            FROM {name} st
            JOIN cfg USING (cid)
            LEFT JOIN h2ws_streams s ON s.conn_id = cfg.conn_id AND s.stream_id = st.stream_id
            LEFT JOIN h2ws_conn c ON c.conn_id = cfg.conn_id
            ORDER BY cfg.conn_id, st.index
            """,
        )
    finally:
        db.unregister(name)


__all__ = [
    "flow_control_stalls",
]
