"""Intercept mode (the default) with real browsers: mitmproxy stays a full intercepting proxy.

Headless Chromium 156 and Firefox ESR 153 load the intercept page (``testkit/live/
intercept_page.html``: two fetches, then a same-origin ``wss://`` WebSocket sending five
messages) through ``mitmdump -s addon/addon.py`` with a user's addon (``testkit/live/
hooks_addon.py``) and ``--set intercept='~q & ~u /held'``, against three servers:

- **hypercorn** (TLS, ALPN h2 and http/1.1) and **node** (the Node.js ``http2`` server, TLS):
  both advertise SETTINGS_ENABLE_CONNECT_PROTOCOL, the WebSocket goes upstream as an extended
  CONNECT;
- **fallback**: reverse mode to a cleartext hypercorn (mitmproxy speaks HTTP/1.1 to an
  ``http://`` server), so the addon's HTTP/1.1 ``Upgrade: websocket`` carries the WebSocket
  upstream while the browser keeps RFC 8441 on its HTTP/2 connection to the proxy.

Each case first loads the same page directly from the TLS server (the reference: how many
TCP connections the browser opens), then through the proxy, and checks: the browser opens
as many connections to the proxy; the WebSocket is a live WebSocket flow on the page's client
connection (flow file and the tables' client leg); the page and every fetch are HTTP flows; the
``request`` hook's header reached the server; ``/held`` was held until resumed; the
``websocket_message`` hook's modification and drop, and the injections both ways, show at the
peers (the page reports what it received, which is the server's echo plus the injection).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from h2ws.testkit.live import browsers
from h2ws.testkit.live.compare import read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import NodePageServer, PageServer
from h2ws.testkit.peers.runner import Certificate
from tests.conftest import require

pytestmark = pytest.mark.timeout(150)

HOOKS = Path(__file__).resolve().parents[1] / "testkit" / "live" / "hooks_addon.py"
MESSAGES = ["keep", "modify me", "drop me", "inject", "last"]
#: what the page gets back through the hooks: the server's echo of what it was sent
#: (``modify me`` modified, ``drop me`` dropped, ``to server`` injected) and ``to client``
THROUGH_HOOKS = ["keep", "modified", "inject", "to server", "to client", "last"]
LOCAL = {"localhost", "127.0.0.1"}
BROWSERS = ["chromium", "firefox"]
SERVERS = ["hypercorn", "node", "fallback"]


def have(browser: str) -> None:
    if browser == "chromium":
        if browsers.CHROMIUM is None:
            require("chromium")
        return
    if browsers.FIREFOX is None or browsers.CERTUTIL is None:
        require("firefox-esr", "certutil")


@pytest.fixture(scope="module")
def hypercorn_page(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> Iterator[PageServer]:
    with PageServer(tmp_path_factory.mktemp("hypercorn-page"), tls_certificate) as server:
        yield server


@pytest.fixture(scope="module")
def node_page(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> Iterator[PageServer]:
    require("node")
    with NodePageServer(tmp_path_factory.mktemp("node-page"), tls_certificate) as server:
        yield server


@pytest.fixture(scope="module")
def cleartext_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    with PageServer(tmp_path_factory.mktemp("cleartext-page"), None) as server:
        yield server


def run_browser(
    browser: str, url: str, server: PageServer, workdir: Path, proxy_port: int | None, ca: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The browser loads ``url`` until the page reports; its report and the server's events."""
    server.reset()
    done = lambda: server.result() is not None  # noqa: E731
    if browser == "chromium":
        ok = browsers.chromium(url, workdir, done, proxy_port)
    else:
        ok = browsers.firefox(url, workdir, done, proxy_port, ca)
    events = server.events()
    assert ok, f"{browser} did not report; the server saw {events}"
    result = server.result()
    assert result is not None
    report = {k: v[0] for k, v in _query(result["query"]).items()}
    assert "error" not in report, (report, events)
    return report, events


