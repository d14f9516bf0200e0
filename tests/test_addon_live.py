"""The h2ws addon in a real mitmdump between real RFC 8441 peers (observe mode).

A Node.js 20 ``http2`` client opens several extended-CONNECT WebSockets and GETs on one
connection through ``mitmdump -s addon/addon.py`` to hypercorn and to the Node.js ``http2``
server, over h2c (prior knowledge) and TLS (ALPN h2), with mitmproxy as a regular proxy (the
client's ``CONNECT`` tunnel) and as a reverse proxy.  The client must see the server's
SETTINGS_ENABLE_CONNECT_PROTOCOL through the proxy (it exits 3 otherwise), every message must
echo, and the tables the addon wrote must hold exactly what the client logged.

Then what must hold around it: a client preface that arrives in pieces, tables written while
the proxy runs and readable after it is killed, a decoder that fails on one connection without
harm to the relay, and the one-line refusal of an unsupported mitmproxy.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from communityid import CommunityID, FlowTuple

from h2ws.analysis.sinks.reader import read_table
from h2ws.testkit.live.clients import run_node
from h2ws.testkit.live.compare import assert_h2_run, read_tables
from h2ws.testkit.live.proxy import ADDON, GUARD, MITMDUMP, Mitmdump
from h2ws.testkit.live.servers import NodeServer
from h2ws.testkit.live.tunnel import ConnectTunnel
from h2ws.testkit.peers.runner import Certificate, EchoServer
from tests.conftest import SEED, require

pytestmark = pytest.mark.timeout(120)

LIVE = Path(__file__).resolve().parents[1] / "testkit" / "live"
WEBSOCKETS = 3
GETS = 3


def live_options(out: Path, **extra: object) -> dict[str, object]:
    return {
        "h2ws_mode": "observe",
        "h2ws_out": out,
        "h2ws_payload": "full",
        "h2ws_flush_interval": 1,
        **extra,
    }


def tls_options(proxy: Mitmdump) -> dict[str, object]:
    """The client trusts mitmproxy's CA and asks for ``localhost`` (SNI and certificate)."""
    return {"tls": True, "ca": proxy.ca_cert, "servername": "localhost"}


def run_client(port: int, workdir: Path, **options: object) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "client.json"
    return run_node(port, log, ws=WEBSOCKETS, gets=GETS, seed=SEED, **options)


@pytest.fixture(scope="module")
def node_servers(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: Certificate
) -> Iterator[dict[str, NodeServer]]:
    require("node")
    work = tmp_path_factory.mktemp("node-servers")
    with NodeServer(work / "h2c") as plain, NodeServer(work / "tls", tls_certificate) as tls:
        yield {"h2c": plain, "h2": tls}


@pytest.fixture(params=["hypercorn", "node"])
def servers(
    request: pytest.FixtureRequest,
    echo_server: EchoServer,
    echo_server_tls: EchoServer,
) -> dict[str, Any]:
    """h2c and TLS servers of one kind: hypercorn (``testkit/peers``) or Node.js ``http2``."""
    if request.param == "hypercorn":
        return {"h2c": echo_server, "h2": echo_server_tls}
    nodes: dict[str, Any] = request.getfixturevalue("node_servers")
    return nodes


@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_regular_proxy_relays_and_records(
    transport: str, tmp_path: Path, servers: dict[str, Any], tls_certificate: Certificate
) -> None:
    """``--proxy`` style: the client's CONNECT tunnel carries h2c or TLS+h2."""
    require("node")
    server = servers[transport]
    out = tmp_path / "live"
    proxy = Mitmdump(tmp_path, options=live_options(out), upstream_ca=tls_certificate.ca)
    with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", server.port)) as tunnel:
        tls = tls_options(proxy) if transport == "h2" else {}
        log = run_client(tunnel.port, tmp_path, **tls)
    assert proxy.proc is None
    tables = read_tables(out)
    conn_id = assert_h2_run(tables, log, transport)
    conn = next(c for c in tables["connections"] if c["conn_id"] == conn_id)
    assert conn["server_port"] == server.port
    if transport == "h2":
        assert (conn["tls"], conn["alpn"], conn["sni"]) == (True, "h2", "localhost")
        assert conn["tls_version"].startswith("TLS 1.")
    assert "Traceback" not in proxy.log()


@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_reverse_proxy_relays_and_records(
    transport: str, tmp_path: Path, servers: dict[str, Any], tls_certificate: Certificate
) -> None:
    """``--mode reverse:http(s)://``: mitmproxy builds its stack before ALPN is known; the
    addon builds server TLS, client TLS, and decides after the handshakes."""
    require("node")
    server = servers[transport]
    scheme = "https" if transport == "h2" else "http"
    out = tmp_path / "live"
    proxy = Mitmdump(
        tmp_path,
        mode=f"reverse:{scheme}://localhost:{server.port}",
        options=live_options(out),
        upstream_ca=tls_certificate.ca,
    )
    with proxy:
        tls = tls_options(proxy) if transport == "h2" else {}
        log = run_client(proxy.port, tmp_path, **tls)
    tables = read_tables(out)
    assert_h2_run(tables, log, transport)
    assert "Traceback" not in proxy.log()


# ------------------------------------------------------------------------ around the relay


