"""How well multiplexing and TCP-connection sharing work, computed from the tables.

One module per question of the report; each metric is one function named for the question it
answers, takes a DuckDB connection on which the five tables of :mod:`h2ws.analysis.records` are
views, and returns a pandas DataFrame.  Import from the modules themselves:

- :mod:`~h2ws.analysis.metrics.load` — ``connect`` (an output directory), ``from_frames``
  (DataFrames), the shared views of ``sql/views.sql``, ``materialized``;
- :mod:`~h2ws.analysis.metrics.sharing` — streams per connection and coalescing, WebSocket
  sharing, what HTTP/1.1 would have needed (``rfc8441_savings``);
- :mod:`~h2ws.analysis.metrics.concurrency` — open streams over time, peaks and means;
- :mod:`~h2ws.analysis.metrics.setup_time` — WebSocket set-up latency;
- :mod:`~h2ws.analysis.metrics.interleaving` — frame interleaving and fairness;
- :mod:`~h2ws.analysis.metrics.messages` — message counts, sizes, compression;
- :mod:`~h2ws.analysis.metrics.latency` — round trips and inter-arrival gaps;
- :mod:`~h2ws.analysis.metrics.flow_control` — the flow-control replay (stalls);
- :mod:`~h2ws.analysis.metrics.head_of_line` — head-of-line exposure;
- :mod:`~h2ws.analysis.metrics.closes` — how WebSockets and streams ended;
- :mod:`~h2ws.analysis.metrics.fallback` — RFC 8441 or HTTP/1.1 fallback;
- :mod:`~h2ws.analysis.metrics.timeline` — rows for the per-connection plots;
- :mod:`~h2ws.analysis.metrics.compute` — ``compute_all`` and ``PER_CONNECTION``;
- :mod:`~h2ws.analysis.metrics.overview` — the overview from its rule table, the headline.

Conventions of the outputs: durations in seconds (``_s``), latencies in milliseconds (``_ms``),
sizes in bytes; ``t_s`` is seconds since the connection's first byte; ``over`` is ``HTTP/2``
(RFC 8441) or ``HTTP/1.1`` (RFC 6455 Upgrade).
"""
