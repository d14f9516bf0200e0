"""What the report notebooks' cells call: tables, notes, the headline block, and published
results.

Separate from the runner (:mod:`h2ws.analysis.report.runner`), which executes notebooks: these
run inside the kernel, and import only pandas and IPython's display.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

#: Where :func:`publish` puts results in a notebook's outputs (HTML ignores it).
RESULT_MIMETYPE = "application/vnd.h2ws.result+json"


def show_table(
    frame: pd.DataFrame,
    caption: str | None = None,
    columns: list[str] | None = None,
    max_rows: int = 40,
) -> None:
    """Display ``frame`` as a compact table: 3 decimals, no index, text left-aligned, headers
    that may wrap, at most ``max_rows`` rows (the caption says how many there are)."""
    from IPython.display import display

    shown = frame[columns] if columns is not None else frame
    total = len(shown)
    shown = shown.head(max_rows)
    text = caption or ""
    if total > max_rows:
        text += f" (first {max_rows} of {total} rows)"
    if shown.empty:
        note(f"*{text or 'table'}: no rows.*")
        return
    text_columns = [c for c in shown.columns if not pd.api.types.is_numeric_dtype(shown[c])]
    styler = (
        shown.style.format(precision=3, na_rep="-")
        .format_index(lambda name: str(name).replace("_", " "), axis=1)
        .hide(axis="index")
        .set_caption(text)
        .set_properties(subset=pd.Index(text_columns), **{"text-align": "left"})
        .set_table_styles(
            {c: [{"selector": "th", "props": "text-align: left;"}] for c in text_columns}
        )
        .set_table_styles(
            [
                {
                    "selector": "caption",
                    "props": "caption-side: top; font-weight: bold; text-align: left;"
                    " padding: 4px 0;",
                },
                {"selector": "td", "props": "padding: 2px 8px; font-size: 12px;"},
                {
                    "selector": "th",
                    "props": "padding: 2px 8px; font-size: 12px; white-space: normal;"
                    " max-width: 9em; vertical-align: bottom;",
                },
            ],
            overwrite=False,
        )
    )
    display(styler)  # type: ignore[no-untyped-call]


def note(markdown: str) -> None:
    """Display a line of Markdown (e.g. why a chart is missing)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown))  # type: ignore[no-untyped-call]


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="records", date_format="iso"))
    if isinstance(value, pd.Series):
        return json.loads(value.to_json(date_format="iso"))
    return json.loads(json.dumps(value, default=str))


def publish(name: str, value: Any) -> None:
    """Leave ``value`` (a DataFrame, Series or JSON-able value) in the notebook's outputs under
    ``name``, for :func:`notebook_results`; invisible in the HTML report."""
    from IPython.display import display

    display({RESULT_MIMETYPE: {name: _jsonable(value)}}, raw=True)  # type: ignore[no-untyped-call]


#: Units whose values are counts: shown as integers.
COUNT_UNITS = frozenset(
    {"connections", "streams", "handshakes", "round trips", "stalls", "messages", "samples"}
)


def format_value(value: Any, unit: str) -> str:
    """A headline number as text: counts as integers (their means with two
    decimals), fractions as percentages, milliseconds
    with one decimal (two below 1 ms), ratios with one decimal and "x"; "-" when missing."""
    if value is None or pd.isna(value):
        return "-"
    number = float(value)
    if unit in COUNT_UNITS:  # a count is whole; a mean of counts keeps two decimals
        whole = abs(number - round(number)) < 1e-9
        return f"{round(number):,}" if whole else f"{number:,.2f}"
    if unit == "fraction":
        return f"{number * 100:.1f} %"
    if unit == "ms":
        return f"{number:.2f} ms" if abs(number) < 1 else f"{number:,.1f} ms"
    if unit == "x":
        return f"{number:.1f}x"
    return f"{number:.3g}"


def overview_table(overview: pd.DataFrame) -> pd.DataFrame:
    """The overview's rows with each value written in its unit (``15``, not ``15.000``;
    ``2.1 ms``; ``12.5 %``), for :func:`show_table`."""
    shown = overview[["section", "metric"]].copy()
    shown["value"] = [
        format_value(v, u) for v, u in zip(overview["value"], overview["unit"], strict=True)
    ]
    shown["unit"] = overview["unit"]
    return shown


def show_headline(sentence: str, figures: Sequence[tuple[str, str]]) -> None:
    """The report's answer first: one sentence, then a row of big numbers, each ``(value,
    caption)`` already written in its unit."""
    from IPython.display import HTML, display

    boxes = "".join(
        '<div style="flex: 1 1 11em; border: 1px solid #ddd; border-radius: 6px;'
        ' padding: 8px 12px; background: #fafafa;">'
        '<div class="h2ws-figure" style="font-size: 28px; font-weight: bold;">'
        f"{html.escape(v)}</div>"
        f'<div style="font-size: 12px; color: #444;">{html.escape(c)}</div></div>'
        for v, c in figures
    )
    block = (
        '<div class="h2ws-headline" style="margin: 8px 0 16px 0;">'
        f'<p style="font-size: 17px; line-height: 1.4;">{html.escape(sentence)}</p>'
        f'<div style="display: flex; flex-wrap: wrap; gap: 10px;">{boxes}</div></div>'
    )
    display(HTML(block))  # type: ignore[no-untyped-call]
