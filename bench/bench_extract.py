"""Benchmark ``h2ws extract`` against tshark's HTTP/2 fields pass on the same large h2c captures.

Why: the goal for ``h2ws extract`` is to be faster than the tshark pass people use today to pull
WebSocket-over-HTTP/2 payloads out of a capture,

    tshark -r FILE -d tcp.port==PORT,http2 -Y http2.type==0 \
           -T fields -e http2.streamid -e http2.data.data

(which, unlike h2ws, neither finds the WebSocket messages inside the DATA frames nor unmasks them),
and to keep its peak memory flat when the capture grows tenfold - a streaming decoder must not
hold the capture. This script measures exactly that, in one process:

1. makes the captures with ``make_capture.py`` (by default 200k WebSocket messages and 10x that,
   on several connections whose WebSocket streams share them with ordinary requests), or reuses
   the ones in ``--captures`` (default ``bench/data/``, git-ignored) made with the same
   parameters, since the 10x one takes a couple of minutes to make;
2. runs ``h2ws extract FILE -o DIR`` (and ``--no-frames``) and the tshark pass as child
   processes, one after the other, timing each by wall clock and reading its peak RSS and CPU
   time from ``os.wait4`` (through a small launcher, see ``run_measured``); the 1-minute load
   average before each run is kept, because on a shared machine wall-clock figures are only
   as good as the quiet they were taken in;
3. checks h2ws's tables against what the generator recorded (messages per direction and
   opcode, payload bytes and SHA-256 sums, WebSocket frames, streams, connections, HTTP/2
   frames) - a fast wrong answer is a FAIL, not a result;
4. prints packets/s, messages/s and peak RSS per tool and scale, the throughput ratio
   h2ws / tshark (by wall clock, and by CPU time, which other load disturbs less), and the RSS
   growth from the smallest to the largest scale.

Run it from the project's root: ``.venv/bin/python bench/bench_extract.py`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from make_capture import SIDECAR_FORMAT, Params, generate, sidecar_path, verify_with_tshark

BENCH_DIR = Path(__file__).resolve().parent
TSHARK_FIELDS = ("-Y", "http2.type==0", "-T", "fields", "-e", "http2.streamid", "-e",
                 "http2.data.data")  # fmt: skip


@dataclass
class Measurement:
    """One child process: how long it took, how much memory it held, and whether it was right."""

    tool: str
    scale: float
    wall: float
    cpu: float
    max_rss_kib: int
    exit_code: int
    packets: int
    messages: int
    load: float  # 1-minute load average just before the run
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.problems

    @property
    def packets_per_s(self) -> float:
        return self.packets / self.wall

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.wall

    @property
    def rss_mib(self) -> float:
        return self.max_rss_kib / 1024


# Runs one command and reports on it.  Run as a fresh, small Python (``-S``: no site imports),
# which forks the command itself, so the command's peak RSS starts from this launcher's few MB.
_LAUNCHER = """
import os, sys, time
out, err, *cmd = sys.argv[1:]

def tree(pid):
    found = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            found += tree(int(child))
    return found

