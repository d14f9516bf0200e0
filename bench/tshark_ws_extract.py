"""A tshark-based WebSocket-over-HTTP/2 extractor: the baseline that ``bench_tls.py`` measures
``h2ws extract`` against on TLS captures.

It is what one would write without h2ws: tshark decrypts the capture with the key log, finds
HTTP/2 by ALPN and prints, per packet, the HTTP/2 frames it completed there,

    tshark -r FILE -o tls.keylog_file:KEYS -Y "http2.type==0 || http2.type==1" -T fields \\
           -e tcp.stream -e tcp.srcport -e http2.type -e http2.streamid \\
           -e http2.headers.method -e http2.data.data

and this script reads that output as it comes (a pipe, so tshark and Python run side by side)
and does a minimal RFC 6455 parse per (TCP stream, HTTP/2 stream, direction): the streams
opened by an extended CONNECT are WebSockets; their DATA payloads are concatenated and cut into
frames (header, 7/16/64-bit length, masking key), client payloads unmasked, fragmented messages
reassembled (FIN and continuation frames; control frames may come in between). It counts
messages per direction and opcode, frames, payload bytes and the sum of the payloads' SHA-256
digests (as ``make_capture.Stats.message`` does, and as h2ws's ``sha256`` column allows), and
prints them as JSON, together with tshark's own peak RSS and CPU time (``os.wait4`` on tshark)
and this process's peak RSS, so that the benchmark can report the pipeline's memory as the sum
of both processes, which run at the same time.

Alignment of the fields: tshark prints each field's occurrences in a packet comma-separated in
tree order, so ``http2.type`` and ``http2.streamid`` have one value per frame; ``http2.data.data``
has one per DATA frame (``<MISSING>`` for an empty one), ``http2.headers.method`` one per request
HEADERS frame (only clients send them; a client HEADERS frame without :method, i.e. trailers,
would break this, and the benchmark's captures have none).  Only the standard library is
imported, to keep this process small.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import os
import resource
import subprocess
import sys

OPCODES = {0x0: "continuation", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}
DIRECTIONS = ("c2s", "s2c")
FIELDS = ("tcp.stream", "tcp.srcport", "http2.type", "http2.streamid", "http2.headers.method",
          "http2.data.data")  # fmt: skip


def tshark_command(tshark: str, capture: str, keylog: str) -> list[str]:
    fields = [arg for field in FIELDS for arg in ("-e", field)]
    return [tshark, "-r", capture, "-o", f"tls.keylog_file:{keylog}",
            "-Y", "http2.type==0 || http2.type==1", "-T", "fields", *fields]  # fmt: skip


class Counts:
    def __init__(self) -> None:
        self.messages: dict[str, dict[str, int]] = {d: {} for d in DIRECTIONS}
        self.frames = {d: 0 for d in DIRECTIONS}
        self.payload_bytes = {d: 0 for d in DIRECTIONS}
        self.digests = {d: 0 for d in DIRECTIONS}

    def message(self, direction: str, opcode: int, payload: bytes, frames: int) -> None:
        name = OPCODES.get(opcode, str(opcode))
        per = self.messages[direction]
        per[name] = per.get(name, 0) + 1
        self.frames[direction] += frames
        self.payload_bytes[direction] += len(payload)
        self.digests[direction] += int.from_bytes(hashlib.sha256(payload).digest())


class WsDirection:
    """One direction of one WebSocket: bytes not yet parsed, and a message being reassembled."""

    __slots__ = ("buf", "direction", "frames", "opcode", "parts")

    def __init__(self, direction: str) -> None:
        self.direction = direction
        self.buf = bytearray()
        self.opcode = -1
        self.parts: list[bytes] = []
        self.frames = 0

    def feed(self, data: bytes, counts: Counts) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                head = 4
                if n - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4])
            elif length == 127:
                head = 10
                if n - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10])
            masked = b1 & 0x80
            if masked:
                head += 4
            start = pos + head
            end = start + length
            if end > n:
                break
            payload = bytes(buf[start:end])
            if masked and length:
                key = bytes(buf[start - 4 : start]) * (length // 4 + 1)
                payload = (int.from_bytes(payload) ^ int.from_bytes(key[:length])).to_bytes(length)
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= 8:  # control frames are never fragmented, and may interleave
                counts.message(self.direction, opcode, payload, 1)
                continue
            if opcode:
                self.opcode = opcode
                self.parts = [payload]
                self.frames = 1
            else:
                self.parts.append(payload)
                self.frames += 1
            if fin:
                body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
                counts.message(self.direction, self.opcode, body, self.frames)
                self.parts = []
        if pos:
            del buf[:pos]


def extract(lines: object, server_port: bytes, counts: Counts) -> dict[str, int]:
    """Reads tshark's field lines (bytes); returns what it saw besides the messages."""
    websockets: dict[tuple[bytes, bytes], tuple[WsDirection, WsDirection]] = {}
    data_frames = 0
    unhex = binascii.a2b_hex
    for line in lines:  # type: ignore[attr-defined]
        tcp_stream, port, types, stream_ids, methods, data = line.rstrip(b"\n").split(b"\t")
        direction = 1 if port == server_port else 0
        method_list = methods.split(b",") if methods else []
        data_list = data.split(b",") if data else []
        m = d = 0
        for frame_type, stream_id in zip(types.split(b","), stream_ids.split(b","), strict=True):
            if frame_type == b"1":
                if direction == 0 and m < len(method_list):
                    if method_list[m] == b"CONNECT":
                        websockets[tcp_stream, stream_id] = (WsDirection("c2s"), WsDirection("s2c"))
                    m += 1
            elif frame_type == b"0":
                payload = data_list[d]
                d += 1
                data_frames += 1
                ws = websockets.get((tcp_stream, stream_id))
                if ws is not None and payload != b"<MISSING>":
                    ws[direction].feed(unhex(payload), counts)
        if d != len(data_list):
            raise ValueError(f"{len(data_list)} DATA payloads for {d} DATA frames")
    return {"websocket_streams": len(websockets), "data_frames": data_frames}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--keylog", required=True, help="NSS key log")
    parser.add_argument("--server-port", type=int, default=443)
    parser.add_argument("--tshark", default="tshark")
    args = parser.parse_args(argv)
    counts = Counts()
    proc = subprocess.Popen(
        tshark_command(args.tshark, args.capture, args.keylog),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=1 << 20,
    )
    assert proc.stdout is not None
    seen = extract(proc.stdout, str(args.server_port).encode(), counts)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(f"tshark exited with {proc.returncode}", file=sys.stderr)
        return 1
    result = {
        "messages": {
            "total": sum(sum(per.values()) for per in counts.messages.values()),
            "by_direction": {d: dict(sorted(per.items())) for d, per in counts.messages.items()},
        },
        "ws_frames": counts.frames,
        "payload_bytes": counts.payload_bytes,
        "payload_sha256_sum": {d: f"{v % (1 << 256):064x}" for d, v in counts.digests.items()},
        **seen,
        "tshark": {"max_rss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime},
        "extractor": {
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "cpu": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        },
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
