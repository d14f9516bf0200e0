"""Drives mitmproxy's HTTP layer event by event, without sockets (our own Playbook-style harness).

A :class:`Driver` owns one ``HttpLayer`` (client leg HTTP/2, as after ALPN ``h2``) and plays
both peers with python-hyper h2: the client's bytes become ``DataReceived`` events, the layer's
``SendData`` commands are fed to the peer they are for.  Commands that need the outside world
are answered as mitmproxy's proxy server would: ``OpenConnection`` succeeds (the server leg
"negotiates" the ALPN the test chose), hooks complete at once after ``on_hook`` had its say.
Every command is kept in ``log`` so a test can assert what the layer did, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from mitmproxy import connection, options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode


def make_context(client_alpn: bytes = b"h2") -> Context:
    opts = options.Options()
    Proxyserver().load(opts)
    client = connection.Client(
        peername=("127.0.0.1", 40000),
        sockname=("127.0.0.1", 8080),
        timestamp_start=1.0,
        state=connection.ConnectionState.OPEN,
    )
    client.alpn = client_alpn
    client.tls = True
    return Context(client, opts)


class H2Peer:
    """One side of an HTTP/2 connection, as a real peer would run it (h2, validating)."""

    def __init__(self, *, client_side: bool, enable_connect_protocol: bool = True) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if not client_side and enable_connect_protocol:
            # in the first SETTINGS, as hypercorn and Node.js send it
            self.conn.local_settings.enable_connect_protocol = 1
            self.conn.local_settings.acknowledge()
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.events.append(event)

    def outgoing(self) -> bytes:
        return self.conn.data_to_send()

    def of(self, kind: type, stream_id: int | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (stream_id is None or e.stream_id == stream_id)
        ]

    def data(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.of(h2.events.DataReceived, stream_id))


class Driver:
    def __init__(
        self,
        *,
        mode: HTTPMode = HTTPMode.regular,
        server_alpn: bytes | None = b"h2",
        on_hook: Callable[[commands.StartHook], None] | None = None,
    ) -> None:
        self.context = make_context()
        self.layer: layer.Layer = HttpLayer(self.context, mode)
        self.client = H2Peer(client_side=True)
        self.server_alpn = server_alpn
        self.on_hook = on_hook
        #: server connection -> the peer that plays it, made by ``server_factory``, which also
        #: says which ALPN the connection "negotiated"
        self.servers: dict[connection.Connection, Any] = {}
        self.server_factory: Callable[[connection.Connection], tuple[Any, bytes | None]] = (
            lambda conn: (H2Peer(client_side=False), self.server_alpn)
        )
        self.log: list[commands.Command] = []
        self.closed: list[connection.Connection] = []
        self.queue: deque[events.Event] = deque()
        self.run(events.Start())
        self.pump()

    # ------------------------------------------------------------------------------ events

    def run(self, event: events.Event) -> None:
        self.queue.append(event)
        while self.queue:
            self._one(self.queue.popleft())

    def _one(self, event: events.Event) -> None:
        for command in self.layer.handle_event(event):
            self.log.append(command)
            if isinstance(command, commands.SendData):
                self._deliver(command.connection, command.data)
            elif isinstance(command, commands.OpenConnection):
                conn = command.connection
                conn.state = connection.ConnectionState.OPEN
                conn.timestamp_start = 1.0
                self.servers[conn], conn.alpn = self.server_factory(conn)
                self.queue.append(events.OpenConnectionCompleted(command, None))
            elif isinstance(command, commands.StartHook):
                if self.on_hook is not None:
                    self.on_hook(command)
                self.queue.append(events.HookCompleted(command, None))
            elif isinstance(command, commands.CloseConnection):
                self.closed.append(command.connection)
                command.connection.state = connection.ConnectionState.CLOSED

    def _deliver(self, conn: connection.Connection, data: bytes) -> None:
        if conn is self.context.client:
            self.client.receive(data)
        else:
            self.servers[conn].receive(data)

    def pump(self) -> None:
        """Move bytes until no peer has anything more to send."""
        for _ in range(100):
            moved = False
            data = self.client.outgoing()
            if data:
                moved = True
                self.run(events.DataReceived(self.context.client, data))
            for conn, peer in list(self.servers.items()):
                data = peer.outgoing()
                if data and conn not in self.closed:
                    moved = True
                    self.run(events.DataReceived(conn, data))
            if not moved:
                return
        raise AssertionError("the peers never went quiet")

    # ------------------------------------------------------------------------------ helpers

    def server(self) -> Any:
        (peer,) = self.servers.values()
        return peer

    def server_conn(self) -> connection.Connection:
        (conn,) = self.servers
        return conn

    def commands_of(self, kind: type) -> list[Any]:
        return [c for c in self.log if isinstance(c, kind)]
