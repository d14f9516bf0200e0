"""Flow files written in intercept mode: replayed (``mitmdump -nr``) and read (``h2ws extract``)
without duplicates.

One intercept-mode run (``mitmdump -s addon/addon.py -w flows.mitm`` with the hooks addon)
carries GETs and RFC 8441 WebSockets from the Node.js client and from the Python client (one
message modified, one dropped, one injected each way).  Then:

- ``h2ws extract flows.mitm``: one stream row per flow (WebSockets with ``protocol=websocket``
  and the client's stream id), one message row per message of each flow, nothing twice;
- ``mitmdump -nr flows.mitm -s addon/addon.py -w again.mitm --set h2ws_out=…``: every flow
  replayed once (``again.mitm`` has the same flows and messages), and the replay's tables
  (``source=flowfile``) hold the same rows as ``h2ws extract``.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import Tables, read_tables
from h2ws.testkit.live.proxy import ADDON, GUARD, MITMDUMP, Mitmdump
from h2ws.testkit.live.servers import PageServer
from h2ws.testkit.live.tunnel import ConnectTunnel
from h2ws.testkit.live.ws_client import H2WsClient, Result
from h2ws.testkit.peers.runner import Certificate
from tests.conftest import SEED, require

pytestmark = pytest.mark.timeout(150)

HOOKS = Path(__file__).resolve().parents[1] / "testkit" / "live" / "hooks_addon.py"
H2WS = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "h2ws"


def read_flows(path: Path) -> list[Any]:
    from mitmproxy import io

    with open(path, "rb") as f:
        return list(io.FlowReader(f).stream())


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> dict[str, Any]:
    require("node")
    work = tmp_path_factory.mktemp("intercept-flowfile")
    flows = work / "flows.mitm"
    with PageServer(work / "page", tls_certificate) as server:
        proxy = Mitmdump(
            work, upstream_ca=tls_certificate.ca, args=["-s", str(HOOKS), "-w", str(flows)]
        )
        with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", server.port)) as tunnel:
            run_node(
                tunnel.port, work / "node.json", ws=3, gets=2, seed=SEED,
                tls=True, ca=proxy.ca_cert, servername="localhost",
            )  # fmt: skip
            result = Result()
            client = H2WsClient(tunnel.port, ca=proxy.ca_cert)
            try:
                client.get("/hello", result)
                client.websocket(
                    "/ws/hooks",
                    ["keep", "modify me", "drop me", "inject", "last"],
                    {"last", "to client", "to server"},
                    result,
                )
            finally:
                client.close()
        assert "Traceback" not in proxy.log(), proxy.log()
    return {"work": work, "flows": flows, "saved": read_flows(flows)}


def extract(flows: Path, out: Path) -> Tables:
    cmd = [str(H2WS), "extract", "-o", str(out), "--payload", "full", str(flows)]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return read_tables(out)


def stream_keys(tables: Tables) -> Counter[tuple[Any, ...]]:
    return Counter(
        (s["kind"], s["method"], s["protocol"], s["path"], s["status"], s["stream_id"])
        for s in tables["streams"]
    )


def message_keys(tables: Tables) -> Counter[tuple[Any, ...]]:
    return Counter(
        (m["stream_id"], m["direction"], m["index"], m["opcode"], m["payload"])
        for m in tables["messages"]
    )


def test_h2ws_extract_reads_each_flow_once(recorded: dict[str, Any], tmp_path: Path) -> None:
    saved = recorded["saved"]
    ws_flows = [f for f in saved if f.websocket is not None]
    assert len(ws_flows) == 4 and len(saved) == 4 + 3, [f.request.path for f in saved]
    tables = extract(recorded["flows"], tmp_path / "extract")
    streams = tables["streams"]
    assert len(streams) == len(saved), streams
    ws_rows = [s for s in streams if s["kind"] == "websocket"]
    assert sorted(s["path"] for s in ws_rows) == sorted(f.request.path for f in ws_flows)
    assert all(s["method"] == "CONNECT" and s["protocol"] == "websocket" for s in ws_rows)
    assert sorted(s["stream_id"] for s in ws_rows) == sorted(
        f.metadata["h2ws"]["stream_id"] for f in ws_flows
    )
    assert all(s["stream_id"] % 2 == 1 for s in ws_rows), ws_rows
    # every message of every flow once (plus the close frames mitmproxy saw), none twice
    data = [m for m in tables["messages"] if m["opcode"] in ("text", "binary")]
    assert len(data) == sum(len(f.websocket.messages) for f in ws_flows)
    assert max(message_keys(tables).values()) == 1
    hooks = next(s for s in ws_rows if s["path"] == "/ws/hooks")
    c2s = [m["payload"] for m in data if m["stream_id"] == hooks["stream_id"]]
    assert c2s.count(b"drop me") == 1 and c2s.count(b"to server") == 2  # sent, echoed


def test_replay_with_the_addon(recorded: dict[str, Any], tmp_path: Path) -> None:
    again = tmp_path / "again.mitm"
    out = tmp_path / "replayed"
    cmd = [str(MITMDUMP), "-n", "-r", str(recorded["flows"]), "-s", str(GUARD), "-s", str(ADDON)]
    cmd += ["--set", f"h2ws_out={out}", "--set", "h2ws_payload=full", "-w", str(again)]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    log = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "Traceback" not in log, log
    replayed = read_flows(again)
    saved = recorded["saved"]
    assert [f.id for f in replayed] == [f.id for f in saved]
    assert [len(f.websocket.messages) if f.websocket else None for f in replayed] == [
        len(f.websocket.messages) if f.websocket else None for f in saved
    ]
    tables = read_tables(out)
    assert {c["source"] for c in tables["connections"]} == {"flowfile"}
    offline = extract(recorded["flows"], tmp_path / "extract")
    assert stream_keys(tables) == stream_keys(offline)
    assert message_keys(tables) == message_keys(offline)
    assert max(message_keys(tables).values()) == 1
