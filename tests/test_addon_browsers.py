"""Observer fidelity with real browsers: the addon must not change how they multiplex.

Headless Chromium 156 and Firefox ESR 153 load an HTTP/2 page (hypercorn, TLS) that opens a
same-origin ``wss://`` WebSocket, three ways:

- **direct**: the server sees the WebSocket as an extended CONNECT (HTTP/2) on the page's own
  connection — the reference;
- **through ``mitmdump -s addon/addon.py``**: the same at the server, and the addon's tables
  show the WebSocket as an extended-CONNECT stream on the page's TCP connection;
- **through stock mitmdump** (no addon): the browser falls back to an HTTP/1.1 WebSocket on an
  extra connection; the flow file (``-w``), read by h2ws, shows the same.

The proxy's guard answers everything not on localhost with 403 (browsers phone home).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import PayloadPolicy
from h2ws.analysis.sinks.writers import TableSink
from h2ws.analysis.sources.flowfile import flow_records
from h2ws.testkit.live import browsers
from h2ws.testkit.live.compare import Tables, read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import PageServer
from h2ws.testkit.peers.runner import Certificate

from .requires import missing_peer

pytestmark = pytest.mark.timeout(120)

MESSAGE = b"hello from the browser"
BROWSERS = ["chromium", "firefox"]


def have(browser: str) -> bool:
    if browser == "chromium":
        return browsers.CHROMIUM is not None
    return browsers.FIREFOX is not None and browsers.CERTUTIL is not None


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate) -> Any:
    with PageServer(tmp_path_factory.mktemp("page"), tls_certificate) as server:
        yield server


def load_page(
    browser: str, server: PageServer, workdir: Path, proxy: Mitmdump | None, ca: Path
) -> list[dict[str, Any]]:
    """The browser loads the page until it reports the echo; returns what the server saw."""
    if not have(browser):
        missing_peer(
            f"{browser} is not installed (apt-get install chromium firefox-esr libnss3-tools)"
        )
    server.reset()
    url = f"https://localhost:{server.port}/"
    port = proxy.port if proxy is not None else None
    done = lambda: server.result() is not None  # noqa: E731
    if browser == "chromium":
        ok = browsers.chromium(url, workdir / browser, done, port)
    else:
        ok = browsers.firefox(url, workdir / browser, done, port, ca)
    events = server.events()
    assert ok, f"{browser} did not report the echo; the server saw {events}"
    result = server.result()
    assert result is not None and result["query"] == "echo=hello%20from%20the%20browser", result
    return events


def websocket_and_page(events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    ws = [e for e in events if e["type"] == "websocket"]
    page = [e for e in events if e["type"] == "http" and e["path"] == "/"]
    assert len(ws) == 1 and len(page) == 1, events
    return ws[0], page[0]


def page_connection(tables: Tables, server_port: int) -> str:
    conns = {
        s["conn_id"]
        for s in tables["streams"]
        if s["path"] == "/" and s["kind"] == "http" and s["status"] == 200
    }
    conns &= {c["conn_id"] for c in tables["connections"] if c["server_port"] == server_port}
    assert len(conns) == 1, tables["streams"]
    return conns.pop()


@pytest.mark.parametrize("browser", BROWSERS)
def test_direct_reference(
    browser: str, tmp_path: Path, page_server: PageServer, tls_certificate: Certificate
) -> None:
    events = load_page(browser, page_server, tmp_path, None, tls_certificate.ca)
    ws, page = websocket_and_page(events)
    assert ws["http_version"] == "2" and ws["client_port"] == page["client_port"], events


@pytest.mark.parametrize("browser", BROWSERS)
def test_through_the_addon_rfc8441_survives(
    browser: str, tmp_path: Path, page_server: PageServer, tls_certificate: Certificate
) -> None:
    out = tmp_path / "live"
    proxy = Mitmdump(
        tmp_path,
        options={"h2ws_mode": "observe", "h2ws_out": out, "h2ws_payload": "full"},
        upstream_ca=tls_certificate.ca,
    )
    with proxy:
        events = load_page(browser, page_server, tmp_path, proxy, proxy.ca_cert)
    ws, page = websocket_and_page(events)
    # The server got the WebSocket over HTTP/2, on the page's connection: as without a proxy.
    assert ws["http_version"] == "2" and ws["client_port"] == page["client_port"], events
    tables = read_tables(out)
    conn_id = page_connection(tables, page_server.port)
    conn = next(c for c in tables["connections"] if c["conn_id"] == conn_id)
    assert (conn["http_version"], conn["alpn"], conn["enable_connect_protocol"]) == (
        "h2",
        "h2",
        True,
    )
    streams = [s for s in tables["streams"] if s["conn_id"] == conn_id and s["kind"] == "websocket"]
    assert len(streams) == 1, streams
    s = streams[0]
    assert (s["method"], s["protocol"], s["path"], s["status"]) == (
        "CONNECT",
        "websocket",
        "/ws/browser",
        200,
    )
    assert s["close_cause"] == "ws_close:1000", s
    msgs = {
        (m["direction"], m["opcode"]): m["payload"]
        for m in tables["messages"]
        if m["conn_id"] == conn_id and m["stream_id"] == s["stream_id"]
    }
    assert msgs[("c2s", "text")] == MESSAGE and msgs[("s2c", "text")] == MESSAGE
    # Every HTTP/1.1 connection in the tables is a refused phone-home, none to our server.
    others = [c for c in tables["connections"] if c["http_version"] == "http/1.1"]
    assert all(c["server_port"] != page_server.port for c in others), others


@pytest.mark.parametrize("browser", BROWSERS)
def test_stock_mitmdump_falls_back_to_http1(
    browser: str, tmp_path: Path, page_server: PageServer, tls_certificate: Certificate
) -> None:
    flows = tmp_path / "flows.mitm"
    proxy = Mitmdump(tmp_path, addon=False, upstream_ca=tls_certificate.ca, args=["-w", str(flows)])
    with proxy:
        events = load_page(browser, page_server, tmp_path, proxy, proxy.ca_cert)
    ws, page = websocket_and_page(events)
    assert ws["http_version"] == "1.1" and ws["client_port"] != page["client_port"], events
    # h2ws reads stock mitmproxy's flow file: the WebSocket is on an extra HTTP/1.1 connection.
    out = tmp_path / "offline"
    stats: Counter[str] = Counter()
    with TableSink(out) as sink:
        for record in flow_records(flows, DecodeOptions(payload=PayloadPolicy("full")), stats):
            sink.write(record)
    tables = read_tables(out)
    page_conn = page_connection(tables, page_server.port)
    ws_rows = [s for s in tables["streams"] if s["kind"] == "websocket"]
    assert len(ws_rows) == 1, ws_rows
    ws_conn = ws_rows[0]["conn_id"]
    assert ws_conn != page_conn
    by_id = {c["conn_id"]: c for c in tables["connections"]}
    assert by_id[page_conn]["http_version"] == "h2"
    assert by_id[ws_conn]["http_version"] == "http/1.1"
    assert ws_rows[0]["status"] == 101 and ws_rows[0]["close_cause"] == "ws_close:1000"
