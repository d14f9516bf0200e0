"""``h2ws report`` and the notebooks, executed with nbclient on tables of real captures (the
shared Node.js → hypercorn sample) and of the simulated scenario, checked on what they computed;
the rendered HTML checked for embedded images and looked at through headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest

from h2ws.analysis.cli import main as cli_main
from h2ws.analysis.metrics.closes import websocket_closes
from h2ws.analysis.metrics.compute import compute_all
from h2ws.analysis.metrics.concurrency import concurrency_per_connection
from h2ws.analysis.metrics.fallback import connect_protocol_support, websocket_transport_choice
from h2ws.analysis.metrics.flow_control import flow_control_stalls
from h2ws.analysis.metrics.head_of_line import head_of_line_exposure
from h2ws.analysis.metrics.interleaving import fairness_over_time, frame_interleaving
from h2ws.analysis.metrics.latency import round_trip_times
from h2ws.analysis.metrics.load import connect
from h2ws.analysis.metrics.overview import overview
from h2ws.analysis.metrics.setup_time import websocket_setup
from h2ws.analysis.metrics.sharing import (
    rfc8441_savings,
    streams_per_connection,
    websocket_sharing,
)
from h2ws.analysis.report.runner import (
    DEFAULT_NOTEBOOK,
    execute_notebook,
    inject_parameters,
    notebook_results,
    run_report,
)
from tests.report_fixtures import scenario
from tests.test_metrics import SAMPLE, _split_into_parts

from .requires import missing_peer

NOTEBOOKS = DEFAULT_NOTEBOOK.parent
QUESTIONS = sorted(p for p in NOTEBOOKS.glob("0*.ipynb"))


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/ with two captures' outputs: the simulated scenario and the real sample capture."""
    base = tmp_path_factory.mktemp("report")
    scenario.build(base / "scenario.pcap")
    out = base / "out"
    assert cli_main(["extract", str(base / "scenario.pcap"), "-o", str(out / "scenario")]) == 0
    if SAMPLE.exists():
        assert cli_main(["extract", str(SAMPLE), "-o", str(out / "sample")]) == 0
    return out


@pytest.fixture(scope="module")
def report(many: Path) -> dict[str, Any]:
    html = many.parent / "html" / "report.html"
    executed = many.parent / "html" / "report.ipynb"
    path = run_report(many, html, executed_notebook=executed)
    return {"html": path, "nb": nbformat.read(executed, as_version=4)}


def test_notebooks_are_clean_and_parametrised() -> None:
    assert DEFAULT_NOTEBOOK.is_file() and len(QUESTIONS) >= 7
    for path in [DEFAULT_NOTEBOOK, *QUESTIONS]:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "out_dir =" in tagged[0].source, path.name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_inject_parameters_papermill_style() -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# t"),
            nbformat.v4.new_code_cell("out_dir = 'x'", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print(out_dir)"),
        ]
    )
    inject_parameters(nb, {"out_dir": "/data/it's", "bins": 3})
    inject_parameters(nb, {"out_dir": "/data/b"})  # replaces, never stacks
    assert [c.metadata.get("tags") for c in nb.cells] == [
        None,
        ["parameters"],
        ["injected-parameters"],
        None,
    ]
    assert nb.cells[2].source.splitlines()[1:] == ["out_dir = '/data/b'"]
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    inject_parameters(bare, {"a": 1})
    assert bare.cells[0].source.endswith("a = 1")


def test_run_report_refuses_what_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_report(tmp_path / "nothing", tmp_path / "r.html")
    with pytest.raises(FileNotFoundError):
        run_report(tmp_path, tmp_path / "r.html", notebook=tmp_path / "missing.ipynb")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def test_report_computes_the_metrics_of_all_captures(many: Path, report: dict[str, Any]) -> None:
    got = notebook_results(report["nb"])
    expected = compute_all(connect(many))
    # what the notebook computed is what the metrics compute on the same tables
    assert got["overview"] == _records(overview(expected))
    for name in [
        "streams_per_connection",
        "websocket_closes",
        "rfc8441_savings",
        "flow_control_stalls",
        "websocket_transport_choice",
    ]:
        assert got[name] == _records(expected[name]), name
    spc = pd.DataFrame(got["streams_per_connection"])
    assert set(spc["capture"]) == {"scenario.pcap"} | ({SAMPLE.name} if SAMPLE.exists() else set())
    shown = {r["metric"]: r["value"] for r in got["overview"]}
    assert shown["TCP connections"] == scenario.EXPECTED["connections"] + SAMPLE.exists()
    assert shown["TCP handshakes avoided"] == 3  # scenario: 3 WebSockets + GETs on one
    assert shown["WebSockets: http1_despite_setting"] == 1
    assert shown["flow-control stalls"] >= 2
    closes = pd.DataFrame(got["websocket_closes"])
    if SAMPLE.exists():  # the real hypercorn server never ends the stream after closing
        real = closes[closes["conn_id"] == f"{SAMPLE.name}:0"].iloc[0]
        assert real["misbehaviours"] == "close_without_end_stream:s2c"
    assert got["busiest"][0] == "scenario.pcap:0"


