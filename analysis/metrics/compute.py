"""Every metric the report shows, computed at once; and which of them partition by connection.

One job: :func:`compute_all` (the shared request/reply pairs and message gaps materialised once,
:func:`~h2ws.analysis.metrics.load.materialized`) and :data:`PER_CONNECTION`, the metrics whose
rows are connections, streams or events of one connection.  Because every over-all number
(:func:`~h2ws.analysis.metrics.overview.overview`) is an aggregate of such rows, tables
partitioned by ``conn_id`` give exactly the same answers, which is how captures that outgrow
one machine are analysed (``docs/scale.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from h2ws.analysis.metrics.closes import count_close_causes, stream_endings, websocket_closes
from h2ws.analysis.metrics.concurrency import concurrency_per_connection
from h2ws.analysis.metrics.fallback import connect_protocol_support, websocket_transport_choice
from h2ws.analysis.metrics.flow_control import flow_control_stalls
from h2ws.analysis.metrics.head_of_line import (
    LARGE_RESPONSE_BYTES,
    head_of_line_exposure,
    large_transfers,
)
from h2ws.analysis.metrics.interleaving import fairness_per_connection, frame_interleaving
from h2ws.analysis.metrics.latency import latency_cdf, message_interarrival
from h2ws.analysis.metrics.load import Tables, materialized
from h2ws.analysis.metrics.messages import message_size_cdf, message_stats
from h2ws.analysis.metrics.setup_time import websocket_setup
from h2ws.analysis.metrics.sharing import (
    rfc8441_savings,
    streams_per_connection,
    websocket_sharing,
)

#: The metrics whose rows are connections, streams or events of one connection: computed on
#: tables partitioned by conn_id and concatenated, they equal the whole-table result.
PER_CONNECTION: dict[str, Callable[[Tables], pd.DataFrame]] = {
    "streams_per_connection": streams_per_connection,
    "concurrency_per_connection": concurrency_per_connection,
    "websocket_sharing": websocket_sharing,
    "rfc8441_savings": rfc8441_savings,
    "websocket_setup": websocket_setup,
    "frame_interleaving": frame_interleaving,
    "fairness_per_connection": fairness_per_connection,
    "message_interarrival": message_interarrival,
    "flow_control_stalls": flow_control_stalls,
    "head_of_line_exposure": head_of_line_exposure,
    "websocket_closes": websocket_closes,
    "stream_endings": stream_endings,
}


def compute_all(db: Tables, large_bytes: int = LARGE_RESPONSE_BYTES) -> dict[str, pd.DataFrame]:
    """Every metric the report shows, by name (the per-connection ones, the CDFs, message
    stats and the transport verdicts);
    :func:`~h2ws.analysis.metrics.overview.overview` summarises them."""
    results: dict[str, pd.DataFrame] = {}
    with materialized(db):
        for name, metric in PER_CONNECTION.items():
            if name == "head_of_line_exposure":
                results[name] = head_of_line_exposure(db, large_bytes)
            else:
                results[name] = metric(db)
        results["close_cause_counts"] = count_close_causes(results["websocket_closes"])
        results["message_stats"] = message_stats(db)
        results["message_size_cdf"] = message_size_cdf(db)
        results["latency_cdf"] = latency_cdf(db)
        results["websocket_transport_choice"] = websocket_transport_choice(db)
        results["connect_protocol_support"] = connect_protocol_support(db)
        results["large_transfers"] = large_transfers(db, large_bytes)
    return results


__all__ = ["PER_CONNECTION", "compute_all"]
