"""Observe mode's mirror flows in a real mitmdump: visible to mitmproxy, and read-only.

A real TLS HTTP/2 server (the page server, hypercorn-like echo in Python ``h2``) behind
``mitmdump -s addon/addon.py --set h2ws_mode=observe`` with a user's addon
(``testkit/live/hooks_addon.py``: adds a request header, modifies / drops / injects WebSocket
messages, and ``--set intercept=…`` marks requests).  The connection is relayed byte for byte,
so none of that can happen: the peers see their own bytes, the flow file (``-w``) shows what
crossed the wire (no added header, messages unmodified, ``dropped`` False, ``intercepted``
False), and the log has one warning per flow and hook naming it, never a traceback, and no
third-party debug lines at mitmdump's default verbosity.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.live.servers import PageServer
from h2ws.testkit.live.tunnel import ConnectTunnel
from h2ws.testkit.live.ws_client import H2WsClient, Result
from h2ws.testkit.peers.runner import Certificate
from tests.test_intercept_live import HOOKS, read_flows
from tests.test_intercept_live import page_server as page_server  # the fixture

pytestmark = pytest.mark.timeout(120)

SENT = ["keep", "modify me", "drop me", "inject", "last"]


def test_mirror_flows_are_read_only(
    tmp_path: Path,
    page_server: PageServer,
    tls_certificate: Certificate,
) -> None:
    page_server.reset()
    flows = tmp_path / "flows.mitm"
    proxy = Mitmdump(
        tmp_path,
        upstream_ca=tls_certificate.ca,
        options={"h2ws_mode": "observe", "intercept": "~q"},
        args=["-s", str(HOOKS), "-w", str(flows)],
    )
    result = Result()
    with proxy, ConnectTunnel(proxy.port, ("127.0.0.1", page_server.port)) as tunnel:
        client = H2WsClient(tunnel.port, ca=proxy.ca_cert)
        try:
            client.get("/hello", result)
            client.get("/held", result)
            client.websocket("/ws/hooks", SENT, {"last"}, result)
        except ConnectionError:
            # After the close frames the page server waits for the client's END_STREAM, which
            # this client never sends (mitmproxy's own layer sends one in intercept mode), and
            # ends the idle connection: only after every echo arrived.
            assert sorted(result.received) == sorted(SENT)
        finally:
            with contextlib.suppress(OSError):
                client.close()
    log = proxy.log()
    # the peers saw their own bytes: nothing held, added, modified, dropped or injected
    assert result.statuses == {"/hello": 200, "/held": 404}
    assert result.durations["/held"] < 0.9  # intercept=~q held nothing (hooks_addon: 1 s)
    assert result.ws_status == 200 and sorted(result.received) == sorted(SENT)
    seen = page_server.events()
    assert {e["path"] for e in seen} >= {"/hello", "/held", "/ws/hooks"}
    assert all(e["test_header"] == "" for e in seen), seen  # no x-h2ws-test header

    saved = read_flows(flows)
    http_flows = [f for f in saved if f.type == "http"]
    assert {f.request.path for f in http_flows} == {"/hello", "/held", "/ws/hooks"}
    for flow in http_flows:
        assert flow.metadata["h2ws"]["mirror"] is True and flow.live is False
        assert "x-h2ws-test" not in flow.request.headers
        assert flow.intercepted is False and flow.error is None
        assert flow.response is not None
    (ws,) = [f for f in http_flows if f.websocket is not None]
    messages = ws.websocket.messages
    assert [m.content.decode() for m in messages if m.from_client] == SENT
    assert [m.content.decode() for m in messages if not m.from_client] == SENT
    assert not any(m.dropped or m.injected for m in messages)

    warnings = [line for line in log.splitlines() if "read-only mirror flow" in line]
    named = [line for line in warnings if "hook changed" in line]
    # request hook on each of the three flows, websocket_message once (of ten messages)
    assert sum(" request hook" in line for line in named) == 3, warnings
    assert sum("websocket_message hook" in line for line in named) == 1, warnings
    assert sum("injected" in line for line in warnings) == 2, warnings  # one each way
    assert "Traceback" not in log and "Addon error" not in log, log
    assert _no_third_party_debug(log), log


def _no_third_party_debug(log: str) -> bool:
    """mitmdump's default verbosity prints INFO: the Community ID library's internals (it
    logs at INFO per connection) must not be among them."""
    lowered = log.lower()
    return "communityid" not in lowered and "community id" not in lowered