def test_report_html_is_self_contained(report: dict[str, Any]) -> None:
    html = report["html"].read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 10  # every chart embedded
    assert "<script src=" not in html and '<link rel="stylesheet" href=' not in html
    assert "Traceback" not in html
    # no warnings printed into the report
    stderr = [
        o
        for c in report["nb"].cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    ]
    assert not stderr, stderr
    for heading in [
        "Overview",
        "Concurrency",
        "What HTTP/1.1 would have cost",
        "How WebSockets ended",
        "Fallback and observer effect",
    ]:
        assert heading in html
    assert "application/vnd.h2ws" not in html  # machine-readable copies stay out
    assert "import pandas" not in html  # code hidden


def test_question_notebooks_on_a_partitioned_dataset(many: Path, tmp_path: Path) -> None:
    """Each short notebook runs on the live addon's layout (part files) and computes what the
    metrics compute."""
    parted = tmp_path / "parted"
    _split_into_parts(many / "scenario", parted)
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda p: execute_notebook(p, {"out_dir": str(parted)}), QUESTIONS))
    db = connect(parted)
    direct = {
        "streams_per_connection": streams_per_connection(db),
        "concurrency_per_connection": concurrency_per_connection(db),
        "websocket_sharing": websocket_sharing(db),
        "rfc8441_savings": rfc8441_savings(db),
        "websocket_setup": websocket_setup(db),
        "frame_interleaving": frame_interleaving(db),
        "fairness_over_time": fairness_over_time(db),
        "round_trip_times": round_trip_times(db),
        "flow_control_stalls": flow_control_stalls(db),
        "head_of_line_exposure": head_of_line_exposure(db),
        "websocket_closes": websocket_closes(db),
        "websocket_transport_choice": websocket_transport_choice(db),
        "connect_protocol_support": connect_protocol_support(db),
    }
    published: dict[str, Any] = {}
    for path, nb in zip(QUESTIONS, runs, strict=True):
        got = notebook_results(nb)
        assert got, f"{path.name} published nothing"
        published.update(got)
        images = [
            o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
        ]
        if path.name not in ("01_streams_and_coalescing.ipynb", "07_fallback.ipynb"):
            assert images, f"{path.name} drew nothing"
    assert set(published) == set(direct)
    for name, frame in direct.items():
        assert published[name] == _records(frame), name


def _content_rows(png: Path) -> np.ndarray:
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"))
    return np.where((pixels < 245).any(axis=1))[0]


