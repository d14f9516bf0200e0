"""``h2ws``: extract tables from captures, and summarise them.

h2ws extract capture.pcapng [more…] -o out/ [--format parquet|csv|jsonl] [--payload …]
h2ws summary out/
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .capture.flowfile import flow_records, is_flow_file
from .capture.pcap import CaptureReader
from .capture.tcp import TcpReassembler
from .capture.tls import KeyLog, TlsLayer
from .chunks import ChunkEvent
from .export import FORMATS, TableSink
from .options import DecodeOptions
from .pipeline import Pipeline
from .records import DiagnosticRecord, Record
from .websocket import PayloadPolicy

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def _capture_events(
    path: Path, stats: Counter[str], keylogs: Sequence[Path] = ()
) -> Iterator[ChunkEvent]:
    """CaptureReader -> TcpReassembler -> TlsLayer.

    The key logs of ``--keylog`` and those the capture embeds (pcapng Decryption Secrets Blocks)
    form one :class:`KeyLog`; an embedded one is learnt before the packets after it are fed.
    """
    keylog = KeyLog()
    for name in keylogs:
        try:
            keylog.add(Path(name).read_bytes())
        except OSError as exc:
            print(f"h2ws: cannot read key log {name}: {exc.strerror}", file=sys.stderr)
    try:
        with open(path, "rb") as f:
            pcapng = f.read(4) == _PCAPNG_MAGIC
    except OSError:
        pcapng = False
    reader = CaptureReader(path)
    reassembler = TcpReassembler(capture=path.name)
    # Only pcapng files can carry keys of their own, anywhere in the file: wait for them.
    tls = TlsLayer(keylog, wait_for_keys=pcapng)
    blocks = 0
    for item in reader:
        if len(reader.tls_key_log) > blocks:
            for block in reader.tls_key_log[blocks:]:
                keylog.add(block)
            blocks = len(reader.tls_key_log)
        if isinstance(item, DiagnosticRecord):
            yield item
            continue
        for event in reassembler.feed(item):
            yield from tls.feed(event)
    for block in reader.tls_key_log[blocks:]:  # after the last packet: for what is still open
        keylog.add(block)
    for event in reassembler.finish():
        yield from tls.feed(event)
    yield from tls.finish()
    stats["packets"] += reader.packets_read


def _report(diag: DiagnosticRecord, counts: Counter[str], first_message: dict[str, str]) -> None:
    """Capture-level problems get a line each at once; decoding problems are tallied."""
    if diag.layer == "capture":
        print(f"h2ws: {diag.code}: {diag.message}", file=sys.stderr)
    elif diag.severity != "info":
        counts[diag.code] += 1
        first_message.setdefault(diag.code, f"{diag.conn_id or ''} {diag.message}".strip())


def cmd_extract(args: argparse.Namespace) -> int:
    options = DecodeOptions(
        payload=PayloadPolicy(mode=args.payload, preview_bytes=args.preview_bytes),
        max_message_bytes=args.max_message_bytes,
        frames=not args.no_frames,
        redact=not args.no_redact,
    )
    stats: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    first_message: dict[str, str] = {}
    with TableSink(args.output, args.format) as sink:
        for name in args.captures:
            path = Path(name)
            records: Iterable[Record]
            if is_flow_file(path):
                records = flow_records(path, options, stats)
            else:
                records = Pipeline(options).run(_capture_events(path, stats, args.keylog))
            for record in records:
                if isinstance(record, DiagnosticRecord):
                    _report(record, problems, first_message)
                sink.write(record)
    for code, n in problems.most_common():
        print(f"h2ws: {n} x {code} (first: {first_message[code]})", file=sys.stderr)
    counts = sink.counts
    print(
        f"{stats['packets']} packets → {counts['connections']} connections, "
        f"{counts['streams']} streams, {counts['frames']} frames, {counts['messages']} messages, "
        f"{counts['diagnostics']} diagnostics in {Path(args.output)}/ ({args.format})"
    )
    return 0 if stats["packets"] or stats["flows"] else 1


def cmd_summary(args: argparse.Namespace) -> int:
    from .summary import summarise

    try:
        print(summarise(args.directory))
    except FileNotFoundError as exc:
        print(f"h2ws: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nbclient.exceptions import CellExecutionError

    from .report import run_report

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
