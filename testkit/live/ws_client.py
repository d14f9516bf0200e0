"""A small RFC 8441 client for the intercept-mode tests (python-hyper h2 + wsproto).

One TLS (ALPN h2) or cleartext HTTP/2 connection: optional GETs first, then one WebSocket by
extended CONNECT that sends the given text messages and collects every text message it
receives until each text of ``until`` arrived.  Bounded: every socket read has a timeout.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import wsproto
import wsproto.events
from wsproto.connection import ConnectionType


@dataclass
class Result:
    statuses: dict[str, int] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    ws_status: int | None = None
    received: list[str] = field(default_factory=list)
    closed: bool = False


class H2WsClient:
    def __init__(
        self, port: int, *, ca: Path | None = None, servername: str = "localhost",
        timeout: float = 10.0,
    ) -> None:  # fmt: skip
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            context.set_alpn_protocols(["h2"])
            self.sock: socket.socket = context.wrap_socket(raw, server_hostname=servername)
            self.scheme = "https"
        else:
            self.sock = raw
            self.scheme = "http"
        self.authority = f"{servername}:{port}"
        self.deadline = time.monotonic() + timeout
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self._flush()
        self.events: list[h2.events.Event] = []
        while not self._settings_seen():
            self._read()

    def _settings_seen(self) -> bool:
        return any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.events)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _read(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("ws_client: out of time")
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("ws_client: connection closed")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.events.append(event)
        self._flush()

    def get(self, path: str, result: Result) -> None:
        start = time.monotonic()
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [(":method", "GET"), (":scheme", self.scheme), (":path", path),
             (":authority", self.authority)],
            end_stream=True,
        )  # fmt: skip
        self._flush()
        while not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid
                      for e in self.events):  # fmt: skip
            self._read()
        status = next(
            int(dict(e.headers)[b":status"])
            for e in self.events
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid
        )
        result.statuses[path] = status
        result.durations[path] = time.monotonic() - start

    def websocket(self, path: str, messages: list[str], until: set[str], result: Result) -> None:
        """Sends ``messages``, reads until every text of ``until`` arrived, then closes."""
        assert self.conn.remote_settings.enable_connect_protocol == 1
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", self.scheme),
             (":path", path), (":authority", self.authority),
             ("sec-websocket-version", "13")],
        )  # fmt: skip
        self._flush()
        while result.ws_status is None:
            for e in self.events:
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    result.ws_status = int(dict(e.headers)[b":status"])
            if result.ws_status is None:
                self._read()
        if result.ws_status != 200:
            return
        ws = wsproto.Connection(ConnectionType.CLIENT)
        seen = len(self.events)
        for text in messages:
            self.conn.send_data(sid, ws.send(wsproto.events.TextMessage(text)))
            self._flush()
        while not until <= set(result.received):
            while seen < len(self.events):
                e = self.events[seen]
                seen += 1
                if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    ws.receive_data(e.data)
                    for w in ws.events():
                        if isinstance(w, wsproto.events.TextMessage):
                            result.received.append(w.data)
                elif (
                    isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
                    and e.stream_id == sid
                ):
                    return
            if not until <= set(result.received):
                self._read()
        self.conn.send_data(sid, ws.send(wsproto.events.CloseConnection(1000, "bye")))
        self._flush()
        end = time.monotonic() + 3
        while time.monotonic() < end and not result.closed:
            while seen < len(self.events):
                e = self.events[seen]
                seen += 1
                if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    result.closed = True
            if not result.closed:
                self._read()

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        finally:
            self.sock.close()