def h2_websocket_roundtrip(port: int, first: int, pause: float) -> bytes:
    """python-hyper h2 client: sends its preface in two writes (``first`` bytes, then the
    rest after ``pause`` s), then one WebSocket message over extended CONNECT; returns the
    echo's payload."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    start = conn.data_to_send()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(start[:first])
        time.sleep(pause)
        sock.sendall(start[first:])
        while not conn.remote_settings.enable_connect_protocol:
            conn.receive_data(sock.recv(65536))
            sock.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                   (":path", "/ws/split"), (":authority", f"127.0.0.1:{port}"),
                   ("sec-websocket-version", "13")]  # fmt: skip
        conn.send_headers(sid, headers)
        # A masked text frame "split preface" with the all-zero key.
        conn.send_data(sid, b"\x81\x8d\x00\x00\x00\x00split preface")
        sock.sendall(conn.data_to_send())
        received = b""
        while len(received) < 15:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    received += event.data
                    conn.acknowledge_received_data(len(event.data), sid)
            sock.sendall(conn.data_to_send())
        conn.reset_stream(sid)
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    return received[2:]


@pytest.mark.parametrize("first", [3, 16])
def test_preface_in_pieces(tmp_path: Path, node_servers: dict[str, NodeServer], first: int) -> None:
    """The first chunk is only a prefix of the HTTP/2 preface (mitmproxy would take ``PRI``
    for HTTP/1 and kill it): the addon waits for the rest and relays the connection."""
    out = tmp_path / "live"
    server = node_servers["h2c"]
    proxy = Mitmdump(
        tmp_path, mode=f"reverse:http://127.0.0.1:{server.port}", options=live_options(out)
    )
    with proxy:
        assert h2_websocket_roundtrip(proxy.port, first, 0.3) == b"split preface"
    tables = read_tables(out)
    (conn,) = tables["connections"]
    assert conn["http_version"] == "h2c" and conn["websockets"] == 1
    texts = {(m["direction"], m["payload"]) for m in tables["messages"]}
    assert texts == {("c2s", b"split preface"), ("s2c", b"split preface")}
    # The Community ID is the client leg's (client <-> proxy), not client <-> upstream server.
    client = (conn["client_addr"], conn["client_port"])
    assert conn["server_port"] == server.port and client[0] == "127.0.0.1"
    assert conn["community_id"] == community_id(*client, "127.0.0.1", proxy.port)
    assert conn["community_id"] != community_id(*client, "127.0.0.1", server.port)


def community_id(client_addr: str, client_port: int, addr: str, port: int) -> str:
    return str(CommunityID().calc(FlowTuple.make_tcp(client_addr, addr, client_port, port)))


def test_tables_are_incremental_and_survive_a_kill(tmp_path: Path, echo_server: EchoServer) -> None:
    """Rows are readable a flush interval after they happen, while mitmproxy runs; SIGKILL
    (no shutdown hook) loses at most the last interval and never leaves a broken file."""
    require("node")
    out = tmp_path / "live"
    proxy = Mitmdump(
        tmp_path, mode=f"reverse:http://127.0.0.1:{echo_server.port}", options=live_options(out)
    )
    with proxy:
        log = run_client(proxy.port, tmp_path)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rows = read_table(out, "connections").num_rows
            if rows:
                break
            time.sleep(0.2)
        assert rows == 1, "no connection row within 5 s of the connection's end"
        proxy.kill()
    tables = read_tables(out)  # every part file that exists is complete
    assert_h2_run(tables, log, "h2c")
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert all(p.name.endswith(".partial") for p in leftovers)


def test_a_failing_decoder_harms_nothing_else(tmp_path: Path, echo_server: EchoServer) -> None:
    """``sabotage.py`` makes the decoder raise on the first connection: that connection is
    still relayed completely (the client logs every echo), the tables say ``decoder_failed``,
    and the next connection is decoded as usual."""
    require("node")
    out = tmp_path / "live"
    proxy = Mitmdump(
        tmp_path,
        mode=f"reverse:http://127.0.0.1:{echo_server.port}",
        options=live_options(out),
        args=["-s", str(LIVE / "sabotage.py")],
    )
    with proxy:
        run_client(proxy.port, tmp_path / "first")  # raises if anything went wrong
        log = run_client(proxy.port, tmp_path / "second")
    tables = read_tables(out)
    failed = [d for d in tables["diagnostics"] if d["code"] == "decoder_failed"]
    assert len(failed) == 1, tables["diagnostics"]
    broken = next(c for c in tables["connections"] if c["conn_id"] == failed[0]["conn_id"])
    assert "sabotage" in (broken["error"] or "")
    healthy = {t: [r for r in rows if r.get("conn_id") != broken["conn_id"]]
               for t, rows in tables.items()}  # fmt: skip
    assert_h2_run(healthy, log, "h2c")
    assert "Traceback" not in proxy.log().split("sabotage")[0]


def test_unsupported_mitmproxy_fails_with_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake_version.py"
    fake.write_text("import mitmproxy.version\nmitmproxy.version.VERSION = '13.0.0'\n")
    cmd = [str(MITMDUMP), "--listen-host", "127.0.0.1", "-p", "0", "-s", str(GUARD),
           "-s", str(fake), "-s", str(ADDON), "--set", f"confdir={tmp_path / 'conf'}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "h2ws" in line]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "mitmproxy 13.0.0 is not supported" in lines[0] and "pip install" in lines[0]
