"""The arrows of the architecture (DESIGN.md), enforced.

- the sans-IO core (``analysis/core``, with everything it imports) loads neither mitmproxy,
  pandas, pyarrow nor duckdb: checked in a fresh interpreter that imports every core module;
- the core imports no source, sink, metric, report, CLI or addon module;
- sources never import the addon;
- sinks import records, never the core, the sources or the addon;
- metrics and reports read tables, never the core (nor the sources or the addon);
- metrics never import the report, the CLI or mitmproxy (the report draws on the metrics, not
  the other way round), and ``metrics/__init__.py`` imports nothing: callers import the
  metric modules themselves, there is no re-export shim;
- nothing outside ``tests/`` imports ``tests``.

Each rule reads every module's imports by AST (also those inside functions and ``TYPE_CHECKING``
blocks), so a new module is covered without listing it; each rule has a case below that shows
it fails on a module that breaks it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: folder -> import name (pyproject's package-dir mapping)
PACKAGES = {"analysis": "h2ws.analysis", "addon": "h2ws.addon", "testkit": "h2ws.testkit"}
FORBIDDEN_IN_CORE = ("mitmproxy", "pandas", "pyarrow", "duckdb")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    head = PACKAGES.get(parts[0], parts[0])
    return ".".join([head, *parts[1:]])


def imports(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the module ``name``) imports, relative imports resolved."""
    found: set[str] = set()
    here = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def modules(*folders: str) -> dict[str, set[str]]:
    """Import name -> what it imports, for every module under ``folders`` (repo-relative)."""
    out: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            name = module_name(path)
            out[name] = imports(path.read_text(encoding="utf-8"), name, path.stem == "__init__")
    return out


def violations(found: dict[str, set[str]], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in found.items()
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    )


def test_the_core_loads_no_proxy_nor_dataframe_library() -> None:
    """Importing every core module (and so everything it imports, transitively) in a fresh
    interpreter loads none of the forbidden libraries."""
    core = sorted(modules("analysis/core"))
    code = (
        "import importlib, json, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = {FORBIDDEN_IN_CORE!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in bad)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
        ).stdout
    )
    assert loaded == [], f"the core loads {loaded}"
    assert len(core) > 10  # the walk found the core


def test_the_core_imports_no_outer_layer() -> None:
    found = modules("analysis/core")
    outer = (
        *FORBIDDEN_IN_CORE,
        "h2ws.analysis.sources",
        "h2ws.analysis.sinks",
        "h2ws.analysis.metrics",
        "h2ws.analysis.report",
        "h2ws.analysis.cli",
        "h2ws.addon",
        "h2ws.testkit",
        "tests",
    )
    assert violations(found, outer) == []


def test_sources_never_import_the_addon() -> None:
    assert violations(modules("analysis/sources"), ("h2ws.addon",)) == []


def test_sinks_import_records_only() -> None:
    forbidden = ("h2ws.analysis.core", "h2ws.analysis.sources", "h2ws.addon", "mitmproxy")
    assert violations(modules("analysis/sinks"), forbidden) == []


def test_metrics_and_reports_read_tables_never_the_core() -> None:
    found = modules("analysis/metrics", "analysis/report")
    forbidden = ("h2ws.analysis.core", "h2ws.analysis.sources", "h2ws.addon")
    assert violations(found, forbidden) == []


def test_metrics_never_import_the_report_nor_the_cli() -> None:
    forbidden = ("h2ws.analysis.report", "h2ws.analysis.cli", "h2ws.addon", "mitmproxy")
    assert violations(modules("analysis/metrics"), forbidden) == []


def test_the_metrics_package_is_no_re_export_shim() -> None:
    init = REPO / "analysis" / "metrics" / "__init__.py"
    assert shim_imports(init.read_text(encoding="utf-8")) == set()
    assert len(modules("analysis/metrics")) > 10  # one module per question


def shim_imports(source: str) -> set[str]:
    """What a package's ``__init__`` imports (``from __future__`` aside): a re-export shim."""
    return imports(source, "h2ws.analysis.metrics", is_package=True) - {
        "__future__",
        "__future__.annotations",
    }


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('"""Docs only."""\nfrom __future__ import annotations\n', False),
        ("from .load import connect", True),
        ("from h2ws.analysis.metrics.overview import *", True),
    ],
)
def test_a_re_export_shim_is_caught(source: str, caught: bool) -> None:
    assert bool(shim_imports(source)) is caught