def _query(query: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs

    return parse_qs(query)


def read_flows(path: Path) -> list[Any]:
    from mitmproxy import io

    with open(path, "rb") as f:
        return list(io.FlowReader(f).stream())


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("browser", BROWSERS)
def test_browser_through_intercept_mode(
    browser: str,
    server_name: str,
    tmp_path: Path,
    tls_certificate: Certificate,
    request: pytest.FixtureRequest,
) -> None:
    have(browser)
    tls_server: PageServer = request.getfixturevalue(
        "node_page" if server_name == "node" else "hypercorn_page"
    )
    # The reference: the same page, straight from the TLS server.
    direct_url = f"https://localhost:{tls_server.port}/intercept?expect=last"
    report, events = run_browser(
        browser, direct_url, tls_server, tmp_path / "direct", None, tls_certificate.ca
    )
    assert json.loads(report["received"]) == MESSAGES
    direct_connections = {e["client_port"] for e in events}
    assert {e["http_version"] for e in events} == {"2"}, events

    flows_path = tmp_path / "flows.mitm"
    out = tmp_path / "tables"
    options: dict[str, object] = {
        "intercept": "~q & ~u /held", "h2ws_out": out, "h2ws_payload": "full",
    }  # fmt: skip
    args = ["-s", str(HOOKS), "-w", str(flows_path)]
    expect = "expect=last,to%20client,to%20server"
    if server_name == "fallback":
        server: PageServer = request.getfixturevalue("cleartext_page")
        proxy = Mitmdump(
            tmp_path, mode=f"reverse:http://127.0.0.1:{server.port}", options=options, args=args
        )
        with proxy:
            url = f"https://localhost:{proxy.port}/intercept?{expect}"
            report, events = run_browser(
                browser, url, server, tmp_path / "proxied", None, proxy.ca_cert
            )
    else:
        server = tls_server
        proxy = Mitmdump(tmp_path, options=options, upstream_ca=tls_certificate.ca, args=args)
        with proxy:
            url = f"https://localhost:{server.port}/intercept?{expect}"
            report, events = run_browser(
                browser, url, server, tmp_path / "proxied", proxy.port, proxy.ca_cert
            )
    log = proxy.log()
    assert "Traceback" not in log, log

    # The peers: the hooks' work arrived, the held request was held.
    assert sorted(json.loads(report["received"])) == sorted(THROUGH_HOOKS), report
    assert int(report["held_ms"]) >= 900, report
    assert events and all(e["test_header"] == "added" for e in events), events
    ws_events = [e for e in events if e["type"] == "websocket"]
    assert len(ws_events) == 1, events
    assert ws_events[0]["http_version"] == ("1.1" if server_name == "fallback" else "2")

    # The flow file: every request an HTTP flow, the WebSocket a live one, one connection.
    flows = [
        f
        for f in read_flows(flows_path)
        if server_name == "fallback" or (f.request.host in LOCAL and f.request.port == server.port)
    ]
    ws_flows = [f for f in flows if f.websocket is not None]
    http_flows = [f for f in flows if f.websocket is None]
    assert len(ws_flows) == 1, flows
    ws = ws_flows[0]
    assert (ws.request.method, ws.request.http_version, ws.request.path) == (
        "CONNECT", "HTTP/2.0", "/ws/browser",
    )  # fmt: skip
    assert ws.request.headers.fields[0] == (b":protocol", b"websocket")
    upstream = "http/1.1" if server_name == "fallback" else "h2"
    assert ws.metadata["h2ws"]["upstream"] == upstream
    assert [m.dropped for m in ws.websocket.messages if m.content == b"drop me"] == [True]
    assert {m.content for m in ws.websocket.messages if m.injected} == {
        b"to client", b"to server",
    }  # fmt: skip
    paths = {f.request.path.split("?")[0] for f in http_flows}
    assert {"/intercept", "/hello", "/held", "/result"} <= paths, paths
    assert all(f.request.http_version == "HTTP/2.0" and f.response for f in http_flows)
    page = next(f for f in http_flows if f.request.path.startswith("/intercept"))
    assert ws.client_conn.id == page.client_conn.id
    proxied_connections = {f.client_conn.id for f in flows}
    assert len(proxied_connections) == len(direct_connections), (
        proxied_connections,
        direct_connections,
    )

    # The tables' client leg: the WebSocket is a stream of the page's connection.
    tables = read_tables(out)
    legs = {c["conn_id"]: c["leg"] for c in tables["connections"]}
    page_conns = {
        s["conn_id"]
        for s in tables["streams"]
        if legs[s["conn_id"]] == "client" and (s["path"] or "").startswith("/intercept")
    }
    ws_conns = {
        s["conn_id"]
        for s in tables["streams"]
        if legs[s["conn_id"]] == "client" and s["kind"] == "websocket"
    }
    assert len(page_conns) == 1 and ws_conns == page_conns, tables["streams"]
