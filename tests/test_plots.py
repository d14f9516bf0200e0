"""Every figure of the report: title, labelled axes with units, a legend, nothing overlapping,
and the data drawn where it belongs; empty tables give a figure that says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from h2ws.analysis.cli import main as cli_main
from h2ws.analysis.metrics.compute import compute_all
from h2ws.analysis.metrics.concurrency import concurrency_timeline
from h2ws.analysis.metrics.interleaving import bytes_share_over_time, fairness_over_time
from h2ws.analysis.metrics.load import connect
from h2ws.analysis.metrics.timeline import busiest_connections, connection_timeline
from h2ws.analysis.report import plots as P
from tests.report_fixtures import scenario


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("plots")
    scenario.build(base / "scenario.pcap")
    assert cli_main(["extract", str(base / "scenario.pcap"), "-o", str(base / "out")]) == 0
    db = connect(base / "out")
    results = compute_all(db)
    busiest = busiest_connections(db, 2)
    streams, messages = connection_timeline(db, busiest[0])
    return {
        "db": db,
        "results": results,
        "busiest": busiest,
        "streams": streams,
        "messages": messages,
        "timeline": concurrency_timeline(db, busiest),
        "share": bytes_share_over_time(db),
        "fairness": fairness_over_time(db),
    }


def figures(d: dict[str, Any]) -> dict[str, Callable[[], Figure]]:
    r = d["results"]
    return {
        "timeline": lambda: P.plot_connection_timeline(
            d["streams"], d["messages"], stalls=r["flow_control_stalls"]
        ),
        "concurrency": lambda: P.plot_concurrency(d["timeline"]),
        "saved": lambda: P.plot_connections_saved(r["rfc8441_savings"], r["websocket_setup"]),
        "sizes": lambda: P.plot_message_size_cdf(r["message_size_cdf"]),
        "latency": lambda: P.plot_latency_cdf(r["latency_cdf"]),
        "interleaving": lambda: P.plot_interleaving(
            d["share"], d["fairness"], d["busiest"][0], "s2c"
        ),
        "closes": lambda: P.plot_close_causes(r["close_cause_counts"]),
        "hol": lambda: P.plot_head_of_line(r["head_of_line_exposure"]),
    }


NAMES = ["timeline", "concurrency", "saved", "sizes", "latency", "interleaving", "closes", "hol"]


def _drawn(fig: Figure) -> Any:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _overlaps(boxes: list[Any]) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]


@pytest.mark.parametrize("name", NAMES)
def test_figure_has_title_units_legend_and_no_overlapping_labels(
    data: dict[str, Any], name: str
) -> None:
    fig = figures(data)[name]()
    renderer = _drawn(fig)
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for ax in fig.axes:
        # a twin axes (twinx) shares its place, and its title, with another
        same_place = [a for a in fig.axes if a.get_position().bounds == ax.get_position().bounds]
        titled = any(a.get_title() or a.get_title(loc="left") for a in same_place)
        assert titled or suptitle, f"{name}: untitled axes"
        labels = [ax.get_xlabel(), ax.get_ylabel()]
        assert any(labels), f"{name}: axes without labels"
        # a numeric axis says its unit: "(s)", "(ms)", "(count)", "(bytes …)", "fraction …"
        numeric = [lab for lab in labels if lab]
        assert any("(" in lab or "fraction" in lab or "share" in lab for lab in numeric), (
            f"{name}: no unit in {labels}"
        )
        texts = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in texts]
        assert not _overlaps(boxes), (
            f"{name}: x tick labels overlap: {[t.get_text() for t in texts]}"
        )
        texts = [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in texts]
        assert not _overlaps(boxes), f"{name}: y tick labels overlap"
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, f"{name}: no legend"
    for legend in legends:
        assert [t.get_text() for t in legend.get_texts()], f"{name}: empty legend"
    width, height = fig.get_size_inches() * fig.dpi
    assert 600 <= width <= 1400 and height <= 2400  # readable in the report's 1400 px page


@pytest.mark.parametrize("name", NAMES)
def test_empty_tables_give_a_figure_that_says_so(data: dict[str, Any], name: str) -> None:
    empty = {
        key: value.iloc[0:0] if isinstance(value, pd.DataFrame) else value
        for key, value in data.items()
    }
    empty["results"] = {k: v.iloc[0:0] for k, v in data["results"].items()}
    fig = figures(empty)[name]()
    _drawn(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("no ") and "in these tables" in t for t in texts), (name, texts)


def test_timeline_puts_each_message_on_its_stream(data: dict[str, Any]) -> None:
    streams, messages = data["streams"], data["messages"]
    fig = P.plot_connection_timeline(streams, messages)
    ax = fig.axes[0]
    ticks = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = np.concatenate([np.asarray(c.get_segments()) for c in ticks])
    assert len(segments) == len(messages)
    # y of every tick is its stream's row: client→server above the middle, server→client
    # below.  The y axis is inverted (first stream on top): above is the smaller y.
    row_of = {skey: i for i, skey in enumerate(streams["skey"])}
    expected = sorted(
        (round(t, 6), row_of[s] + (-0.32 if d == "c2s" else 0.02))
        for t, s, d in zip(messages["t_s"], messages["skey"], messages["direction"], strict=True)
    )
    drawn = sorted((round(seg[0][0], 6), seg[0][1]) for seg in segments)
    assert [x for x, _ in drawn] == pytest.approx([x for x, _ in expected])
    assert [y for _, y in drawn] == pytest.approx([y for _, y in expected])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:2] == ["1 GET /", "3 WS /chat"]
    # What the report's text says, seen on screen: client→server ticks above their bar's middle
    fig.canvas.draw()
    to_screen = ax.transData.transform
    for c in ticks:
        colour = tuple(np.round(c.get_colors()[0][:3], 3))
        c2s = colour == tuple(np.round(matplotlib.colors.to_rgb(P.DIRECTION_COLOURS["c2s"]), 3))
        for seg in c.get_segments():
            (x, y0), (_, y1) = seg
            middle = round((y0 + y1) / 2)  # the stream's row
            above = to_screen((x, (y0 + y1) / 2))[1] > to_screen((x, middle))[1]
            assert above == c2s, (colour, y0, y1)


def test_timeline_keeps_its_plot_area_with_long_paths(data: dict[str, Any]) -> None:
    """A browser's long URLs once squeezed the timeline to a few pixels: labels are shortened,
    the legend goes below, and the plot keeps most of the figure's width."""
    streams = data["streams"].copy()
    streams["label"] = streams["label"] + "/" + "very-long-path-segment" * 12 + "?q=" + "x" * 80
    fig = P.plot_connection_timeline(streams, data["messages"])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_position().width > 0.6
    assert max(len(t.get_text()) for t in ax.get_yticklabels()) <= P.LABEL_CHARS
    legend = ax.get_legend().get_window_extent()
    plot = ax.get_window_extent()
    assert legend.y1 <= plot.y0  # below the plot, covering none of it


