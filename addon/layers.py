"""Which mitmproxy layer relays a connection: HTTP/2 goes byte for byte through the TCP layer.

Observe mode's choice of layers depends on mitmproxy's public proxy API (``mitmproxy.proxy``:
the layer classes, ``NextLayer``) here; the private parts it needs (the built-in
``next_layer`` addon's ignore_hosts verdict) are ``intercept.py``'s, the one module that uses
mitmproxy's private modules and attributes (``tests/test_layout.py`` holds the others to that).
``flows.py`` triggers mitmproxy's hook classes (the HTTP ones re-exported by ``intercept.py``).

The addon's ``next_layer`` hook runs before mitmproxy's built-in one (script addons come first)
and sets a layer only when it takes the connection; otherwise the built-in decides as usual.

mitmproxy terminates HTTP/2 itself, never advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and
refuses ``:protocol`` (mitmproxy#4607), which breaks RFC 8441.  A connection is relayed
verbatim instead when both legs speak the same HTTP/2:

- TLS on both legs and both negotiated ALPN ``h2``.  mitmproxy's ``tlsconfig`` mirrors ALPN
  when the server's TLS comes first (``connection_strategy=eager``, the default): the server is
  offered what the client offered, the client gets what the server chose.
- cleartext on both legs and the client starts with the HTTP/2 connection preface (h2c with
  prior knowledge), recognised before mitmproxy's ``disable_h2c`` addon would kill it.  A first
  chunk that is only a prefix of the preface, or a server SETTINGS frame that arrives before
  the client's first bytes, is held by :class:`AwaitPreface` until the client's bytes decide.

In reverse mode with an ``https://`` target, mitmproxy builds its whole layer stack before ALPN
is known (server TLS, client TLS, HTTP); :func:`relay_layer` builds server TLS and client TLS
with a fresh ``NextLayer`` on top instead, so that the decision above is made after the
handshakes, exactly as in regular mode.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Protocol

from mitmproxy import ctx, tcp
from mitmproxy.addons.next_layer import NeedsMoreData
from mitmproxy.connection import Connection
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, mode_specs
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layer import CommandGenerator, Layer, NextLayer
from mitmproxy.proxy.layers import ClientTLSLayer, ServerTLSLayer, TCPLayer, modes
from mitmproxy.proxy.layers.tcp import TcpMessageInjected

from h2ws.addon import intercept
from h2ws.analysis.core.h2 import PREFACE

logger = logging.getLogger(__name__)

#: NextLayers created by AwaitPreface: they must decide, not wait again.
_NO_DEFER: weakref.WeakSet[NextLayer] = weakref.WeakSet()


def _data(nextlayer: NextLayer, conn: Connection) -> bytes:
    """What ``conn`` sent while the layer is undecided (``NextLayer.data_client`` is untyped)."""
    return b"".join(
        e.data
        for e in nextlayer.events
        if isinstance(e, events.DataReceived) and e.connection == conn
    )


def _ignored(context: Context, nextlayer: NextLayer, data: bytes) -> bool | None:
    """mitmproxy's ``ignore_hosts``/``allow_hosts`` verdict; None: not enough data yet."""
    if not (ctx.options.ignore_hosts or ctx.options.allow_hosts):
        return False
    try:
        return intercept.builtin_ignores(context, data, _data(nextlayer, context.server))
    except NeedsMoreData:
        return None


def _reverse_tls_target(context: Context) -> bool:
    layers = context.layers
    if len(layers) != 1 or not isinstance(layers[0], modes.ReverseProxy):
        return False
    spec = context.client.proxy_mode
    return isinstance(spec, mode_specs.ReverseMode) and spec.scheme == "https"


def relay_layer(
    nextlayer: NextLayer, relay: Callable[[Context], Layer], *, h2c_only: bool = False
) -> Layer | None:
    """The layer for this connection, or None to leave it to mitmproxy; ``relay`` makes the
    layer that relays HTTP/2 verbatim.  ``h2c_only`` (intercept mode): only cleartext HTTP/2
    with prior knowledge, which mitmproxy's own layers refuse, is relayed."""
    context = nextlayer.context
    if nextlayer.layer is not None or context.client.transport_protocol != "tcp":
        return None
    data = _data(nextlayer, context.client)
    ignored = _ignored(context, nextlayer, data)
    if ignored is None or ignored:
        return None

    if h2c_only and (context.client.tls or starts_like_tls_record(data)):
        return None
    if _reverse_tls_target(context) and starts_like_tls_record(data):
        # Both handshakes first; the NextLayer on top of client TLS asks again after ALPN.
        server_tls = ServerTLSLayer(context)
        server_tls.child_layer = ClientTLSLayer(context)
        return server_tls

    client, server = context.client, context.server
    if server.address is None or client.tls != server.tls:
        return None  # no destination yet, or cleartext on one leg and TLS on the other
    if client.tls:
        # Asked right after the handshakes, often for the server's first bytes (an HTTP/2
        # server sends its SETTINGS at once), so ALPN decides, not the client's bytes.
        if not isinstance(context.layers[-1], ClientTLSLayer) or client.alpn != server.alpn:
            return None  # not right above the client's TLS, or the legs differ (lazy strategy)
        if client.alpn == b"h2":
            return relay(context)
        if client.alpn:
            return None  # http/1.1 and others: mitmproxy's own layers
    if not data:
        # An HTTP/2 server may send its SETTINGS before the client's preface has arrived
        # (Node.js does, even on h2c): wait for the client rather than let the built-in choose
        # on the server's bytes alone.
        greeting = _data(nextlayer, server)
        if _starts_like_settings(greeting) and nextlayer not in _NO_DEFER:
            return AwaitPreface(context)
        return None
    if data.startswith(PREFACE):
        return relay(context)
    if PREFACE.startswith(data) and nextlayer not in _NO_DEFER:
        return AwaitPreface(context)
    return None


