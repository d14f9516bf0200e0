"""``make demo`` / ``h2ws demo``, the README's main command: live RFC 8441 traffic through mitmdump
and the addon (Python peers only), then tables, summary and report.html; its check, which must
fail loudly when the tables and the clients disagree; and its clean-up on Ctrl-C."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from h2ws.testkit import demo as demo_kit
from h2ws.testkit.peers.runner import REPO

pytestmark = pytest.mark.timeout(240)

SMALL = "--clients 2 --websockets 2 --gets 3"
H2WS = REPO / ".venv" / "bin" / "h2ws"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
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
    assert "2 HTTP/2 connections carried 4 WebSockets" in html
    assert (out / "summary.txt").read_text().startswith("connections (")
    assert "<img" in html and "data:image/png;base64," in html  # opens with no server
    log = (out / "run" / "proxy" / "mitmdump.log").read_text()
    assert "Traceback" not in log


def test_demo_tables_hold_both_workloads(demo: tuple[Path, str]) -> None:
    out, _ = demo
    tables = {
        name: demo_kit.read_table(out / "tables", name).to_pylist() for name in demo_kit.TABLES
    }
    conns = tables["connections"]
    # Intercept mode (the demo's default) records each proxied connection once per leg.
    assert sorted({c["leg"] for c in conns}) == ["client", "server"]
    for leg in ("client", "server"):
        h2 = [c for c in conns if c["http_version"] == "h2" and c["leg"] == leg]
        h1 = [c for c in conns if c["http_version"] == "http/1.1" and c["leg"] == leg]
        # 2 RFC 8441 connections with 2 WebSockets + 3 GETs each; the same 4 WebSockets over
        # HTTP/1.1.  (Python clients: h2_py_client --tls, h1_ws_client --parallel.)
        assert [c["websockets"] for c in h2] == [2, 2], leg
        assert [c["streams"] for c in h2] == [5, 5], leg
        assert len(h1) == 4 and all(c["websockets"] == 1 for c in h1), leg
        assert all(c["enable_connect_protocol"] for c in h2), leg
    assert all(c["source"] == "live" and c["tls"] for c in conns)


def test_check_reports_what_the_tables_miss(demo: tuple[Path, str]) -> None:
    """The demo's check compares with the clients' logs: a message the tables lack, a WebSocket
    the tables lack, and an error diagnostic each fail it."""
    out, _ = demo
    tables = {
        name: demo_kit.read_table(out / "tables", name).to_pylist() for name in demo_kit.TABLES
    }
    logs = [json.loads(p.read_text()) for p in sorted((out / "run").glob("h2-client-*.json"))]
    h1_log = json.loads((out / "run" / "h1-client.json").read_text())
    assert demo_kit.check(tables, logs, h1_log) == []

    fewer = copy.deepcopy(tables)
    dropped = next(m for m in fewer["messages"] if m["stream_id"] is not None)
    fewer["messages"].remove(dropped)
    problems = demo_kit.check(fewer, logs, h1_log)
    assert len(problems) == 1 and f"stream {dropped['stream_id']}" in problems[0], problems

    more = copy.deepcopy(logs)
    more[0]["websockets"].append({**more[0]["websockets"][0], "stream_id": 99})
    assert any("stream 99 kind" in p for p in demo_kit.check(tables, more, h1_log))

    broken = copy.deepcopy(tables)
    broken["diagnostics"].append({"severity": "error", "code": "x", "message": "boom"})
    assert demo_kit.check(broken, logs, h1_log) == ["error diagnostic: x: boom"]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the demo's output directory is
    in every command line it starts: the server's certificate, mitmdump's confdir, the logs)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    """SIGINT to the demo's process group (what Ctrl-C in a terminal does) while the workload
    runs: exit 130, one line, and no server, proxy or client left running."""
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [str(H2WS), "demo", "-o", str(out), "--no-report", "--websockets", "8", "--gets", "8"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 60
        # Once the proxy listens and a client runs, everything the demo starts is running.
        while not _processes_mentioning(f"{out}/run/h2-client"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the demo did not start its clients"
            time.sleep(0.02)
        assert _processes_mentioning(str(out)), "nothing of the demo running"
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines() == ["h2ws: interrupted"], stderr
    end = time.monotonic() + 20
    while _processes_mentioning(str(out)) and time.monotonic() < end:
        time.sleep(0.1)
    assert _processes_mentioning(str(out)) == []


def test_output_directory_of_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run(
        [str(H2WS), "demo", "-o", str(tmp_path), "--no-report"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "not a previous demo's output" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
