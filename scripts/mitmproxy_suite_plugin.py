"""pytest plugin for ``scripts/mitmproxy_suite.sh``: mitmproxy's own tests with h2ws's patches.

Loaded with ``-p mitmproxy_suite_plugin``: before any test module is imported it applies
``h2ws.addon.intercept`` (the patches of intercept mode, behind its version check) and turns
intercept mode on, as ``mitmdump -s addon/addon.py`` does, so every test of mitmproxy's HTTP/1,
HTTP/2 and WebSocket layers runs against the patched layers, with a tap on every HTTP
connection layer as when tables are written (``h2ws_out``), and with the addon's default header
limits and DATA fast path on every HTTP/2 connection (``h2limits``, ``h2fast``; set as the
addon's options set them).  ``H2WS_SUITE_PATCHES=0`` runs
the same tests unpatched (the baseline the counts are compared with).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("H2WS_SUITE_PATCHES", "1") == "0":
        return
    from h2ws.addon import intercept
    from h2ws.analysis.core.options import HeaderLimits

    intercept.apply()
    intercept.STATE.enabled = True
    intercept.STATE.header_limits = HeaderLimits()
    intercept.STATE.fast_data = True
    # as with h2ws_out set: every HTTP connection layer's bytes go through the tap
    intercept.STATE.tap = _tap


def _tap(layer: object, conn: object, received: bool, data: bytes) -> None:
    assert isinstance(data, bytes)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Says what ran patched (also under ``-q``, which hides report headers)."""
    from mitmproxy.proxy.layers.http import _http2

    from h2ws.addon import intercept

    patched = _http2.Http2Server.__init__ is intercept._http2server_init
    applied = ", ".join(intercept.STATE.applied) or "none (H2WS_SUITE_PATCHES=0)"
    terminalreporter.write_line(
        f"h2ws: {len(intercept.STATE.applied)} patches applied ({applied}); "
        f"intercept mode enabled: {intercept.STATE.enabled}; Http2Server patched: {patched}; "
        f"header limits: {intercept.STATE.header_limits is not None}; "
        f"DATA fast path: {intercept.STATE.fast_data}"
    )
