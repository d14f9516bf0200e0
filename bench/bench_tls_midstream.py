"""Benchmark TLS decryption of captures that start after the handshake (issue #14, TLS part).

The cost of finding keys by trial decryption (:mod:`h2ws.analysis.sources.tls.midstream`) on a
capture whose every connection starts mid-stream, against the same traffic captured whole.  In
one process:

1. makes a TLS 1.3 capture with ``make_capture.py --tls 1.3`` (``--messages``, default 20000;
   4 connections) or reads ``--capture`` with its ``--keylog``;
2. cuts it: the packets from ``--cut`` (a fraction of the file's packets, default 0.5) on, so
   every connection lost its TCP and TLS handshakes and about half its records (sequence
   numbers in the thousands), the first payload of each direction starting inside a record;
3. times, ``--repeat`` times (median), TCP reassembly + the TLS layer over the whole capture's
   segments and over the cut's (read once, before timing), and checks that the cut decrypts every
   connection; then the same cut with a key log of ``--noise`` random secrets per label before
   the right ones (the search's candidates), and with only random secrets (every search fails:
   the bound of the cost).

With ``--tls 1.2`` the capture is TLS 1.2 and the cut is the one TLS 1.2 survives: each
connection from its ServerHello on (its TCP handshake and ClientHello lost), the noise being
``CLIENT_RANDOM`` entries.

Run it from the project's root: ``.venv/bin/python bench/bench_tls_midstream.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from h2ws.analysis.core.chunks import Data, TlsInfo
from h2ws.analysis.records import DiagnosticRecord
from h2ws.analysis.sources.pcap import CaptureReader
from h2ws.analysis.sources.tcp import TcpReassembler, TcpSegment
from h2ws.analysis.sources.tls import KeyLog, TlsLayer


def decrypt(segments: Sequence[TcpSegment], keylog: KeyLog) -> tuple[float, dict[str, int]]:
    t0 = time.perf_counter()
    tcp = TcpReassembler(capture="bench")
    tls = TlsLayer(keylog, wait_for_keys=False)
    counts = {"plaintext_bytes": 0, "decrypted": 0, "found": 0, "midstream": 0}
    out = []
    for s in segments:
        for e in tcp.feed(s):
            out.extend(tls.feed(e))
    for e in tcp.finish():
        out.extend(tls.feed(e))
    out.extend(tls.finish())
    elapsed = time.perf_counter() - t0
    for e in out:
        if isinstance(e, Data):
            counts["plaintext_bytes"] += len(e.data)
        elif isinstance(e, TlsInfo):
            counts["decrypted"] += e.decrypted
        elif isinstance(e, DiagnosticRecord):
            if e.code == "tls_midstream_decrypted":
                counts["found"] += 1
            elif e.code == "tls_midstream":
                counts["midstream"] += 1
    return elapsed, counts


def noise(n: int, tls12: bool = False) -> bytes:
    if tls12:
        return b"".join(
            f"CLIENT_RANDOM {os.urandom(32).hex()} {os.urandom(48).hex()}\n".encode()
            for _ in range(n)
        )
    return b"".join(
        f"{label} {os.urandom(32).hex()} {os.urandom(32).hex()}\n".encode()
        for _ in range(n)
        for label in (
            "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0",
            # tried on each direction's first record (a cut inside the handshake)
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        )
    )


def from_server_hello(segments: Sequence[TcpSegment]) -> list[TcpSegment]:
    """Each connection's segments from its first server payload (the ServerHello) on."""
    client: dict[tuple[int, int], int] = {}
    started: set[tuple[int, int]] = set()
    out = []
    for s in segments:
        key = (min(s.sport, s.dport), max(s.sport, s.dport))
        if key not in started and s.payload:
            client.setdefault(key, s.sport)
            if s.sport != client[key]:
                started.add(key)
        if key in started:
            out.append(s)
    return out


def timed(segments: Sequence[TcpSegment], keys: bytes, repeat: int) -> tuple[float, dict[str, int]]:
    runs = [decrypt(segments, KeyLog(keys)) for _ in range(repeat)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--keylog", type=Path)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--cut", type=float, default=0.5)
    ap.add_argument("--noise", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        capture, keylog = args.capture, args.keylog
        if capture is None:
            capture = Path(tmp) / "t13.pcap"
            subprocess.run(
                [sys.executable, str(Path(__file__).with_name("make_capture.py")),
                 "--messages", str(args.messages), "--connections", "4", "--streams", "4",
                 "--tls", args.tls, "-o", str(capture)],
                check=True, capture_output=True,
            )  # fmt: skip
            keylog = capture.with_suffix(".keys")
        assert keylog is not None
        keys = keylog.read_bytes()
        segments = [s for s in CaptureReader(capture) if isinstance(s, TcpSegment)]
    tls12 = args.tls == "1.2"
    cut = from_server_hello(segments) if tls12 else segments[int(len(segments) * args.cut) :]
    whole_t, whole = timed(segments, keys, args.repeat)
    cut_t, part = timed(cut, keys, args.repeat)
    noisy_t, noisy = timed(cut, noise(args.noise, tls12) + keys, args.repeat)
    fail_t, failed = timed(cut, noise(args.noise, tls12), 1)
    where = "from each ServerHello" if tls12 else f"from {args.cut:.0%}"
    print(f"capture: {len(segments)} segments; cut: {len(cut)} segments {where} on")
    print(f"whole capture        {whole_t:7.3f} s  {whole}")
    print(f"cut, key log as is   {cut_t:7.3f} s  {part}")
    print(f"cut, +{args.noise} secrets/label {noisy_t:7.3f} s  {noisy}")
    print(f"cut, no right secret {fail_t:7.3f} s  {failed}")
    per_byte = (cut_t / max(part["plaintext_bytes"], 1)) / (
        whole_t / max(whole["plaintext_bytes"], 1)
    )
    print(f"cost per plaintext byte, cut / whole: {per_byte:.2f}")
    ok = part["decrypted"] == whole["decrypted"] and part["midstream"] == 0
    print("OK" if ok else "FAIL: the cut did not decrypt every connection")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
