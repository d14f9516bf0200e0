"""Benchmark ``h2ws extract`` against a tshark-based extractor on large HTTP/2-over-TLS captures.

The goal (issue #3): on a TLS capture of at least 200k WebSocket messages over HTTP/2, h2ws at
least 3x the throughput of what one would otherwise use - tshark decrypting the capture and
printing ``http2.data.data`` per stream, followed by a minimal RFC 6455 parse (the script
``tshark_ws_extract.py``) - with peak RSS flat when the capture grows tenfold.  In one process:

1. makes TLS captures with ``make_capture.py --tls`` (by default TLS 1.3, 200k WebSocket
   messages and 10x that, 4 connections x 8 WebSocket streams sharing them with ordinary
   requests; the NSS key log next to each), or reuses those in ``--captures`` (default
   ``bench/data/``, git-ignored) made with the same parameters;
2. runs, one after the other and round robin ``--repeat`` times,
   ``h2ws extract FILE --keylog KEYS -o DIR``, the same with ``--no-frames``, and
   ``python tshark_ws_extract.py FILE --keylog KEYS``, each as a child process measured by
   ``bench_extract.run_measured`` (``os.wait4`` through a small launcher: wall clock, CPU time
   of the process and every descendant it waited for, peak RSS).  For the extractor, CPU time
   is tshark's plus Python's, wait4's ``ru_maxrss`` is that of its largest process (tshark),
   and since tshark and the parser run at the same time the pipeline's memory is reported as
   well: the sum of both processes' peaks, which each reports from its own rusage (an upper
   bound of what they held together);
3. checks both against what the generator recorded: h2ws's tables with
   ``bench_extract.check_tables`` (messages per direction and opcode, frames, payload bytes,
   SHA-256 sums, connections, streams, HTTP/2 frames, no warning), the extractor's counts
   with the same message figures - a fast wrong answer is a FAIL, for either tool;
4. prints wall and CPU time, messages/s and peak RSS per tool and scale, the throughput ratios
   h2ws / tshark extractor by wall clock and by CPU time, and peak RSS growth from the
   smallest scale to the largest; ``--markdown FILE`` writes the same as Markdown.

Run it from the project's root: ``.venv/bin/python bench/bench_tls.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench_extract import (
    H2wsVariant,
    Measurement,
    _scale_label,
    _tail,
    add_common_arguments,
    capture_params,
    environment,
    h2ws_command,
    measure_h2ws,
    measure_scales,
    publish,
    run_measured,
    work_directory,
)
from make_capture import (
    SIDECAR_FORMAT,
    TLS_PORT,
    TLS_VERSIONS,
    Params,
    generate,
    keylog_path,
    sidecar_path,
    verify_with_tshark,
)

BENCH_DIR = Path(__file__).resolve().parent
EXTRACTOR = BENCH_DIR / "tshark_ws_extract.py"
EXTRACTOR_TOOL = "tshark extractor"


@dataclass
class TlsMeasurement(Measurement):
    #: For the extractor: tshark's and the Python parser's own peaks (they run side by side).
    tshark_rss_kib: int = 0
    parser_rss_kib: int = 0
    tshark_cpu: float = 0.0

    @property
    def pipeline_rss_mib(self) -> float:
        """The peak of the tool as a whole: the sum of its processes' peaks."""
        if self.tshark_rss_kib:
            return (self.tshark_rss_kib + self.parser_rss_kib) / 1024
        return self.rss_mib


def capture_name(params: Params, tls: str) -> str:
    return (
        f"tls{tls.replace('.', '')}-ws-{params.messages}m-{params.connections}c-"
        f"{params.streams}s-seed{params.seed}"
    )


def make_or_reuse(params: Params, tls: str, directory: Path) -> tuple[Path, dict[str, Any]]:
    """Reuse a capture (and key log) whose sidecar shows the same parameters, else make it."""
    directory.mkdir(parents=True, exist_ok=True)
    capture = directory / f"{capture_name(params, tls)}.pcap"
    side = sidecar_path(capture)
    if capture.exists() and side.exists() and keylog_path(capture).exists():
        sidecar: dict[str, Any] = json.loads(side.read_text())
        if (
            sidecar.get("params") == vars(params)
            and sidecar.get("format") == SIDECAR_FORMAT
            and sidecar.get("tls", {}).get("version") == f"TLS {tls}"
        ):
            print(f"  reusing {capture}", flush=True)
            return capture, sidecar
    print(f"  making {capture} ...", flush=True)
    sidecar = generate(params, capture, tls)
    print(
        f"  {sidecar['packets']:,} packets, {sidecar['messages']['total']:,} messages, "
        f"{sum(sidecar['tls']['records'].values()):,} TLS records, "
        f"{sidecar['bytes'] / 2**20:,.0f} MiB in {sidecar['generator_seconds']:.0f} s",
        flush=True,
    )
    return capture, sidecar