def test_distinct_streams_get_distinct_colours() -> None:
    colours = P.distinct_colours(20)
    assert len(set(colours)) == 20


def test_connection_timeline_thins_messages(data: dict[str, Any]) -> None:
    _, thin = connection_timeline(data["db"], data["busiest"][0], max_messages=10)
    _, full = connection_timeline(data["db"], data["busiest"][0])
    assert 5 <= len(thin) <= 12 < len(full)
    assert thin["t_s"].is_monotonic_increasing


def test_concurrency_draws_one_panel_per_connection(data: dict[str, Any]) -> None:
    fig = P.plot_concurrency(data["timeline"])
    assert len(fig.axes) == len(data["busiest"])
    peak = data["timeline"].groupby("conn_id")["open_streams"].max()
    for ax, conn in zip(fig.axes, data["busiest"], strict=True):
        assert f"peak {peak[conn]}" in ax.get_title(loc="left")


def test_connections_saved_bars_show_the_savings(data: dict[str, Any]) -> None:
    r = data["results"]
    fig = P.plot_connections_saved(r["rfc8441_savings"], r["websocket_setup"])
    left = fig.axes[0]
    heights = [p.get_height() for p in left.patches]
    observed, needed = heights[:4], heights[4:8]
    assert observed[0] == len(r["rfc8441_savings"])
    assert needed[0] == r["rfc8441_savings"]["http1_connections"].sum()


def test_close_causes_count_every_websocket(data: dict[str, Any]) -> None:
    counts = data["results"]["close_cause_counts"]
    fig = P.plot_close_causes(counts)
    widths = sum(p.get_width() for p in fig.axes[0].patches)
    assert widths == counts["websockets"].sum()


def test_figures_save_as_png(data: dict[str, Any], tmp_path: Path) -> None:
    fig = figures(data)["interleaving"]()
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