def test_nothing_outside_tests_imports_tests() -> None:
    folders = [p.name for p in REPO.iterdir() if p.is_dir() and any(p.rglob("*.py"))]
    outside = [f for f in folders if f not in ("tests", "build") and not f.startswith(".")]
    assert {"analysis", "addon", "testkit", "bench"} <= set(outside)
    found: dict[str, set[str]] = {}
    for folder in outside:
        for path in sorted((REPO / folder).rglob("*.py")):
            found[str(path.relative_to(REPO))] = imports(path.read_text(encoding="utf-8"), "")
    assert violations(found, ("tests",)) == []


# -- the rules fail when broken ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "forbidden", "caught"),
    [
        ("import pyarrow as pa", FORBIDDEN_IN_CORE, True),
        ("def f():\n    from mitmproxy import http", FORBIDDEN_IN_CORE, True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas",
            ("pandas",),
            True,
        ),
        ("from h2ws.addon.flows import X", ("h2ws.addon",), True),
        ("from h2ws.analysis.core.h2 import H2Decoder", ("h2ws.analysis.core",), True),
        ("from ..core import decoder", ("h2ws.analysis.core",), True),
        ("from tests.paths import X", ("tests",), True),
        ("import tests.conftest", ("tests",), True),
        ("from h2ws.analysis.records import TABLES", ("h2ws.analysis.core",), False),
        ("import pyarrowish", ("pyarrow",), False),
    ],
)
def test_a_broken_rule_is_caught(source: str, forbidden: tuple[str, ...], caught: bool) -> None:
    found = {"h2ws.analysis.metrics.x": imports(source, "h2ws.analysis.metrics.x")}
    assert bool(violations(found, forbidden)) is caught


def test_a_core_module_that_loads_pyarrow_is_caught(tmp_path: Path) -> None:
    """The subprocess check sees a library loaded through another module."""
    (tmp_path / "inner.py").write_text("import pyarrow\n")
    (tmp_path / "outer.py").write_text("import inner\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import outer; "
        "print('pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True"


# ------------------------------------------------------------------------------ mitmproxy internals

#: the one addon module that may use mitmproxy's private modules and attributes
INTERNALS = "intercept.py"


def mitmproxy_private_uses(source: str) -> list[str]:
    """Imports of a private mitmproxy module or name (a dotted part starting with ``_``), and
    private attributes (``._x``, not dunders) of names bound from mitmproxy: imported from it,
    or made at module level by calling such a name."""
    tree = ast.parse(source)
    found: list[str] = []
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mitmproxy"):
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            if any(p.startswith("_") and not p.startswith("__") for p in parts):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mitmproxy"):
                    if any(p.startswith("_") for p in alias.name.split(".")):
                        found.append(f"line {node.lineno}: import {alias.name}")
                    bound.add((alias.asname or alias.name).split(".")[0])
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and func.id in bound:
                bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_mitmproxy_internals_only_in_one_addon_module() -> None:
    """Private parts of mitmproxy change between releases: one module holds every use of them,
    behind the version check (``addon/intercept.py``); the others use its names or public
    mitmproxy API only."""
    for path in sorted((REPO / "addon").glob("*.py")):
        if path.name == INTERNALS:
            continue
        assert mitmproxy_private_uses(path.read_text()) == [], path.name
    assert mitmproxy_private_uses((REPO / "addon" / INTERNALS).read_text())  # it has them


@pytest.mark.parametrize(
    "source",
    [
        "from mitmproxy.proxy.layers.http._hooks import HttpRequestHook\n",
        "from mitmproxy.proxy.layers.http import _http2\n",
        "from mitmproxy.addons.next_layer import NextLayer\nB = NextLayer()\nB._ignore(1)\n",
        "from mitmproxy.proxy.layers import http\nhttp.HttpStream._handle_event\n",
    ],
)
def test_a_private_mitmproxy_use_is_caught(source: str) -> None:
    assert mitmproxy_private_uses(source)
