"""Faults through the addon: the proxy keeps serving, the tables say what happened.

The Node.js ``http2`` server (``testkit/live/node_server.mjs``) resets a stream or drops the
connection in the middle of a WebSocket message on request, and the fault client
(``testkit/live/node_fault_client.mjs``) also aborts a connection itself (TCP RST in the middle of
a message).  All three go through one ``mitmdump -s addon/addon.py``, and then an ordinary
client run must still work through the same proxy.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import Tables, assert_h2_run, messages_of, read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import NodeServer
from tests.conftest import SEED, require

pytestmark = pytest.mark.timeout(120)

LIVE = Path(__file__).resolve().parents[1] / "testkit" / "live"
FAULT_CLIENT = LIVE / "node_fault_client.mjs"
PROBE = LIVE / "probe.py"


def run_fault(port: int, scenario: str, log: Path) -> dict[str, Any]:
    cmd = ["node", str(FAULT_CLIENT), "--port", str(port), "--scenario", scenario]
    proc = subprocess.run([*cmd, "--log", str(log)], capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(log.read_text())
    return result


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require("node")
    work = tmp_path_factory.mktemp("faults")
    out = work / "live"
    logs: dict[str, Any] = {}
    with NodeServer(work / "server") as server:
        proxy = Mitmdump(
            work,
            mode=f"reverse:http://127.0.0.1:{server.port}",
            options={
                "h2ws_mode": "observe",
                "h2ws_out": out,
                "h2ws_payload": "full",
                "probe_out": work / "probe.jsonl",
            },
            args=["-s", str(PROBE)],
        )
        with proxy:
            for scenario in ("reset", "cut", "abort"):
                logs[scenario] = run_fault(proxy.port, scenario, work / f"{scenario}.json")
            # The same proxy still serves a normal run, all its messages echoed.
            logs["normal"] = run_node(proxy.port, work / "normal.json", ws=2, gets=1, seed=SEED)
            alive = proxy.alive()
        proxy_log = proxy.log()
    probe = [json.loads(line) for line in (work / "probe.jsonl").read_text().splitlines()]
    return {"tables": read_tables(out), "logs": logs, "alive": alive, "proxy_log": proxy_log,
            "probe": probe}  # fmt: skip


def connection_with(tables: Tables, path: str) -> str:
    """The conn_id of the connection that carried a stream with ``path``."""
    ids = {s["conn_id"] for s in tables["streams"] if s["path"] == path}
    assert len(ids) == 1, (path, ids)
    return ids.pop()


def stream(tables: Tables, conn_id: str, path: str) -> dict[str, Any]:
    rows = [s for s in tables["streams"] if s["conn_id"] == conn_id and s["path"] == path]
    assert len(rows) == 1, rows
    return rows[0]


def payloads(rows: list[dict[str, Any]]) -> list[bytes]:
    return [r["payload"] for r in sorted(rows, key=lambda r: r["index"])]


def sent(ws: dict[str, Any], key: str) -> list[bytes]:
    return [base64.b64decode(m["payload_b64"]) for m in ws[key]]


def test_proxy_survives(faults: dict[str, Any]) -> None:
    assert faults["alive"]
    assert "Traceback" not in faults["proxy_log"]
    assert "h2ws:" not in faults["proxy_log"].replace("h2ws: observe mode", "")
    normal = faults["tables"]
    one = {
        t: [r for r in rows if r.get("conn_id") in _normal_ids(normal)]
        for t, rows in normal.items()
    }
    assert_h2_run(one, faults["logs"]["normal"], "h2c")


def _normal_ids(tables: Tables) -> set[str]:
    return {connection_with(tables, "/ws/0")}


def test_server_resets_a_stream(faults: dict[str, Any]) -> None:
    tables, log = faults["tables"], faults["logs"]["reset"]
    conn_id = connection_with(tables, "/ws/reset-after/1")
    reset = stream(tables, conn_id, "/ws/reset-after/1")
    assert reset["stream_end"] == reset["close_cause"] == "rst_stream:CANCEL", reset
    ws = next(w for w in log["websockets"] if w["path"] == "/ws/reset-after/1")
    assert reset["stream_id"] == ws["stream_id"]
    assert payloads(messages_of(tables, conn_id, ws["stream_id"], "c2s")) == sent(ws, "sent")
    assert payloads(messages_of(tables, conn_id, ws["stream_id"], "s2c")) == sent(ws, "received")
    # The other streams of the connection are unharmed.
    echo = stream(tables, conn_id, "/ws/echo")
    assert echo["close_cause"] == "ws_close:1000" and echo["error"] is None, echo
    hello = stream(tables, conn_id, "/hello")
    assert (hello["status"], hello["close_cause"]) == (200, "end_stream")
    conn = next(c for c in tables["connections"] if c["conn_id"] == conn_id)
    assert (conn["end_cause"], conn["error"]) == ("closed", None)
    # Other addons see the reset WebSocket end without a close frame.
    end = next(
        p for p in faults["probe"] if p["event"] == "end" and p["path"] == "/ws/reset-after/1"
    )
    assert end["close_code"] == 1006 and "rst_stream:CANCEL" in end["error"]


def test_server_drops_the_connection_mid_message(faults: dict[str, Any]) -> None:
    tables, log = faults["tables"], faults["logs"]["cut"]
    conn_id = connection_with(tables, "/ws/cut-after/1")
    cut = stream(tables, conn_id, "/ws/cut-after/1")
    # Node.js may send GOAWAY as it drops the connection: stream_end names what ended the
    # stream; the message cut short makes it incomplete, with the error and a diagnostic.
    assert cut["stream_end"] in ("goaway", "connection_closed"), cut
    assert cut["close_cause"] == "incomplete", cut
    assert "inside a binary message" in (cut["error"] or ""), cut
    ws = log["websockets"][0]
    assert payloads(messages_of(tables, conn_id, ws["stream_id"], "s2c")) == sent(ws, "received")
    codes = {(d["code"], d["stream_id"]) for d in tables["diagnostics"] if d["conn_id"] == conn_id}
    assert ("ws_incomplete_message", ws["stream_id"]) in codes, codes
    conn = next(c for c in tables["connections"] if c["conn_id"] == conn_id)
    assert conn["end_cause"] in ("closed", "error"), conn


def test_client_aborts(faults: dict[str, Any]) -> None:
    tables, log = faults["tables"], faults["logs"]["abort"]
    conn_id = _abort_conn(tables)
    ws = log["websockets"][0]
    aborted = stream(tables, conn_id, "/ws/echo")
    assert aborted["close_cause"] == "incomplete", aborted
    assert "inside a text message" in (aborted["error"] or ""), aborted
    assert payloads(messages_of(tables, conn_id, ws["stream_id"], "c2s")) == sent(ws, "sent")
    assert payloads(messages_of(tables, conn_id, ws["stream_id"], "s2c")) == sent(ws, "received")
    conn = next(c for c in tables["connections"] if c["conn_id"] == conn_id)
    assert conn["end_cause"] in ("closed", "error"), conn


def _abort_conn(tables: Tables) -> str:
    """The connection whose only stream is /ws/echo (the reset scenario has three)."""
    candidates = {s["conn_id"] for s in tables["streams"] if s["path"] == "/ws/echo"}
    singles = [c for c in candidates if sum(s["conn_id"] == c for s in tables["streams"]) == 1]
    assert len(singles) == 1, candidates
    return singles[0]
