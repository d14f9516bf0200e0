"""The intercept-mode patches (``addon/intercept.py``), event by event, without sockets.

mitmproxy's ``HttpLayer`` is driven by ``tests/layer_harness.py`` with real h2 peers on both
legs: what each peer receives is exactly what mitmproxy's layers sent it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h2.errors
import h2.events
import pytest
import wsproto
import wsproto.events
from mitmproxy import http
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers import websocket
from mitmproxy.proxy.layers.http import _hooks
from mitmproxy.websocket import WebSocketMessage
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.frame_protocol import Opcode

from h2ws.addon import intercept
from tests.layer_harness import Driver, H2Peer

CONNECT = [
    (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
    (b":path", b"/ws/1"), (b":authority", b"example.com:80"), (b"sec-websocket-version", b"13"),
]  # fmt: skip


@pytest.fixture
def patched() -> Iterator[None]:
    intercept.apply()
    intercept.STATE.enabled = True
    try:
        yield
    finally:
        intercept.STATE.enabled = False
        intercept.revert()


def hook_names(driver: Driver) -> list[str]:
    return [c.name for c in driver.commands_of(commands.StartHook)]


def open_websocket(driver: Driver, headers: list[tuple[bytes, bytes]] = CONNECT) -> int:
    """The client's extended CONNECT; the server answers 200 (without END_STREAM)."""
    sid = driver.client.conn.get_next_available_stream_id()
    driver.client.conn.send_headers(sid, headers)
    driver.pump()
    server = driver.server()
    (request,) = server.of(h2.events.RequestReceived)
    server.conn.send_headers(request.stream_id, [(b":status", b"200")])
    driver.pump()
    return sid


def test_client_leg_advertises_extended_connect(patched: None) -> None:
    driver = Driver()
    (settings,) = driver.client.of(h2.events.RemoteSettingsChanged)
    assert driver.client.conn.remote_settings.enable_connect_protocol == 1
    assert settings.changed_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]


def test_inert_without_the_switch() -> None:
    """Applied but not enabled (observe mode), and not applied: stock mitmproxy."""
    intercept.apply()
    try:
        driver = Driver()
        assert driver.client.conn.remote_settings.enable_connect_protocol == 0
    finally:
        intercept.revert()
    driver = Driver()
    assert driver.client.conn.remote_settings.enable_connect_protocol == 0


def test_websocket_is_a_live_flow_on_the_stream(patched: None) -> None:
    driver = Driver()
    sid = open_websocket(driver)
    server = driver.server()
    (request,) = server.of(h2.events.RequestReceived)
    sent = dict(request.headers)
    assert (sent[b":method"], sent[b":protocol"], sent[b":path"]) == (
        b"CONNECT", b"websocket", b"/ws/1"
    )  # fmt: skip
    assert [n for n, _ in request.headers][:5] == [
        b":method", b":scheme", b":path", b":authority", b":protocol"
    ]  # fmt: skip
    (response,) = driver.client.of(h2.events.ResponseReceived, sid)
    assert dict(response.headers)[b":status"] == b"200"
    assert not driver.client.of(h2.events.StreamEnded, sid)
    assert hook_names(driver) == [
        "requestheaders", "request", "responseheaders", "response", "websocket_start"
    ]  # fmt: skip

    client_ws, server_ws = WsConnection(ConnectionType.CLIENT), WsConnection(ConnectionType.SERVER)
    driver.client.conn.send_data(sid, client_ws.send(wsproto.events.TextMessage("hi")))
    driver.pump()
    upstream = request.stream_id
    server_ws.receive_data(server.data(upstream))
    assert [e.data for e in server_ws.events()] == ["hi"]
    server.conn.send_data(upstream, server_ws.send(wsproto.events.TextMessage("hi back")))
    driver.pump()
    client_ws.receive_data(driver.client.data(sid))
    assert [e.data for e in client_ws.events()] == ["hi back"]

    (start,) = [c for c in driver.log if isinstance(c, websocket.WebsocketStartHook)]
    flow: http.HTTPFlow = start.flow
    assert flow.live and flow.websocket is not None
    assert [(m.from_client, m.content) for m in flow.websocket.messages] == [
        (True, b"hi"), (False, b"hi back")
    ]  # fmt: skip
    assert intercept.protocol_of(flow.request) == "websocket"
    assert flow.request.url == "http://example.com/ws/1"
    assert flow.request.pretty_url == "http://example.com/ws/1"

    # close handshake from the client: END_STREAM on both legs, the flow ends
    driver.client.conn.send_data(sid, client_ws.send(wsproto.events.CloseConnection(1000)))
    driver.pump()
    assert driver.server().of(h2.events.StreamEnded, upstream)
    assert driver.client.of(h2.events.StreamEnded, sid)
    assert "websocket_end" in hook_names(driver)
    assert not flow.live and flow.websocket.close_code == 1000
    assert not driver.closed  # no connection was closed


