"""Seeds and mutators of the fuzzing harness.

Two kinds of mutation:

- :func:`mutate_bytes`: generic byte mutations (bit flips, random and "interesting" bytes,
  inserted, deleted and duplicated runs, splices with another seed) -- for the direct targets.
- :func:`mutate_capture` (structure-aware): a real pcap/pcapng file whose TCP payloads are
  mutated in place, the link/IP/TCP headers and the file's blocks left intact, so the packets
  still reassemble and the decoders (TLS records, HTTP/2, HPACK, WebSocket) see deep input.
  Lengths are kept (a payload mutation never moves a header); file-level damage is what
  :func:`mutate_bytes` on the same seeds is for.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import hpack
from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame

from .targets import SEEDS

_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x3F, 0x40, 0x20, 0x0D, 0x0A, 0x3A]


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        op = rng.randrange(8)
        n = len(buf)
        if op == 0 and n:
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:
            buf[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 3:
            at = rng.randrange(n + 1)
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 4 and n:
            at = rng.randrange(n)
            del buf[at : at + rng.randrange(1, 17)]
        elif op == 5 and n:
            at = rng.randrange(n)
            run = buf[at : at + rng.randrange(1, 65)]
            to = rng.randrange(n + 1)
            buf[to:to] = run * rng.choice((1, 2, 16))
        elif op == 6 and others:
            other = rng.choice(others)
            if other:
                at = rng.randrange(len(other))
                to = rng.randrange(n + 1)
                buf[to:to] = other[at : at + rng.randrange(1, 129)]
        elif op == 7 and n >= 4:
            at = rng.randrange(n - 3)
            buf[at : at + 4] = struct.pack(">I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF)))
    return bytes(buf)


def tcp_payloads(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset, length) of every Ethernet/IPv4/TCP payload in a pcap or pcapng file."""
    for start, caplen in _packets(data):
        pkt = data[start : start + caplen]
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00" or pkt[23] != 6:
            continue
        ihl = (pkt[14] & 0x0F) * 4
        tcp = 14 + ihl
        if len(pkt) < tcp + 20:
            continue
        off = tcp + (pkt[tcp + 12] >> 4) * 4
        if off < caplen:
            yield start + off, caplen - off


def _packets(data: bytes) -> Iterator[tuple[int, int]]:
    if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        pos = 24
        while pos + 16 <= len(data):
            caplen = struct.unpack_from("<I", data, pos + 8)[0]
            yield pos + 16, min(caplen, len(data) - pos - 16)
            pos += 16 + caplen
    elif data[:4] == b"\x0a\x0d\x0d\x0a":
        pos = 0
        while pos + 12 <= len(data):
            kind, length = struct.unpack_from("<II", data, pos)
            if length < 12:
                return
            if kind == 6 and pos + 28 <= len(data):
                caplen = struct.unpack_from("<I", data, pos + 20)[0]
                yield pos + 28, min(caplen, len(data) - pos - 28)
            pos += length


def mutate_capture(data: bytes, rng: random.Random, regions: list[tuple[int, int]]) -> bytes:
    """``data`` with one to a few TCP payloads mutated in place (lengths kept)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4))):
        off, length = rng.choice(regions)
        for _ in range(rng.choice((1, 1, 2, 4, 16))):
            i = off + rng.randrange(length)
            op = rng.randrange(3)
            if op == 0:
                buf[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                buf[i] = rng.randrange(256)
            else:
                buf[i] = rng.choice(_INTERESTING)
    return bytes(buf)


def _h2_seed() -> bytes:
    enc = hpack.Encoder()
    h = HeadersFrame(1)
    h.data = enc.encode(
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/ws"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-extensions", "permessage-deflate"),
        ]
    )
    h.flags.add("END_HEADERS")
    d = DataFrame(1)
    d.data = b"\x81\x85abcd" + bytes(c ^ k for c, k in zip(b"hello", b"abcda", strict=True))
    s = SettingsFrame(0)
    s.settings = {8: 1, 1: 4096}
    server = HeadersFrame(1)
    server.data = hpack.Encoder().encode([(":status", "200")])
    server.flags.add("END_HEADERS")
    c2s = SettingsFrame(0).serialize() + h.serialize() + d.serialize()
    s2c = s.serialize() + server.serialize() + WindowUpdateFrame(0).serialize()
    cut = len(c2s) * 256 // (len(c2s) + len(s2c))
    return bytes([cut, 40]) + c2s + s2c


def _flow_seed() -> bytes:
    import io

    from mitmproxy.io import tnetstring
    from mitmproxy.test import tflow

    out = io.BytesIO()
    for flow in (tflow.tflow(resp=True), tflow.twebsocketflow(), tflow.ttcpflow()):
        tnetstring.dump(flow.get_state(), out)
    return out.getvalue()


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs of every target, which the mutators start from."""
    ws_c2s = b"\x81\x85abcd" + bytes(c ^ k for c, k in zip(b"hello", b"abcda", strict=True))
    ws_s2c = b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00" + b"\x88\x02\x03\xe8"
    hblock = hpack.Encoder().encode(
        [(":method", "GET"), (":path", "/"), ("cookie", "a=b"), ("x-long", "v" * 100)]
    )
    http1_c2s = b"Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    http1_s2c = b"200 OK\r\ncontent-length: 2\r\n\r\nok"
    captures = [(SEEDS / n).read_bytes() for n in ("h2c_hypercorn_ws.pcap", "tls_node_ws.pcapng")]
    return {
        "hpack": [hblock, hblock + hblock],
        "h2": [_h2_seed()],
        "http1": [bytes([len(http1_c2s) * 256 // 80, 5]) + http1_c2s + http1_s2c],
        "tls_sniff": [bytes([128, 30]) + captures[1][200:1400]],
        "websocket": [bytes([len(ws_c2s) * 256 // 26, 3]) + ws_c2s + ws_s2c],
        "capture": captures,
        "capture_tls": captures[1:],
        "flowfile": [_flow_seed()],
    }
