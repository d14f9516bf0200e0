"""Faults on one stream in intercept mode never end the other streams, nor the proxy.

A Node.js ``http2`` client (``testkit/live/node_fault_client.mjs``) goes through a CONNECT
tunnel of ``mitmdump -s addon/addon.py`` (intercept mode, the default) to the Node.js ``http2``
server (TLS, RFC 8441; ``testkit/live/node_server.mjs``):

- ``isolation``: on one connection a WebSocket stays open while, beside it, the server resets a
  WebSocket stream, the server ends a WebSocket stream in the middle of a message, the client
  sends a malformed frame (reserved opcode) on another, the client resets another in the middle
  of a message (RST_STREAM), and a GET runs; afterwards the open
  WebSocket still echoes and closes cleanly, and another GET works;
- ``cut-more``: the server drops its whole connection in the middle of a message; the client's
  connection to the proxy stays, and a GET and a new WebSocket on it work (a new upstream
  connection).

Then an ordinary client run through the same proxy must still work, and the proxy must be alive
with no traceback.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import Tables, read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import NodeServer
from h2ws.testkit.live.tunnel import ConnectTunnel
from h2ws.testkit.peers.runner import Certificate
from tests.conftest import SEED, require

pytestmark = pytest.mark.timeout(120)

LIVE = Path(__file__).resolve().parents[1] / "testkit" / "live"
FAULT_CLIENT = LIVE / "node_fault_client.mjs"
SCENARIOS = ("isolation", "cut-more")


def run_fault(port: int, scenario: str, log: Path, ca: Path) -> dict[str, Any]:
    cmd = ["node", str(FAULT_CLIENT), "--port", str(port), "--scenario", scenario]
    cmd += ["--tls", "--ca", str(ca), "--servername", "localhost", "--log", str(log)]
    proc = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(log.read_text())
    return result


@pytest.fixture(scope="module")
def faults(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> dict[str, Any]:
    require("node")
    work = tmp_path_factory.mktemp("intercept-faults")
    out = work / "tables"
    flows = work / "flows.mitm"
    logs: dict[str, Any] = {}
    with NodeServer(work / "server", tls_certificate) as server:
        proxy = Mitmdump(
            work,
            upstream_ca=tls_certificate.ca,
            options={"h2ws_out": out, "h2ws_payload": "full"},
            args=["-w", str(flows)],
        )
        with proxy:
            target = ("127.0.0.1", server.port)
            for scenario in SCENARIOS:
                with ConnectTunnel(proxy.port, target) as tunnel:
                    logs[scenario] = run_fault(
                        tunnel.port, scenario, work / f"{scenario}.json", proxy.ca_cert
                    )
            with ConnectTunnel(proxy.port, target) as tunnel:
                logs["normal"] = run_node(
                    tunnel.port, work / "normal.json", ws=2, gets=1, seed=SEED,
                    tls=True, ca=proxy.ca_cert, servername="localhost",
                )  # fmt: skip
            alive = proxy.alive()
        proxy_log = proxy.log()
    return {"logs": logs, "alive": alive, "proxy_log": proxy_log, "tables": read_tables(out),
            "flows": read_flows(flows)}  # fmt: skip


def read_flows(path: Path) -> list[Any]:
    from mitmproxy import io

    with open(path, "rb") as f:
        return list(io.FlowReader(f).stream())


def texts(entries: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(m["payload_b64"]) for m in entries if m["opcode"] == "text"]


def close_code(entries: list[dict[str, Any]]) -> int | None:
    closes = [base64.b64decode(m["payload_b64"]) for m in entries if m["opcode"] == "close"]
    return int.from_bytes(closes[-1][:2], "big") if closes else None


def websocket(log: dict[str, Any], path: str) -> dict[str, Any]:
    (ws,) = [w for w in log["websockets"] if w["path"] == path]
    return ws


def test_proxy_survives(faults: dict[str, Any]) -> None:
    assert faults["alive"]
    assert "Traceback" not in faults["proxy_log"], faults["proxy_log"]
    normal = faults["logs"]["normal"]
    assert len(normal["websockets"]) == 2 and all(r["status"] == 200 for r in normal["requests"])


def test_one_stream_fails_the_others_go_on(faults: dict[str, Any]) -> None:
    log = faults["logs"]["isolation"]
    echo = websocket(log, "/ws/echo")
    assert texts(echo["received"]) == texts(echo["sent"]) == [b"first", b"second"]
    assert close_code(echo["received"]) == 1000 and echo["end"] == "close_handshake"
    assert [(r["path"], r["status"]) for r in log["requests"]] == [("/hello", 200)] * 2
    # the server reset it / ended it mid-message: one echo, then mitmproxy's WebSocket layer
    # closes the client side (as it does when an HTTP/1.1 server drops its connection)
    for path in ("/ws/reset-after/1", "/ws/end-after/1"):
        ws = websocket(log, path)
        assert texts(ws["received"]) == [b"one"], ws
        assert ws["end"] is not None and ws["end"] != "close_handshake", ws
    # the malformed frame: mitmproxy's WebSocket layer answers 1002 (protocol error)
    bad = websocket(log, "/ws/bad")
    assert texts(bad["received"]) == [b"ok"] and close_code(bad["received"]) == 1002, bad
    # the client reset one in the middle of a message: its echo came, then nothing more
    gone = websocket(log, "/ws/client-reset")
    assert texts(gone["received"]) == [b"one"] and gone["end"] == "client_reset", gone
    # all of it on one client connection, each WebSocket a flow that says how it ended
    flows = {f.request.path: f for f in faults["flows"] if f.websocket is not None}
    assert flows["/ws/bad"].websocket.close_code == 1002
    assert flows["/ws/reset-after/1"].websocket.close_code == 1006
    assert flows["/ws/end-after/1"].websocket.close_code == 1006
    assert flows["/ws/client-reset"].websocket.close_code == 1006
    isolation = ("/ws/reset-after/1", "/ws/end-after/1", "/ws/bad", "/ws/client-reset")
    assert len({flows[p].client_conn.id for p in isolation}) == 1
    client_rows = client_leg_streams(faults["tables"], "/ws/bad")
    by_path = {s["path"]: s for s in client_rows}
    paths = {"/ws/echo", "/ws/reset-after/1", "/ws/end-after/1", "/ws/bad", "/ws/client-reset"}
    assert paths | {"/hello"} <= set(by_path), client_rows
    assert by_path["/ws/echo"]["close_cause"] == "ws_close:1000", by_path["/ws/echo"]
    assert by_path["/ws/bad"]["close_cause"] == "ws_close:1002", by_path["/ws/bad"]


def test_server_drops_its_connection_mid_message(faults: dict[str, Any]) -> None:
    log = faults["logs"]["cut-more"]
    cut = websocket(log, "/ws/cut-after/1")
    assert texts(cut["received"]) == [b"one"] and cut["end"] != "close_handshake", cut
    # the client's connection to the proxy outlived the server's: more on it works
    assert [(r["path"], r["status"]) for r in log["requests"]] == [("/hello", 200)]
    echo = websocket(log, "/ws/echo")
    assert texts(echo["received"]) == [b"after the cut"] and close_code(echo["received"]) == 1000
    rows = client_leg_streams(faults["tables"], "/ws/cut-after/1")
    assert {"/ws/cut-after/1", "/hello", "/ws/echo"} <= {s["path"] for s in rows}, rows


def client_leg_streams(tables: Tables, path: str) -> list[dict[str, Any]]:
    """The streams of the client-leg connection that carried ``path``."""
    legs = {c["conn_id"]: c["leg"] for c in tables["connections"]}
    conns = {
        s["conn_id"]
        for s in tables["streams"]
        if s["path"] == path and legs[s["conn_id"]] == "client"
    }
    assert len(conns) == 1, (path, conns)
    conn = conns.pop()
    return [s for s in tables["streams"] if s["conn_id"] == conn]


def test_a_client_reset_closes_its_websocket_at_the_server(faults: dict[str, Any]) -> None:
    """The client's RST_STREAM mid-message ends that WebSocket at the server too (a close
    handshake from the proxy, as mitmproxy does when an HTTP/1.1 client drops its
    connection), not left open; the server's other streams went on (the test above)."""
    legs = {c["conn_id"]: c["leg"] for c in faults["tables"]["connections"]}
    (server,) = [
        s
        for s in faults["tables"]["streams"]
        if s["path"] == "/ws/client-reset" and legs[s["conn_id"]] == "server"
    ]
    assert server["ws_close_by"] == "c2s" and server["stream_end"] == "end_stream", server
    assert server["close_cause"].startswith("ws_close:"), server
