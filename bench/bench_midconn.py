"""Benchmark: the cost of recognising connections caught mid-stream (issue #14).

Why: a capture that starts late must not cost much more to decode than one captured whole.
This script makes an h2c capture with ``make_capture.py`` (several connections, each with
WebSocket streams and ordinary requests), writes a copy without its first ``--cut`` share of
packets (every connection then starts in its middle: no SYN, no preface, no SETTINGS, no
extended CONNECT, HPACK state unknown), decodes both in this process, and prints decode time
per message and per MB for each, and their ratio (goal: the late capture within 10 % of the
whole one, per message decoded).  It also checks that the late capture's messages are the
whole capture's last ones per stream and direction (a fast wrong answer is a FAIL).

Run from the project's root: ``.venv/bin/python bench/bench_midconn.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import dpkt

from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import ConnectionRecord, MessageRecord
from h2ws.analysis.sources.capture import decode

HERE = Path(__file__).resolve().parent


def cut_capture(src: Path, dst: Path, share: float) -> int:
    """Copy ``src`` without its first ``share`` of packets; returns the packets kept."""
    with src.open("rb") as f:
        packets = list(dpkt.pcap.Reader(f))
        linktype = dpkt.pcap.Reader(src.open("rb")).datalink()
    start = int(len(packets) * share)
    with dst.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=linktype)
        for ts, buf in packets[start:]:
            writer.writepkt(buf, ts)
    return len(packets) - start


def run(path: Path) -> tuple[float, dict[tuple[str, int | None, str], list[str]], int, int]:
    """(seconds, messages per connection/stream/direction, bytes, connections not captured
    from their start)."""
    t0 = time.perf_counter()
    by_id: dict[tuple[str, int | None, str], list[str]] = {}
    ends: dict[str, str] = {}
    late = 0
    for rec in decode(path, DecodeOptions(frames=False), Counter()):
        if isinstance(rec, MessageRecord):
            by_id.setdefault((rec.conn_id, rec.stream_id, rec.direction), []).append(rec.sha256)
        elif isinstance(rec, ConnectionRecord):
            # conn_ids count connections in order of first appearance, which a cut changes:
            # the client's port names a connection in both captures
            ends[rec.conn_id] = f"{rec.client_addr}:{rec.client_port}"
            late += not rec.start_captured
    seconds = time.perf_counter() - t0
    msgs = {(ends[c], sid, d): v for (c, sid, d), v in by_id.items()}
    return seconds, msgs, path.stat().st_size, late


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--cut", type=float, default=0.1, help="share of packets dropped")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole.pcap"
        late = Path(tmp) / "late.pcap"
        subprocess.run(
            [
                sys.executable,
                str(HERE / "make_capture.py"),
                "--messages",
                str(args.messages),
                "--connections",
                str(args.connections),
                "-o",
                str(whole),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cut_capture(whole, late, args.cut)
        tw, mw, bw, _ = run(whole)
        tl, ml, bl, n_late = run(late)
    ok = all(got == mw.get(k, [])[len(mw.get(k, [])) - len(got) :] for k, got in ml.items())
    nw, nl = sum(map(len, mw.values())), sum(map(len, ml.values()))
    per_w, per_l = tw / nw * 1e6, tl / max(nl, 1) * 1e6
    print(f"whole: {nw} messages, {bw / 1e6:.1f} MB in {tw:.2f} s: {per_w:.1f} us/message")
    print(
        f"late:  {nl} messages, {bl / 1e6:.1f} MB in {tl:.2f} s: {per_l:.1f} us/message"
        f" ({n_late} connections caught mid-stream)"
    )
    print(f"ratio late/whole per message: {per_l / per_w:.3f}; per MB: {(tl / bl) / (tw / bw):.3f}")
    print("messages: late ones are the whole capture's last ones:", "OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
