"""``make demo``, the README's main command: live RFC 8441 traffic through mitmdump and the addon,
then tables, summary and report.html; and its check, which must fail loudly when the tables and
the clients disagree."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from h2ws.testkit.peers.runner import REPO
from tests.conftest import require

sys.path.insert(0, str(REPO / "scripts"))
import demo_live

pytestmark = pytest.mark.timeout(240)

SMALL = "--clients 2 --websockets 2 --gets 3 --messages 3 --interval 5"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    require("node")
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "OUT": str(out), "DEMO_ARGS": SMALL}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_demo_runs_live_and_writes_the_report(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    assert "tables match the clients' logs" in stdout
    assert f"report:  {out}/report.html" in stdout
    html = (out / "report.html").read_text()
    assert "recorded live by the mitmproxy addon" in html
    assert "<img" in html and "data:image/png;base64," in html  # opens with no server
    log = (out / "run" / "proxy" / "mitmdump.log").read_text()
    assert "Traceback" not in log


def test_demo_tables_hold_both_workloads(demo: tuple[Path, str]) -> None:
    out, _ = demo
    tables = {
        name: demo_live.read_table(out / "tables", name).to_pylist() for name in demo_live.TABLES
    }
    conns = tables["connections"]
    h2 = [c for c in conns if c["http_version"] == "h2"]
    h1 = [c for c in conns if c["http_version"] == "http/1.1"]
    # 2 RFC 8441 connections with 2 WebSockets + 3 GETs each; the same 4 WebSockets over HTTP/1.1.
    assert [c["websockets"] for c in h2] == [2, 2] and [c["streams"] for c in h2] == [5, 5]
    assert len(h1) == 4 and all(c["websockets"] == 1 for c in h1)
    assert all(c["source"] == "live" and c["tls"] for c in conns)
    assert all(c["enable_connect_protocol"] for c in h2)


def test_check_reports_what_the_tables_miss(demo: tuple[Path, str]) -> None:
    """The demo's check compares with the clients' logs: a message the tables lack, a WebSocket
    the tables lack, and an error diagnostic each fail it."""
    out, _ = demo
    tables = {
        name: demo_live.read_table(out / "tables", name).to_pylist() for name in demo_live.TABLES
    }
    logs = [json.loads(p.read_text()) for p in sorted((out / "run").glob("h2-client-*.json"))]
    h1_log = json.loads((out / "run" / "h1-client.json").read_text())
    assert demo_live.check(tables, logs, h1_log) == []

    fewer = copy.deepcopy(tables)
    dropped = next(m for m in fewer["messages"] if m["stream_id"] is not None)
    fewer["messages"].remove(dropped)
    problems = demo_live.check(fewer, logs, h1_log)
    assert len(problems) == 1 and f"stream {dropped['stream_id']}" in problems[0], problems

    more = copy.deepcopy(logs)
    more[0]["websockets"].append({**more[0]["websockets"][0], "stream_id": 99})
    assert any("stream 99 kind" in p for p in demo_live.check(tables, more, h1_log))

    broken = copy.deepcopy(tables)
    broken["diagnostics"].append({"severity": "error", "code": "x", "message": "boom"})
    assert demo_live.check(broken, logs, h1_log) == ["error diagnostic: x: boom"]