def check_counts(result: dict[str, Any], sidecar: dict[str, Any]) -> list[str]:
    """The extractor's counts against the generator's: the message figures check_tables uses."""
    problems = []
    pairs = [
        ("messages", result["messages"]["total"], sidecar["messages"]["total"]),
        (
            "messages by direction and opcode",
            result["messages"]["by_direction"],
            sidecar["messages"]["by_direction"],
        ),
        ("WebSocket frames", result["ws_frames"], sidecar["ws_frames"]),
        ("payload bytes", result["payload_bytes"], sidecar["payload_bytes"]),
        ("WebSocket streams", result["websocket_streams"], sidecar["streams"]["websocket"]),
        ("DATA frames", result["data_frames"], sidecar["h2_frames"]["by_type"].get("DATA", 0)),
    ]
    for what, seen, expected in pairs:
        if seen != expected:
            problems.append(f"{what}: {seen}, expected {expected}")
    if result["payload_sha256_sum"] != sidecar["payload_sha256_sum"]:
        problems.append("payload sha256 sums differ from the generator's")
    return problems


def _measurement(
    tool: str, scale: float, sidecar: dict[str, Any], figures: tuple[float, float, int, int]
) -> TlsMeasurement:
    wall, cpu, rss, code = figures
    return TlsMeasurement(
        tool, scale, wall, cpu, rss, code, sidecar["packets"], sidecar["messages"]["total"], 0.0
    )


def measure_extractor(
    tshark: str, capture: Path, sidecar: dict[str, Any], scale: float, work: Path
) -> TlsMeasurement:
    argv = [sys.executable, str(EXTRACTOR), str(capture), "--keylog", str(keylog_path(capture)),
            "--server-port", str(sidecar["server_port"]), "--tshark", tshark]  # fmt: skip
    stdout, stderr = work / "extractor.json", work / "extractor.stderr"
    load = os.getloadavg()[0]
    m = _measurement(EXTRACTOR_TOOL, scale, sidecar, run_measured(argv, stdout, stderr))
    m.load = load
    if m.exit_code != 0:
        m.problems = [f"exit code {m.exit_code}: {_tail(stderr, 1)}"]
        return m
    result = json.loads(stdout.read_text())
    m.problems = check_counts(result, sidecar)
    m.tshark_rss_kib = result["tshark"]["max_rss_kib"]
    m.parser_rss_kib = result["extractor"]["max_rss_kib"]
    m.tshark_cpu = result["tshark"]["cpu"]
    return m


def best(runs: list[TlsMeasurement]) -> TlsMeasurement:
    """Of repeated runs, the fastest wall clock (least disturbed) with the largest RSS seen."""
    fastest = min(runs, key=lambda m: (not m.ok, m.wall))
    fastest.max_rss_kib = max(m.max_rss_kib for m in runs)
    fastest.tshark_rss_kib = max(m.tshark_rss_kib for m in runs)
    fastest.parser_rss_kib = max(m.parser_rss_kib for m in runs)
    fastest.problems = sorted({p for m in runs for p in m.problems})
    return fastest


