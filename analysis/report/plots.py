"""Figures of the report, drawn from the DataFrames of :mod:`h2ws.analysis.metrics`.

Every function takes metric outputs and returns a :class:`matplotlib.figure.Figure` with a
title, axes labelled with units, and a legend.  Figures are made with the object API, not
``pyplot``: nothing global is touched, a notebook shows exactly the figures it returns, and
the functions are safe under any backend (Agg in tests and in ``h2ws report``).  Empty inputs
give a figure that says there is nothing to show, never an exception, so a report on a capture
without (say) HTTP/1.1 WebSockets still renders.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

#: One colour per stream kind (:func:`plot_connection_timeline`, and wherever kinds appear).
KIND_COLOURS = {"websocket": "#1f77b4", "http": "#ff7f0e", "connect": "#7f7f7f", "push": "#9467bd"}
#: One colour per transport.
OVER_COLOURS = {"HTTP/2": "#1f77b4", "HTTP/1.1": "#d62728"}
DIRECTION_COLOURS = {"c2s": "#2ca02c", "s2c": "#111111"}


#: Longest stream label on a timeline's axis; longer paths are cut in the middle ("…"), so a
#: page's long URLs cannot squeeze the plot area (the full path is in the table below it).
LABEL_CHARS = 42


def shorten_label(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` in at most ``limit`` characters: its start and end, "…" between."""
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def distinct_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` colours that differ from each other: tab20's, then tab20b's (40 in all), then
    repeating."""
    table = [colormaps["tab20"](i) for i in range(20)] + [colormaps["tab20b"](i) for i in range(20)]
    # tab20 pairs a strong colour with its pale twin: take the strong ones first
    order = table[0:20:2] + table[1:20:2] + table[20:]
    return [order[i % len(order)] for i in range(n)]


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def _nothing(fig: Figure, ax: Axes, what: str, title: str, xlabel: str, ylabel: str) -> Figure:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.text(
        0.5,
        0.5,
        f"no {what} in these tables",
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=12,
        color="#555555",
    )
    ax.plot([], [], label="(no data)")
    ax.legend(loc="upper right")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_connection_timeline(
    streams: pd.DataFrame,
    messages: pd.DataFrame,
    title: str | None = None,
    max_streams: int = 40,
    stalls: pd.DataFrame | None = None,
) -> Figure:
    """One connection: its streams as horizontal bars coloured by kind (open → close), its
    WebSocket messages as ticks on their stream (client→server above the middle of its bar,
    server→client below), and flow-control stalls (``stalls`` from
    :func:`~h2ws.analysis.metrics.flow_control.flow_control_stalls`, optional) as red spans.

    ``streams`` and ``messages`` are :func:`~h2ws.analysis.metrics.timeline.connection_timeline`'s.
    Shows the first ``max_streams`` streams by open time.
    """
    name = str(streams["conn_id"].iloc[0]) if len(streams) else "?"
    shown = streams.head(max_streams).reset_index(drop=True)
    fig = _figure(12, 1.6 + 0.42 * max(len(shown), 2))
    ax = fig.add_subplot()
    full_title = title or f"Streams and WebSocket messages on connection {name}"
    if len(streams) > len(shown):
        full_title += f" (first {len(shown)} of {len(streams)} streams)"
    if shown.empty:
        return _nothing(fig, ax, "streams", full_title, "time since connection start (s)", "stream")
    rows = pd.Series(np.arange(len(shown)), index=shown["skey"])
    colours = shown["kind"].map(KIND_COLOURS).fillna("#7f7f7f")
    width = (shown["t_close_s"] - shown["t_open_s"]).clip(lower=0)
    ax.barh(
        rows.to_numpy(),
        width.to_numpy(),
        left=shown["t_open_s"].to_numpy(),
        height=0.7,
        color=colours.to_numpy(),
        alpha=0.35,
        edgecolor=colours.to_numpy(),
    )
    handles: list[Patch | Line2D] = [
        Patch(facecolor=KIND_COLOURS[k], alpha=0.35, edgecolor=KIND_COLOURS[k], label=f"{k} stream")
        for k in KIND_COLOURS
        if k in set(shown["kind"])
    ]
    if len(messages):
        m = messages[messages["skey"].isin(rows.index)]
        y = rows.reindex(m["skey"]).to_numpy(dtype=float)
        # The y axis is inverted below (first stream on top): a smaller y is higher on screen,
        # so client→server ticks get the negative offsets to be drawn above the middle.
        for direction, lo, hi in (("c2s", -0.32, -0.02), ("s2c", 0.02, 0.32)):
            sel = (m["direction"] == direction).to_numpy()
            if sel.any():
                ax.vlines(
                    m["t_s"].to_numpy()[sel],
                    y[sel] + lo,
                    y[sel] + hi,
                    colors=DIRECTION_COLOURS[direction],
                    linewidth=0.8,
                )
            arrow = "client→server" if direction == "c2s" else "server→client"
            handles.append(
                Line2D(
                    [],
                    [],
                    color=DIRECTION_COLOURS[direction],
                    marker="|",
                    linestyle="none",
                    markersize=10,
                    label=f"WebSocket message {arrow}",
                )
            )
    if stalls is not None and len(stalls):
        part = stalls[stalls["conn_id"] == name]
        sy = rows.reindex(part["stream_id"].astype("int64")).to_numpy(dtype=float)
        ok = ~np.isnan(sy)
        if ok.any():
            ax.barh(
                sy[ok],
                (part["waited_ms"].to_numpy() / 1e3)[ok],
                left=part["t_s"].to_numpy()[ok],
                height=0.25,
                color="#d62728",
            )
            handles.append(Patch(color="#d62728", label="waiting for WINDOW_UPDATE"))
    ax.set_yticks(rows.to_numpy(), [shorten_label(str(t)) for t in shown["label"]])
    ax.invert_yaxis()
    ax.set_xlabel("time since connection start (s)")
    ax.set_ylabel("stream (id, method, path)")
    ax.set_title(full_title)
    ax.grid(axis="x", alpha=0.3)
    # Below the plot, not beside it: the plot keeps the figure's width.
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.9 / max(len(shown), 2)),
        ncol=min(len(handles), 4),
        fontsize=9,
    )
    return fig


def plot_concurrency(timeline: pd.DataFrame, title: str | None = None) -> Figure:
    """Open streams and open WebSockets over time, one panel per connection (a step plot of
    :func:`~h2ws.analysis.metrics.concurrency.concurrency_timeline`)."""
    conns = list(dict.fromkeys(timeline["conn_id"])) if len(timeline) else []
    fig = _figure(12, 1.0 + 2.4 * max(len(conns), 1))
    title = title or "Concurrency: streams open at the same time on one TCP connection"
    if not conns:
        return _nothing(
            fig,
            fig.add_subplot(),
            "streams",
            title,
            "time since connection start (s)",
            "open streams (count)",
        )
    axes = fig.subplots(len(conns), 1, squeeze=False)[:, 0]
    for ax, conn in zip(axes, conns, strict=True):
        part = timeline[timeline["conn_id"] == conn]
        ax.step(
            part["t_s"],
            part["open_streams"],
            where="post",
            label="open streams (all)",
            color="#333333",
        )
        ax.step(
            part["t_s"],
            part["open_websockets"],
            where="post",
            label="open WebSockets",
            color=KIND_COLOURS["websocket"],
        )
        ax.fill_between(
            part["t_s"],
            part["open_websockets"],
            step="post",
            color=KIND_COLOURS["websocket"],
            alpha=0.2,
        )
        peak = int(part["open_streams"].max())
        ax.set_ylim(0, peak + 1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("open streams (count)")
        ax.set_title(
            f"connection {conn}: peak {peak} open stream{'s' if peak != 1 else ''}",
            fontsize=10,
            loc="left",
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=9)
    axes[-1].set_xlabel("time since connection start (s)")
    fig.suptitle(title)
    return fig


def plot_connections_saved(savings: pd.DataFrame, setup: pd.DataFrame) -> Figure:
    """RFC 8441 against HTTP/1.1: connections, handshakes and round trips for the WebSockets
    seen (left, :func:`~h2ws.analysis.metrics.sharing.rfc8441_savings`), and how long
    WebSockets took to open on each transport as captured (right,
    :func:`~h2ws.analysis.metrics.setup_time.websocket_setup`; medians with the 25th-75th
    percentile range)."""
    fig = _figure(13, 4.6)
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    title_l = "TCP connections and handshakes: RFC 8441 vs one connection per WebSocket"
    if savings.empty:
        _nothing(fig, left, "WebSockets over HTTP/2", title_l, "", "count")
    else:
        tls = savings["tls"].astype(bool)
        rtts = savings["handshake_round_trips"]
        used = savings["connections_used"]
        h1 = savings["http1_connections"]
        categories = [
            "TCP\nconnections",
            "TCP\nhandshakes",
            "TLS\nhandshakes",
            "handshake\nround trips",
        ]
        observed = [used.sum(), used.sum(), used[tls].sum(), (used * rtts).sum()]
        needed = [h1.sum(), h1.sum(), h1[tls].sum(), (h1 * rtts).sum()]
        x = np.arange(len(categories))
        b1 = left.bar(
            x - 0.2, observed, 0.4, label="RFC 8441 (as captured)", color=OVER_COLOURS["HTTP/2"]
        )
        b2 = left.bar(
            x + 0.2,
            needed,
            0.4,
            label="HTTP/1.1 (one connection per WebSocket)",
            color=OVER_COLOURS["HTTP/1.1"],
        )
        left.bar_label(b1, fmt="%d")
        left.bar_label(b2, fmt="%d")
        left.set_xticks(x, categories)
        left.set_ylabel("count (connections, handshakes, round trips)")
        left.set_xlabel(
            f"{int(savings['websockets'].sum())} WebSocket attempts on "
            f"{len(savings)} HTTP/2 connection(s)"
        )
        left.set_title(title_l, fontsize=10)
        left.set_ylim(0, max(max(needed), 1) * 1.5)
        left.legend(loc="upper left")
    title_r = "WebSocket open time as captured"
    rows = []
    ws2 = setup[setup["over"] == "HTTP/2"]["handshake_ms"].dropna()
    h1s = setup[setup["over"] == "HTTP/1.1"]
    if len(ws2):
        rows.append(("RFC 8441: CONNECT → 200\n(shared connection)", ws2, OVER_COLOURS["HTTP/2"]))
    if len(h1s):
        rows.append(
            ("HTTP/1.1: Upgrade → 101", h1s["handshake_ms"].dropna(), OVER_COLOURS["HTTP/1.1"])
        )
        first = h1s[h1s["first_on_connection"].astype(bool)]["from_connection_start_ms"].dropna()
        if len(first):
            rows.append(
                (
                    "HTTP/1.1: connection's first byte → 101\n(TCP handshake not included)",
                    first,
                    "#ff9896",
                )
            )
    if not rows:
        _nothing(fig, right, "WebSockets", title_r, "time (ms)", "")
        return fig
    y = np.arange(len(rows))
    medians = np.array([float(v.median()) for _, v, _ in rows])
    lo = medians - np.array([float(v.quantile(0.25)) for _, v, _ in rows])
    hi = np.array([float(v.quantile(0.75)) for _, v, _ in rows]) - medians
    bars = right.barh(y, medians, xerr=[lo, hi], color=[c for _, _, c in rows], capsize=4)
    for bar, (label, values, _) in zip(bars, rows, strict=True):
        bar.set_label(f"{label.splitlines()[0]} (n={len(values)})")
    right.bar_label(bars, fmt="%.1f ms", padding=6)
    right.set_yticks(y, [label for label, _, _ in rows], fontsize=9)
    right.invert_yaxis()
    right.set_xlabel("time (ms), median with 25th-75th percentile")
    right.set_xlim(0, float((medians + hi).max()) * 1.35 or 1.0)
    right.set_title(title_r, fontsize=10)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8)
    fig.suptitle("What HTTP/1.1 would have cost")
    return fig


def plot_message_size_cdf(size_cdf: pd.DataFrame) -> Figure:
    """CDF of WebSocket data-message sizes per transport and direction
    (:func:`~h2ws.analysis.metrics.messages.message_size_cdf`)."""
    fig = _figure(10, 4.2)
    ax = fig.add_subplot()
    title = "WebSocket message sizes"
    if size_cdf.empty:
        return _nothing(
            fig,
            ax,
            "WebSocket data messages",
            title,
            "message size (bytes, log scale)",
            "fraction of messages",
        )
    for (over, direction), part in size_cdf.groupby(["over", "direction"], sort=True):
        arrow = "client→server" if direction == "c2s" else "server→client"
        ax.step(
            part["length_bytes"].clip(lower=1),
            part["fraction"],
            where="post",
            label=f"{over} {arrow} (n={int(part['messages'].iloc[0])})",
            color=OVER_COLOURS.get(str(over), "#333333"),
            linestyle="-" if direction == "c2s" else "--",
        )
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("message size after inflate (bytes, log scale)")
    ax.set_ylabel("fraction of messages ≤ size")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return fig


def plot_latency_cdf(latency_cdf: pd.DataFrame) -> Figure:
    """CDFs of round-trip times and message inter-arrival times
    (:func:`~h2ws.analysis.metrics.latency.latency_cdf`)."""
    fig = _figure(10, 4.2)
    ax = fig.add_subplot()
    title = "Latency: round trips and message inter-arrival"
    if latency_cdf.empty:
        return _nothing(
            fig, ax, "request/reply pairs", title, "latency (ms, log scale)", "fraction of samples"
        )
    styles = {"echo": "-", "ping/pong": "-", "websocket open": "-.", "http response": "-."}
    floor = 0.01  # a log axis has no 0: back-to-back messages (gap 0) are drawn here
    for measure, part in latency_cdf.groupby("measure", sort=True):
        ax.step(
            part["ms"].clip(lower=floor),
            part["fraction"],
            where="post",
            linestyle=styles.get(str(measure), ":"),
            linewidth=1.6,
            label=f"{measure} (n={int(part['samples'].iloc[0])})",
        )
    ax.set_xscale("log")
    ax.set_xlim(left=floor * 0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"latency (ms, log scale; values below {floor} ms drawn at {floor})")
    ax.set_ylabel("fraction of samples ≤ latency")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return fig


def plot_interleaving(
    bytes_share: pd.DataFrame,
    fairness: pd.DataFrame,
    conn_id: str,
    direction: str = "s2c",
    max_streams: int = 8,
) -> Figure:
    """How one connection's bytes were shared between its streams over time: the share of each
    stream per time bin (stacked bars, top), and Jain's fairness index per bin with the number
    of streams sending (bottom).  From
    :func:`~h2ws.analysis.metrics.interleaving.bytes_share_over_time` and
    :func:`~h2ws.analysis.metrics.interleaving.fairness_over_time`."""
    fig = _figure(12, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    arrow = "client→server" if direction == "c2s" else "server→client"
    title = f"Bytes share per stream, {arrow}, connection {conn_id}"
    part = bytes_share[
        (bytes_share["conn_id"] == conn_id) & (bytes_share["direction"] == direction)
    ]
    if part.empty:
        _nothing(fig, top, "DATA frames", title, "", "share of bytes in bin")
        _nothing(
            fig,
            bottom,
            "DATA frames",
            "Jain's fairness index",
            "time since connection start (s)",
            "index",
        )
        return fig
    width = float(part["bin_s"].iloc[0])
    totals = part.groupby("stream_id")["bytes"].sum().sort_values(ascending=False)
    keep = list(totals.index[:max_streams])
    kinds = part.drop_duplicates("stream_id").set_index("stream_id")["kind"]
    label = part["stream_id"].where(part["stream_id"].isin(keep), -1)
    table = (
        part.assign(stream=label)
        .pivot_table(index="t_s", columns="stream", values="share", aggfunc="sum")
        .fillna(0.0)
    )
    bottom_acc = np.zeros(len(table))
    # Every stream its own colour (shades of one ramp made streams 1 and 9 look alike); the
    # kind is in the legend, and HTTP streams are hatched.
    palette = iter(distinct_colours(len(table.columns)))
    for column in table.columns:
        stream = int(column)
        kind = "other" if stream == -1 else str(kinds.get(stream, "other"))
        colour = "#cccccc" if stream == -1 else next(palette)
        name = "other streams" if stream == -1 else f"stream {int(stream)} ({kind})"
        top.bar(
            table.index,
            table[column],
            width=width * 0.95,
            bottom=bottom_acc,
            align="edge",
            color=colour,
            edgecolor="white",
            linewidth=0.5,
            hatch="//" if kind == "http" else None,
            label=name,
        )
        bottom_acc += table[column].to_numpy()
    top.set_ylim(0, 1.0)
    top.set_ylabel("share of the bin's DATA bytes")
    top.set_title(title)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fair = fairness[(fairness["conn_id"] == conn_id) & (fairness["direction"] == direction)]
    contended = fair[fair["streams"] >= 2]
    bottom.plot(
        contended["t_s"] + width / 2,
        contended["jain"],
        marker="o",
        markersize=5,
        linestyle="none",
        color="#333333",
        label="Jain's index where ≥ 2 streams sent (1 = equal shares)",
    )
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("Jain's index")
    bottom.set_xlabel(f"time since connection start (s), bins of {width * 1e3:.1f} ms")
    twin = bottom.twinx()
    twin.bar(
        fair["t_s"],
        fair["streams"],
        width=width * 0.95,
        align="edge",
        color="#1f77b4",
        alpha=0.2,
        label="streams sending in the bin",
    )
    twin.set_ylabel("streams sending (count)")
    twin.set_ylim(0, max(int(fair["streams"].max()) if len(fair) else 1, 1) * 1.5)
    lines = bottom.get_legend_handles_labels()
    bars = twin.get_legend_handles_labels()
    bottom.legend(
        lines[0] + bars[0],
        lines[1] + bars[1],
        loc="upper left",
        bbox_to_anchor=(1.08, 1.0),
        fontsize=9,
    )
    bottom.set_title("Fairness between the streams that sent DATA", fontsize=10)
    return fig


def plot_close_causes(counts: pd.DataFrame) -> Figure:
    """How WebSockets ended: close handshake against what ended the stream or connection, per
    transport, with the close codes (:func:`~h2ws.analysis.metrics.closes.close_cause_counts`)."""
    causes = list(dict.fromkeys(counts["cause"])) if len(counts) else []
    fig = _figure(11, 1.8 + 0.45 * max(len(causes), 2))
    ax = fig.add_subplot()
    title = "How WebSockets ended: close frames vs END_STREAM / RST_STREAM / GOAWAY / TCP"
    if not causes:
        return _nothing(fig, ax, "WebSockets", title, "WebSockets (count)", "")
    y = {cause: i for i, cause in enumerate(causes)}
    left = np.zeros(len(causes))
    for over, part in counts.groupby("over", sort=True):
        per = part.groupby("cause")["websockets"].sum().reindex(causes).fillna(0)
        bars = ax.barh(
            [y[c] for c in causes],
            per.to_numpy(),
            left=left,
            height=0.6,
            color=OVER_COLOURS.get(str(over), "#7f7f7f"),
            label=f"over {over}",
        )
        ax.bar_label(
            bars,
            labels=[str(int(v)) if v else "" for v in per],
            label_type="center",
            color="white",
            fontweight="bold",
        )
        left += per.to_numpy()
    codes = (
        counts.assign(code=counts["close_code"].astype("string").fillna("none"))
        .groupby("cause")["code"]
        .agg(lambda s: ", ".join(sorted(set(s))))
    )
    for cause, i in y.items():
        ax.text(
            left[i] + 0.05 * max(left.max(), 1),
            i,
            f"close code: {codes[cause]}",
            va="center",
            fontsize=9,
            color="#333333",
        )
    ax.set_yticks(list(y.values()), causes)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left.max(), 1) * 1.45)
    ax.set_xlabel("WebSockets (count)")
    ax.set_ylabel("close handshake, then what ended the stream")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return fig


def plot_head_of_line(hol: pd.DataFrame) -> Figure:
    """WebSocket round trips and gaps with and without a large HTTP body in flight on the same
    connection (:func:`~h2ws.analysis.metrics.head_of_line.head_of_line_exposure`): medians,
    sample-weighted over the connections that have samples both ways (``comparable``: each
    connection against itself, never HTTP/1.1 WebSockets' round trips as the baseline), and the
    largest p95."""
    fig = _figure(10, 4.2)
    ax = fig.add_subplot()
    title = "Head-of-line exposure: WebSocket latency while a large HTTP body was in flight"
    if "comparable" in hol:  # like with like: connections with samples both ways
        hol = hol[hol["comparable"].astype(bool)]
    if hol.empty:
        what = "connection with WebSocket round trips both with and without a large body"
        return _nothing(fig, ax, what, title, "", "latency (ms)")
    weighted = (
        hol.assign(w=hol["median_ms"] * hol["samples"])
        .groupby(["measure", "exposed"])
        .agg(w=("w", "sum"), samples=("samples", "sum"), p95=("p95_ms", "max"))
        .reset_index()
    )
    weighted["median"] = weighted["w"] / weighted["samples"]
    measures = list(dict.fromkeys(weighted["measure"]))
    x = np.arange(len(measures))
    top = float(np.nanmax(np.r_[weighted["median"], weighted["p95"], 1e-3]))
    for offset, exposed, colour, label in (
        (-0.2, False, "#1f77b4", "no large body in flight"),
        (0.2, True, "#d62728", "large HTTP body in flight"),
    ):
        part = weighted[weighted["exposed"] == exposed].set_index("measure").reindex(measures)
        ax.bar(x + offset, part["median"].fillna(0), 0.4, color=colour, label=label)
        ax.scatter(x + offset, part["p95"], marker="_", s=300, color="#333333")
        # each value above both its bar and its p95 mark, so no mark strikes through it
        for xi, median, p95 in zip(x + offset, part["median"], part["p95"], strict=True):
            if pd.notna(median):
                above = max(float(median), 0.0 if pd.isna(p95) else float(p95))
                ax.annotate(f"{median:.1f}", (xi, above), xytext=(0, 6),
                            textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    ax.scatter([], [], marker="_", s=300, color="#333333", label="p95 (largest per connection)")
    ax.set_xticks(x, measures)
    ax.set_ylim(0, top * 1.25)
    ax.set_ylabel("median latency (ms)")
    ax.set_xlabel("measure (samples per bar in the table; every connection that had them)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return fig


__all__ = [
    "DIRECTION_COLOURS",
    "KIND_COLOURS",
    "OVER_COLOURS",
    "distinct_colours",
    "plot_close_causes",
    "plot_concurrency",
    "plot_connection_timeline",
    "plot_connections_saved",
    "plot_head_of_line",
    "plot_interleaving",
    "plot_latency_cdf",
    "plot_message_size_cdf",
    "shorten_label",
]