def high_water(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
peaks = {}  # every process of the tree: its high-water RSS when last seen
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    for p in tree(pid):
        peaks[p] = max(peaks.get(p, 0), high_water(p))
    time.sleep(0.02)
wall = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
own = peaks.pop(pid, 0)
# Alone, the command's own peak is wait4's (exact); with children, wait4 gives the largest of
# them all instead of the sum, so each process's last sampled peak is summed.
rss = own + sum(peaks.values()) if peaks else usage.ru_maxrss
print(wall, cpu, rss, os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], stdout: Path, stderr: Path) -> tuple[float, float, int, int]:
    """Run ``cmd``; return wall seconds, CPU seconds, peak RSS (KiB) and exit code.

    The figures come from ``os.wait4``, the child's own rusage, so no extra tool such as GNU
    time is needed.  CPU time includes the processes the command started and waited for
    (``h2ws extract --jobs``); with such processes the peak RSS is the sum of each process's
    own, read from ``/proc`` (``VmHWM``) every 20 ms while it runs - an upper bound of the
    memory the run needed at once, as for the tshark extractor's two processes.

    The launcher is not a child of this process: Linux carries the high-water RSS of
    the address space a process had before ``exec`` into its ``ru_maxrss``, and a child that
    subprocess forks (or vforks) from this process starts with this process's pages - hundreds
    of MB once it has made a capture or read a 2M-row table - which would then be reported as
    the tool's peak.  So a small launcher forks the command and reports its rusage instead.
    """
    report = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, str(stdout), str(stderr), *cmd],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(report[0]), float(report[1]), int(report[2]), int(report[3])


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def check_tables(out: Path, sidecar: dict[str, Any], frames: bool) -> list[str]:
    """Compare h2ws's tables with what the generator wrote; return the differences.

    Row counts per table, messages per direction and opcode, and per direction the number of
    WebSocket frames, the payload bytes and the sum of the payloads' SHA-256 digests (see
    ``make_capture.Stats.message``), so a lost, duplicated or corrupted message is caught.
    """
    import pyarrow.parquet as pq

    problems: list[str] = []

    def rows(table: str, optional: bool = False) -> int | None:
        path = out / f"{table}.parquet"
        if not path.exists():
            if not optional:
                problems.append(f"{path.name} missing")
            return None
        n: int = pq.read_metadata(path).num_rows
        return n

    def compare(what: str, seen: object, expected: object) -> None:
        if seen != expected:
            problems.append(f"{what}: {seen}, expected {expected}")

    n = rows("messages")
    compare("messages rows", n, sidecar["messages"]["total"])
    if n:
        table = pq.read_table(
            out / "messages.parquet",
            columns=["direction", "opcode", "fragments", "length", "sha256"],
        )
        by_opcode: dict[str, dict[str, int]] = {}
        for direction, opcode, count in zip(
            *_value_counts(table, "direction", "opcode"), strict=True
        ):
            by_opcode.setdefault(direction, {})[opcode] = count
        compare("messages by direction and opcode", by_opcode, sidecar["messages"]["by_direction"])
        fragments: Counter[str] = Counter()
        lengths: Counter[str] = Counter()
        digests: Counter[str] = Counter()
        for direction, n_fragments, length, sha in zip(
            table.column("direction").to_pylist(),
            table.column("fragments").to_pylist(),
            table.column("length").to_pylist(),
            table.column("sha256").to_pylist(),
            strict=True,
        ):
            fragments[direction] += n_fragments or 0
            lengths[direction] += length or 0
            digests[direction] += int(sha, 16) if sha else 0
        compare("WebSocket frames (sum of fragments)", dict(fragments), sidecar["ws_frames"])
        compare("payload bytes (sum of length)", dict(lengths), sidecar["payload_bytes"])
        digest_sums = {d: f"{v % (1 << 256):064x}" for d, v in digests.items()}
        if digest_sums != sidecar["payload_sha256_sum"]:
            problems.append("payload sha256 sums differ from the generator's")
    compare("connections rows", rows("connections"), sidecar["connections"])
    compare("streams rows", rows("streams"), sidecar["streams"]["total"])
    n = rows("frames", optional=not frames)
    compare("frames rows", n or 0, sidecar["h2_frames"]["total"] if frames else 0)
    if rows("diagnostics", optional=True):
        table = pq.read_table(out / "diagnostics.parquet", columns=["severity", "code"])
        codes = {
            f"{severity}:{code}": count
            for severity, code, count in zip(*_value_counts(table, "severity", "code"), strict=True)
        }
        if any(not key.startswith("info:") for key in codes):
            problems.append(f"diagnostics: {codes}")
    return problems


