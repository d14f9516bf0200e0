"""The report's headline numbers from a table of rules, and its answer in words.

One job: :func:`overview` turns :func:`~h2ws.analysis.metrics.compute.compute_all`'s results
into (``section``, ``metric``, ``value``, ``unit``) rows, and :func:`headline` turns those rows
into a sentence and a few big numbers.  Each row is one :class:`Rule` of :data:`RULES` (which
result it reads, its section, wording and unit, and the function that computes its value), so
a new number is one new line in the table, not a new branch in a long function.

Over-all values are aggregates of per-connection rows — sums, and means weighted by time
(stream-seconds / connection-seconds), never means of means — so they are the same whether the
per-connection rows came from one DuckDB query or from many partitions (Dask,
``docs/scale.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from h2ws.analysis.metrics.fallback import TRANSPORT_VERDICTS
from h2ws.analysis.metrics.head_of_line import head_of_line_summary

Frame = pd.DataFrame


@dataclass(frozen=True)
class Rule:
    """One overview row: computed by ``value`` from the result named ``source`` (after that
    result's :data:`PREPARE` step, if it has one); left out when ``source`` is missing."""

    source: str
    section: str
    metric: str
    unit: str
    value: Callable[[Frame], Any]


def _median(frame: Frame, column: str) -> float | None:
    values = frame[column].dropna()
    return float(values.median()) if len(values) else None


def _quantile(cdf: Frame, measure: str, fraction: float) -> float | None:
    rows = cdf[(cdf["measure"] == measure) & ((cdf["fraction"] - fraction).abs() < 1e-9)]
    return float(rows["ms"].iloc[0]) if len(rows) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _h2(frame: Frame) -> Frame:
    return frame[frame["http_version"].isin(["h2", "h2c"])]


def _over(frame: Frame, over: str) -> Frame:
    return frame[frame["over"] == over]


def _mean_if_any(frame: Frame, column: str) -> float | None:
    return float(frame[column].mean()) if len(frame) else None


def _time_weighted(cpc: Frame, column: str) -> float | None:
    h2 = _h2(cpc)
    return _ratio(h2[column].sum(), h2["duration_s"].sum())


def _multiplexed_share(cpc: Frame) -> float | None:
    h2 = _h2(cpc)
    return _ratio(
        (h2["multiplexed_share"].fillna(0) * h2["duration_s"]).sum(), h2["duration_s"].sum()
    )


def _lifetime_share(sharing: Frame, column: str) -> float | None:
    h2 = _over(sharing, "HTTP/2")
    return _ratio(h2[column].sum(), h2["lifetime_s"].sum())


def _hol(summary: Frame, measure: str, column: str) -> float | None:
    if measure not in summary.index:
        return None
    value: Any = summary.loc[measure, column]
    return float(value)


def _with_websockets(frame: Frame) -> Frame:
    return frame[frame["websockets"] > 0]


def _first_on_connection(frame: Frame) -> Frame:
    return frame[frame["first_on_connection"].astype(bool)]


def _count_equal(frame: Frame, column: str, value: str) -> int:
    return int((frame[column] == value).sum())


def _flagged(closes: Frame, flag: str) -> int:
    return int(closes["misbehaviours"].fillna("").str.contains(flag).sum())


def _switch_rate(inter: Frame) -> float | None:
    both = inter[inter["direction"] == "both"]
    return _ratio(both["switches"].sum(), (both["frames"] - 1).clip(lower=0).sum())


def _mean_jain(fair: Frame) -> float | None:
    weights = fair["contended_bins"].sum()
    return _ratio((fair["mean_jain"].fillna(0) * fair["contended_bins"]).sum(), weights)


#: Per result, what its rules read instead of the result itself (computed once).
PREPARE: dict[str, Callable[[Frame], Frame]] = {
    "head_of_line_exposure": lambda hol: head_of_line_summary(hol).set_index("measure"),
}

_HOL_WHAT = "round trip, on connections that carried a large HTTP body"
_CLOSE_FLAGS = (
    "close_without_end_stream",
    "rst_after_close",
    "end_stream_without_close",
    "data_after_close",
)
_LATENCY = ("echo", "ping/pong", "websocket open", "http response")

#: The overview's rows, in order (then grouped by :data:`SECTIONS`, keeping this order within
#: a section).
RULES: list[Rule] = [
    # streams_per_connection
    Rule("streams_per_connection", "connections", "TCP connections", "connections", len),
    Rule("streams_per_connection", "connections", "HTTP/2 connections", "connections",
         lambda f: len(_h2(f))),
    Rule("streams_per_connection", "connections", "HTTP/1.1 connections", "connections",
         lambda f: (f["http_version"] == "http/1.1").sum()),
    Rule("streams_per_connection", "streams", "streams (all kinds)", "streams",
         lambda f: f["streams"].sum()),
    Rule("streams_per_connection", "streams", "WebSocket attempts", "streams",
         lambda f: f["websockets"].sum()),
    Rule("streams_per_connection", "streams", "HTTP requests", "streams",
         lambda f: f["http"].sum()),
    Rule("streams_per_connection", "streams", "other streams (CONNECT tunnels, pushes)",
         "streams", lambda f: f["other"].sum()),
    Rule("streams_per_connection", "connections",
         "connections whose start was not captured (recognised from their middle)",
         "connections", lambda f: f["start_captured"].eq(False).sum()),
    Rule("streams_per_connection", "streams",
         "streams whose opening was not captured (recognised from their bytes)", "streams",
         lambda f: f["inferred"].sum()),
    Rule("streams_per_connection", "streams", "mean streams per HTTP/2 connection", "streams",
         lambda f: _mean_if_any(_h2(f), "streams")),
    Rule("streams_per_connection", "streams", "most streams on one connection", "streams",
         lambda f: f["streams"].max()),
    Rule("streams_per_connection", "streams",
         "connections serving several :authority (coalescing)", "connections",
         lambda f: (f["authorities"] > 1).sum()),
    Rule("streams_per_connection", "sharing",
         "connections with WebSockets that also carried HTTP requests", "fraction",
         lambda f: _mean_if_any(_with_websockets(f), "mixed")),
    Rule("streams_per_connection", "sharing",
         "HTTP/2 connections with WebSockets that also carried HTTP requests", "fraction",
         lambda f: _mean_if_any(_with_websockets(_h2(f)), "mixed")),
    # concurrency_per_connection
    Rule("concurrency_per_connection", "concurrency", "peak open streams on one connection",
         "streams", lambda f: f["peak_streams"].max()),
    Rule("concurrency_per_connection", "concurrency", "peak open WebSockets on one connection",
         "streams", lambda f: f["peak_websockets"].max()),
    Rule("concurrency_per_connection", "concurrency",
         "time-weighted mean open streams per HTTP/2 connection", "streams",
         lambda f: _time_weighted(f, "stream_seconds")),
    Rule("concurrency_per_connection", "concurrency",
         "time-weighted mean open WebSockets per HTTP/2 connection", "streams",
         lambda f: _time_weighted(f, "websocket_seconds")),
    Rule("concurrency_per_connection", "concurrency",
         "share of HTTP/2 connection time with ≥ 2 streams open", "fraction",
         _multiplexed_share),
    # websocket_sharing
    Rule("websocket_sharing", "sharing", "RFC 8441 WebSockets", "streams",
         lambda f: len(_over(f, "HTTP/2"))),
    Rule("websocket_sharing", "sharing",
         "share of RFC 8441 WebSocket lifetime with other streams open", "fraction",
         lambda f: _lifetime_share(f, "shared_s")),
    Rule("websocket_sharing", "sharing",
         "share of RFC 8441 WebSocket lifetime with HTTP requests open", "fraction",
         lambda f: _lifetime_share(f, "shared_with_http_s")),
    # rfc8441_savings
    Rule("rfc8441_savings", "HTTP/1.1 cost", "TCP connections the RFC 8441 WebSockets rode on",
         "connections", len),
    Rule("rfc8441_savings", "HTTP/1.1 cost", "TCP connections HTTP/1.1 would have needed",
         "connections", lambda f: f["http1_connections"].sum()),
    Rule("rfc8441_savings", "HTTP/1.1 cost", "TCP handshakes avoided", "handshakes",
         lambda f: f["tcp_handshakes_avoided"].sum()),
    Rule("rfc8441_savings", "HTTP/1.1 cost", "TLS handshakes avoided", "handshakes",
         lambda f: f["tls_handshakes_avoided"].sum()),
    Rule("rfc8441_savings", "HTTP/1.1 cost", "handshake round trips avoided", "round trips",
         lambda f: f["round_trips_avoided"].sum()),
    Rule("rfc8441_savings", "HTTP/1.1 cost", "setup time avoided (round trips x RTT estimate)",
         "ms", lambda f: f["setup_time_avoided_ms"].sum()),
    # websocket_setup
    Rule("websocket_setup", "HTTP/1.1 cost", "HTTP/1.1 WebSockets seen", "streams",
         lambda f: len(_over(f, "HTTP/1.1"))),
    Rule("websocket_setup", "HTTP/1.1 cost", "TCP connections they used", "connections",
         lambda f: _over(f, "HTTP/1.1")["conn_id"].nunique()),
    Rule("websocket_setup", "HTTP/1.1 cost", "median RFC 8441 WebSocket open (CONNECT → 200)",
         "ms", lambda f: _median(_over(f, "HTTP/2"), "handshake_ms")),
    Rule("websocket_setup", "HTTP/1.1 cost", "median HTTP/1.1 WebSocket open (Upgrade → 101)",
         "ms", lambda f: _median(_over(f, "HTTP/1.1"), "handshake_ms")),
    Rule("websocket_setup", "HTTP/1.1 cost",
         "median HTTP/1.1 WebSocket open from its connection's first byte", "ms",
         lambda f: _median(_first_on_connection(_over(f, "HTTP/1.1")),
                           "from_connection_start_ms")),
    # interleaving
    Rule("frame_interleaving", "interleaving", "consecutive HTTP/2 frames on different streams",
         "fraction", _switch_rate),
    Rule("fairness_per_connection", "interleaving",
         "mean Jain's index where streams competed (1 = equal shares)", "index", _mean_jain),
    # latency_cdf
    *(
        Rule("latency_cdf", "latency", f"{q} {measure} round trip", "ms",
             partial(_quantile, measure=measure, fraction=fraction))
        for measure in _LATENCY
        for q, fraction in (("median", 0.5), ("p95", 0.95))
    ),
    *(
        Rule("latency_cdf", "latency", f"median message inter-arrival {direction}", "ms",
             partial(_quantile, measure=f"inter-arrival {direction}", fraction=0.5))
        for direction in ("c2s", "s2c")
    ),
    # flow_control_stalls
    Rule("flow_control_stalls", "stalls", "flow-control stalls", "stalls", len),
    Rule("flow_control_stalls", "stalls", "streams that stalled", "streams",
         lambda f: len(f[["conn_id", "stream_id"]].drop_duplicates())),
    Rule("flow_control_stalls", "stalls", "total time streams waited for WINDOW_UPDATE", "ms",
         lambda f: f["waited_ms"].sum()),
    Rule("flow_control_stalls", "stalls", "longest wait for WINDOW_UPDATE", "ms",
         lambda f: f["waited_ms"].max() if len(f) else None),
    # head_of_line_exposure (through PREPARE: head_of_line_summary by measure)
    *(
        rule
        for measure in ("echo", "ping/pong")
        for rule in (
            Rule("head_of_line_exposure", "head-of-line",
                 f"{measure} {_HOL_WHAT}: while it was in flight", "ms",
                 partial(_hol, measure=measure, column="median_exposed_ms")),
            Rule("head_of_line_exposure", "head-of-line",
                 f"{measure} {_HOL_WHAT}: otherwise (same connections)", "ms",
                 partial(_hol, measure=measure, column="median_unexposed_ms")),
            Rule("head_of_line_exposure", "head-of-line",
                 f"{measure} round trip slowdown while a large body was in flight "
                 "(median over those connections)", "x",
                 partial(_hol, measure=measure, column="slowdown")),
        )
    ),
    # websocket_closes
    Rule("websocket_closes", "closes", "WebSockets with a close handshake both ways", "streams",
         lambda f: (f["close_handshake"] == "both").sum()),
    Rule("websocket_closes", "closes", "WebSockets without any close frame", "streams",
         lambda f: (f["close_handshake"] == "none").sum()),
    *(
        Rule("websocket_closes", "closes", f"WebSockets with {flag}", "streams",
             partial(_flagged, flag=flag))
        for flag in _CLOSE_FLAGS
    ),
    # fallback
    *(
        Rule("websocket_transport_choice", "fallback", f"WebSockets: {verdict}", "streams",
             partial(_count_equal, column="verdict", value=verdict))
        for verdict in TRANSPORT_VERDICTS
    ),
    Rule("connect_protocol_support", "fallback",
         "HTTP/2 connections whose server never advertised RFC 8441", "connections",
         lambda f: (~f["enable_connect_protocol"].astype(bool)
                    & f["start_captured"].astype(bool)).sum()),
    Rule("connect_protocol_support", "fallback",
         "HTTP/2 connections whose RFC 8441 setting is unknown (start not captured)",
         "connections",
         lambda f: (~f["enable_connect_protocol"].astype(bool)
                    & ~f["start_captured"].astype(bool)).sum()),
]  # fmt: skip

#: The order of the overview's sections.
SECTIONS = [
    "connections",
    "streams",
    "concurrency",
    "sharing",
    "HTTP/1.1 cost",
    "interleaving",
    "latency",
    "stalls",
    "head-of-line",
    "closes",
    "fallback",
]


def overview(results: Mapping[str, pd.DataFrame], rules: list[Rule] | None = None) -> pd.DataFrame:
    """The headline numbers over all connections, as (``section``, ``metric``, ``value``,
    ``unit``) rows, from :func:`~h2ws.analysis.metrics.compute.compute_all`'s results: one row
    per rule of ``rules`` (default :data:`RULES`) whose result is present.

    ``value`` is NaN where a number does not exist (e.g. no HTTP/1.1 WebSocket to measure).
    """
    prepared: dict[str, Frame] = {}
    rows: list[tuple[str, str, float, str]] = []
    for rule in RULES if rules is None else rules:
        if rule.source not in results:
            continue
        if rule.source not in prepared:
            prepare = PREPARE.get(rule.source)
            frame = results[rule.source]
            prepared[rule.source] = prepare(frame) if prepare else frame
        value = rule.value(prepared[rule.source])
        number = float("nan") if value is None or pd.isna(value) else float(value)
        rows.append((rule.section, rule.metric, number, rule.unit))
    out = pd.DataFrame(rows, columns=["section", "metric", "value", "unit"])
    order = {name: i for i, name in enumerate(dict.fromkeys(SECTIONS + list(out["section"])))}
    return (
        out.assign(_order=out["section"].map(order))
        .sort_values("_order", kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _plural(n: float, one: str, many: str | None = None) -> str:
    count = round(n)
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def headline(overview_rows: pd.DataFrame) -> tuple[str, list[tuple[str, str]]]:
    """The report's answer in words and a few big numbers, from :func:`overview`'s rows: what
    the HTTP/2 connections carried, what HTTP/1.1 would have needed, and WebSocket set-up on
    each transport.  Returns ``(sentence, [(value, caption), …])``; numbers that do not exist in
    these tables are left out, never shown as 0."""
    values = dict(zip(overview_rows["metric"], overview_rows["value"], strict=False))

    def get(metric: str) -> float | None:
        v = values.get(metric)
        return None if v is None or pd.isna(v) else float(v)

    h2 = get("HTTP/2 connections") or 0.0
    ws = get("RFC 8441 WebSockets") or 0.0
    requests = get("HTTP requests") or 0.0
    needed = get("TCP connections HTTP/1.1 would have needed")
    rode = get("TCP connections the RFC 8441 WebSockets rode on")
    tls_avoided = get("TLS handshakes avoided")
    open_h2 = get("median RFC 8441 WebSocket open (CONNECT → 200)")
    # HTTP/1.1 set-up counts from its new connection's first byte (TCP and TLS handshakes
    # included: that is the cost RFC 8441 avoids); HTTP/2's from the CONNECT on a connection
    # already open.  The labels say which was measured.
    open_h1 = get("median HTTP/1.1 WebSocket open from its connection's first byte")
    h1_span = "new connection's first byte → 101"
    if open_h1 is None:
        open_h1 = get("median HTTP/1.1 WebSocket open (Upgrade → 101)")
        h1_span = "Upgrade → 101"
    h1_ws = get("HTTP/1.1 WebSockets seen") or 0.0

    parts = [
        f"{_plural(h2, 'HTTP/2 connection')} carried {_plural(ws, 'WebSocket')} (RFC 8441) "
        f"and {_plural(requests, 'HTTP request')}"
    ]
    extra = None if needed is None or rode is None else needed - rode
    if extra is not None and ws:
        more = f"{_plural(extra, 'more TCP connection')}"
        if tls_avoided:
            more += f" and {_plural(tls_avoided, 'more TLS handshake')}"
        parts.append(f"HTTP/1.1 would have needed {more} for those WebSockets")
    if open_h2 is not None and open_h1 is not None:
        parts.append(
            f"WebSocket set-up took {open_h2:.1f} ms over HTTP/2 (CONNECT → 200) vs "
            f"{open_h1:.1f} ms over HTTP/1.1 ({h1_span}; medians)"
        )
    elif open_h2 is not None:
        parts.append(f"WebSocket set-up took {open_h2:.1f} ms over HTTP/2 (CONNECT → 200, median)")
    if h1_ws:
        parts.append(f"{_plural(h1_ws, 'WebSocket')} went over HTTP/1.1")
    late = get("connections whose start was not captured (recognised from their middle)")
    if late:
        parts.append(
            f"the capture missed the start of {_plural(late, 'connection')} (recognised from "
            "their middle; streams opened before the capture are counted from their bytes)"
        )
    sentence = "; ".join(parts) + "."

    figures = [
        (f"{round(h2):,}", "HTTP/2 connections"),
        (f"{round(ws):,}", "RFC 8441 WebSockets"),
        (f"{round(requests):,}", "HTTP requests beside them"),
    ]
    if extra is not None and ws:
        figures.append((f"{round(extra):,}", "TCP connections HTTP/1.1 would have added"))
    if open_h2 is not None:
        figures.append(
            (f"{open_h2:.1f} ms", "WebSocket set-up over HTTP/2 (CONNECT → 200, median)")
        )
    if open_h1 is not None:
        figures.append((f"{open_h1:.1f} ms", f"WebSocket set-up over HTTP/1.1 ({h1_span}, median)"))
    peak = get("peak open streams on one connection")
    if peak is not None:
        figures.append((f"{round(peak):,}", "most streams open at once on one connection"))
    return sentence, figures


__all__ = ["PREPARE", "RULES", "SECTIONS", "Rule", "headline", "overview"]