def test_client_close_ends_the_server_stream_in_one_frame(patched: None) -> None:
    """The close frame and END_STREAM reach the server in ONE DATA frame: hypercorn forgets
    the stream once its app has answered the close frame and fails the whole connection on a
    later DATA frame for it, even an empty END_STREAM one."""
    driver = Driver()
    sid = open_websocket(driver)
    upstream = driver.server().of(h2.events.RequestReceived)[0].stream_id
    client_ws = WsConnection(ConnectionType.CLIENT)
    driver.client.conn.send_data(sid, client_ws.send(wsproto.events.CloseConnection(1000)))
    driver.pump()
    server = driver.server()
    (last,) = server.of(h2.events.DataReceived, upstream)
    assert last.stream_ended is not None  # END_STREAM on the frame of the close
    server_ws = WsConnection(ConnectionType.SERVER)
    server_ws.receive_data(last.data)
    (close,) = server_ws.events()
    assert isinstance(close, wsproto.events.CloseConnection) and close.code == 1000
    assert not server.of(h2.events.StreamReset, upstream)


def test_server_that_ended_first_gets_a_reset_not_data(patched: None) -> None:
    """A server that sent its close frame with END_STREAM reads no more: its stream is reset
    (CANCEL), with no DATA after its END_STREAM; the client gets the close and END_STREAM."""
    driver = Driver()
    sid = open_websocket(driver)
    second = open_second_websocket(driver)
    server = driver.server()
    upstream, other = (e.stream_id for e in server.of(h2.events.RequestReceived))
    server_ws = WsConnection(ConnectionType.SERVER)
    server.conn.send_data(
        upstream, server_ws.send(wsproto.events.CloseConnection(1001)), end_stream=True
    )
    driver.pump()
    (reset,) = server.of(h2.events.StreamReset, upstream)
    assert reset.error_code == h2.errors.ErrorCodes.CANCEL
    assert not server.of(h2.events.DataReceived, upstream)
    client_ws = WsConnection(ConnectionType.CLIENT)
    client_ws.receive_data(driver.client.data(sid))
    (close,) = client_ws.events()
    assert isinstance(close, wsproto.events.CloseConnection) and close.code == 1001
    assert driver.client.of(h2.events.StreamEnded, sid)
    # the other WebSocket of the connection still relays
    ws = WsConnection(ConnectionType.CLIENT)
    driver.client.conn.send_data(second, ws.send(wsproto.events.TextMessage("still")))
    driver.pump()
    other_ws = WsConnection(ConnectionType.SERVER)
    other_ws.receive_data(server.data(other))
    assert [e.data for e in other_ws.events()] == ["still"]
    assert not driver.closed


