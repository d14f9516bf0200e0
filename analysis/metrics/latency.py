"""How long did replies take, and how far apart did messages arrive?

One job: round trips wherever a request and its reply pair up (echoes, ping/pong of RFC
6455 §5.5.2 and §5.5.3, HTTP responses, WebSocket opens; :func:`round_trip_times`), message
inter-arrival gaps (:func:`message_interarrival`) and their distributions (:func:`latency_cdf`),
all from the shared views ``h2ws_pairs`` and ``h2ws_gaps``.
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, quantile_fractions, query


def round_trip_times(db: Tables) -> pd.DataFrame:
    """Round-trip times wherever requests and replies can be paired.

    ``pair``: ``echo`` (a client message and the server message with the same payload, the
    k-th with the k-th), ``ping/pong`` (either side's ping and the pong carrying its payload),
    ``http response`` and ``websocket open`` (request headers → response headers).
    ``rtt_ms`` runs from the request's last byte to the reply's last byte, both as seen where
    the capture was taken.
    """
    return query(
        db,
        """
        SELECT pair, conn_id, stream_id, exchange, request_direction, request_index,
               CAST(make_timestamp(t_request) AS TIMESTAMPTZ) AS ts,
               (t_reply - t_request) / 1e3 AS rtt_ms
        FROM h2ws_pairs
        ORDER BY conn_id, ts, pair
        """,
    )


def message_interarrival(db: Tables) -> pd.DataFrame:
    """Time between consecutive data messages of each WebSocket and direction.

    One row per stream and direction: ``messages``, and the ``median_ms``, ``p90_ms``,
    ``p99_ms`` and ``max_ms`` of the gaps between their first bytes.
    """
    return query(
        db,
        """
        SELECT conn_id, stream_id, exchange, direction, count(*) AS messages,
               median(gap_us) / 1e3 AS median_ms, quantile_cont(gap_us, 0.9) / 1e3 AS p90_ms,
               quantile_cont(gap_us, 0.99) / 1e3 AS p99_ms, max(gap_us) / 1e3 AS max_ms
        FROM h2ws_gaps
        GROUP BY conn_id, stream_id, exchange, direction
        ORDER BY conn_id, stream_id, exchange, direction
        """,
    )


def latency_cdf(db: Tables, points: int = 101) -> pd.DataFrame:
    """The distributions of every latency, as ``points`` quantiles per ``measure``: each pair
    kind of :func:`round_trip_times` (``echo``, ``ping/pong``, ``http response``,
    ``websocket open``) and ``inter-arrival c2s`` / ``s2c``; plot ``ms`` against ``fraction``."""
    fr = quantile_fractions(points)
    return query(
        db,
        f"""
        WITH x AS (
            SELECT pair AS measure, (t_reply - t_request) / 1e3 AS ms FROM h2ws_pairs
            UNION ALL
            SELECT 'inter-arrival ' || direction, gap_us / 1e3 FROM h2ws_gaps
            WHERE gap_us IS NOT NULL
        )
        SELECT measure, count(*) AS samples,
               unnest({fr}) AS fraction, unnest(quantile_disc(ms, {fr})) AS ms
        FROM x GROUP BY measure
        ORDER BY measure, fraction
        """,
    )


__all__ = [
    "latency_cdf",
    "message_interarrival",
    "round_trip_times",
]
