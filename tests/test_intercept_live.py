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

from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import NodeServer, PageServer
from h2ws.testkit.live.tunnel import ConnectTunnel
from h2ws.testkit.live.ws_client import H2WsClient, Result
from h2ws.testkit.peers.runner import Certificate, EchoServer
from tests.conftest import SEED, require

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
    proxy = Mitmdump(
        tmp_path,
        upstream_ca=tls_certificate.ca,
        options={"h2ws_out": tmp_path / "tables"},
        args=["-w", str(flows)],
    )
    with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", tls_server.port)) as tunnel:
        log = run_node(
            tunnel.port, tmp_path / "client.json", ws=WEBSOCKETS, gets=GETS, seed=SEED,
            **tls_options(proxy),
        )  # fmt: skip
    assert len(log["websockets"]) == WEBSOCKETS
    assert "Traceback" not in proxy.log(), proxy.log()
    assert "CommunityID" not in proxy.log()  # no third-party debug output by default
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


HOOKS = Path(__file__).resolve().parents[1] / "testkit" / "live" / "hooks_addon.py"


@pytest.fixture(scope="module")
def page_server(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> Iterator[PageServer]:
    with PageServer(tmp_path_factory.mktemp("page"), tls_certificate) as server:
        yield server


def test_hooks_of_another_addon_take_effect(
    tmp_path: Path, page_server: PageServer, tls_certificate: Certificate
) -> None:
    """A ``request`` hook's header reaches the server (GET and WebSocket), ``intercept`` holds
    a request until resumed, a ``websocket_message`` hook modifies one message and drops
    another, and ``inject.websocket`` sends one each way: all seen at the peers."""
    page_server.reset()
    flows = tmp_path / "flows.mitm"
    out = tmp_path / "tables"
    proxy = Mitmdump(
        tmp_path,
        upstream_ca=tls_certificate.ca,
        options={
            "intercept": "~q & ~u /held", "h2ws_out": out, "h2ws_payload": "full",
            "h2ws_flush_interval": 1,
        },
        args=["-s", str(HOOKS), "-w", str(flows)],
    )  # fmt: skip
    result = Result()
    with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", page_server.port)) as tunnel:
        client = H2WsClient(tunnel.port, ca=proxy.ca_cert)
        try:
            client.get("/hello", result)
            client.get("/held", result)
            client.websocket(
                "/ws/hooks",
                ["keep", "modify me", "drop me", "inject", "last"],
                {"last", "to client", "to server"},
                result,
            )
        finally:
            client.close()
    assert result.statuses == {"/hello": 200, "/held": 404}
    assert result.durations["/held"] >= 0.9 > result.durations["/hello"]
    assert result.ws_status == 200
    # echoes of what the server got, and the message injected towards the client
    assert sorted(result.received) == sorted(
        ["keep", "modified", "inject", "to client", "to server", "last"]
    )
    assert "drop me" not in result.received and "modify me" not in result.received
    seen = page_server.events()
    assert {(e["type"], e["path"], e["test_header"], e["http_version"]) for e in seen} >= {
        ("http", "/hello", "added", "2"),
        ("websocket", "/ws/hooks", "added", "2"),
    }
    assert "Traceback" not in proxy.log(), proxy.log()
    (ws,) = [f for f in read_flows(flows) if getattr(f, "websocket", None) is not None]
    client_side = [m.content for m in ws.websocket.messages if m.from_client]
    assert b"modified" in client_side and b"to server" in client_side
    assert [m.dropped for m in ws.websocket.messages if m.content == b"drop me"] == [True]

    # the tables: each leg decoded from its own bytes; the hooks' work is their difference
    tables = read_tables(out)
    legs = {c["conn_id"]: c for c in tables["connections"]}
    client_legs = [c for c in legs.values() if c["leg"] == "client"]
    server_legs = [c for c in legs.values() if c["leg"] == "server"]
    assert len(client_legs) == 1 and server_legs
    assert all(c["http_version"] == "h2" for c in legs.values())
    assert all(c["enable_connect_protocol"] for c in legs.values())

    def sent(leg: str, direction: str) -> list[bytes]:
        return [
            m["payload"]
            for m in tables["messages"]
            if legs[m["conn_id"]]["leg"] == leg and m["direction"] == direction
            and m["opcode"] == "text"
        ]  # fmt: skip

    assert sent("client", "c2s") == [b"keep", b"modify me", b"drop me", b"inject", b"last"]
    assert sorted(sent("server", "c2s")) == sorted(
        [b"keep", b"modified", b"inject", b"to server", b"last"]
    )
    assert b"to client" in sent("client", "s2c") and b"to client" not in sent("server", "s2c")
    streams = [s for s in tables["streams"] if s["kind"] == "websocket"]
    assert {legs[s["conn_id"]]["leg"] for s in streams} == {"client", "server"}
    assert all(s["path"] == "/ws/hooks" for s in streams)


def test_http1_fallback_upstream(
    tmp_path: Path, echo_server: EchoServer, tls_certificate: Certificate
) -> None:
    """Reverse mode to a cleartext server: the client speaks HTTP/2 with RFC 8441 to mitmproxy,
    mitmproxy opens an HTTP/1.1 ``Upgrade: websocket`` upstream and answers the CONNECT 200."""
    flows = tmp_path / "flows.mitm"
    proxy = Mitmdump(
        tmp_path, mode=f"reverse:http://127.0.0.1:{echo_server.port}", args=["-w", str(flows)]
    )
    result = Result()
    with proxy:
        client = H2WsClient(proxy.port, ca=proxy.ca_cert)
        try:
            client.get("/hello", result)
            client.websocket("/ws/fallback", ["one", "two", "last"], {"last"}, result)
        finally:
            client.close()
    assert result.statuses == {"/hello": 200}
    assert result.ws_status == 200
    assert result.received == ["one", "two", "last"]
    assert result.closed
    assert "Traceback" not in proxy.log(), proxy.log()
    (ws,) = [f for f in read_flows(flows) if getattr(f, "websocket", None) is not None]
    assert ws.metadata["h2ws"]["upstream"] == "http/1.1"
    assert ws.response.status_code == 200
    for from_client in (True, False):
        sent = [m.content for m in ws.websocket.messages if m.from_client is from_client]
        assert sent == [b"one", b"two", b"last"]