def test_hooks_modify_drop_and_inject(patched: None) -> None:
    def on_hook(hook: commands.StartHook) -> None:
        if isinstance(hook, websocket.WebsocketMessageHook):
            message = hook.flow.websocket.messages[-1]
            if message.content == b"drop":
                message.drop()
            elif message.content == b"change":
                message.content = b"changed"
        elif isinstance(hook, _hooks.HttpRequestHook):
            hook.flow.request.headers["x-added"] = "1"

    driver = Driver(on_hook=on_hook)
    sid = open_websocket(driver)
    server = driver.server()
    (request,) = server.of(h2.events.RequestReceived)
    assert dict(request.headers)[b"x-added"] == b"1"
    client_ws, server_ws = WsConnection(ConnectionType.CLIENT), WsConnection(ConnectionType.SERVER)
    for text in ("drop", "change", "keep"):
        driver.client.conn.send_data(sid, client_ws.send(wsproto.events.TextMessage(text)))
    driver.pump()
    server_ws.receive_data(server.data(request.stream_id))
    assert [e.data for e in server_ws.events()] == ["changed", "keep"]

    # inject.websocket, both ways: MessageInjected reaches the stream of the flow
    (start,) = [c for c in driver.log if isinstance(c, websocket.WebsocketStartHook)]
    for to_client, text in ((True, b"to client"), (False, b"to server")):
        message = WebSocketMessage(Opcode.TEXT, not to_client, text)
        driver.run(websocket.WebSocketMessageInjected(start.flow, message))
    driver.pump()
    server_ws.receive_data(server.data(request.stream_id))
    assert [e.data for e in server_ws.events()] == ["changed", "keep", "to server"]
    client_ws.receive_data(driver.client.data(sid))
    assert [e.data for e in client_ws.events()] == ["to client"]


def test_reset_stream_leaves_the_others(patched: None) -> None:
    """A client RST_STREAM ends that WebSocket only: the GET beside it completes."""
    driver = Driver()
    sid = open_websocket(driver)
    get = driver.client.conn.get_next_available_stream_id()
    driver.client.conn.send_headers(
        get, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/hello"),
              (b":authority", b"example.com:80")], end_stream=True,
    )  # fmt: skip
    driver.client.conn.reset_stream(sid)
    driver.pump()
    server = driver.server()
    ws_upstream, get_upstream = (e.stream_id for e in server.of(h2.events.RequestReceived))
    # the WebSocket layer saw a closed connection: a close frame and END_STREAM upstream
    assert server.of(h2.events.StreamEnded, ws_upstream)
    server_ws = WsConnection(ConnectionType.SERVER)
    server_ws.receive_data(server.data(ws_upstream))
    assert [type(e).__name__ for e in server_ws.events()] == ["CloseConnection"]
    server.conn.send_headers(get_upstream, [(b":status", b"200")])
    server.conn.send_data(get_upstream, b"hello", end_stream=True)
    driver.pump()
    assert driver.client.data(get) == b"hello"
    assert driver.client.of(h2.events.StreamEnded, get)
    assert not driver.closed


def test_malformed_frame_closes_its_stream_only(patched: None) -> None:
    driver = Driver()
    sid = open_websocket(driver)
    second = open_second_websocket(driver)
    # an unmasked client frame is a protocol error (RFC 6455 §5.1)
    driver.client.conn.send_data(sid, b"\x81\x02hi")
    driver.pump()
    assert driver.client.of(h2.events.StreamEnded, sid)
    client_ws = WsConnection(ConnectionType.CLIENT)
    client_ws.receive_data(driver.client.data(sid))
    (close,) = client_ws.events()
    assert isinstance(close, wsproto.events.CloseConnection) and close.code == 1002
    # the other WebSocket still relays
    server = driver.server()
    upstream = [e.stream_id for e in server.of(h2.events.RequestReceived)][1]
    ws = WsConnection(ConnectionType.CLIENT)
    driver.client.conn.send_data(second, ws.send(wsproto.events.TextMessage("still")))
    driver.pump()
    server_ws = WsConnection(ConnectionType.SERVER)
    server_ws.receive_data(server.data(upstream))
    assert [e.data for e in server_ws.events()] == ["still"]
    assert not driver.closed