def _value_counts(table: Any, *columns: str) -> tuple[list[Any], ...]:
    """Group-by count of a few columns with Arrow (no pandas), as parallel lists."""
    grouped = table.group_by(list(columns)).aggregate([([], "count_all")])
    return tuple(grouped.column(c).to_pylist() for c in [*columns, "count_all"])


def h2ws_command(explicit: str | None) -> list[str]:
    """``h2ws`` from the same virtualenv as this Python, else ``python -m h2ws.analysis.cli``."""
    if explicit:
        return explicit.split()
    script = Path(sys.executable).with_name("h2ws")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "h2ws.analysis.cli"]


def make_or_reuse(params: Params, directory: Path) -> tuple[Path, dict[str, Any]]:
    """Captures take a while to make at 10x; reuse one whose sidecar shows the same parameters."""
    import json

    name = f"h2c-ws-{params.messages}m-{params.connections}c-{params.streams}s-seed{params.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    capture = directory / f"{name}.pcap"
    side = sidecar_path(capture)
    if capture.exists() and side.exists():
        sidecar: dict[str, Any] = json.loads(side.read_text())
        if sidecar.get("params") == vars(params) and sidecar.get("format") == SIDECAR_FORMAT:
            print(f"  reusing {capture}", flush=True)
            return capture, sidecar
    print(f"  making {capture} ...", flush=True)
    sidecar = generate(params, capture)
    print(
        f"  {sidecar['packets']:,} packets, {sidecar['messages']['total']:,} messages, "
        f"{sidecar['bytes'] / 2**20:,.0f} MiB in {sidecar['generator_seconds']:.0f} s",
        flush=True,
    )
    return capture, sidecar


@dataclass(frozen=True)
class H2wsVariant:
    """One way of running ``h2ws extract`` that is measured: with or without the frames
    table, in how many processes."""

    frames: bool
    jobs: int

    @property
    def name(self) -> str:
        return f"h2ws{'' if self.frames else ' --no-frames'} -j {self.jobs}"

    @property
    def args(self) -> list[str]:
        return ([] if self.frames else ["--no-frames"]) + ["--jobs", str(self.jobs)]

    def fresh_output(self, work: Path) -> Path:
        """This variant's output directory under ``work``, emptied."""
        out = work / f"h2ws-out-{'' if self.frames else 'noframes-'}j{self.jobs}"
        shutil.rmtree(out, ignore_errors=True)
        return out


def h2ws_variants(args: argparse.Namespace) -> list[H2wsVariant]:
    """``--jobs`` values with the frames table, then ``--no-frames`` with the first of them."""
    from h2ws.analysis.sources.jobs import default_jobs  # what `h2ws extract --jobs 0` uses

    jobs = [j or default_jobs() for j in args.jobs]
    variants = [H2wsVariant(True, j) for j in dict.fromkeys(jobs)]
    if args.no_frames:
        variants.append(H2wsVariant(False, jobs[0]))
    return variants


def measure_h2ws[M: Measurement](
    cmd: list[str],
    capture: Path,
    sidecar: dict[str, Any],
    scale: float,
    variant: H2wsVariant,
    work: Path,
    extract_args: Sequence[str] = (),
    kind: type[M] = Measurement,  # type: ignore[assignment]
) -> M:
    """``h2ws extract`` of ``variant`` on ``capture`` (with ``extract_args``, e.g. a key log),
    its tables checked against the sidecar."""
    out = variant.fresh_output(work)
    argv = [*cmd, "extract", str(capture), *extract_args, "-o", str(out), *variant.args]
    log = work / f"{out.name}.stderr"
    load = os.getloadavg()[0]
    wall, cpu, rss, code = run_measured(argv, work / f"{out.name}.stdout", log)
    if code == 0:
        problems = check_tables(out, sidecar, variant.frames)
    else:
        problems = [f"exit code {code}: {_tail(log, 1)}"]
    return kind(
        variant.name,
        scale,
        wall,
        cpu,
        rss,
        code,
        sidecar["packets"],
        sidecar["messages"]["total"],
        load,
        problems,
    )


