"""``h2ws``: extract tables from captures, summarise them, report on them, find the addon.

    h2ws extract capture.pcapng [more…] -o out/ [--format parquet|csv|jsonl] [--payload …]
    h2ws summary out/
    h2ws report out/ -o report.html
    mitmdump -s "$(h2ws addon-path)"
    h2ws demo -o out/demo

Every failure is one line on stderr starting with ``h2ws:`` — never a traceback — and one of
the exit codes below (also in ``h2ws --help`` and the README).  ``H2WS_TRACEBACK=1`` shows the
traceback of an unexpected error, for a bug report.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from h2ws.analysis.core.options import DecodeOptions, HeaderLimits
from h2ws.analysis.core.websocket import PayloadPolicy
from h2ws.analysis.sinks.writers import FORMATS, TableSink
from h2ws.analysis.sources.inputs import DuplicateInput, input_names
from h2ws.analysis.sources.jobs import (
    Tally,
    WorkerDied,
    default_jobs,
    extract_into,
    extract_parallel,
)

#: Exit codes, documented in ``--help`` and the README.
EXIT_OK = 0
#: An input or table directory could not be used (not a capture, missing, a notebook failed);
#: ``extract`` still writes the tables of the inputs it could read.
EXIT_INPUT = 1
#: The command line is wrong (a bad option value, ``-o`` naming a file, an input given twice).
EXIT_USAGE = 2
#: An optional part is not installed (the ``report`` or ``live`` extra); the line says what to
#: install.
EXIT_MISSING = 3
#: A bug in h2ws: the line names the exception.
EXIT_BUG = 4
#: Interrupted (Ctrl-C).
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    done (bad input inside a capture is a diagnostic row, not a failure)
  {EXIT_INPUT}    an input could not be read at all, or a table directory / notebook failed
       (extract still writes the tables of the inputs it could read)
  {EXIT_USAGE}    the command line is wrong (bad option value, -o names a file, an input twice)
  {EXIT_MISSING}    an optional part is not installed; the message names the pip extra
  {EXIT_BUG}    an unexpected error in h2ws (H2WS_TRACEBACK=1 shows where)
  {EXIT_INTERRUPTED}  interrupted
Errors are one line on stderr starting with "h2ws:".  Output cut short by its reader (e.g.
`h2ws summary out | head`) ends quietly with {EXIT_OK}."""

#: ``--jobs`` unset: one process per CPU for inputs of this many bytes or more, else one
PARALLEL_FROM_BYTES = 32 * 2**20
#: ``--jobs`` unset: at most this many processes.  Each holds its own interpreter and pyarrow
#: (about 200 MB), and a capture often has fewer busy connections than a big machine has CPUs.
DEFAULT_MAX_JOBS = 4
#: Which extra provides which top-level module.
EXTRAS = {
    "nbclient": "report",
    "nbformat": "report",
    "nbconvert": "report",
    "ipykernel": "report",
    "jupyter_client": "report",
    "IPython": "report",
    "mitmproxy": "live",
    "hypercorn": "live",
}


class Failure(Exception):
    """A failure the user can act on: ``main`` prints ``h2ws: <message>`` and exits ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def missing_extra(exc: ModuleNotFoundError) -> Failure:
    """The one line for an optional dependency that is not installed."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return Failure(f"{exc} (a dependency of h2ws is missing; reinstall h2ws)", EXIT_MISSING)
    return Failure(
        f"this needs the '{extra}' extra ({top} is not installed): pip install 'h2ws[{extra}]'",
        EXIT_MISSING,
    )


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("h2ws")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("h2ws").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"h2ws: {where}{message} (see {self.prog} --help)\n")


