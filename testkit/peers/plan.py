"""What the Python clients send on a WebSocket, and the JSON log format all clients share.

The log (written by ``h2_client.mjs`` too)::

    {client, transport, host, port, local_port, seed, enable_connect_protocol,
     websockets: [{stream_id, local_port, path, status, response_headers, extensions,
                   sent: [msg], received: [msg], close_sent, close_received, close_initiator,
                   stream_end, errors}],
     requests:   [{stream_id, local_port, method, path, status, body_length, body_sha256}]}
    msg = {opcode, payload_b64, length, fragments, [close_code, close_reason]}

Messages are listed in the order they COMPLETE on the wire: a ping sent between two fragments of a
message comes before that message, as a receiver sees it.
"""

from __future__ import annotations

import base64
import random
import struct
from dataclasses import dataclass, field
from typing import Any

ALPHABET = 'abcxyz 09{"éßж€✓漢😀'


@dataclass
class Item:
    """One message to send: ``opcode`` text|binary|ping; ``fragments`` > 1 splits it; a
    ``ping_inside`` payload is sent as a ping between the first and second fragment."""

    opcode: str
    payload: bytes
    fragments: int = 1
    ping_inside: bytes | None = None


def rand_text(rng: random.Random, n: int) -> bytes:
    """UTF-8 text of at least ``n`` bytes, multi-byte characters included."""
    out: list[str] = []
    size = 0
    while size < n:
        ch = rng.choice(ALPHABET)
        out.append(ch)
        size += len(ch.encode())
    return "".join(out).encode()


def make_plan(
    index: int, seed: int, extra: int = 3, max_message: int = 100_000, ping_inside: bool = True
) -> list[Item]:
    """The deterministic message mix of WebSocket ``index`` (sizes across the 7/16/64-bit length
    encodings, empty messages, fragmented messages, pings, and on odd ``index`` a ping between the
    fragments of a message unless ``ping_inside`` is false: wsproto 1.3 (so hypercorn) fails such
    a message with 1007 when it is compressed with permessage-deflate)."""
    rng = random.Random(seed * 1000 + index)
    items: list[Item] = []
    if index == 0:
        items += [
            Item("text", b""),
            Item("binary", b""),
            Item("text", b"x" * 125),
            Item("binary", rng.randbytes(126)),
            Item("binary", rng.randbytes(65535)),
            Item("binary", rng.randbytes(65536)),
        ]
    items += [
        Item("text", rand_text(rng, rng.randint(1, 120))),
        Item("binary", rng.randbytes(rng.randint(1, 125))),
        Item("ping", rng.randbytes(rng.randint(0, 125))),
        Item("text", rand_text(rng, rng.randint(126, 6000))),
        Item("binary", rng.randbytes(rng.randint(65536, max_message))),
    ]
    if index % 2 == 1:
        text, ping = rand_text(rng, rng.randint(200, 3000)), rng.randbytes(rng.randint(1, 16))
        items.append(Item("text", text, 3, ping if ping_inside else None))
    else:
        items.append(Item("text", rand_text(rng, rng.randint(30, 3000)), 3))
    items.append(Item("binary", rng.randbytes(rng.randint(10, 40000)), 2))
    for _ in range(extra):
        size = int(20000 ** rng.random())
        if rng.random() < 0.5:
            items.append(Item("text", rand_text(rng, size)))
        else:
            items.append(Item("binary", rng.randbytes(size)))
    # Never end on a ping: a server that closes after the last echo may drop a late pong.
    items.append(Item("text", f"last message of websocket {index}".encode()))
    return items


def split(payload: bytes, n: int) -> list[bytes]:
    """``payload`` in ``n`` contiguous parts (byte boundaries: may split a UTF-8 character)."""
    cuts = [len(payload) * k // n for k in range(n + 1)]
    return [payload[cuts[k] : cuts[k + 1]] for k in range(n)]


def split_text(payload: bytes, n: int) -> list[str]:
    """Like :func:`split` but on character boundaries (APIs that take ``str`` fragments)."""
    text = payload.decode()
    cuts = [len(text) * k // n for k in range(n + 1)]
    return [text[cuts[k] : cuts[k + 1]] for k in range(n)]


def log_message(opcode: str, payload: bytes, fragments: int = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "opcode": opcode,
        "payload_b64": base64.b64encode(payload).decode(),
        "length": len(payload),
        "fragments": fragments,
    }
    if opcode == "close":
        msg["close_code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        msg["close_reason"] = payload[2:].decode() if len(payload) >= 2 else None
    return msg


def close_payload(code: int, reason: str) -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class WsLog:
    path: str
    stream_id: int | None = None
    local_port: int | None = None
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    extensions: str | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    close_sent: dict[str, Any] | None = None
    close_received: dict[str, Any] | None = None
    close_initiator: str = "client"
    stream_end: str | None = None
    errors: list[str] = field(default_factory=list)


def payload_of(msg: dict[str, Any]) -> bytes:
    return base64.b64decode(msg["payload_b64"])