def measure_tshark(
    tshark: str, capture: Path, sidecar: dict[str, Any], scale: float, work: Path
) -> Measurement:
    port = sidecar["server_port"]
    argv = [tshark, "-r", str(capture), "-d", f"tcp.port=={port},http2", *TSHARK_FIELDS]
    stdout = work / "tshark-fields.tsv"
    load = os.getloadavg()[0]
    wall, cpu, rss, code = run_measured(argv, stdout, work / "tshark.stderr")
    problems = []
    if code != 0:
        problems.append(f"exit code {code}: {_tail(work / 'tshark.stderr', 1)}")
    elif stdout.stat().st_size == 0:
        problems.append("no output")
    stdout.unlink()  # can be hundreds of MB, and nothing reads it
    return Measurement(
        "tshark",
        scale,
        wall,
        cpu,
        rss,
        code,
        sidecar["packets"],
        sidecar["messages"]["total"],
        load,
        problems,
    )


def capture_params(args: argparse.Namespace, scale: float, **more: Any) -> Params:
    """The capture of ``scale`` times ``--messages``, shaped by the common options."""
    return Params(
        messages=max(2, round(args.messages * scale)),
        connections=args.connections,
        streams=args.streams,
        seed=args.seed,
        **more,
    )


def round_robin[T, M: Measurement](
    tools: Sequence[T], repeat: int, measure: Callable[[T], M], progress: Callable[[M], None]
) -> dict[str, list[M]]:
    """Every tool ``repeat`` times, taking turns, so that a noisy minute hits every tool; the
    runs by tool name, in the order of ``tools``."""
    runs: dict[str, list[M]] = {}
    for _ in range(repeat):
        for tool in tools:
            m = measure(tool)
            runs.setdefault(m.tool, []).append(m)
            progress(m)
    return runs


def best(runs: list[Measurement]) -> Measurement:
    """Of repeated runs, the fastest wall clock (least disturbed) with the largest RSS seen."""
    fastest = min(runs, key=lambda m: (not m.ok, m.wall))
    fastest.max_rss_kib = max(m.max_rss_kib for m in runs)
    fastest.problems = sorted({p for m in runs for p in m.problems})
    return fastest


def measure_scales[M: Measurement](
    args: argparse.Namespace,
    workdir: Path,
    remove: bool,
    prepare: Callable[[float], tuple[Path, dict[str, Any]]],
    h2ws: Callable[[Path, dict[str, Any], float, H2wsVariant, Path], M],
    baseline: Callable[[Path, dict[str, Any], float, Path], M] | None,
    best: Callable[[list[M]], M],
    progress: Callable[[M], None],
) -> tuple[list[M], dict[float, dict[str, Any]]]:
    """Every scale of ``--scale``: its capture and sidecar from ``prepare``, then the h2ws
    variants and the ``baseline`` taking turns (``round_robin``); the ``best`` run of each
    tool, and the sidecars by scale.  ``workdir`` is removed afterwards if ``remove``."""
    results: list[M] = []
    captures: dict[float, dict[str, Any]] = {}
    try:
        for scale in sorted(args.scale):
            print(f"{_scale_label(scale)}:", flush=True)
            capture, sidecar = prepare(scale)
            captures[scale] = sidecar
            work = workdir / capture.stem
            work.mkdir(exist_ok=True)

            # Called within this iteration only (by round_robin below), so the loop's
            # variables are the ones meant.
            def measure(tool: H2wsVariant | None) -> M:
                if tool is not None:
                    return h2ws(capture, sidecar, scale, tool, work)  # noqa: B023
                assert baseline is not None
                return baseline(capture, sidecar, scale, work)  # noqa: B023

            tools: list[H2wsVariant | None] = [*h2ws_variants(args)]
            if baseline is not None:
                tools.append(None)
            runs = round_robin(tools, args.repeat, measure, progress)
            results += [best(r) for r in runs.values()]
    finally:
        if remove:
            shutil.rmtree(workdir, ignore_errors=True)
    return results, captures


