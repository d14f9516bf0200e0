"""``h2ws report``: run a notebook on the tables of an output directory and render it as HTML.

The report is an ordinary notebook (``notebooks/report.ipynb``) so that the same thing opens
interactively in ``jupyter lab notebooks/``.  Here it is executed headless with nbclient: its cell
tagged ``parameters`` keeps its defaults, and a cell tagged ``injected-parameters`` inserted after
it sets ours — the papermill convention, without papermill's dependencies.  nbconvert then
writes one self-contained HTML file: figures are PNG data URIs, no Jupyter server, no network.

What the notebooks' cells call (:func:`~h2ws.analysis.report.cells.show_table`, ``note``,
``publish``, ``show_headline``) is in :mod:`h2ws.analysis.report.cells`; ``publish`` leaves a
machine-readable copy of a result in the executed notebook, which :func:`notebook_results`
here reads back (what the tests assert on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h2ws.analysis.report.cells import RESULT_MIMETYPE, note, publish, show_table

if TYPE_CHECKING:
    # Imported where used: notebooks import this module for its helpers, and nbconvert alone
    # takes half a second to import.
    from nbformat import NotebookNode


def packaged_notebook(name: str = "report.ipynb") -> Path:
    """A notebook shipped with h2ws (package ``h2ws.notebooks``: the checkout's top-level
    ``notebooks/`` in an editable install, package data in a wheel)."""
    from importlib.resources import files

    return Path(str(files("h2ws.notebooks").joinpath(name)))


#: The report notebook.
DEFAULT_NOTEBOOK = packaged_notebook()
#: Cells with this tag are executed but left out of the HTML.
HIDDEN_TAG = "remove-cell"
#: JupyterLab's HTML template without its scripts from CDNs (require.js, MathJax, mermaid): the
#: report uses none of them, and must open offline without waiting for the network.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _tags(cell: Mapping[str, Any]) -> list[str]:
    tags: list[str] = cell.get("metadata", {}).get("tags", [])
    return tags


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any]) -> NotebookNode:
    """Insert a cell assigning ``parameters`` after the cell tagged ``parameters`` (at the top
    if there is none), replacing an earlier injected cell; values are written with ``repr``."""
    import nbformat

    cells = [c for c in nb.cells if "injected-parameters" not in _tags(c)]
    lines = ["# Parameters injected by h2ws report"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    injected = nbformat.v4.new_code_cell("\n".join(lines))  # type: ignore[no-untyped-call]
    injected.metadata["tags"] = ["injected-parameters"]
    at = next((i + 1 for i, c in enumerate(cells) if "parameters" in _tags(c)), 0)
    cells.insert(at, injected)
    nb.cells = cells
    return nb


def execute_notebook(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    timeout: int = 600,
) -> NotebookNode:
    """Execute ``notebook`` with ``parameters`` in a fresh kernel (the current Python's
    ``python3`` kernel), in the notebook's folder; returns the executed notebook.  A failing
    cell raises :class:`nbclient.exceptions.CellExecutionError` naming the cell and error."""
    import tempfile

    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    path = Path(notebook)
    nb: NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    if parameters:
        inject_parameters(nb, parameters)
    # The kernel talks over Unix sockets in a private folder, not TCP on localhost: nothing
    # else on the machine can reach it, and ipykernel has no reason to warn that TCP "without
    # encryption" is open to eavesdropping (it did, on every report).
    with tempfile.TemporaryDirectory(prefix="h2ws-kernel-") as sockets:
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sockets}/k")
        client = NotebookClient(
            nb,
            km=manager,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.resolve().parent)}},
        )
        # Figures are drawn off-screen, whatever MPLBACKEND the caller's environment names.
        env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
        try:
            client.execute(env=env)
        finally:
            # nbclient shuts down only kernels it made itself; this one is ours to stop (or it
            # outlives us and warns "Parent appears to have exited").
            if manager.has_kernel:
                manager.shutdown_kernel(now=False)
    return nb


def to_html(nb: NotebookNode, title: str = "h2ws report", show_code: bool = False) -> str:
    """The executed notebook as one self-contained HTML page (images embedded); code cells
    hidden unless ``show_code``, cells tagged ``remove-cell`` left out."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    exporter = HTMLExporter(  # type: ignore[no-untyped-call]
        template_name="lab",
        extra_loaders=[DictLoader({"h2ws_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="h2ws_offline.html.j2",
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    remove = TagRemovePreprocessor(remove_cell_tags={HIDDEN_TAG}, enabled=True)  # type: ignore[no-untyped-call]
    exporter.register_preprocessor(remove, enabled=True)  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return str(body)


def run_report(
    out_dir: str | os.PathLike[str],
    output_html: str | os.PathLike[str],
    notebook: str | os.PathLike[str] | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    executed_notebook: str | os.PathLike[str] | None = None,
    show_code: bool = False,
    timeout: int = 600,
) -> Path:
    """Execute the report notebook on the tables in ``out_dir`` and write ``output_html``.

    ``out_dir`` may hold one capture's tables or many (files, partitioned datasets, or one
    output directory per capture below it).  ``parameters`` override more of the notebook's
    parameters; ``executed_notebook`` also saves the executed ``.ipynb``.  Returns the HTML path.
    """
    source = Path(out_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a directory of h2ws tables")
    nb_path = Path(notebook) if notebook is not None else DEFAULT_NOTEBOOK
    if not nb_path.is_file():
        raise FileNotFoundError(f"report notebook {nb_path} not found")
    import nbformat

    values: dict[str, Any] = {"out_dir": str(source.resolve())}
    values.update(parameters or {})
    nb = execute_notebook(nb_path, values, timeout=timeout)
    if executed_notebook is not None:
        saved = Path(executed_notebook)
        saved.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, saved)  # type: ignore[no-untyped-call]
    html = Path(output_html)
    if html.parent != Path(""):
        html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(
        to_html(nb, title=f"h2ws report: {source.name}", show_code=show_code), encoding="utf-8"
    )
    return html


def notebook_results(nb: NotebookNode) -> dict[str, Any]:
    """Everything an executed notebook :func:`publish`-ed, by name (DataFrames as lists of
    records)."""
    found: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RESULT_MIMETYPE in data:
                found.update(data[RESULT_MIMETYPE])
    return found


__all__ = [
    "DEFAULT_NOTEBOOK",
    "HIDDEN_TAG",
    "RESULT_MIMETYPE",
    "execute_notebook",
    "inject_parameters",
    "note",
    "notebook_results",
    "packaged_notebook",
    "publish",
    "run_report",
    "show_table",
    "to_html",
]