def test_screenshot_of_the_report(report: dict[str, Any], tmp_path: Path) -> None:
    """Headless Chromium renders the HTML from disk, no server, no network: the page is long,
    full of charts and tables, and its images decode (a broken image is a small blank box)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_peer("chromium not installed")
    shot = report["html"].with_suffix(".png")
    profile = tmp_path / "profile"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1400,16000",
            report["html"].resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    rows = _content_rows(shot)
    assert rows.max() > 8000  # all sections rendered, images at full size
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))[: rows.max()]
    coloured = (np.abs(pixels[..., 0].astype(int) - pixels[..., 2].astype(int)) > 60).mean()
    assert coloured > 0.01  # the charts' blues and reds are there, not just text
    # keep the screenshot next to the report for a human look (see tests/report_fixtures)
    assert shot.stat().st_size > 100_000


# -- the rendered figures, checked by their pixels ----------------------------------------------
#
# The matplotlib-level checks (tests/test_plots.py) read the figure objects; these read the PNGs
# the report really embeds, as a reader sees them.


def _timeline_images(nb: Any) -> list[np.ndarray]:
    import base64
    import io

    from PIL import Image

    cell = next(c for c in nb.cells if "plot_connection_timeline" in c.source)
    pngs = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB")) for p in pngs]


def _axes_frame(rgb: np.ndarray) -> tuple[int, int]:
    """Left and right spine of the plot: the columns that are dark over much of the height."""
    dark = rgb.max(axis=2) < 100
    columns = np.where(dark.mean(axis=0) > 0.4)[0]
    assert len(columns) >= 2, "no axes frame found"
    return int(columns.min()), int(columns.max())


def _near(rgb: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    import matplotlib.colors

    want = np.array([round(255 * c) for c in matplotlib.colors.to_rgb(colour)])
    return np.asarray((np.abs(rgb.astype(int) - want) <= tolerance).all(axis=2))


def test_rendered_timeline_keeps_its_plot_area(report: dict[str, Any]) -> None:
    """The plot area (between the axes' spines, found by pixels) is most of the image's width:
    long stream labels once squeezed it to a sliver."""
    images = _timeline_images(report["nb"])
    assert images, "the report drew no timeline"
    for rgb in images:
        left, right = _axes_frame(rgb)
        assert (right - left) / rgb.shape[1] >= 0.6, (left, right, rgb.shape)


def test_rendered_timeline_draws_ticks_where_the_text_says(report: dict[str, Any]) -> None:
    """The report's text: client→server ticks above a stream's middle, server→client below.
    Found by colour in the embedded PNG: in every WebSocket bar that has both, the c2s pixels
    lie above the bar's middle row and the s2c pixels below it."""
    from h2ws.analysis.report import plots

    text = report["html"].read_text()
    assert "client→server" in text and "above" in text
    checked = 0
    for rgb in _timeline_images(report["nb"]):
        import matplotlib.colors

        left, right = _axes_frame(rgb)
        # the bottom and top spines: rows dark over most of the plot's width
        frame_rows = np.where((rgb[:, left:right].max(axis=2) < 100).mean(axis=1) > 0.6)[0]
        assert len(frame_rows) >= 2, "no top and bottom spine found"
        inside = rgb[frame_rows.min() + 3 : frame_rows.max() - 3, left + 3 : right - 3]

        bar = np.array(matplotlib.colors.to_rgb(plots.KIND_COLOURS["websocket"]))
        bar_rgb = np.round(255 * (0.35 * bar + 0.65)).astype(int)  # alpha 0.35 on white
        bar_rows = (np.abs(inside.astype(int) - bar_rgb) <= 12).all(axis=2).sum(axis=1) > 20
        c2s = _near(inside, plots.DIRECTION_COLOURS["c2s"])
        s2c = _near(inside, plots.DIRECTION_COLOURS["s2c"])
        rows = np.where(bar_rows)[0]
        bands = np.split(rows, np.where(np.diff(rows) > 1)[0] + 1) if len(rows) else []
        for band in bands:
            top, bottom = int(band[0]), int(band[-1])
            if bottom - top < 10:
                continue  # not a stream's bar
            middle = (top + bottom) / 2
            up = np.where(c2s[top : bottom + 1].any(axis=1))[0] + top
            down = np.where(s2c[top : bottom + 1].any(axis=1))[0] + top
            if len(up) and len(down):
                assert up.mean() < middle < down.mean(), (top, bottom, up.mean(), down.mean())
                checked += 1
    assert checked, "no WebSocket bar with ticks both ways found"


def _legend_frame_rows(rgb: np.ndarray) -> np.ndarray:
    """Rows holding a long horizontal run of the legend frame's grey (matplotlib's default
    legend edge colour 0.8, drawn at the legend's alpha 0.8 and anti-aliased: 196 to 225 on
    white): the top and bottom edges of a legend box."""
    value = rgb.astype(int)
    neutral = (value.max(axis=2) - value.min(axis=2)) <= 2
    grey = neutral & (value[..., 0] >= 196) & (value[..., 0] <= 225)
    longest = []
    for row in grey:
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], row.astype(int), [0])))))
        longest.append(int(runs[::2].max()) if len(runs) else 0)
    return np.where(np.array(longest) > 150)[0]


def test_rendered_timeline_legend_is_outside_the_plot(report: dict[str, Any]) -> None:
    """The legend box (found by its frame's grey edges) lies below the plot's bottom spine,
    covering no bar, tick or label of the plot."""
    for rgb in _timeline_images(report["nb"]):
        left, right = _axes_frame(rgb)
        frame_rows = np.where((rgb[:, left:right].max(axis=2) < 100).mean(axis=1) > 0.6)[0]
        bottom = int(frame_rows.max())
        edges = _legend_frame_rows(rgb)
        assert len(edges) >= 2, "no legend box found"
        assert edges.min() > bottom, (edges.min(), bottom)
