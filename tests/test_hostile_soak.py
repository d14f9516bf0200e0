"""Issue 13 live soak: >= 1,000 concurrent RFC 8441 WebSockets over >= 10 HTTP/2 connections
through ``mitmdump -s addon/addon.py`` (intercept and observe mode), with ordinary GETs on the
same connections, while hostile connections send the worst header blocks of
``tests/test_hostile_live.py`` in a loop.

``testkit/live/soak_client.mjs`` (Node.js ``http2``, TLS) opens every WebSocket first, then
sends sequence-numbered messages and checks each echo against what it sent: 0 lost, 0
reordered.  The proxy's RSS is sampled (start, peak, end printed), and the tables' WebSocket
message count is the client's.  ``H2WS_SOAK_LONG=<rounds>`` repeats the client run that many
times on the same proxy (the longer run for the note); the default is one.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from h2ws.testkit.live.compare import read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import NodeServer
from h2ws.testkit.peers.runner import REPO, make_certificate
from tests.requires import require_tools
from tests.test_hostile_live import _hostile, _rss_mb, hostile_inputs

CLIENT = REPO / "testkit" / "live" / "soak_client.mjs"
CONNECTIONS, SOCKETS, MESSAGES, GETS = 20, 50, 10, 5  # mitmproxy allows 100 streams a connection
ROUNDS = int(os.environ.get("H2WS_SOAK_LONG", "1"))


@pytest.mark.timeout(300 + 120 * ROUNDS)
@pytest.mark.parametrize("mode", ["intercept", "observe"])
def test_soak_thousand_websockets_with_a_hostile_connection(tmp_path: Path, mode: str) -> None:
    require_tools("node")
    out = tmp_path / "tables"
    certificate = make_certificate(tmp_path / "cert")
    samples: list[float] = []
    per_round: list[float] = []  # RSS after each client run
    results = []
    stop = threading.Event()
    with NodeServer(tmp_path, certificate, lifetime=240 + 120 * ROUNDS) as server:
        proxy = Mitmdump(
            tmp_path,
            mode=f"reverse:https://127.0.0.1:{server.port}",
            upstream_ca=certificate.ca,
            options={"h2ws_out": out, "h2ws_mode": mode, "h2ws_flush_interval": 2},
            args=["--set", "flow_detail=0"],
            lifetime=240 + 120 * ROUNDS,
        )
        with proxy:
            assert proxy.proc is not None
            pid = proxy.proc.pid
            samples.append(_rss_mb(pid))
            frame_size = 2**17 if mode == "intercept" else 2**14

            def attack() -> None:
                while not stop.is_set():
                    for _, block in hostile_inputs():
                        _hostile(proxy.port, block, frame_size)
                    samples.append(_rss_mb(pid))

            attacker = threading.Thread(target=attack, daemon=True)
            attacker.start()
            cmd = [
                "node", str(CLIENT), "--port", str(proxy.port), "--connections",
                str(CONNECTIONS), "--sockets", str(SOCKETS), "--messages", str(MESSAGES),
                "--gets", str(GETS), "--timeout", "150",
            ]  # fmt: skip
            try:
                for _ in range(ROUNDS):
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
                    assert done.returncode == 0, done.stderr[-2000:]
                    results.append(json.loads(done.stdout))
                    per_round.append(_rss_mb(pid))
                    samples.append(per_round[-1])
            finally:
                stop.set()
                attacker.join(timeout=60)
            time.sleep(4)  # two flushes
            samples.append(_rss_mb(pid))
            assert proxy.alive(), proxy.log()[-3000:]
    figures = (
        f"{mode}: {ROUNDS} round(s) {results}; proxy RSS start {samples[0]:.0f} MB, "
        f"peak {max(samples):.0f} MB, end {samples[-1]:.0f} MB ({len(samples)} samples); after "
        f"each round: {', '.join(f'{x:.0f}' for x in per_round)} MB"
    )
    print(figures)
    expected = CONNECTIONS * SOCKETS * MESSAGES
    for r in results:
        assert r["connections"] == CONNECTIONS and r["websockets"] == CONNECTIONS * SOCKETS, figures
        assert r["max_open"] >= 1000, figures  # all open at once
        assert r["sent"] == r["echoed"] == expected, figures
        assert r["lost"] == 0 and r["reordered"] == 0, figures
        assert r["gets_ok"] == CONNECTIONS * GETS, figures
    assert samples[-1] < samples[0] + 150, figures
    tables = read_tables(out)
    client_legs = {c["conn_id"] for c in tables["connections"] if c.get("leg") in (None, "client")}
    texts = [m for m in tables["messages"] if m["conn_id"] in client_legs and m["opcode"] == "text"]
    for direction in ("c2s", "s2c"):
        got = sum(1 for m in texts if m["direction"] == direction)
        assert got == expected * ROUNDS, (direction, got, figures)