def _count(option: str, minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError(
                f"{option} takes {what} (an integer >= {minimum}), not {text!r}"
            )
        return n

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _readable_file(name: str) -> Path:
    try:
        with open(name, "rb"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {name}: {exc.strerror}") from exc
    return Path(name)


# -- extract ----------------------------------------------------------------------------------


def _output_dir(name: str) -> Path:
    out = Path(name)
    if out.exists() and not out.is_dir():
        raise Failure(f"-o {name}: exists and is not a directory", EXIT_USAGE)
    return out


def cmd_extract(args: argparse.Namespace) -> int:
    out = _output_dir(args.output)
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
    try:
        names = input_names(paths)
    except DuplicateInput as exc:
        raise Failure(str(exc), EXIT_USAGE) from exc
    jobs = args.jobs
    if jobs is None:
        size = sum(p.stat().st_size for p in paths if p.is_file())
        jobs = min(default_jobs(), DEFAULT_MAX_JOBS) if size >= PARALLEL_FROM_BYTES else 1
    elif jobs == 0:
        jobs = default_jobs()
    try:
        if jobs > 1:
            try:
                tally, counts = extract_parallel(
                    paths, out, args.format, options, args.keylog, jobs, names=names
                )
            except WorkerDied as exc:
                raise Failure(str(exc)) from exc
        else:
            tally = Tally()
            with TableSink(out, args.format) as sink:
                for path, name in zip(paths, names, strict=True):
                    tally.add(extract_into(sink, path, options, args.keylog, name=name))
            counts = sink.counts
    except OSError as exc:  # the output directory cannot be made or written
        raise Failure(f"-o {out}: {exc.strerror or exc}") from exc
    for notice in tally.notices:
        print(f"h2ws: {notice}", file=sys.stderr)
    for code, n in tally.problems.most_common():
        print(f"h2ws: {n} x {code} (first: {tally.first_message[code]})", file=sys.stderr)
    stats = tally.stats
    print(
        f"{stats['packets']} packets → {counts['connections']} connections, "
        f"{counts['streams']} streams, {counts['frames']} frames, {counts['messages']} messages, "
        f"{counts['diagnostics']} diagnostics in {out}/ ({args.format})"
    )
    if stats["unreadable"] or not (stats["packets"] or stats["flows"]):
        return EXIT_INPUT
    return EXIT_OK


# -- summary, report --------------------------------------------------------------------------


def _table_dir(name: str) -> Path:
    directory = Path(name)
    if not directory.is_dir():
        raise Failure(
            f"{name} is not a directory of h2ws tables (made by h2ws extract or the addon)"
        )
    return directory


def cmd_summary(args: argparse.Namespace) -> int:
    from h2ws.analysis.report.summary import summarise

    try:
        text = summarise(_table_dir(args.directory))
    except FileNotFoundError as exc:
        raise Failure(str(exc)) from exc
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    directory = _table_dir(args.directory)
    try:
        # Imported here so that a missing kernel package is named now, not in a kernel's log.
        import ipykernel  # noqa: F401
        import nbconvert  # noqa: F401
        from nbclient.exceptions import CellExecutionError

        from h2ws.analysis.report.runner import run_report
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) from exc
    try:
        path = run_report(
            directory,
            args.output,
            args.notebook,
            executed_notebook=args.executed,
            show_code=args.code,
        )
    except FileNotFoundError as exc:
        raise Failure(str(exc)) from exc
    except CellExecutionError as exc:
        # nbclient's message is the cell's source and traceback; its last line is the error.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise Failure(f"the notebook failed: {lines[-1] if lines else 'a cell failed'}") from exc
    print(f"report written to {path}")
    return EXIT_OK


# -- addon-path -------------------------------------------------------------------------------


def addon_file() -> Path:
    """The file ``mitmproxy -s`` loads, inside the installed package (or the checkout)."""
    from importlib.resources import files

    return Path(str(files("h2ws.addon").joinpath("addon.py")))


def cmd_addon_path(args: argparse.Namespace) -> int:
    try:
        import mitmproxy.version  # noqa: F401
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) from exc
    print(addon_file())
    return EXIT_OK


#: The capture of ``samples/`` (shipped in the package as ``h2ws.samples``).
SAMPLE_CAPTURE = "h2c_hypercorn_ws.pcap"


