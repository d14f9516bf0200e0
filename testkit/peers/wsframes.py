"""A small independent RFC 6455 / RFC 7692 reader: one direction's bytes -> messages.

Independent of wsproto and of h2ws on purpose: the tests use it to check that a capture really
holds what a client logged (tshark's raw HTTP/2 DATA bytes -> messages), before comparing h2ws.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

OPCODES = {1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


@dataclass
class Message:
    opcode: str
    payload: bytes
    fragments: int
    compressed: bool
    masked: bool


def parse(
    data: bytes, *, deflate: bool = False, no_context_takeover: bool = False
) -> list[Message]:
    """Every complete message in ``data`` (one direction of one WebSocket), in completion order.

    Control frames between the fragments of a message come out first, as a receiver sees them.
    Raises ValueError on a malformed or truncated stream.
    """
    out: list[Message] = []
    inflater = zlib.decompressobj(-15) if deflate else None
    partial: list[bytes] | None = None
    partial_op = 0
    partial_compressed = False
    partial_masked = False
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise ValueError(f"truncated frame header at {pos}")
        b0, b1 = data[pos], data[pos + 1]
        fin, rsv1, opcode = bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F
        masked, length = bool(b1 & 0x80), b1 & 0x7F
        pos += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        key = data[pos : pos + 4] if masked else b""
        pos += 4 if masked else 0
        if pos + length > len(data):
            raise ValueError(f"truncated frame payload at {pos}: {length} bytes announced")
        payload = data[pos : pos + length]
        pos += length
        if masked:
            mask = (key * (length // 4 + 1))[:length]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
                length, "big"
            )
        if opcode >= 8:
            out.append(Message(OPCODES.get(opcode, f"op{opcode}"), payload, 1, False, masked))
            continue
        if opcode != 0:
            if partial is not None:
                raise ValueError("new data frame inside a fragmented message")
            partial, partial_op, partial_compressed, partial_masked = [], opcode, rsv1, masked
        elif partial is None:
            raise ValueError("continuation frame outside a message")
        partial.append(payload)
        if fin:
            body = b"".join(partial)
            if partial_compressed:
                if inflater is None:
                    raise ValueError("RSV1 set but permessage-deflate was not agreed")
                body = inflater.decompress(body + b"\x00\x00\xff\xff")
                if no_context_takeover:
                    inflater = zlib.decompressobj(-15)
            out.append(
                Message(
                    OPCODES.get(partial_op, f"op{partial_op}"),
                    body,
                    len(partial),
                    partial_compressed,
                    partial_masked,
                )
            )
            partial = None
    return out
