"""Intercept mode: mitmproxy's own HTTP layers taught RFC 8441 (extended CONNECT WebSockets).

Stock mitmproxy 12.3 never advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and refuses ``:protocol``
(mitmproxy#4607), so browsers fall back to HTTP/1.1 WebSockets on a connection of their own.
The patches below make every RFC 8441 WebSocket a live mitmproxy WebSocket flow on the page's
HTTP/2 connection, while every other request keeps mitmproxy's code path unchanged.

This is the ONLY module of h2ws that changes mitmproxy's behaviour, and the only one that uses
mitmproxy's private modules and attributes (observe mode's too: see "for observe mode" below;
``tests/test_layout.py`` holds the others to mitmproxy's public modules).  Each patch names the
mitmproxy function it wraps and why; :func:`apply` refuses mitmproxy versions that
``compat.py`` does not support, and every patch is inert unless :data:`STATE` enables it (so
observe mode and plain mitmproxy are untouched even with the module imported).

How an extended CONNECT goes through:

- ``Http2Server`` (client leg) advertises the setting; ``parse_h2_request_headers`` keeps
  ``:protocol`` as the **first header field** of the request (mitmproxy's request model has no
  place for other pseudo-headers; the field is saved with ``-w`` and shown by mitmweb), and
  ``format_h2_request_headers`` moves it back among the pseudo-headers.
- ``HttpStream`` hands such a request to :class:`WebSocketStream`, which fires
  ``requestheaders`` and ``request`` (so ``intercept`` holds it and addons can change or answer
  it), then opens the stream upstream without ending it.
- Upstream, ``Http2Client`` waits for the server's first SETTINGS: with
  ENABLE_CONNECT_PROTOCOL=1 the extended CONNECT goes on that connection; otherwise (and for an
  HTTP/1.1 server) :class:`WebSocketStream` opens an HTTP/1.1 connection of its own and sends
  ``Upgrade: websocket`` with its own ``Sec-WebSocket-Key``, verifies ``Sec-WebSocket-Accept``
  and answers the client with 200, carrying ``Sec-WebSocket-Protocol``/``-Extensions``.
- A 2xx without END_STREAM sets ``flow.websocket`` and gives the stream to mitmproxy's
  ``WebsocketLayer``; its writes become DATA frames on the stream, its closes END_STREAM (or,
  on the HTTP/1.1 leg, closing that connection), and a reset stream reaches it as a closed
  connection.  Data the client sends before the 2xx is held (at most ``EARLY_DATA_LIMIT``).
  On the HTTP/2 server leg the last bytes and END_STREAM go in one DATA frame, and a stream
  the server has already ended gets RST_STREAM(CANCEL) instead (:class:`RequestLastData`).
- ``HttpLayer`` routes ``inject.websocket`` to the stream of the flow.

Limits: a WebSocket layer failure resets that stream only (logged); after the close handshake
each leg is ended (END_STREAM, or RST_STREAM(CANCEL) to a server that ended the stream first)
and the stream is forgotten, whether or not the peer ends it too.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.errors
import h2.stream
from mitmproxy import http
from mitmproxy.addons.next_layer import NextLayer as BuiltinNextLayer
from mitmproxy.connection import Connection, Server
from mitmproxy.net.http import url
from mitmproxy.proxy import commands, events, layer, tunnel
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as mhttp
from mitmproxy.proxy.layers import tls, websocket
from mitmproxy.proxy.layers.http import _base, _http2, _http3
from mitmproxy.proxy.layers.http import _events as hev
from mitmproxy.proxy.layers.http._hooks import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.websocket import WebSocketData
from wsproto.utilities import generate_accept_token

from h2ws.addon import h2fast, h2limits
from h2ws.addon.compat import unsupported_mitmproxy
from h2ws.analysis.core.options import HeaderLimits

logger = logging.getLogger(__name__)

Commands = Generator[commands.Command, Any, None]

PROTOCOL = b":protocol"
#: client data held while the server has not yet accepted the WebSocket (RFC 8441 allows none;
#: a client that sends more than this before the 2xx gets its stream reset)
EARLY_DATA_LIMIT = 1 << 20
#: ``flow.metadata`` key of intercept mode: ``upstream`` (``h2`` or ``http/1.1``), ``stream_id``
#: (the WebSocket's stream id on the client's connection)
METADATA_KEY = "h2ws"


@dataclass(slots=True)
class State:
    """Switches of the patches (set by the addon from its options)."""

    #: advertise SETTINGS_ENABLE_CONNECT_PROTOCOL=1 to clients and accept ``:protocol``
    enabled: bool = False
    #: ``tap(layer, conn, received, data)``: the bytes of each HTTP connection layer (tables)
    tap: Callable[[layer.Layer, Connection, bool, bytes], None] | None = None
    #: the ``h2ws_max_*`` header limits put on mitmproxy's HTTP/2 connections (``h2limits``),
    #: in both modes
    header_limits: HeaderLimits | None = None
    #: DATA frames of open streams bypass hyper-h2's generic frame path (``h2fast``); only on
    #: connections that got ``header_limits`` too, i.e. once the addon's options are configured
    fast_data: bool = True
    applied: list[str] = field(default_factory=list)


STATE = State()


def is_extended_connect(request: http.Request) -> bool:
    """An RFC 8441 extended CONNECT: method CONNECT and ``:protocol`` kept as first header."""
    fields = request.headers.fields
    return request.method == "CONNECT" and bool(fields) and fields[0][0] == PROTOCOL


def protocol_of(request: http.Request) -> str | None:
    """The ``:protocol`` of an extended CONNECT (None for any other request)."""
    if not is_extended_connect(request):
        return None
    return request.headers.fields[0][1].decode("ascii", "replace")


def _without_protocol(request: http.Request) -> http.Request:
    copy = request.copy()
    copy.headers.fields = tuple(f for f in copy.headers.fields if f[0] != PROTOCOL)
    return copy


# ------------------------------------------------------------------------------ header helpers

_orig_parse_h2_request_headers = _http2.parse_h2_request_headers
_orig_format_h2_request_headers = _http2.format_h2_request_headers


def parse_h2_request_headers(
    h2_headers: Sequence[tuple[bytes, bytes]],
) -> tuple[str, int, bytes, bytes, bytes, bytes, http.Headers]:
    """Wraps ``mitmproxy.proxy.layers.http._http2.parse_h2_request_headers`` (also HTTP/3's):
    the original rejects ``:protocol`` as an unknown pseudo-header; an extended CONNECT's
    ``:protocol`` is kept as the first header field instead."""
    if not STATE.enabled:
        return _orig_parse_h2_request_headers(h2_headers)
    protocol = None
    method = None
    rest = []
    for name, value in h2_headers:
        if name == PROTOCOL and protocol is None:
            protocol = value
            continue
        if name == b":method":
            method = value
        rest.append((name, value))
    if protocol is None or method != b"CONNECT":
        return _orig_parse_h2_request_headers(h2_headers)
    host, port, method_, scheme, authority, path, headers = _orig_parse_h2_request_headers(rest)
    headers.fields = ((PROTOCOL, protocol), *headers.fields)
    return host, port, method_, scheme, authority, path, headers


def format_h2_request_headers(
    context: Any, event: hev.RequestHeaders
) -> Generator[commands.Command, Any, list[tuple[bytes, bytes]]]:
    """Wraps ``_http2.format_h2_request_headers``: ``:protocol`` goes back among the
    pseudo-headers even when an addon put other header fields before it."""
    headers: list[tuple[bytes, bytes]] = yield from _orig_format_h2_request_headers(context, event)
    if not is_extended_connect(event.request) and not any(n == PROTOCOL for n, _ in headers):
        return headers
    pseudo = [h for h in headers if h[0].startswith(b":")]
    regular = [h for h in headers if not h[0].startswith(b":")]
    return pseudo + regular


# ------------------------------------------------------------------------------ validation

_orig_validate_request = mhttp.validate_request


def validate_request(
    mode: mhttp.HTTPMode, request: http.Request, validate_inbound_headers: bool
) -> str | None:
    """Wraps ``mitmproxy.proxy.layers.http.validate_request``: an extended CONNECT is a
    request to an origin (RFC 8441 §4), not a proxy CONNECT, so it is allowed in transparent
    and reverse mode; its ``:protocol`` field is not an HTTP/1 header name to validate."""
    if not is_extended_connect(request):
        return _orig_validate_request(mode, request, validate_inbound_headers)
    stripped = _without_protocol(request)
    stripped.method = "GET"  # only for the transparent-mode CONNECT check
    return _orig_validate_request(mode, stripped, validate_inbound_headers)


# ------------------------------------------------------------------------------ Request.url

_orig_first_line_format = http.Request.first_line_format


def _first_line_format(self: http.Request) -> str:
    """Wraps ``mitmproxy.http.Request.first_line_format``: an extended CONNECT names a full
    URI (scheme, authority, path), so ``url``/``pretty_url`` and ``~u`` see its path."""
    if is_extended_connect(self):
        return "absolute"
    result: str = _orig_first_line_format.fget(self)  # type: ignore[attr-defined]
    return result


# ------------------------------------------------------------------------------ Http2Connection

_orig_http2connection_init = _http2.Http2Connection.__init__


def _http2connection_init(self: _http2.Http2Connection, context: Any, conn: Connection) -> None:
    """Wraps ``Http2Connection.__init__`` (client and server legs): hyper-h2's HPACK decoding
    is quadratic in a block's literals and its limits are not h2ws's, so the connection gets
    the ``h2ws_max_*`` header limits and the linear decoder (:func:`h2limits.bound`); and
    hyper-h2's per-frame cost is most of what a relayed WebSocket message costs beyond the
    hooks, so DATA frames of open streams take the fast path (:func:`h2fast.accelerate`,
    option ``h2ws_fast_data``).

    In both modes: in observe mode the connections that mitmproxy still terminates itself
    (legs whose ALPN do not match, ``h2ws_relay=false``) would otherwise stall the proxy's one
    event loop on a hostile block just as in intercept mode."""
    _orig_http2connection_init(self, context, conn)
    if STATE.header_limits is not None:
        h2limits.bound(self.h2_conn, STATE.header_limits)
        if STATE.fast_data:
            h2fast.accelerate(self.h2_conn, BufferedH2Connection)


# ------------------------------------------------------------------------------ Http2Server

_orig_http2server_init = _http2.Http2Server.__init__


def _http2server_init(self: _http2.Http2Server, context: Any) -> None:
    """Wraps ``Http2Server.__init__``: advertise SETTINGS_ENABLE_CONNECT_PROTOCOL=1 in the
    first SETTINGS (set and acknowledge locally, as ``Http2Client`` does for enable_push,
    otherwise hyper-h2 sends the old value)."""
    _orig_http2server_init(self, context)
    if STATE.enabled:
        self.h2_conn.local_settings.enable_connect_protocol = 1
        self.h2_conn.local_settings.acknowledge()


# ------------------------------------------------------------------------------ Http2Client


@dataclass
class NeedsHttp1Upgrade(hev.ResponseProtocolError):
    """From ``Http2Client`` to the stream: the server did not enable RFC 8441."""


_orig_http2client_handle_event = _http2.Http2Client._handle_event


@dataclass
class RequestLastData(hev.RequestData):
    """The last bytes of a WebSocket's HTTP/2 server-leg stream: sent with END_STREAM in ONE
    DATA frame, or, when the server has already ended the stream, not sent: RST_STREAM(CANCEL).

    Why: mitmproxy's ``WebsocketLayer`` sends its close frame and closes the connection at once,
    which ``Http2Client`` would send as two frames (DATA, then an empty DATA with END_STREAM).
    hypercorn (the RFC 8441 server of the demo) forgets a WebSocket stream as soon as its app
    has answered the close frame, and then fails the WHOLE connection on any DATA frame for
    that stream (a KeyError in hypercorn's ``_handle_events``; an empty END_STREAM frame
    included), cutting every other stream.  A lone END_STREAM it tolerates, and so it does a
    reset; Chromium too ends its RFC 8441 WebSockets with RST_STREAM(CANCEL).  A server that
    has ended its half reads nothing more, so a close frame in answer to its own is dropped.
    """


def _end_websocket_stream(
    self: _http2.Http2Client, event: RequestLastData
) -> layer.CommandGenerator[None]:
    sid = event.stream_id
    if not self.is_open_for_us(sid):
        return
    if self.h2_conn.streams[sid].state_machine.state is h2.stream.StreamState.HALF_CLOSED_REMOTE:
        self.h2_conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    else:
        self.h2_conn.send_data(sid, event.data, end_stream=True)
    if data := self.h2_conn.data_to_send():
        yield commands.SendData(self.conn, data)


def _settings_known(client: _http2.Http2Client) -> bool:
    return client.provisional_max_concurrency is None


def _http2client_handle_event(
    self: _http2.Http2Client, event: events.Event
) -> layer.CommandGenerator[None]:
    """Wraps ``Http2Client._handle_event``: an extended CONNECT waits for the server's first
    SETTINGS (RFC 8441 §3: only then is the setting known) and goes to the HTTP/1.1 fallback
    when the setting is not enabled; a WebSocket stream ends as :class:`RequestLastData` says.

    Everything else (each DATA frame of every stream, both ways) gets the original generator
    itself, not one wrapped in another, while no extended CONNECT is held."""
    if isinstance(event, RequestLastData):
        return _end_websocket_stream(self, event)
    if not self.__dict__.get("_h2ws_held") and not (
        isinstance(event, hev.RequestHeaders) and is_extended_connect(event.request)
    ):
        return _orig_http2client_handle_event(self, event)
    return _held_or_checked(self, event)


def _held_or_checked(self: _http2.Http2Client, event: events.Event) -> layer.CommandGenerator[None]:
    """:func:`_http2client_handle_event` for an extended CONNECT, and for every event while
    one waits for the server's first SETTINGS."""
    held: list[hev.RequestHeaders] = self.__dict__.setdefault("_h2ws_held", [])
    if isinstance(event, hev.RequestHeaders) and is_extended_connect(event.request):
        if not _settings_known(self):
            held.append(event)
            return
        if not self.h2_conn.remote_settings.enable_connect_protocol:
            yield _base.ReceiveHttp(
                NeedsHttp1Upgrade(
                    event.stream_id,
                    "server did not enable RFC 8441",
                    hev.ErrorCode.HTTP_1_1_REQUIRED,
                )
            )
            return
    elif isinstance(event, hev.RequestProtocolError) and held:
        waiting = [e for e in held if e.stream_id == event.stream_id]
        if waiting:
            held.remove(waiting[0])
            return
    yield from _orig_http2client_handle_event(self, event)
    if held and (_settings_known(self) or isinstance(event, events.ConnectionClosed)):
        replay, held[:] = list(held), []
        for waiting_event in replay:
            if isinstance(event, events.ConnectionClosed):
                yield _base.ReceiveHttp(
                    hev.ResponseProtocolError(
                        waiting_event.stream_id,
                        "server closed connection",
                        hev.ErrorCode.GENERIC_SERVER_ERROR,
                    )
                )
            else:
                yield from _http2client_handle_event(self, waiting_event)


# ------------------------------------------------------------------------------ HttpLayer


@dataclass
class GetHttp1Connection(mhttp.GetHttpConnection):
    """A new connection that offers only HTTP/1.1 (the WebSocket fallback), never reused."""

    sni: str | None = None

    def __hash__(self) -> int:
        return id(self)


_orig_get_connection = mhttp.HttpLayer.get_connection


def _get_connection(
    self: mhttp.HttpLayer, event: mhttp.GetHttpConnection, *, reuse: bool = True
) -> layer.CommandGenerator[None]:
    """Wraps ``HttpLayer.get_connection``: a :class:`GetHttp1Connection` builds a fresh
    server connection offering ALPN ``http/1.1`` only (the original would reuse the HTTP/2
    connection whose server refused RFC 8441)."""
    if not isinstance(event, GetHttp1Connection):
        yield from _orig_get_connection(self, event, reuse=reuse)
        return
    context = self.context.fork()
    context.server = Server(address=event.address, transport_protocol="tcp")
    stack = tunnel.LayerStack()
    if event.tls:
        context.server.sni = event.sni or event.address[0]
        context.server.alpn_offers = [b"http/1.1"]
        stack /= tls.ServerTLSLayer(context)
    stack /= mhttp.HttpClient(context)
    self.connections[context.server] = stack[0]
    self.waiting_for_establishment[context.server].append(event)
    yield from self.event_to_child(stack[0], events.Start())


_orig_httplayer_handle_event: Callable[
    [mhttp.HttpLayer, events.Event], layer.CommandGenerator[None]
] = mhttp.HttpLayer._handle_event


def _httplayer_handle_event(
    self: mhttp.HttpLayer, event: events.Event
) -> layer.CommandGenerator[None]:
    """Wraps ``HttpLayer._handle_event``: an injected WebSocket message goes to the stream
    of its flow (the original looks for an HTTP/1 connection and fails on HTTP/2).  Every
    other event gets the original generator itself, not one wrapped in another: each event of
    every HTTP connection comes through here, and each generator level costs on each command."""
    if isinstance(event, events.MessageInjected):
        for stream in self.streams.values():
            handler = stream.__dict__.get("_h2ws")
            if handler is not None and getattr(stream, "flow", None) is event.flow:
                return self.event_to_child(stream, event)
    return _orig_httplayer_handle_event(self, event)


# ------------------------------------------------------------------------------ HttpStream

_orig_wait_for_request_headers = mhttp.HttpStream.state_wait_for_request_headers


def _wait_for_request_headers(
    self: mhttp.HttpStream, event: hev.RequestHeaders
) -> layer.CommandGenerator[None]:
    """Wraps ``HttpStream.state_wait_for_request_headers``: an extended CONNECT is a request
    (hooks, streamed upstream, a WebSocket after a 2xx), not a proxy CONNECT tunnel."""
    if not (isinstance(event, hev.RequestHeaders) and is_extended_connect(event.request)):
        yield from _orig_wait_for_request_headers(self, event)
        return
    handler = WebSocketStream(self)
    self.__dict__["_h2ws"] = handler
    self._handle_event = handler.handle
    yield from handler.start(event)


# ------------------------------------------------------------------------------ tap (tables)

_orig_connection_handle_event = _base.HttpConnection.handle_event


def _connection_handle_event(
    self: _base.HttpConnection, event: events.Event
) -> layer.CommandGenerator[None]:
    """Wraps ``Layer.handle_event`` of mitmproxy's HTTP connection layers (HTTP/1 and HTTP/2,
    both legs): a copy of the bytes each layer receives and sends goes to ``STATE.tap``, so
    that the tables are decoded from what crossed each leg.  Without a tap: the original."""
    tap = STATE.tap
    if tap is None:
        return _orig_connection_handle_event(self, event)
    return _tapped(self, event, tap)


def _tapped(
    self: _base.HttpConnection,
    event: events.Event,
    tap: Callable[[layer.Layer, Connection, bool, bytes], None],
) -> layer.CommandGenerator[None]:
    conn = self.conn
    if isinstance(event, events.DataReceived) and event.connection is conn and event.data:
        _safe_tap(tap, self, conn, True, event.data)
    gen = _orig_connection_handle_event(self, event)
    reply = None
    while True:
        try:
            command = gen.send(reply)
        except StopIteration:
            return
        if isinstance(command, commands.SendData) and command.connection is conn:
            _safe_tap(tap, self, conn, False, command.data)
        reply = yield command


def _safe_tap(tap: Callable[..., None], *args: Any) -> None:
    try:
        tap(*args)
    except Exception as exc:  # recording must never harm the proxy
        logger.warning(f"h2ws: recording a chunk failed: {exc!r}")


# ------------------------------------------------------------------------------ the stream


class WebSocketStream:
    """Drives one ``HttpStream`` that carries an RFC 8441 extended CONNECT.

    Installed as the stream's ``_handle_event``; it reuses the stream's own helpers
    (``check_invalid``, ``check_killed``, ``make_server_connection``,
    ``handle_protocol_error``) so that errors look as mitmproxy's own.
    """

    def __init__(self, stream: mhttp.HttpStream) -> None:
        self.stream = stream
        self.sid = stream.stream_id
        self.early: list[bytes] = []
        self.early_bytes = 0
        self.client_ended = False
        self.upstream_h1 = False
        self.ws_key: str | None = None
        self.skip_response_eom = False
        self.rejected = False
        self.child: websocket.WebsocketLayer | None = None
        self.closed_client = self.closed_server = self.dropped = False
        self.upstream_open = False
        self.state: Callable[[events.Event], Commands] = self.awaiting_response

    # -------------------------------------------------------------------------- request

    def start(self, event: hev.RequestHeaders) -> Commands:
        s = self.stream
        s.flow = event.replay_flow or http.HTTPFlow(s.context.client, s.context.server)
        s.flow.request = event.request
        s.flow.live = True
        self._meta()["stream_id"] = self.sid  # the client's stream id (``h2ws extract``)
        if (yield from s.check_invalid(True)):
            return
        if not (yield from self._destination()):
            return
        yield HttpRequestHeadersHook(s.flow)
        if (yield from self._killed(True)):
            return
        s.flow.request.timestamp_end = time.time()
        s.flow.request.data.content = b""
        yield HttpRequestHook(s.flow)
        if (yield from self._killed(True)):
            return
        if s.flow.response is not None:  # answered by an addon
            yield from self._respond_locally()
            return
        if not (yield from s.make_server_connection()):
            return
        s.client_state = s.state_done  # the request is complete; errors go upstream too
        s.server_state = s.state_wait_for_response_headers
        if s.context.server.alpn == b"h2":
            self._meta()["upstream"] = "h2"
            self.upstream_open = True
            yield mhttp.SendHttp(
                hev.RequestHeaders(self.sid, s.flow.request, end_stream=False),
                s.context.server,
            )
        else:
            yield from self._send_upgrade()

    def _destination(self) -> Generator[commands.Command, Any, bool]:
        """Where the request goes: as ``state_wait_for_request_headers`` decides it."""
        s = self.stream
        request = s.flow.request
        if s.mode is mhttp.HTTPMode.transparent:
            assert s.context.server.address
            request.data.host, request.data.port = s.context.server.address
            request.scheme = "https" if s.context.server.tls else "http"
        elif not request.host:
            try:
                host, port = url.parse_authority(request.host_header or "", check=True)
            except ValueError:
                yield mhttp.SendHttp(
                    hev.ResponseProtocolError(
                        self.sid,
                        "HTTP request has no host header, destination unknown.",
                        hev.ErrorCode.DESTINATION_UNKNOWN,
                    ),
                    s.context.client,
                )
                s.client_state = s.state_errored
                return False
            request.data.host = host
            request.data.port = port or (443 if s.context.client.tls else 80)
            request.scheme = "https" if s.context.client.tls else "http"
        if (
            isinstance(s.context.client.proxy_mode, ReverseMode)
            and not s.context.options.keep_host_header
        ):
            assert s.context.server.address
            request.host_header = url.hostport(
                "https" if s.context.server.tls else "http",
                s.context.server.address[0],
                s.context.server.address[1],
            )
        return True

    def _killed(self, emit_error_hook: bool) -> Generator[commands.Command, Any, bool]:
        """``check_killed``, and the upstream stream reset too once it is open."""
        s = self.stream
        if not (yield from s.check_killed(emit_error_hook)):
            return False
        if self.upstream_open and not self.closed_server:
            yield from self._reset_server("killed")
        self.dropped = True
        yield mhttp.DropStream(self.sid)
        return True

    def _respond_locally(self) -> Commands:
        s = self.stream
        assert s.flow.response
        s.flow.response.timestamp_start = s.flow.response.timestamp_start or time.time()
        yield HttpResponseHeadersHook(s.flow)
        if (yield from self._killed(True)):
            return
        yield HttpResponseHook(s.flow)
        response = s.flow.response
        content = response.raw_content
        yield mhttp.SendHttp(
            hev.ResponseHeaders(self.sid, response, end_stream=not content),
            s.context.client,
        )
        if content:
            yield mhttp.SendHttp(hev.ResponseData(self.sid, content), s.context.client)
            yield mhttp.SendHttp(hev.ResponseEndOfMessage(self.sid), s.context.client)
        s.flow.live = False
        self.rejected = True
        self.dropped = True
        yield mhttp.DropStream(self.sid)

    # -------------------------------------------------------------------------- HTTP/1.1 leg

    def _send_upgrade(self) -> Commands:
        """The HTTP/1.1 ``Upgrade: websocket`` request for this CONNECT (RFC 6455 §4.1)."""
        s = self.stream
        self.upstream_h1 = True
        self._meta()["upstream"] = "http/1.1"
        request = s.flow.request
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.ws_key = key
        fields = [
            (n, v)
            for n, v in request.headers.fields
            if n != PROTOCOL
            and n.lower() not in (b"sec-websocket-key", b"connection", b"upgrade", b"host", b"te")
        ]
        protocol = protocol_of(request) or "websocket"
        headers = http.Headers(
            [
                (b"Host", request.authority.encode() if request.authority else b""),
                (b"Connection", b"Upgrade"),
                (b"Upgrade", protocol.encode()),
                (b"Sec-WebSocket-Key", key.encode()),
                *fields,
            ]
        )
        if not request.authority:
            headers[b"Host"] = url.hostport(request.scheme, request.host, request.port)
        if "sec-websocket-version" not in headers:
            headers["Sec-WebSocket-Version"] = "13"
        upgrade = http.Request(
            host=request.host,
            port=request.port,
            method=b"GET",
            scheme=request.scheme.encode(),
            authority=b"",
            path=request.path.encode(),
            http_version=b"HTTP/1.1",
            headers=headers,
            content=b"",
            trailers=None,
            timestamp_start=time.time(),
            timestamp_end=time.time(),
        )
        self.upstream_open = True
        yield mhttp.SendHttp(
            hev.RequestHeaders(self.sid, upgrade, end_stream=False), s.context.server
        )
        # The upgrade request has no body: its end lets mitmproxy's HTTP/1 client make the
        # pipe once the 101 is in (``Http1Connection.mark_done``).
        yield mhttp.SendHttp(hev.RequestEndOfMessage(self.sid), s.context.server)

    def _fallback(self) -> Commands:
        """The server's HTTP/2 did not enable RFC 8441: an HTTP/1.1 connection of our own."""
        s = self.stream
        old = s.context.server
        connection, err = yield GetHttp1Connection(
            (s.flow.request.host, s.flow.request.port),
            s.flow.request.scheme == "https",
            old.via,
            "tcp",
            sni=old.sni,
        )
        if err:
            yield from s.handle_protocol_error(
                hev.ResponseProtocolError(self.sid, err, hev.ErrorCode.CONNECT_FAILED)
            )
            self.dropped = True
            return
        s.context.server = s.flow.server_conn = connection
        yield from self._send_upgrade()

    def _accept_upgrade(self, response: http.Response) -> http.Response | str:
        """The 200 the client gets for a valid 101, or why the 101 is not valid."""
        headers = response.headers
        if headers.get("upgrade", "").lower() != "websocket":
            return "HTTP/1.1 fallback: 101 without Upgrade: websocket"
        if "upgrade" not in headers.get("connection", "").lower():
            return "HTTP/1.1 fallback: 101 without Connection: upgrade"
        assert self.ws_key is not None
        if headers.get("sec-websocket-accept", "") != generate_accept_token(
            self.ws_key.encode()
        ).decode("ascii"):
            return "HTTP/1.1 fallback: wrong Sec-WebSocket-Accept"
        kept = [
            (n, v)
            for n, v in headers.fields
            if n.lower() not in (b"connection", b"upgrade", b"sec-websocket-accept")
            and n.lower() not in (b"keep-alive", b"transfer-encoding", b"content-length")
        ]
        return http.Response(
            http_version=b"HTTP/2.0",
            status_code=200,
            reason=b"",
            headers=http.Headers(kept),
            content=None,
            trailers=None,
            timestamp_start=response.timestamp_start,
            timestamp_end=None,
        )

    # -------------------------------------------------------------------------- events

    def handle(self, event: events.Event) -> Commands:
        try:
            if self.rejected:
                if isinstance(
                    event,
                    hev.RequestData
                    | hev.RequestEndOfMessage
                    | hev.RequestTrailers
                    | events.MessageInjected,
                ):
                    return
                yield from mhttp.HttpStream._handle_event(self.stream, event)
                return
            yield from self.state(event)
        except Exception as exc:
            # One stream's failure must not end the connection (mitmproxy would close it).
            logger.warning(f"h2ws: WebSocket stream {self.sid} failed, reset: {exc!r}")
            yield from self._abort(f"h2ws: {exc!r}")

    def _abort(self, message: str) -> Commands:
        s = self.stream
        if self.dropped:
            return
        self.dropped = True
        s.flow.live = False
        if not self.closed_client:
            yield mhttp.SendHttp(
                hev.ResponseProtocolError(self.sid, message, hev.ErrorCode.KILL),
                s.context.client,
            )
        if not self.closed_server:
            yield from self._reset_server(message)
        yield mhttp.DropStream(self.sid)

    def _reset_server(self, message: str) -> Commands:
        s = self.stream
        self.closed_server = True
        yield mhttp.SendHttp(
            hev.RequestProtocolError(self.sid, message, hev.ErrorCode.KILL),
            s.context.server,
        )

    def awaiting_response(self, event: events.Event) -> Commands:
        s = self.stream
        if isinstance(event, hev.RequestData):
            self.early.append(event.data)
            self.early_bytes += len(event.data)
            if self.early_bytes > EARLY_DATA_LIMIT:
                yield from self._abort("h2ws: too much data before the WebSocket was accepted")
        elif isinstance(event, hev.RequestEndOfMessage):
            self.client_ended = True
        elif isinstance(event, NeedsHttp1Upgrade):
            yield from self._fallback()
        elif isinstance(event, hev.RequestProtocolError | hev.ResponseProtocolError):
            self.dropped = True
            yield from s.handle_protocol_error(event)
        elif isinstance(event, hev.ResponseHeaders):
            yield from self._response_headers(event)
        elif isinstance(event, events.CommandCompleted | hev.RequestTrailers):
            pass
        elif isinstance(event, hev.ResponseEndOfMessage) and self.skip_response_eom:
            self.skip_response_eom = False
        else:
            raise AssertionError(f"unexpected event before the WebSocket opened: {event!r}")

    def _response_headers(self, event: hev.ResponseHeaders) -> Commands:
        s = self.stream
        response = event.response
        if self.upstream_h1 and response.status_code == 101:
            accepted = self._accept_upgrade(response)
            if isinstance(accepted, str):
                s.flow.response = response
                self.dropped = True
                yield from s.handle_protocol_error(
                    hev.ResponseProtocolError(
                        self.sid, accepted, hev.ErrorCode.GENERIC_SERVER_ERROR
                    )
                )
                yield from self._reset_server(accepted)
                return
            self.skip_response_eom = True  # the 101 has no body; the pipe follows
            yield from self._open(accepted)
            return
        if 200 <= response.status_code < 300 and not event.end_stream:
            yield from self._open(response)
            return
        # Refused: an ordinary response, handled by mitmproxy's own states from here on.
        self.rejected = True
        if not self.upstream_h1:
            yield mhttp.SendHttp(hev.RequestEndOfMessage(self.sid), s.context.server)
        s.client_state = s.state_done
        yield from s.state_wait_for_response_headers(event)

    def _open(self, response: http.Response) -> Commands:
        """The server accepted: the stream becomes a live WebSocket flow."""
        s = self.stream
        s.flow.response = response
        yield HttpResponseHeadersHook(s.flow)
        if (yield from self._killed(True)):
            return
        s.flow.websocket = WebSocketData()
        response.timestamp_end = time.time()
        yield HttpResponseHook(s.flow)
        if (yield from self._killed(False)):
            return
        yield mhttp.SendHttp(
            hev.ResponseHeaders(self.sid, s.flow.response, end_stream=False),
            s.context.client,
        )
        s.client_state = s.server_state = s.state_done
        self.child = websocket.WebsocketLayer(s.context, s.flow)
        s.child_layer = self.child
        self.state = self.relay
        yield from self._to_child(events.Start())
        early, self.early = self.early, []
        for data in early:
            yield from self._to_child(events.DataReceived(s.context.client, data))
        if self.client_ended:
            yield from self._to_child(events.ConnectionClosed(s.context.client))
        yield from self._maybe_drop()

    def relay(self, event: events.Event) -> Commands:
        s = self.stream
        child_event: events.Event
        if isinstance(event, hev.RequestData):
            child_event = events.DataReceived(s.context.client, event.data)
        elif isinstance(event, hev.RequestEndOfMessage | hev.RequestProtocolError):
            if isinstance(event, hev.RequestProtocolError):
                self.closed_client = True  # reset: nothing more can be sent to it
            child_event = events.ConnectionClosed(s.context.client)
        elif isinstance(event, hev.ResponseData):
            child_event = events.DataReceived(s.context.server, event.data)
        elif isinstance(event, hev.ResponseEndOfMessage):
            if self.skip_response_eom:
                self.skip_response_eom = False
                return
            child_event = events.ConnectionClosed(s.context.server)
        elif isinstance(event, hev.ResponseProtocolError):
            self.closed_server = True
            child_event = events.ConnectionClosed(s.context.server)
        elif isinstance(event, hev.RequestTrailers | hev.ResponseTrailers):
            return
        elif isinstance(event, hev.ResponseHeaders):
            return  # headers after the 2xx on a WebSocket stream: nothing to relay
        else:
            child_event = event  # CommandCompleted of the child's hooks, injected messages
        if isinstance(child_event, events.ConnectionClosed) and self._child_done():
            yield from self._maybe_drop()
            return
        yield from self._to_child(child_event)
        if self.closed_client and self.closed_server:  # (not a generator per event)
            yield from self._maybe_drop()

    def _child_done(self) -> bool:
        child = self.child
        return child is None or child._handle_event == child.done

    def _to_child(self, event: events.Event) -> Commands:
        s = self.stream
        assert self.child is not None
        #: the child's latest bytes for an HTTP/2 server, held for one command: if the close
        #: of the server connection follows, both go as one :class:`RequestLastData`
        held: bytes | None = None
        for command in self.child.handle_event(event):
            if held is not None:
                if (
                    isinstance(command, commands.CloseConnection)
                    and command.connection is s.context.server
                ):
                    self.closed_server = True
                    yield mhttp.SendHttp(RequestLastData(self.sid, held), s.context.server)
                    held = None
                    continue
                yield mhttp.SendHttp(hev.RequestData(self.sid, held), s.context.server)
                held = None
            if isinstance(command, commands.SendData):
                if command.connection is s.context.client:
                    if not self.closed_client:
                        yield mhttp.SendHttp(
                            hev.ResponseData(self.sid, command.data), s.context.client
                        )
                elif not self.closed_server:
                    if self.upstream_h1:
                        yield mhttp.SendHttp(
                            hev.RequestData(self.sid, command.data), s.context.server
                        )
                    else:
                        held = command.data
            elif isinstance(command, commands.CloseConnection):
                if command.connection is s.context.client:
                    if not self.closed_client:
                        self.closed_client = True
                        yield mhttp.SendHttp(hev.ResponseEndOfMessage(self.sid), s.context.client)
                elif not self.closed_server:
                    self.closed_server = True
                    if self.upstream_h1:
                        # the HTTP/1.1 connection is this WebSocket's own: close it
                        end: hev.HttpEvent = hev.RequestProtocolError(
                            self.sid, "EOF", hev.ErrorCode.PASSTHROUGH_CLOSE
                        )
                    else:
                        end = RequestLastData(self.sid, b"")
                    yield mhttp.SendHttp(end, s.context.server)
            else:
                yield command
        if held is not None:
            yield mhttp.SendHttp(hev.RequestData(self.sid, held), s.context.server)

    def _maybe_drop(self) -> Commands:
        if self.closed_client and self.closed_server and not self.dropped:
            self.dropped = True
            yield mhttp.DropStream(self.sid)

    def _meta(self) -> dict[str, Any]:
        meta = self.stream.flow.metadata.setdefault(METADATA_KEY, {})
        assert isinstance(meta, dict)
        return meta


# ------------------------------------------------------------------------------ for observe mode
# The other private parts of mitmproxy the addon uses live here too, behind the same version
# check: ``flows.py`` triggers mitmproxy's HTTP hook classes (``_hooks``, re-exported below),
# ``layers.py`` asks the built-in ``next_layer`` addon for its ignore_hosts verdict.

#: used for its ignore_hosts/allow_hosts logic only (it reads mitmproxy's options)
_BUILTIN = BuiltinNextLayer()


def builtin_ignores(context: Context, data_client: bytes, data_server: bytes) -> bool:
    """Calls ``mitmproxy.addons.next_layer.NextLayer._ignore_connection`` (private): whether
    mitmproxy's ``ignore_hosts``/``allow_hosts`` leave this connection alone.  Raises
    ``NeedsMoreData`` as the original does when the client's first bytes do not tell yet."""
    return bool(_BUILTIN._ignore_connection(context, data_client, data_server))


# ------------------------------------------------------------------------------ applying

_PATCHES: list[tuple[Any, str, Any]] = [
    (_http2, "parse_h2_request_headers", parse_h2_request_headers),
    (_http3, "parse_h2_request_headers", parse_h2_request_headers),
    (_http2, "format_h2_request_headers", format_h2_request_headers),
    (_http3, "format_h2_request_headers", format_h2_request_headers),
    (mhttp, "validate_request", validate_request),
    (http.Request, "first_line_format", property(_first_line_format)),
    (_http2.Http2Connection, "__init__", _http2connection_init),
    (_http2.Http2Server, "__init__", _http2server_init),
    (_http2.Http2Client, "_handle_event", _http2client_handle_event),
    (mhttp.HttpLayer, "get_connection", _get_connection),
    (mhttp.HttpLayer, "_handle_event", _httplayer_handle_event),
    (mhttp.HttpStream, "state_wait_for_request_headers", _wait_for_request_headers),
    (_base.HttpConnection, "handle_event", _connection_handle_event),
]
_ORIGINALS: list[tuple[Any, str, Any]] = []
_INHERITED = object()  # the patched attribute was the base class's


def apply() -> None:
    """Install the patches (once), on a supported mitmproxy only."""
    problem = unsupported_mitmproxy()
    if problem is not None:
        raise RuntimeError(problem)
    if STATE.applied:
        return
    for owner, name, patched in _PATCHES:
        _ORIGINALS.append((owner, name, owner.__dict__.get(name, _INHERITED)))
        setattr(owner, name, patched)
        STATE.applied.append(f"{getattr(owner, '__name__', owner)}.{name}")


def revert() -> None:
    """Put mitmproxy's originals back (tests)."""
    while _ORIGINALS:
        owner, name, original = _ORIGINALS.pop()
        if original is _INHERITED:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    STATE.applied.clear()


__all__ = [
    "EARLY_DATA_LIMIT",
    "STATE",
    "HttpErrorHook",
    "HttpRequestHeadersHook",
    "HttpRequestHook",
    "HttpResponseHeadersHook",
    "HttpResponseHook",
    "WebSocketStream",
    "apply",
    "builtin_ignores",
    "is_extended_connect",
    "protocol_of",
    "revert",
]
