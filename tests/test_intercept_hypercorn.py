"""Intercept mode in front of hypercorn: several RFC 8441 WebSockets and GETs on one HTTP/2
connection, each WebSocket closing while the others go on (issue #11).

hypercorn forgets a WebSocket's stream as soon as the close handshake is done, without ending
or resetting it, and then fails the WHOLE HTTP/2 connection with a KeyError on any DATA frame
of that stream (``hypercorn/protocol/h2.py``, ``DataReceived``), an empty END_STREAM one too:
the other WebSockets on it lose their echoes.  Intercept mode therefore puts END_STREAM on the
close frame's own DATA frame; the server leg's frames table shows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ws.testkit.live.compare import read_tables
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.peers.runner import Certificate, EchoServer, python_client_cmd, run_client

pytestmark = pytest.mark.timeout(120)

WEBSOCKETS = 4
GETS = 4


def test_websockets_close_one_by_one_the_connection_stays(
    tmp_path: Path, echo_server_tls: EchoServer, tls_certificate: Certificate
) -> None:
    out = tmp_path / "tables"
    proxy = Mitmdump(
        tmp_path / "proxy",
        mode=f"reverse:https://localhost:{echo_server_tls.port}",
        options={"h2ws_out": out},
        upstream_ca=tls_certificate.ca,
    )
    with proxy:
        log_path = tmp_path / "client.json"
        cmd = python_client_cmd(
            "h2_py_client", proxy.port, log_path, "--tls", "--ca", str(proxy.ca_cert),
            "--websockets", str(WEBSOCKETS), "--gets", str(GETS), "--seed", "11",
        )  # fmt: skip
        log = run_client(cmd, log_path, timeout=60)  # exits non-zero on any missing echo
        assert proxy.stop() == 0
    assert "Traceback" not in proxy.log(), proxy.log()
    assert len(log["websockets"]) == WEBSOCKETS
    assert all(not w["errors"] for w in log["websockets"]), log["websockets"]

    tables = read_tables(out)
    legs = {c["conn_id"]: c["leg"] for c in tables["connections"]}
    server_ws = {
        (s["conn_id"], s["stream_id"])
        for s in tables["streams"]
        if s["kind"] == "websocket" and legs[s["conn_id"]] == "server"
    }
    assert len(server_ws) == WEBSOCKETS, tables["streams"]
    for conn_id, stream_id in server_ws:
        data = [
            f
            for f in tables["frames"]
            if (f["conn_id"], f["stream_id"]) == (conn_id, stream_id)
            and f["direction"] == "c2s"
            and f["type"] == "DATA"
        ]
        last = max(data, key=lambda f: f["index"])
        # END_STREAM on the close frame itself, no empty DATA frame after it
        assert "END_STREAM" in last["flags"] and last["length"] > 0, last
        assert sum("END_STREAM" in f["flags"] for f in data) == 1, data