def open_second_websocket(driver: Driver) -> int:
    sid = driver.client.conn.get_next_available_stream_id()
    headers = [(n, b"/ws/2" if n == b":path" else v) for n, v in CONNECT]
    driver.client.conn.send_headers(sid, headers)
    driver.pump()
    server = driver.server()
    upstream = server.of(h2.events.RequestReceived)[-1].stream_id
    server.conn.send_headers(upstream, [(b":status", b"200")])
    driver.pump()
    return sid


def test_refused_websocket_is_an_ordinary_response(patched: None) -> None:
    driver = Driver()
    sid = driver.client.conn.get_next_available_stream_id()
    driver.client.conn.send_headers(sid, CONNECT)
    driver.pump()
    server = driver.server()
    (request,) = server.of(h2.events.RequestReceived)
    server.conn.send_headers(request.stream_id, [(b":status", b"403")])
    server.conn.send_data(request.stream_id, b"no", end_stream=True)
    driver.pump()
    (response,) = driver.client.of(h2.events.ResponseReceived, sid)
    assert dict(response.headers)[b":status"] == b"403"
    assert driver.client.data(sid) == b"no" and driver.client.of(h2.events.StreamEnded, sid)
    assert "websocket_start" not in hook_names(driver)


class H1WebSocketServer:
    """An HTTP/1.1-only WebSocket server (wsproto): answers the Upgrade, echoes messages."""

    def __init__(self) -> None:
        self.ws = wsproto.WSConnection(ConnectionType.SERVER)
        self.out = b""
        self.requests: list[wsproto.events.Request] = []
        self.messages: list[str] = []

    def receive(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, wsproto.events.Request):
                self.requests.append(event)
                self.out += self.ws.send(wsproto.events.AcceptConnection(subprotocol="chat"))
            elif isinstance(event, wsproto.events.TextMessage):
                self.messages.append(event.data)
                self.out += self.ws.send(wsproto.events.TextMessage(event.data))

    def outgoing(self) -> bytes:
        out, self.out = self.out, b""
        return out


def test_http1_fallback_when_the_server_does_not_enable_it(patched: None) -> None:
    """The server's first SETTINGS lack the setting: an HTTP/1.1 connection of its own, with
    ``Upgrade: websocket``; the client gets 200 with the subprotocol and never sees it."""
    h1 = H1WebSocketServer()
    made: list[Any] = []

    def factory(conn: Any) -> tuple[Any, bytes | None]:
        if not made:
            made.append(H2Peer(client_side=False, enable_connect_protocol=False))
            return made[-1], b"h2"
        made.append(h1)
        assert conn.alpn_offers in ([], [b"http/1.1"], ())
        return h1, None  # cleartext HTTP/1.1

    driver = Driver()
    driver.server_factory = factory
    sid = driver.client.conn.get_next_available_stream_id()
    headers = [*CONNECT, (b"sec-websocket-protocol", b"chat")]
    driver.client.conn.send_headers(sid, headers)
    driver.pump()
    assert len(made) == 2
    assert not made[0].of(h2.events.RequestReceived)  # never sent on the h2 connection
    (request,) = h1.requests
    assert request.target == "/ws/1" and request.subprotocols == ["chat"]
    (response,) = driver.client.of(h2.events.ResponseReceived, sid)
    got = dict(response.headers)
    assert got[b":status"] == b"200" and got[b"sec-websocket-protocol"] == b"chat"
    assert b"sec-websocket-accept" not in got and b"upgrade" not in got
    ws = WsConnection(ConnectionType.CLIENT)
    driver.client.conn.send_data(sid, ws.send(wsproto.events.TextMessage("over h1")))
    driver.pump()
    assert h1.messages == ["over h1"]
    ws.receive_data(driver.client.data(sid))
    assert [e.data for e in ws.events()] == ["over h1"]
