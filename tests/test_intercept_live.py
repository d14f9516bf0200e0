"""Intercept mode (the default) in a real mitmdump between real RFC 8441 peers.

A Node.js 20 ``http2`` client opens several extended-CONNECT WebSockets and GETs on one TLS
connection through ``mitmdump -s addon/addon.py`` (mitmproxy's own HTTP/2 layer, taught RFC
8441 by ``addon/intercept.py``) to hypercorn and to the Node.js ``http2`` server.  Every
message must echo, every request must be an HTTP flow and every WebSocket a live WebSocket
flow in the flow file (``-w``), and hooks of another addon must take effect at the peers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SEED, require
from tests.live.clients import run_node
from tests.live.proxy import Mitmdump
from tests.live.servers import NodeServer
from tests.live.tunnel import ConnectTunnel
from tests.peers.runner import Certificate, EchoServer

pytestmark = pytest.mark.timeout(120)

WEBSOCKETS = 3
GETS = 3


def read_flows(path: Path) -> list[Any]:
    from mitmproxy import io

    with open(path, "rb") as f:
        return list(io.FlowReader(f).stream())


def tls_options(proxy: Mitmdump) -> dict[str, object]:
    return {"tls": True, "ca": proxy.ca_cert, "servername": "localhost"}


@pytest.fixture(scope="module")
def node_tls(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> Iterator[NodeServer]:
    require("node")
    with NodeServer(tmp_path_factory.mktemp("node-tls"), tls_certificate) as server:
        yield server


@pytest.fixture(params=["hypercorn", "node"])
def tls_server(request: pytest.FixtureRequest, echo_server_tls: EchoServer) -> Any:
    """A TLS HTTP/2 server that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL=1."""
    if request.param == "hypercorn":
        return echo_server_tls
    return request.getfixturevalue("node_tls")


def test_websockets_are_live_flows(
    tmp_path: Path, tls_server: Any, tls_certificate: Certificate
) -> None:
    require("node")
    flows = tmp_path / "flows.mitm"
    proxy = Mitmdump(tmp_path, upstream_ca=tls_certificate.ca, args=["-w", str(flows)])
    with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", tls_server.port)) as tunnel:
        log = run_node(
            tunnel.port, tmp_path / "client.json", ws=WEBSOCKETS, gets=GETS, seed=SEED,
            **tls_options(proxy),
        )  # fmt: skip
    assert len(log["websockets"]) == WEBSOCKETS
    assert "Traceback" not in proxy.log(), proxy.log()
    saved = read_flows(flows)
    ws = [f for f in saved if getattr(f, "websocket", None) is not None]
    assert len(ws) == WEBSOCKETS
    for f in ws:
        assert f.request.method == "CONNECT" and f.request.http_version == "HTTP/2.0"
        assert f.request.headers.fields[0] == (b":protocol", b"websocket")
        assert f.request.path.startswith("/ws")
        assert f.response.status_code == 200
        assert f.metadata["h2ws"]["upstream"] == "h2"
        # both directions of every message the client sent, and nothing else
        texts = [m for m in f.websocket.messages if not m.injected]
        assert texts and {m.from_client for m in texts} == {True, False}
    gets = [f for f in saved if getattr(f, "websocket", None) is None]
    assert len(gets) == GETS
    assert sorted((f.request.path, f.response.status_code) for f in gets) == sorted(
        (r["path"], r["status"]) for r in log["requests"]
    )
    assert all(f.request.http_version == "HTTP/2.0" for f in saved)
    # one client connection carried everything (the client's own multiplexing)
    assert len({f.client_conn.id for f in saved}) == 1


def test_extended_connect_url_has_its_path() -> None:
    """With the patches, mitmproxy's URL of an extended CONNECT names scheme, authority and
    path (``~u /ws`` matches), and a proxy CONNECT stays ``host:port``."""
    from mitmproxy import flowfilter
    from mitmproxy.test import tflow

    from h2ws.addon import intercept

    flow = tflow.tflow()
    flow.request = http_request(b"CONNECT", b"/ws/1", ((b":protocol", b"websocket"),))
    plain = http_request(b"CONNECT", b"", ())
    before = flow.request.pretty_url
    intercept.apply()
    try:
        assert flow.request.pretty_url == "https://example.com/ws/1"
        assert flow.request.url == "https://example.com/ws/1"
        assert flowfilter.match("~u /ws/1", flow)
        assert plain.url == "example.com:443"
    finally:
        intercept.revert()
    assert flow.request.pretty_url == before == "example.com"


def http_request(method: bytes, path: bytes, fields: tuple[tuple[bytes, bytes], ...]) -> Any:
    from mitmproxy import http

    return http.Request(
        "example.com", 443, method, b"https", b"example.com", path, b"HTTP/2.0",
        http.Headers(list(fields)), b"", None, 0.0, 0.0,
    )  # fmt: skip
