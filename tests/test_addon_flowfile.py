"""Flow files: what ``mitmdump -w`` saved is analysed offline into the same tables.

One live run through ``mitmdump -s addon/addon.py -w flows.mitm --set h2ws_keep_raw=true`` (the
Node.js client, hypercorn, h2c and TLS) writes live tables and a flow file.  Then:

- ``flow_records`` (what ``h2ws extract flows.mitm`` runs) gives the same rows as the live run,
  ``source`` and ``capture`` aside;
- ``mitmdump -nr flows.mitm -s addon/addon.py`` gives them too, and does not double the flows:
  the mirrored WebSocket flows in the file are not mirrored again;
- without ``h2ws_keep_raw`` the file says so (``flowfile_no_raw``) instead of inventing rows.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import PayloadPolicy
from h2ws.analysis.sinks.writers import TableSink
from h2ws.analysis.sources.flowfile import flow_records, is_flow_file
from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import TABLES, Tables, assert_h2_run, read_tables
from h2ws.testkit.live.proxy import ADDON, MITMDUMP, Mitmdump
from h2ws.testkit.live.tunnel import ConnectTunnel
from h2ws.testkit.peers.runner import Certificate, EchoServer
from tests.conftest import SEED, require
from tests.test_addon_hooks import data_messages

pytestmark = pytest.mark.timeout(120)

#: Columns that say where rows came from, not what happened.
PROVENANCE = {"source", "capture"}


def extract_flow_file(path: Path, out: Path) -> tuple[Tables, Counter[str]]:
    """What ``h2ws extract flows.mitm -o out --payload full`` does (see the report)."""
    stats: Counter[str] = Counter()
    options = DecodeOptions(payload=PayloadPolicy("full"))
    with TableSink(out, "parquet") as sink:
        for record in flow_records(path, options, stats):
            sink.write(record)
    return read_tables(out), stats


def canonical(tables: Tables) -> dict[str, list[tuple[Any, ...]]]:
    """Rows as sorted tuples without the provenance columns: comparable across runs."""
    out = {}
    for table in TABLES:
        rows = [
            tuple(sorted((k, repr(v)) for k, v in row.items() if k not in PROVENANCE))
            for row in tables[table]
        ]
        out[table] = sorted(rows)
    return out


def count_flows(path: Path) -> Counter[str]:
    from mitmproxy import io

    kinds: Counter[str] = Counter()
    with open(path, "rb") as f:
        for flow in io.FlowReader(f).stream():
            mirror = "mirror" if flow.metadata.get("h2ws", {}).get("mirror") else "own"
            kinds[f"{flow.type}:{mirror}"] += 1
    return kinds


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory,
    echo_server: EchoServer,
    echo_server_tls: EchoServer,
    tls_certificate: Certificate,
) -> dict[str, Any]:
    """One proxy, two client runs (h2c, then TLS), tables and a flow file."""
    require("node")
    work = tmp_path_factory.mktemp("flowfile")
    flows = work / "flows.mitm"
    out = work / "live"
    options = {
        "h2ws_mode": "observe",
        "h2ws_out": out,
        "h2ws_payload": "full",
        "h2ws_keep_raw": True,
    }
    proxy = Mitmdump(work, options=options, upstream_ca=tls_certificate.ca, args=["-w", str(flows)])
    logs = []
    with proxy:
        for server, tls in ((echo_server, False), (echo_server_tls, True)):
            with ConnectTunnel(proxy.port, ("127.0.0.1", server.port)) as tunnel:
                log = work / f"client-{tls}.json"
                extra: dict[str, object] = (
                    {"tls": True, "ca": proxy.ca_cert, "servername": "localhost"} if tls else {}
                )
                logs.append(run_node(tunnel.port, log, ws=2, gets=2, seed=SEED, **extra))
    return {"work": work, "flows": flows, "live": read_tables(out), "logs": logs}


def test_live_tables_hold_both_runs(recorded: dict[str, Any]) -> None:
    live = recorded["live"]
    assert sorted(c["http_version"] for c in live["connections"]) == ["h2", "h2c"]
    for log, version in zip(recorded["logs"], ("h2c", "h2"), strict=True):
        one = {
            t: [r for r in rows if r.get("conn_id") in _conn_ids(live, version)]
            for t, rows in live.items()
        }
        assert_h2_run(one, log, version)


def _conn_ids(tables: Tables, version: str) -> set[str]:
    return {c["conn_id"] for c in tables["connections"] if c["http_version"] == version}


def test_flow_file_content(recorded: dict[str, Any]) -> None:
    flows: Path = recorded["flows"]
    assert is_flow_file(flows)
    kinds = count_flows(flows)
    # Two relayed connections with their raw chunks, their 4 WebSockets and 4 GETs mirrored.
    assert kinds == {"tcp:own": 2, "http:mirror": 8}, kinds


def test_extract_flow_file_equals_live(recorded: dict[str, Any]) -> None:
    offline, stats = extract_flow_file(recorded["flows"], recorded["work"] / "offline")
    assert stats["flows"] == 10
    assert {c["source"] for c in offline["connections"]} == {"flowfile"}
    assert {c["capture"] for c in offline["connections"]} == {"flows.mitm"}
    live, off = canonical(recorded["live"]), canonical(offline)
    for table in TABLES:
        assert off[table] == live[table], f"{table} differs"


def test_replay_neither_doubles_flows_nor_changes_tables(recorded: dict[str, Any]) -> None:
    work: Path = recorded["work"]
    out = work / "replayed"
    again = work / "again.mitm"
    cmd = [
        str(MITMDUMP), "-n", "-r", str(recorded["flows"]), "-s", str(ADDON),
        "--set", f"h2ws_out={out}", "--set", "h2ws_payload=full", "-w", str(again),
        "--set", f"confdir={work / 'confdir'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert count_flows(again) == count_flows(recorded["flows"])
    replayed = read_tables(out)
    assert {c["source"] for c in replayed["connections"]} == {"flowfile"}
    live, rep = canonical(recorded["live"]), canonical(replayed)
    for table in TABLES:
        assert rep[table] == live[table], f"{table} differs"


def test_without_keep_raw_the_file_says_so(
    tmp_path: Path, echo_server: EchoServer, tls_certificate: Certificate
) -> None:
    require("node")
    flows = tmp_path / "flows.mitm"
    proxy = Mitmdump(
        tmp_path,
        options={"h2ws_mode": "observe"},
        upstream_ca=tls_certificate.ca,
        args=["-w", str(flows)],
    )
    with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", echo_server.port)) as tunnel:
        client = run_node(tunnel.port, tmp_path / "client.json", ws=1, gets=1)
    offline, _ = extract_flow_file(flows, tmp_path / "offline")
    codes = [d["code"] for d in offline["diagnostics"]]
    assert "flowfile_no_raw" in codes
    # The mirrored flows (the WebSocket, the GET) are in the file all the same...
    assert count_flows(flows) == {"tcp:own": 1, "http:mirror": 2}
    # ...and give the streams and every WebSocket data message, on one connection row.
    (conn,) = offline["connections"]
    assert conn["http_version"] == "h2c" and conn["streams"] == 2 and conn["websockets"] == 1
    assert "hooks_recorded" in codes
    kinds = sorted(s["kind"] for s in offline["streams"])
    assert kinds == ["http", "websocket"]
    (ws,) = client["websockets"]
    stream = next(s for s in offline["streams"] if s["kind"] == "websocket")
    assert (stream["stream_id"], stream["path"], stream["protocol"]) == (
        ws["stream_id"], ws["path"], "websocket",
    )  # fmt: skip
    for direction, key in (("c2s", "sent"), ("s2c", "received")):
        got = [
            (m["opcode"], m["payload"])
            for m in sorted(offline["messages"], key=lambda m: m["index"])
            if m["direction"] == direction and m["opcode"] in ("text", "binary")
        ]
        assert got == data_messages(ws[key]), direction