def _starts_like_settings(data: bytes) -> bool:
    """A server's first HTTP/2 frame: SETTINGS (not an ACK) on stream 0 (RFC 9113 §3.4)."""
    if len(data) < 9:
        return False
    length = int.from_bytes(data[:3], "big")
    return data[3] == 0x4 and not data[4] & 0x1 and data[5:9] == b"\0\0\0\0" and length % 6 == 0


def legs_differ(context: Context) -> bool:
    """The client negotiated h2 but the server leg is not (yet) the same: mitmproxy terminates
    that HTTP/2 connection itself, so RFC 8441 is unavailable on it."""
    client, server = context.client, context.server
    return bool(client.tls and client.alpn == b"h2" and server.alpn != b"h2")


class AwaitPreface(Layer):
    """Holds a connection whose first bytes are only a prefix of the HTTP/2 preface, or whose
    server spoke first with an HTTP/2 SETTINGS frame.

    The built-in ``next_layer`` cannot be told to wait for more data, and on ``PRI`` it would
    choose HTTP (whose ``disable_h2c`` then kills the connection).  This layer buffers events
    until the client's bytes are the whole preface or stop matching it (or the client closes),
    then hands them, coalesced, to a fresh ``NextLayer``, which asks the addons again.
    """

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        # Like NextLayer: not a protocol layer of its own, so invisible in the stack.
        context.layers.remove(self)
        self._events: list[events.Event] = []
        self._client_data = bytearray()

    def _handle_event(self, event: events.Event) -> CommandGenerator[None]:
        self._events.append(event)
        if isinstance(event, events.DataReceived) and event.connection == self.context.client:
            self._client_data += event.data
            data = bytes(self._client_data)
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                return
        elif not isinstance(event, events.ConnectionClosed):
            return
        child = NextLayer(self.context)
        _NO_DEFER.add(child)
        self._handle_event = child.handle_event  # type: ignore[method-assign]
        for replayed in self._coalesced():
            yield from child.handle_event(replayed)

    def _coalesced(self) -> Iterator[events.Event]:
        """The buffered events, the client's data first and as one event: the fresh NextLayer
        asks on the first data it sees, and that must be all of the client's.  (Moving the
        client's bytes before a server greeting changes nothing: each direction keeps its
        order.)"""
        client = self.context.client
        rest: list[events.Event] = []
        for event in self._events:
            if isinstance(event, events.Start):
                yield event
            elif not (isinstance(event, events.DataReceived) and event.connection == client):
                rest.append(event)
        if self._client_data:
            yield events.DataReceived(client, bytes(self._client_data))
        yield from rest


class RelayTCPLayer(TCPLayer):
    """mitmproxy's TCP layer (``h2ws_tcp_hooks=true``), refusing messages injected into the
    connection's mirror flows: see :func:`refuse_mirror_injection`."""

    def relay_messages(self, event: events.Event) -> CommandGenerator[None]:
        yield from refuse_mirror_injection(self, event)


def refuse_mirror_injection(layer: TCPLayer, event: events.Event) -> CommandGenerator[None]:
    """Wraps ``TCPLayer.relay_messages``: ``inject.websocket`` on a mirror flow of a relayed
    connection reaches this connection's TCP layer, whose original fails an assertion on it
    (which would end the connection); the bytes of the relay are the peers' own, so the
    message is refused with a warning and the relay goes on."""
    if isinstance(event, events.MessageInjected) and not isinstance(event, TcpMessageInjected):
        logger.warning(
            "h2ws: a message injected into a read-only mirror flow was refused "
            "(observe mode relays the bytes as they came; h2ws_mode=intercept can inject)"
        )
        return
    yield from TCPLayer.relay_messages(layer, event)


class ChunkSink(Protocol):
    def relayed_chunk(self, flow: tcp.TCPFlow, message: tcp.TCPMessage) -> None: ...


class ObservedTCPLayer(RelayTCPLayer):
    """mitmproxy's TCP layer, relaying verbatim, that hands each chunk to h2ws directly.

    The stock layer triggers a ``tcp_message`` hook per chunk and waits for it before sending
    the chunk on; each hook is a task and two passes over every loaded addon, which measured as
    the largest cost of a relay (more than decoding).  This layer sends the chunk on at once,
    then gives a copy to the sink, which decodes it and queues the mirrored flows' hooks
    without holding the relay (``flows.HookQueue``).  Closing, and injected messages, are the
    stock layer's.
    """

    flow: tcp.TCPFlow

    def __init__(self, context: Context, sink: ChunkSink) -> None:
        super().__init__(context)
        self.sink = sink

    def relay_messages(self, event: events.Event) -> CommandGenerator[None]:
        if not isinstance(event, events.DataReceived):
            yield from refuse_mirror_injection(self, event)
            return
        from_client = event.connection == self.context.client
        send_to = self.context.server if from_client else self.context.client
        yield commands.SendData(send_to, event.data)
        message = tcp.TCPMessage(from_client, event.data)  # type: ignore[no-untyped-call]
        self.sink.relayed_chunk(self.flow, message)


def relay_kind(context: Context) -> str:
    """How the relayed connection's legs look, for the flow's metadata."""
    return "h2" if context.client.tls else "h2c"


__all__ = [
    "AwaitPreface",
    "ObservedTCPLayer",
    "RelayTCPLayer",
    "legs_differ",
    "relay_kind",
    "relay_layer",
]
