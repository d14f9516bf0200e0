"""The client side of one WebSocket, byte-stream agnostic: wsproto's frame layer (masking,
fragmentation, permessage-deflate) driven by a :mod:`plan`, logging what it sends and receives.

Used over a TCP socket after an HTTP/1.1 Upgrade and over an HTTP/2 stream after an extended
CONNECT alike: ``start()`` returns the bytes of every planned message (pipelined), ``receive(data)``
returns the bytes to send in reply (the close frame once every echo and pong has arrived, or the
reply to a server's close), and ``done`` tells when the close handshake is complete.
"""

from __future__ import annotations

from wsproto.connection import Connection
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)

from .plan import Item, WsLog, close_payload, log_message, split, split_text


class WsSession:
    def __init__(self, conn: Connection, plan: list[Item], log: WsLog, close_reason: str) -> None:
        self.conn = conn
        self.plan = plan
        self.log = log
        self.close_reason = close_reason
        self.expected = 0  # echoes and pongs still to come
        self.close_sent = False
        self.close_received = False
        self._partial: bytearray | None = None
        self._partial_text = False

    @property
    def done(self) -> bool:
        return self.close_sent and self.close_received

    def _message(self, item: Item, data: bytes, finished: bool) -> bytes:
        event: Message[str] | Message[bytes]
        if item.opcode == "text":
            event = TextMessage(data=data.decode(), message_finished=finished)
        else:
            event = BytesMessage(data=data, message_finished=finished)
        return self.conn.send(event)

    def start(self) -> bytes:
        out = bytearray()
        for item in self.plan:
            if item.opcode == "ping":
                out += self.conn.send(Ping(payload=item.payload))
                self.log.sent.append(log_message("ping", item.payload))
                self.expected += 1
                continue
            parts: list[bytes]
            if item.opcode == "text":  # wsproto takes str: split on character boundaries
                parts = [p.encode() for p in split_text(item.payload, item.fragments)]
            else:
                parts = split(item.payload, item.fragments)
            for k, part in enumerate(parts):
                out += self._message(item, part, k == len(parts) - 1)
                if k == 0 and item.ping_inside is not None:
                    out += self.conn.send(Ping(payload=item.ping_inside))
                    self.log.sent.append(log_message("ping", item.ping_inside))
                    self.expected += 1
            self.log.sent.append(log_message(item.opcode, item.payload, len(parts)))
            self.expected += 1
        return bytes(out)

    def _send_close(self, code: int, reason: str) -> bytes:
        self.close_sent = True
        self.log.sent.append(log_message("close", close_payload(code, reason)))
        self.log.close_sent = {"code": code, "reason": reason}
        return self.conn.send(CloseConnection(code=code, reason=reason))

    def receive(self, data: bytes | None) -> bytes:
        """Feed bytes from the server (None: the byte stream ended); returns bytes to send."""
        self.conn.receive_data(data)
        out = bytearray()
        for event in self.conn.events():
            if isinstance(event, TextMessage | BytesMessage):
                chunk = event.data.encode() if isinstance(event, TextMessage) else event.data
                if self._partial is None:
                    self._partial = bytearray()
                    self._partial_text = isinstance(event, TextMessage)
                self._partial += chunk
                if event.message_finished:
                    opcode = "text" if self._partial_text else "binary"
                    # wsproto hands over partial frames: the wire fragment count is unknown here.
                    msg = log_message(opcode, bytes(self._partial), 0)
                    msg["fragments"] = None
                    self.log.received.append(msg)
                    self._partial = None
                    self.expected -= 1
            elif isinstance(event, Pong):
                self.log.received.append(log_message("pong", bytes(event.payload)))
                self.expected -= 1
            elif isinstance(event, Ping):
                self.log.received.append(log_message("ping", bytes(event.payload)))
                out += self.conn.send(event.response())
            elif isinstance(event, CloseConnection):
                payload = (
                    b"" if event.code == 1005 else close_payload(event.code, event.reason or "")
                )
                self.log.received.append(log_message("close", payload))
                self.log.close_received = {"code": event.code, "reason": event.reason or ""}
                self.close_received = True
                if not self.close_sent:
                    self.log.close_initiator = "server"
                    if self.expected:
                        self.log.errors.append(f"server closed, {self.expected} echoes missing")
                    out += self._send_close(event.code, "")
        if self.expected == 0 and not self.close_sent and not self.close_received:
            out += self._send_close(1000, self.close_reason)
        return bytes(out)