def sample_file() -> Path:
    """The sample capture inside the installed package (or the checkout's ``samples/``: an
    editable install made before ``h2ws.samples`` existed does not map it)."""
    from importlib.resources import files

    try:
        return Path(str(files("h2ws.samples").joinpath(SAMPLE_CAPTURE)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "samples" / SAMPLE_CAPTURE


def cmd_sample_path(args: argparse.Namespace) -> int:
    print(sample_file())
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        # Every part the demo needs, named before anything starts.
        import hypercorn  # noqa: F401
        import mitmproxy.version  # noqa: F401

        if not args.no_report:
            import ipykernel  # noqa: F401
            import nbclient  # noqa: F401
            import nbconvert  # noqa: F401
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) from exc
    from h2ws.testkit.demo import DemoError, Workload, run

    load = Workload(args.clients, args.websockets, args.gets, timeout=args.timeout, mode=args.mode)
    try:
        run(Path(args.output), load, report=not args.no_report)
    except DemoError as exc:
        raise Failure(f"demo failed: {exc}") from exc
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="h2ws",
        description="WebSockets over HTTP/2 (RFC 8441) as tables and reports.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"h2ws {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    extract = command(
        "extract",
        "decode captures into tables",
        "Decode pcap/pcapng captures (cleartext, or TLS with keys) and mitmproxy flow files "
        "into the tables connections, streams, frames, messages and diagnostics.  Each input "
        "names its connections <name>:<n> (conn_id); <name> is the file's name, with as many "
        "parent folders as it takes to tell two inputs of the same name apart.",
    )
    extract.add_argument("captures", nargs="+", help="pcap, pcapng or mitmproxy flow files")
    extract.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="output directory (made if missing)"
    )
    extract.add_argument(
        "--format",
        choices=FORMATS,
        default="parquet",
        help="table file format: one <table>.parquet, .csv or .jsonl per table (default: parquet)",
    )
    extract.add_argument(
        "--payload",
        choices=("none", "preview", "full"),
        default="preview",
        help="how much of each WebSocket payload to keep (default: a preview; sha256 always)",
    )
    extract.add_argument(
        "--preview-bytes",
        type=_count("--preview-bytes", 0, "a number of bytes"),
        default=256,
        metavar="N",
        help="bytes of each payload kept with --payload preview (default: 256)",
    )
    extract.add_argument(
        "--max-message-bytes",
        type=_count("--max-message-bytes", 1, "a number of bytes"),
        default=64 * 2**20,
        metavar="N",
        help="largest WebSocket message decoded (after inflate); bounds decompression bombs "
        "(default: 64 MiB)",
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
    extract.add_argument(
        "--keylog",
        action="append",
        default=[],
        type=_readable_file,
        metavar="FILE",
        help="TLS key log (NSS format, SSLKEYLOGFILE); repeatable.  Combined with the "
        "Decryption Secrets Blocks of pcapng captures",
    )
    extract.add_argument(
        "--jobs",
        "-j",
        type=_count("--jobs", 0, "a number of processes"),
        default=None,
        metavar="N",
        help="decode each capture in N processes, each a share of its connections (0: one "
        "per CPU).  Default: one per CPU, at most 4, from 32 MiB of input; else 1.  Faster "
        "on captures with several busy connections",
    )
    extract.set_defaults(func=cmd_extract)

    summary = command(
        "summary",
        "print a readable summary of extracted tables",
        "Connections, streams by kind, WebSocket streams, messages by opcode and diagnostics "
        "of a table directory, as text.",
    )
    summary.add_argument("directory", help="tables written by extract or by the live addon")
    summary.set_defaults(func=cmd_summary)

    report = command(
        "report",
        "run the report notebook on extracted tables and write HTML (needs h2ws[report])",
        "Execute the report notebook (shipped with h2ws; the source is notebooks/report.ipynb) "
        "on a table directory and write one self-contained HTML file.  Needs the 'report' "
        "extra: pip install 'h2ws[report]'.",
    )
    report.add_argument("directory", help="tables written by extract or by the live addon")
    report.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="HTML file to write"
    )
    report.add_argument(
        "--notebook", metavar="FILE", help="another notebook to run instead of the report"
    )
    report.add_argument(
        "--executed", metavar="FILE", help="also save the executed notebook (.ipynb) here"
    )
    report.add_argument("--code", action="store_true", help="show code cells in the HTML")
    report.set_defaults(func=cmd_report)

    addon = command(
        "addon-path",
        "print the path of the mitmproxy addon file (needs h2ws[live])",
        "Print the path of the addon file inside the installed package, for mitmdump -s "
        "\"$(h2ws addon-path)\" (also mitmproxy and mitmweb).  Needs the 'live' extra, in the "
        "same environment as mitmproxy: pip install 'h2ws[live]'.",
    )
    addon.set_defaults(func=cmd_addon_path)

    sample = command(
        "sample-path",
        "print the path of the sample capture shipped in the package",
        "Print the path of the small real capture shipped in the package (a Node.js client "
        "and hypercorn, one RFC 8441 WebSocket over h2c, 24 messages), to try h2ws without a "
        'checkout: h2ws extract "$(h2ws sample-path)" -o out/.',
    )
    sample.set_defaults(func=cmd_sample_path)

    demo = command(
        "demo",
        "run live RFC 8441 traffic through mitmdump + the addon, write tables and a report "
        "(needs h2ws[live,report])",
        "The main job end to end, on 127.0.0.1 only and ending by itself: hypercorn (TLS, "
        "RFC 8441 and HTTP/1.1 WebSockets), mitmdump with the h2ws addon in "
        "front of it, Python h2 clients opening WebSockets and GETs on one HTTP/2 connection "
        "each, and the same WebSockets over HTTP/1.1 for contrast; then the tables are checked "
        "against what the clients logged, and summary.txt and report.html are written next to "
        "them.  Needs the 'live' and 'report' extras: pip install 'h2ws[live,report]'.  A "
        "failed step is exit 1.",
    )
    demo.add_argument(
        "-o",
        "--output",
        default="out/demo",
        metavar="DIR",
        help="output directory: empty, new, or a previous demo's (replaced); default out/demo",
    )
    demo.add_argument(
        "--clients",
        type=_count("--clients", 1, "a number of connections"),
        default=3,
        metavar="N",
        help="HTTP/2 connections, one per client (default 3)",
    )
    demo.add_argument(
        "--websockets",
        type=_count("--websockets", 1, "a number of WebSockets"),
        default=4,
        metavar="N",
        help="RFC 8441 WebSockets per HTTP/2 connection; as many again over HTTP/1.1 (default 4)",
    )
    demo.add_argument(
        "--gets",
        type=_count("--gets", 0, "a number of requests"),
        default=6,
        metavar="N",
        help="GETs per HTTP/2 connection, between the WebSockets (default 6)",
    )
    demo.add_argument(
        "--timeout",
        type=_count("--timeout", 1, "a number of seconds"),
        default=120,
        metavar="S",
        help="bound on the clients' run (default 120); every process stops by itself",
    )
    demo.add_argument(
        "--mode",
        choices=("observe", "intercept"),
        default="intercept",
        help="the addon's h2ws_mode: intercept (default, as the addon's own default: "
        "mitmproxy's HTTP/2 layer carries the WebSockets as live flows) or observe (the "
        "byte-exact relay)",
    )
    demo.add_argument(
        "--no-report", action="store_true", help="tables and summary only (no 'report' extra)"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def _traceback_wanted() -> bool:
    return os.environ.get("H2WS_TRACEBACK", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result: int = args.func(args)
        sys.stdout.flush()
    except Failure as exc:
        print(f"h2ws: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # The reader stopped reading (`| head`): nothing went wrong for the user.  Python would
        # report the failed flush at exit, so stdout goes to /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("h2ws: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as exc:
        print(f"h2ws: {missing_extra(exc)}", file=sys.stderr)
        return EXIT_MISSING
    except Exception as exc:
        if _traceback_wanted():
            raise
        print(
            f"h2ws: unexpected {type(exc).__name__}: {exc} (a bug; H2WS_TRACEBACK=1 shows where)",
            file=sys.stderr,
        )
        return EXIT_BUG
    return result


if __name__ == "__main__":
    sys.exit(main())
