"""What mitmproxy's own hooks see, and what the addon records from them.

- RFC 8441 WebSockets of relayed connections reach other addons as read-only WebSocket flows
  (``websocket_start/message/end``, stream id in ``flow.metadata["h2ws"]``), with every data
  message of the client's log — the probe addon (``testkit/live/probe.py``) stands for any addon.
- HTTP/1.1 WebSockets, which mitmproxy relays itself (the baseline), are recorded from its
  hooks into the same tables: one connection per WebSocket, the exchanges numbered, every data
  message and the closing frame, with a ``hooks_recorded`` note saying what is not observed.
"""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import decoded, diff, logged, messages_of, read_tables
from h2ws.testkit.live.proxy import MITMWEB, Mitmdump
from h2ws.testkit.peers import runner
from h2ws.testkit.peers.plan import payload_of
from h2ws.testkit.peers.runner import EchoServer
from tests.conftest import SEED, require

pytestmark = pytest.mark.timeout(120)

PROBE = Path(__file__).resolve().parents[1] / "testkit" / "live" / "probe.py"


def data_messages(messages: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """What mitmproxy's model has of a log: text and binary messages, no control frames."""
    return [(m["opcode"], payload_of(m)) for m in messages if m["opcode"] in ("text", "binary")]


def test_rfc8441_websockets_reach_other_addons(tmp_path: Path, echo_server: EchoServer) -> None:
    require("node")
    probe_out = tmp_path / "probe.jsonl"
    proxy = Mitmdump(
        tmp_path,
        mode=f"reverse:http://127.0.0.1:{echo_server.port}",
        options={"h2ws_mode": "observe", "probe_out": probe_out},
        args=["-s", str(PROBE)],
    )
    with proxy:
        log = run_node(proxy.port, tmp_path / "client.json", ws=3, gets=2, seed=SEED)
    rows = [json.loads(line) for line in probe_out.read_text().splitlines()]
    by_flow: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_flow.setdefault(row["flow"], []).append(row)
    assert len(by_flow) == len(log["websockets"])
    seen = {}
    for events in by_flow.values():
        start, *messages, end = events
        assert (start["event"], end["event"]) == ("start", "end")
        assert start["method"] == "CONNECT" and start["status"] == 200
        assert start["live"] is False  # read-only: nothing to intercept, the bytes went through
        meta = start["h2ws"]
        assert meta["mirror"] is True and meta["protocol"] == "websocket"
        assert end["close_code"] == 1000 and end["closed_by_client"] is True
        assert end["error"] is None
        seen[meta["stream_id"]] = (start["path"], messages)
    for ws in log["websockets"]:
        path, messages = seen[ws["stream_id"]]
        assert path == ws["path"]
        for from_client, key in ((True, "sent"), (False, "received")):
            got = [
                (m["type"], m["length"], m["sha256"])
                for m in messages
                if m["from_client"] is from_client
            ]
            want = [(op, len(p), hashlib.sha256(p).hexdigest()) for op, p in data_messages(ws[key])]
            assert got == want, (ws["path"], key)


def test_http1_websockets_recorded_from_hooks(tmp_path: Path, echo_server: EchoServer) -> None:
    """wsproto over HTTP/1.1 through mitmproxy's own WebSocket relay (reverse mode)."""
    out = tmp_path / "live"
    proxy = Mitmdump(
        tmp_path,
        mode=f"reverse:http://127.0.0.1:{echo_server.port}",
        options={
            "h2ws_mode": "observe",
            "h2ws_out": out,
            "h2ws_payload": "full",
            "h2ws_flush_interval": 1,
        },
    )
    log_path = tmp_path / "client.json"
    with proxy:
        cmd = runner.python_client_cmd(
            "h1_ws_client", proxy.port, log_path, "--ws", "2", "--get-first", "--seed", str(SEED)
        )
        log = runner.run_client(cmd, log_path)
    tables = read_tables(out)
    conns = tables["connections"]
    assert len(conns) == 2, conns
    assert {c["http_version"] for c in conns} == {"http/1.1"}
    assert {c["source"] for c in conns} == {"live"}
    assert all(c["end_cause"] == "closed" for c in conns)
    ports_with_get = {r["local_port"] for r in log["requests"]}
    notes = [d for d in tables["diagnostics"] if d["code"] == "hooks_recorded"]
    assert len(notes) == 2
    for ws in log["websockets"]:
        conn = next(c for c in conns if c["client_port"] == ws["local_port"])
        conn_id = conn["conn_id"]
        streams = sorted(
            (s for s in tables["streams"] if s["conn_id"] == conn_id), key=lambda s: s["exchange"]
        )
        with_get = ws["local_port"] in ports_with_get
        assert [s["exchange"] for s in streams] == ([0, 1] if with_get else [0])
        assert conn["streams"] == len(streams) and conn["websockets"] == 1
        # What the hooks show of the bytes: the streams' payload bytes.
        for direction in ("c2s", "s2c"):
            total = sum(s[f"bytes_{direction}"] for s in streams)
            assert conn[f"bytes_{direction}"] == total > 0, (direction, conn, streams)
        if with_get:
            get = streams[0]
            assert (get["kind"], get["method"], get["path"], get["status"]) == (
                "http",
                "GET",
                "/hello",
                200,
            )
            assert get["close_cause"] == "end_stream"
        s = streams[-1]
        assert (s["kind"], s["method"], s["path"], s["status"]) == (
            "websocket",
            "GET",
            ws["path"],
            101,
        )
        assert s["ws_accepted"] is True and s["stream_id"] is None
        assert (s["protocol"] or "").lower() == "websocket"
        assert s["close_cause"] == "ws_close:1000" and s["ws_close_by"] == "c2s"
        deflate = ws["extensions"] == "permessage-deflate"
        assert ("permessage-deflate" in (s["ws_extensions"] or "")) is deflate
        exchange = s["exchange"]
        c2s = decoded(messages_of(tables, conn_id, None, "c2s", exchange))
        s2c = decoded(messages_of(tables, conn_id, None, "s2c", exchange))
        # The client's data messages and its close frame; mitmproxy answers the close itself.
        want_c2s = [*data_messages(ws["sent"]), ("close", payload_of(ws["sent"][-1]))]
        assert c2s == want_c2s, diff(want_c2s, c2s)
        want_s2c = data_messages(ws["received"])
        assert s2c == want_s2c, diff(want_s2c, s2c)
        assert logged(ws["sent"])[-1][0] == "close"
        close = next(
            m for m in tables["messages"] if m["conn_id"] == conn_id and m["opcode"] == "close"
        )
        assert (close["close_code"], close["close_reason"]) == (1000, f"bye {ws['path'][-1]}")


def test_mitmweb_lists_rfc8441_websockets(tmp_path: Path, echo_server: EchoServer) -> None:
    """mitmweb's flow list (its REST API, what the web UI shows) has the mirrored WebSockets."""
    require("node")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    token = "h2ws-test-token"
    proxy = Mitmdump(
        tmp_path,
        mode=f"reverse:http://127.0.0.1:{echo_server.port}",
        options={
            "h2ws_mode": "observe",
            "web_password": token,
            "web_host": "127.0.0.1",
            "web_port": web_port,
        },
        args=["--no-web-open-browser"],
        tool=MITMWEB,
        name="mitmweb",
    )
    with proxy:
        log = run_node(proxy.port, tmp_path / "client.json", ws=2, gets=1, seed=SEED)
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/flows", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            flows = json.load(response)
    websockets = [f for f in flows if f["type"] == "http" and f.get("websocket")]
    assert sorted(f["request"]["path"] for f in websockets) == sorted(
        w["path"] for w in log["websockets"]
    )
    for flow in websockets:
        ws = next(w for w in log["websockets"] if w["path"] == flow["request"]["path"])
        count = len(data_messages(ws["sent"])) + len(data_messages(ws["received"]))
        assert flow["websocket"]["messages_meta"]["count"] == count
        assert flow["websocket"]["close_code"] == 1000
    relayed = [f for f in flows if f["type"] == "tcp"]
    assert len(relayed) == 1  # the HTTP/2 connection itself, relayed verbatim
