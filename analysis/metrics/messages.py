"""How many WebSocket messages of which sizes went each way?

One job: message counts, sizes and compression per transport, direction and opcode
(:func:`message_stats`; RFC 7692 permessage-deflate shows as ``wire_ratio``) and the
message-size distribution (:func:`message_size_cdf`).
"""

from __future__ import annotations

import pandas as pd

from h2ws.analysis.metrics.load import Tables, quantile_fractions, query


def message_stats(db: Tables) -> pd.DataFrame:
    """Message counts and sizes per transport, direction and opcode.

    ``length`` is the payload the application sees (inflated); ``wire_ratio`` = wire bytes /
    application bytes (below 1 when permessage-deflate helped).
    """
    return query(
        db,
        """
        SELECT over, direction, opcode, count(*) AS messages,
               CAST(sum(length) AS BIGINT) AS bytes,
               median(length) AS median_bytes, quantile_cont(length, 0.95) AS p95_bytes,
               max(length) AS max_bytes, avg(CAST(compressed AS INTEGER)) AS compressed_share,
               sum(wire_length) / nullif(sum(length), 0) AS wire_ratio,
               avg(fragments) AS mean_fragments
        FROM h2ws_messages
        GROUP BY over, direction, opcode
        ORDER BY over, direction, opcode
        """,
    )


def message_size_cdf(db: Tables, points: int = 101) -> pd.DataFrame:
    """The distribution of data-message sizes, as ``points`` quantiles per transport and
    direction: plot ``length_bytes`` against ``fraction``.  Quantiles, not rows, so that a
    CDF of 10 M messages is 100 points."""
    fr = quantile_fractions(points)
    return query(
        db,
        f"""
        SELECT over, direction, count(*) AS messages,
               unnest({fr}) AS fraction, unnest(quantile_disc(length, {fr})) AS length_bytes
        FROM h2ws_messages WHERE opcode IN ('text', 'binary')
        GROUP BY over, direction
        ORDER BY over, direction, fraction
        """,
    )


__all__ = [
    "message_size_cdf",
    "message_stats",
]
