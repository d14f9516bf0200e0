"""Shared fixtures: real RFC 8441 peers (``testkit/peers/``) captured on loopback during the run.

Every capture fixture is session-scoped: one server, one tcpdump and one client run per
scenario, shared by all the tests that look at it.  A scenario is a :class:`Scenario`:
``capture`` (pcap path), ``port`` (the server's), ``log`` (what the client sent and received,
see ``testkit/peers/plan.py``), ``keylog`` (TLS secrets, TLS scenarios only).

They skip only when a tool is missing (tcpdump, node, editcap), and fail instead under
``CI=true`` (``tests/requires.py``).  The
captures stay in pytest's temporary directory (``pytest-of-<user>/pytest-current/peers*/``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from h2ws.testkit.peers import runner
from h2ws.testkit.peers.runner import (
    NODE_GETS,
    NODE_WEBSOCKETS,
    SEED,
    Certificate,
    EchoServer,
    Scenario,
)

from .requires import missing_peer


def require(*tools: str) -> None:
    missing = runner.missing_tools(*tools)
    if missing:
        missing_peer(
            f"real-peer capture needs {', '.join(missing)} "
            "(apt-get install tcpdump tshark nodejs; see scripts/setup.sh)"
        )


@pytest.fixture(scope="session")
def peers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peers")


#: The session's echo servers serve the whole run (a full run takes 7 to 9 minutes on 2 loaded
#: CPUs; their former 300 s ran out before the last tests that use them); they stop when
#: pytest ends (their stdin closes), and by themselves after this, CI's own bound.
SESSION_SERVER_LIFETIME = 90 * 60.0


@pytest.fixture(scope="session")
def echo_server(peers_dir: Path) -> Iterator[EchoServer]:
    """hypercorn + ``echo_app`` on 127.0.0.1:<free port>: h2c prior knowledge, HTTP/1.1
    (Upgrade: websocket, Upgrade: h2c)."""
    with EchoServer(peers_dir / "server", lifetime=SESSION_SERVER_LIFETIME) as server:
        yield server


@pytest.fixture(scope="session")
def tls_certificate(peers_dir: Path) -> Certificate:
    return runner.make_certificate(peers_dir / "tls")


@pytest.fixture(scope="session")
def echo_server_tls(peers_dir: Path, tls_certificate: Certificate) -> Iterator[EchoServer]:
    """The same over TLS (ALPN h2, http/1.1) with a certificate made for this run."""
    with EchoServer(
        peers_dir / "server-tls", tls_certificate, lifetime=SESSION_SERVER_LIFETIME
    ) as server:
        yield server


@pytest.fixture(scope="session")
def capture_h2c_node(peers_dir: Path, echo_server: EchoServer) -> Scenario:
    """Node.js 20 ``http2`` -> hypercorn, h2c prior knowledge: NODE_WEBSOCKETS extended-CONNECT
    WebSockets interleaved with NODE_GETS GETs (/hello, /big, /missing) on one connection."""
    require("tcpdump", "node")
    port = echo_server.port
    return runner.capture_scenario(
        "h2c_node",
        peers_dir,
        echo_server,
        lambda log: runner.node_client_cmd(
            port, log, ws=NODE_WEBSOCKETS, gets=NODE_GETS, seed=SEED
        ),
    )


@pytest.fixture(scope="session")
def capture_h1_baseline(peers_dir: Path, echo_server: EchoServer) -> Scenario:
    """wsproto over HTTP/1.1 ``Upgrade: websocket`` -> hypercorn: two connections, the first
    with a plain GET before its Upgrade, the second with permessage-deflate."""
    require("tcpdump")
    port = echo_server.port
    return runner.capture_scenario(
        "h1_baseline",
        peers_dir,
        echo_server,
        lambda log: runner.python_client_cmd(
            "h1_ws_client", port, log, "--ws", "2", "--get-first", "--seed", str(SEED)
        ),
    )


@pytest.fixture(scope="session")
def capture_h2c_upgrade(peers_dir: Path, echo_server: EchoServer) -> Scenario:
    """python-hyper h2 -> hypercorn via ``Upgrade: h2c`` (GET /hello on stream 1), then a
    WebSocket with permessage-deflate, a GET /big and a WebSocket without extensions."""
    require("tcpdump")
    port = echo_server.port
    return runner.capture_scenario(
        "h2c_upgrade",
        peers_dir,
        echo_server,
        lambda log: runner.python_client_cmd(
            "h2_py_client", port, log, "--upgrade", "--seed", str(SEED)
        ),
    )


@pytest.fixture(scope="session")
def capture_tls_node(peers_dir: Path, echo_server_tls: EchoServer) -> Scenario:
    """Node.js over TLS (ALPN h2) -> hypercorn, with the client's key log; ``capture`` is a
    pcapng that carries the keys (Decryption Secrets Block, ``editcap --inject-secrets``)."""
    require("tcpdump", "node", "editcap")
    server = echo_server_tls
    assert server.certificate is not None
    ca = server.certificate.ca
    scenario = runner.capture_scenario(
        "tls_node",
        peers_dir,
        server,
        lambda log: runner.node_client_cmd(
            server.port, log, tls=True, ca=ca, keylog=log.with_suffix(".keys"), seed=SEED, gets=2
        ),
        keylog=True,
    )
    assert scenario.keylog is not None and scenario.keylog.stat().st_size > 0
    scenario.capture = runner.inject_secrets(
        scenario.capture, scenario.keylog, scenario.capture.with_suffix(".pcapng")
    )
    return scenario


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The packaging test (minutes of pip and build, no shared peers) runs last: between two
    users of a session-scoped peer it would eat into that peer's bounded lifetime."""
    items.sort(key=lambda item: item.get_closest_marker("packaging") is not None)
