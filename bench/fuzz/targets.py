"""Fuzz targets: the entry points of h2ws that read someone else's bytes.

Each target takes one input (bytes) and must return normally whatever the bytes are: decoding
problems are diagnostic rows, never exceptions.  An exception escaping a target is a crash.

- ``hpack``: one header block through :func:`hpack_fast.decode_block` (its own errors, the
  ``HpackDecodingError`` family, are its documented way to say "invalid", not crashes).
- ``h2``, ``http1``, ``tls_sniff``: a connection through :class:`ConnectionDecoder` -- the input
  split in two directions at a point the input chooses, fed in small chunks.
- ``websocket``: both directions of a WebSocket (:class:`WebSocketStream`, permessage-deflate
  negotiated, so inflate is reached too).
- ``capture``: the input as a pcap/pcapng file through the whole pipeline
  (``CaptureReader -> TcpReassembler -> TlsLayer -> decoder``), as ``h2ws extract`` runs it.
- ``flowfile``: the input as a mitmproxy flow file through :func:`flow_records`.
- ``capture_mutated`` (structure-aware): a real capture whose TCP payloads were mutated and
  re-wrapped (see :mod:`mutate`), so the decoders see deep input, not only broken file headers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from h2ws.analysis.core.chunks import ConnectionInfo
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.h2 import PREFACE
from h2ws.analysis.core.h2.hpack_fast import DynamicTable, HpackDecodingError, decode_block
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import WebSocketStream
from h2ws.analysis.records import StreamRecord
from h2ws.analysis.sources.capture import decode
from h2ws.analysis.sources.flowfile import flow_records

SEEDS = Path(__file__).resolve().parents[2] / "tests" / "data" / "fuzz-seeds"
_OPTIONS = DecodeOptions(max_message_bytes=1 << 20)
_TMP = Path(tempfile.gettempdir()) / f"h2ws-fuzz-{os.getpid()}"


def _split(data: bytes) -> tuple[bytes, bytes, int]:
    """Client bytes, server bytes and a chunk size, all chosen by the input's first bytes."""
    if len(data) < 2:
        return data, b"", 7
    cut = data[0] * len(data) // 256
    chunk = 1 + data[1] % 64
    body = data[2:]
    return body[:cut], body[cut:], chunk


def _connection(c2s: bytes, s2c: bytes, chunk: int) -> None:
    decoder = ConnectionDecoder(ConnectionInfo("fuzz:1"), _OPTIONS)
    ts = 1.0
    for i in range(0, max(len(c2s), len(s2c)), chunk):
        for direction, data in (("c2s", c2s), ("s2c", s2c)):
            part = data[i : i + chunk]
            if part:
                decoder.feed(direction, part, ts)  # type: ignore[arg-type]
                ts += 0.001
    decoder.close(ts, "fin")


def hpack(data: bytes) -> None:
    table = DynamicTable(4096)
    for block in (data, data[: len(data) // 2]):  # the second one sees the table the first left
        with contextlib.suppress(HpackDecodingError):  # its documented "invalid"
            decode_block(table, block, max_table_size=1 << 16, max_list_size=1 << 18)


def h2(data: bytes) -> None:
    c2s, s2c, chunk = _split(data)
    _connection(PREFACE + c2s, s2c, chunk)


def http1(data: bytes) -> None:
    c2s, s2c, chunk = _split(data)
    _connection(b"GET / HTTP/1.1\r\n" + c2s, b"HTTP/1.1 " + s2c, chunk)


def tls_sniff(data: bytes) -> None:
    c2s, s2c, chunk = _split(data)
    _connection(b"\x16\x03\x01" + c2s, b"\x16\x03\x03" + s2c, chunk)


def websocket(data: bytes) -> None:
    c2s, s2c, chunk = _split(data)
    record = StreamRecord(conn_id="fuzz:1", stream_id=1, ws_extensions="permessage-deflate")
    ws = WebSocketStream(record, _OPTIONS)
    out: list[object] = []
    for i in range(0, max(len(c2s), len(s2c)), chunk):
        ws.feed("c2s", c2s[i : i + chunk], 1.0, out)  # type: ignore[arg-type]
        ws.feed("s2c", s2c[i : i + chunk], 1.0, out)  # type: ignore[arg-type]


def _as_file(data: bytes, suffix: str) -> Path:
    _TMP.mkdir(exist_ok=True)
    path = _TMP / f"input{suffix}"
    path.write_bytes(data)
    return path


def capture(data: bytes, keylogs: tuple[Path, ...] = ()) -> None:
    for _ in decode(_as_file(data, ".pcap"), _OPTIONS, Counter(), keylogs):
        pass


def capture_tls(data: bytes) -> None:
    """A capture decrypted with the key log of the TLS seed, so mutations reach inside TLS."""
    capture(data, (SEEDS / "tls_node_ws.keys",))


def flowfile(data: bytes) -> None:
    for _ in flow_records(_as_file(data, ".mitm"), _OPTIONS):
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "hpack": hpack,
    "h2": h2,
    "http1": http1,
    "tls_sniff": tls_sniff,
    "websocket": websocket,
    "capture": capture,
    "capture_tls": capture_tls,
    "flowfile": flowfile,
}