def report(
    results: list[TlsMeasurement],
    captures: dict[float, dict[str, Any]],
    env: str,
    command: str,
    elapsed: float,
) -> tuple[str, str]:
    """The results as a plain-text table (stdout) and as Markdown."""
    header = ("scale", "tool", "wall s", "CPU s", "messages/s", "MiB/s", "peak RSS MiB",
              "load", "check")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for m in results:
        size = captures[m.scale]["bytes"] / 2**20
        figures = (
            (f"{m.wall:.1f}", f"{m.cpu:.1f}", f"{m.messages_per_s:,.0f}", f"{size / m.wall:.1f}")
            if m.ok
            else ("-", "-", "-", "-")  # a wrong or crashed run has no throughput
        )
        rss = f"{m.rss_mib:,.0f}"
        if m.tshark_rss_kib:
            rss = (
                f"{m.pipeline_rss_mib:,.0f} ({m.tshark_rss_kib / 1024:,.0f} tshark + "
                f"{m.parser_rss_kib / 1024:,.0f} parser)"
            )
        rows.append((_scale_label(m.scale), m.tool, *figures, rss, f"{m.load:.1f}",
                     "ok" if m.ok else "FAIL"))  # fmt: skip
    by = {(m.scale, m.tool): m for m in results if m.ok}
    h2ws_tools = list(dict.fromkeys(m.tool for m in results if m.tool != EXTRACTOR_TOOL))
    scales = sorted(captures)
    notes: list[str] = []
    for scale in scales:
        side = captures[scale]
        tls = side["tls"]
        notes.append(
            f"{_scale_label(scale)} capture: {side['packets']:,} packets, "
            f"{side['bytes'] / 2**20:,.0f} MiB, {sum(tls['records'].values()):,} {tls['version']} "
            f"records ({tls['cipher']}), {side['messages']['total']:,} WebSocket messages on "
            f"{side['streams']['websocket']} WebSocket + {side['streams']['http']:,} HTTP streams "
            f"over {side['connections']} connections; generated in "
            f"{side['generator_seconds']:,.0f} s"
        )
    for scale in scales:
        reference = by.get((scale, EXTRACTOR_TOOL))
        if reference:
            notes.append(
                f"{_scale_label(scale)}: of the tshark extractor's {reference.cpu:.1f} s CPU, "
                f"tshark took {reference.tshark_cpu:.1f} s"
            )
        for tool in h2ws_tools:
            candidate = by.get((scale, tool))
            if candidate and reference:
                notes.append(
                    f"{_scale_label(scale)}: {tool} / tshark extractor throughput = "
                    f"**{reference.wall / candidate.wall:.2f}x** by wall clock, "
                    f"**{reference.cpu / candidate.cpu:.2f}x** by CPU time"
                )
    if len(scales) > 1:
        low, high = scales[0], scales[-1]
        for tool in (*h2ws_tools, EXTRACTOR_TOOL):
            a, b = by.get((low, tool)), by.get((high, tool))
            if a and b:
                notes.append(
                    f"peak RSS {_scale_label(low)} -> {_scale_label(high)}: {tool} "
                    f"{a.pipeline_rss_mib:,.0f} -> {b.pipeline_rss_mib:,.0f} MiB "
                    f"({b.pipeline_rss_mib / a.pipeline_rss_mib:.2f}x)"
                )
    notes.append(
        "peak RSS: for h2ws the sum of its processes' peaks (one with -j 1); for the extractor "
        "the sum of tshark's and the parser's peaks (both run at once); load: 1-minute load "
        "average just before the run"
    )
    notes.append(f"the whole benchmark took {elapsed / 60:.1f} min")
    failures = [f"FAIL {_scale_label(m.scale)} {m.tool}: {p}" for m in results for p in m.problems]

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text_lines = [
        "  ".join(
            c.rjust(w) if 2 <= i < 8 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    text = "\n".join([env, "", *text_lines, "", *(n.replace("**", "") for n in notes), *failures])
    md = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if 2 <= i < 8 else "---" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    markdown = "\n".join(
        [f"Machine: {env}", f"Command: `{command}`", "", *md, "",
         *(f"- {n}" for n in notes), *(f"- {f}" for f in failures)]
    )  # fmt: skip
    return text, markdown + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure h2ws extract against a tshark-based extractor on TLS captures "
        "(see the docstring)."
    )
    add_common_arguments(
        parser, "also check each capture with tshark (frames, records, expert info)"
    )
    parser.add_argument("--tls", choices=TLS_VERSIONS, default="1.3")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if shutil.which(args.tshark) is None:
        parser.error(f"{args.tshark} not found: the baseline needs tshark")
    workdir, remove = work_directory(args.workdir, args.keep, "bench-tls-")
    h2ws = h2ws_command(args.h2ws)
    env = environment(args.tshark)
    print(env, flush=True)

    def prepare(scale: float) -> tuple[Path, dict[str, Any]]:
        params = capture_params(args, scale, port=TLS_PORT)
        capture, sidecar = make_or_reuse(params, args.tls, args.captures)
        if args.verify_capture:
            problems = verify_with_tshark(capture, sidecar, args.tshark)
            print("  capture verified by tshark" if not problems else "\n".join(problems))
        return capture, sidecar

    def h2ws_run(
        capture: Path, sidecar: dict[str, Any], scale: float, variant: H2wsVariant, work: Path
    ) -> TlsMeasurement:
        keylog = ["--keylog", str(keylog_path(capture))]
        return measure_h2ws(h2ws, capture, sidecar, scale, variant, work, keylog, TlsMeasurement)

    results, captures = measure_scales(
        args,
        workdir,
        remove,
        prepare,
        h2ws_run,
        partial(measure_extractor, args.tshark),
        best,
        _progress,
    )

    command = " ".join(["bench/bench_tls.py", *(sys.argv[1:] if argv is None else argv)])
    text, markdown = report(results, captures, env, command, time.perf_counter() - started)
    publish(text, markdown, args.markdown, None if remove else workdir)
    return 0 if all(m.ok for m in results) else 1


def _progress(m: TlsMeasurement) -> None:
    status = "ok" if m.ok else "FAIL: " + "; ".join(m.problems)
    print(
        f"  {m.tool:<22} {m.wall:7.1f} s  {m.cpu:7.1f} s CPU  {m.messages_per_s:>10,.0f} msg/s  "
        f"{m.pipeline_rss_mib:7,.0f} MiB  (load {m.load:.1f})  {status}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