def _scale_label(scale: float) -> str:
    return f"{scale:g}x"


def environment(tshark: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        version = importlib.metadata.version("h2ws")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    tshark_version = subprocess.run(
        [tshark, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]
    return (
        f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}; h2ws {version}; "
        f"{tshark_version[0] if tshark_version else 'tshark ?'}"
    )


def report(
    results: list[Measurement], captures: dict[float, dict[str, Any]], env: str, command: str
) -> tuple[str, str]:
    """The results as a plain-text table (stdout) and as Markdown (for the README)."""
    header = (
        "scale",
        "tool",
        "wall s",
        "CPU s",
        "packets/s",
        "messages/s",
        "peak RSS MiB",
        "load",
        "check",
    )
    rows: list[tuple[str, ...]] = []
    for m in results:
        figures = (
            (f"{m.wall:.1f}", f"{m.cpu:.1f}", f"{m.packets_per_s:,.0f}", f"{m.messages_per_s:,.0f}")
            if m.ok
            else ("-", "-", "-", "-")  # a wrong or crashed run has no throughput
        )
        row = (
            _scale_label(m.scale),
            m.tool,
            *figures,
            f"{m.rss_mib:,.0f}",
            f"{m.load:.1f}",
            "ok" if m.ok else "FAIL",
        )
        rows.append(row)
    by = {(m.scale, m.tool): m for m in results if m.ok}
    scales = sorted(captures)
    notes: list[str] = []
    for scale in scales:
        side = captures[scale]
        notes.append(
            f"{_scale_label(scale)} capture: {side['packets']:,} packets, "
            f"{side['bytes'] / 2**20:,.0f} MiB, {side['messages']['total']:,} WebSocket messages "
            f"on {side['streams']['websocket']} WebSocket + {side['streams']['http']:,} HTTP "
            f"streams over {side['connections']} connections"
        )
    h2ws_tools = list(dict.fromkeys(m.tool for m in results if m.tool != "tshark"))
    for scale in scales:
        reference = by.get((scale, "tshark"))
        for tool in h2ws_tools:
            candidate = by.get((scale, tool))
            if candidate and reference:
                notes.append(
                    f"{_scale_label(scale)}: {tool} / tshark throughput = "
                    f"{reference.wall / candidate.wall:.2f}x by wall clock, "
                    f"{reference.cpu / candidate.cpu:.2f}x by CPU time"
                )
    if len(scales) > 1:
        low, high = scales[0], scales[-1]
        for tool in (*h2ws_tools, "tshark"):
            a, b = by.get((low, tool)), by.get((high, tool))
            if a and b:
                growth = b.max_rss_kib / a.max_rss_kib
                notes.append(
                    f"peak RSS {_scale_label(low)} -> {_scale_label(high)}: {tool} "
                    f"{a.rss_mib:,.0f} -> {b.rss_mib:,.0f} MiB ({growth:.2f}x)"
                )
    failures = [f"FAIL {_scale_label(m.scale)} {m.tool}: {p}" for m in results for p in m.problems]

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text_lines = [
        "  ".join(
            c.rjust(w) if i >= 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    notes.append("load: the 1-minute load average just before the run")
    text = "\n".join([env, "", *text_lines, "", *notes, *failures])

    md = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i >= 2 else "---" for i in range(len(header))) + "|",
    ]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    markdown = "\n".join(
        [
            f"Machine: {env}",
            f"Command: `{command}`",
            "",
            *md,
            "",
            *(f"- {n}" for n in notes),
            *(f"- {f}" for f in failures),
        ]
    )
    return text, markdown + "\n"


def work_directory(given: Path | None, keep: bool, prefix: str) -> tuple[Path, bool]:
    """Where the tools' outputs go (``--workdir``, or a fresh directory under ``bench/out/``),
    and whether to remove it afterwards (a fresh one, unless ``--keep``)."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        return given, False
    (BENCH_DIR / "out").mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=BENCH_DIR / "out")), not keep


def publish(text: str, markdown: str, markdown_path: Path | None, kept: Path | None) -> None:
    """The results on stdout, as Markdown in ``--markdown``, and where the outputs stayed."""
    print()
    print(text)
    if markdown_path:
        markdown_path.write_text(markdown)
    if kept is not None:
        print(f"\noutputs kept in {kept}")


def add_common_arguments(parser: argparse.ArgumentParser, verify_help: str) -> None:
    """The options this benchmark shares with ``bench_tls.py``: capture size and shape,
    repetitions, where captures and outputs go, the tools, the variants, the report."""
    parser.add_argument(
        "--messages",
        type=int,
        default=200_000,
        metavar="N",
        help="WebSocket messages in the 1x capture (default %(default)s)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        nargs="+",
        default=[1.0, 10.0],
        metavar="X",
        help="capture sizes as multiples of --messages (default: 1 10)",
    )
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=8, help="WebSocket streams per connection")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest counts")
    parser.add_argument(
        "--captures",
        type=Path,
        default=BENCH_DIR / "data",
        help="where captures are made, and reused when their parameters match "
        "(default: bench/data/, git-ignored)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the tools' outputs go; kept (default: a fresh directory under bench/out/, "
        "removed afterwards unless --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the default work directory")
    parser.add_argument("--h2ws", help="command that runs h2ws (default: the venv's h2ws script)")
    parser.add_argument("--tshark", default="tshark")
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="+",
        default=[1, 0],
        metavar="N",
        help="h2ws extract --jobs values to measure (0: one per CPU; default: 1 0)",
    )
    parser.add_argument(
        "--no-frames-variant",
        dest="no_frames",
        action="store_false",
        help="skip the h2ws --no-frames run",
    )
    parser.add_argument(
        "--verify-capture",
        action="store_true",
        help=verify_help,
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure h2ws extract against tshark's HTTP/2 fields pass (see the docstring)."
    )
    add_common_arguments(parser, "also check each capture with tshark (frame counts, expert info)")
    parser.add_argument("--no-tshark", action="store_true", help="measure h2ws only")
    args = parser.parse_args(argv)  # fmt: skip

    workdir, remove = work_directory(args.workdir, args.keep, "bench-")
    h2ws = h2ws_command(args.h2ws)
    use_tshark = not args.no_tshark and shutil.which(args.tshark) is not None
    if not args.no_tshark and not use_tshark:
        print(f"{args.tshark} not found: measuring h2ws only", file=sys.stderr)
    env = environment(args.tshark) if use_tshark else environment("true")
    print(env, flush=True)

    def prepare(scale: float) -> tuple[Path, dict[str, Any]]:
        capture, sidecar = make_or_reuse(capture_params(args, scale), args.captures)
        if args.verify_capture and use_tshark:
            problems = verify_with_tshark(capture, sidecar, args.tshark)
            print("  capture verified by tshark" if not problems else "\n".join(problems))
        return capture, sidecar

    results, captures = measure_scales(
        args,
        workdir,
        remove,
        prepare,
        partial(measure_h2ws, h2ws),
        partial(measure_tshark, args.tshark) if use_tshark else None,
        best,
        _progress,
    )

    command = " ".join(["bench/bench_extract.py", *(sys.argv[1:] if argv is None else argv)])
    text, markdown = report(results, captures, env, command)
    publish(text, markdown, args.markdown, None if remove else workdir)
    return 0 if all(m.ok for m in results) else 1


def _progress(m: Measurement) -> None:
    status = "ok" if m.ok else "FAIL: " + "; ".join(m.problems)
    print(
        f"  {m.tool:<22} {m.wall:7.1f} s  {m.messages_per_s:>10,.0f} msg/s  "
        f"{m.rss_mib:7,.0f} MiB  (load {m.load:.1f})  {status}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
