"""``h2ws``: extract tables from captures, and summarise them.

h2ws extract capture.pcapng [more…] -o out/ [--format parquet|csv|jsonl] [--payload …]
h2ws summary out/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from h2ws.analysis.core.options import DecodeOptions, HeaderLimits
from h2ws.analysis.core.websocket import PayloadPolicy
from h2ws.analysis.sinks.export import FORMATS, TableSink
from h2ws.analysis.sources.jobs import (
    Tally,
    WorkerDied,
    default_jobs,
    extract_into,
    extract_parallel,
)

#: ``--jobs`` unset: one process per CPU for inputs of this many bytes or more, else one
PARALLEL_FROM_BYTES = 32 * 2**20
#: ``--jobs`` unset: at most this many processes.  Each holds its own interpreter and pyarrow
#: (about 200 MB), and a capture often has fewer busy connections than a big machine has CPUs.
DEFAULT_MAX_JOBS = 4


def cmd_extract(args: argparse.Namespace) -> int:
    options = DecodeOptions(
        payload=PayloadPolicy(mode=args.payload, preview_bytes=args.preview_bytes),
        max_message_bytes=args.max_message_bytes,
        frames=not args.no_frames,
        redact=not args.no_redact,
        headers=HeaderLimits(
            max_block_bytes=args.max_header_block_bytes,
            max_continuations=args.max_continuations,
            max_list_bytes=args.max_header_list_bytes,
            max_table_bytes=args.max_hpack_table_bytes,
        ),
    )
    paths = [Path(name) for name in args.captures]
    jobs = args.jobs
    if jobs is None:
        size = sum(p.stat().st_size for p in paths if p.is_file())
        jobs = min(default_jobs(), DEFAULT_MAX_JOBS) if size >= PARALLEL_FROM_BYTES else 1
    elif jobs == 0:
        jobs = default_jobs()
    if jobs > 1:
        try:
            tally, counts = extract_parallel(
                paths, Path(args.output), args.format, options, args.keylog, jobs
            )
        except WorkerDied as exc:
            print(f"h2ws: {exc}", file=sys.stderr)
            return 1
    else:
        tally = Tally()
        with TableSink(args.output, args.format) as sink:
            for path in paths:
                tally.add(extract_into(sink, path, options, args.keylog))
        counts = sink.counts
    for notice in tally.notices:
        print(f"h2ws: {notice}", file=sys.stderr)
    for code, n in tally.problems.most_common():
        print(f"h2ws: {n} x {code} (first: {tally.first_message[code]})", file=sys.stderr)
    stats = tally.stats
    print(
        f"{stats['packets']} packets → {counts['connections']} connections, "
        f"{counts['streams']} streams, {counts['frames']} frames, {counts['messages']} messages, "
        f"{counts['diagnostics']} diagnostics in {Path(args.output)}/ ({args.format})"
    )
    return 0 if stats["packets"] or stats["flows"] else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from h2ws.analysis.report.summary import summarise

    try:
        print(summarise(args.directory))
    except FileNotFoundError as exc:
        print(f"h2ws: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nbclient.exceptions import CellExecutionError

    from h2ws.analysis.report.runner import run_report

    try:
        path = run_report(
            args.directory,
            args.output,
            args.notebook,
            executed_notebook=args.executed,
            show_code=args.code,
        )
    except (FileNotFoundError, CellExecutionError) as exc:
        print(f"h2ws: {exc}", file=sys.stderr)
        return 1
    print(f"report written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2ws", description="WebSockets over HTTP/2 (RFC 8441) as tables and reports."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    extract = sub.add_parser("extract", help="decode captures into tables")
    extract.add_argument("captures", nargs="+", help="pcap, pcapng or mitmproxy flow files")
    extract.add_argument("-o", "--output", required=True, help="output directory")
    extract.add_argument("--format", choices=FORMATS, default="parquet")
    extract.add_argument(
        "--payload",
        choices=("none", "preview", "full"),
        default="preview",
        help="how much of each WebSocket payload to keep (default: a preview; sha256 always)",
    )
    extract.add_argument("--preview-bytes", type=int, default=256, metavar="N")
    extract.add_argument(
        "--max-message-bytes",
        type=int,
        default=64 * 2**20,
        metavar="N",
        help="largest WebSocket message decoded (after inflate); bounds decompression bombs",
    )
    # HTTP/2 header block limits (docs/schema.md, "Limits"); over one, a block is skipped with
    # a diagnostic and the run goes on.
    limits = HeaderLimits()
    for flag, default, what in (
        ("--max-header-block-bytes", limits.max_block_bytes, "largest HTTP/2 header block"),
        ("--max-continuations", limits.max_continuations, "most CONTINUATION frames in a block"),
        ("--max-header-list-bytes", limits.max_list_bytes, "largest decoded header list"),
        ("--max-hpack-table-bytes", limits.max_table_bytes, "cap on the HPACK table size"),
    ):
        extract.add_argument(
            flag, type=int, default=default, metavar="N", help=f"{what} (default {default})"
        )
    extract.add_argument("--no-frames", action="store_true", help="leave the frames table empty")
    extract.add_argument(
        "--no-redact",
        action="store_true",
        help="keep cookie and authorization header values (redacted by default)",
    )

    def readable_file(name: str) -> Path:
        try:
            with open(name, "rb"):
                pass
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {name}: {exc.strerror}") from exc
        return Path(name)

    extract.add_argument(
        "--keylog",
        action="append",
        default=[],
        type=readable_file,
        metavar="FILE",
        help="TLS key log (NSS format, SSLKEYLOGFILE); repeatable.  Combined with the "
        "Decryption Secrets Blocks of pcapng captures",
    )

    def jobs_count(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = -1
        if n < 0:
            raise argparse.ArgumentTypeError(f"--jobs takes a number of processes, not {text!r}")
        return n

    extract.add_argument(
        "--jobs",
        "-j",
        type=jobs_count,
        default=None,
        metavar="N",
        help="decode each capture in N processes, each a share of its connections (0: one "
        "per CPU).  Default: one per CPU, at most 4, from 32 MiB of input; else 1.  Faster "
        "on captures with several busy connections",
    )
    extract.set_defaults(func=cmd_extract)

    summary = sub.add_parser("summary", help="print a readable summary of extracted tables")
    summary.add_argument("directory")
    summary.set_defaults(func=cmd_summary)

    report = sub.add_parser(
        "report", help="run notebooks/report.ipynb on extracted tables and write HTML"
    )
    report.add_argument("directory", help="tables written by extract or by the live addon")
    report.add_argument("-o", "--output", default="report.html")
    report.add_argument("--notebook", help="another notebook to run instead of the report")
    report.add_argument("--executed", help="also save the executed notebook (.ipynb) here")
    report.add_argument("--code", action="store_true", help="show code cells in the HTML")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
