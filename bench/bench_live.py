"""Benchmark the live addon: WebSocket echo through mitmdump, RFC 8441 vs HTTP/1.1, vs direct.

Why: observe mode relays HTTP/2 verbatim and decodes a copy of every byte; it must not make
mitmproxy the slower way to carry WebSockets.  Goals (issue #4):

- RFC 8441 through ``mitmdump -s addon/addon.py`` >= 1x the throughput of mitmdump's own
  HTTP/1.1 WebSocket relay (stock mitmdump, no addon, same server, same message sizes);
- recording overhead <= 10 %: the addon writing tables (``h2ws_out``) vs the addon without;
- RSS flat over a long run with tables.

What runs (all on 127.0.0.1, all bounded in time):

- one Node.js echo server (``testkit/live/bench_echo_server.mjs``): RFC 8441 over h2c on one port,
  HTTP/1.1 Upgrade on another, same echo code in one process;
- the load client (``testkit/live/ws_load.mjs``): K WebSockets (one HTTP/2 connection for RFC
  8441, K connections for HTTP/1.1), each sending N binary messages of S bytes with W in flight,
  timing every round trip;
- the paths: direct h2, direct h1, stock mitmdump (h1; it cannot carry RFC 8441), the addon
  (h2) without tables, the addon (h2) with tables.  Every proxy runs in reverse mode,
  ``flow_detail=0``, is warmed up, and the paths take turns within each repetition, so that a
  noisy machine disturbs them alike; the median of the repetitions is reported.  The three
  addon paths run one right after the other, each first in turn, and the recording overhead
  is the median of the differences within each repetition (with their range): on a shared
  machine a single run's throughput moves by 10 % or more.

Intercept mode (issue #11) needs TLS on both legs (mitmproxy's own HTTP/2 layers refuse h2c,
which intercept mode relays like observe mode): the echo server also serves RFC 8441 and the
HTTP/1.1 Upgrade over TLS, and intercept mode, observe mode (each with tables and without;
intercept mode's tables decoded by the table worker and, with ``h2ws_table_worker=false``, in
the proxy's process; intercept mode also without its DATA fast path, ``h2ws_fast_data=false``,
which is hyper-h2's own code for every frame) and stock mitmdump's HTTP/1.1 relay run over
TLS on both legs, so that intercept / stock compares like with like (the cleartext stock row
above is the one observe mode's h2c is held to).
``--group tls`` runs only these TLS paths.

Throughput counts WebSocket payload bytes, both directions.  ``CPU us/MB`` is the proxy
process's CPU time (all threads, and its child processes: intercept mode's table worker) per MB
relayed: on a shared machine it is steadier than throughput, which a neighbour's burst moves by
10 % or more.  Round-trip percentiles come from a
separate run with one message in flight (latency, not queueing).  The tables of the addon
runs are checked against what the client sent: a fast wrong answer is a FAIL.

Run from the project's root: ``.venv/bin/python bench/bench_live.py`` (``--quick`` for a short
run; ``--long 300`` for a longer RSS run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from h2ws.testkit.live.proxy import Mitmdump  # noqa: E402
from h2ws.testkit.peers.runner import Certificate, ReadyServer, make_certificate  # noqa: E402

LIVE = ROOT / "testkit" / "live"
SERVER = LIVE / "bench_echo_server.mjs"
LOAD = LIVE / "ws_load.mjs"


@dataclass
class Route:
    """One way for the WebSockets to go."""

    name: str
    proto: str  # h2 | h1
    proxy: Mitmdump | None = None
    port: int = 0
    #: the CA to trust: the client speaks TLS
    ca: Path | None = None
    #: the rows of its tables hold each message this many times (intercept: both legs)
    legs: int = 1
    runs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # size -> results
    latency: dict[int, dict[str, Any]] = field(default_factory=dict)


def load(port: int, proto: str, size: int, count: int, window: int, sockets: int,
         seconds: float = 0, ca: Path | None = None) -> dict[str, Any]:  # fmt: skip
    cmd = ["node", str(LOAD), "--port", str(port), "--proto", proto, "--size", str(size),
           "--count", str(count), "--window", str(window), "--sockets", str(sockets),
           "--seconds", str(seconds)]  # fmt: skip
    if ca is not None:
        cmd += ["--ca", str(ca)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 240)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["mbps"] = result["bytes"] / result["seconds"] / 1e6
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) so far, and of its child
    processes (intercept mode's table worker): what the machine pays for the relay."""
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in task.read_text().split()]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a child that just ended
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def count_messages(out: Path) -> int:
    from h2ws.analysis.sinks.reader import read_table

    try:
        table = read_table(out, "messages")
    except FileNotFoundError:
        return 0
    ops = table.column("opcode").to_pylist()
    return sum(1 for op in ops if op == "binary")


def start_server(work: Path, cert: Certificate) -> tuple[ReadyServer, list[int]]:
    """The echo server; it prints ``READY <h2> <h1> <h2 over TLS> <h1 over TLS>`` (ports)."""
    server = ReadyServer(["node", str(SERVER), "--lifetime", "3600", "--cert", str(cert.cert),
                          "--key", str(cert.key)], work / "server.err",
                         "echo server").start()  # fmt: skip
    return server, [int(p) for p in server.ready.split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,16384,65536", help="message sizes in bytes")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one run")
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--long", type=float, default=60.0, help="seconds of the RSS run (0: skip)")
    parser.add_argument(
        "--group", choices=("all", "tls"), default="all", help="tls: only the TLS paths"
    )
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 rep, 15 s RSS run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.reps, args.long = 2.0, 1, 15.0
    if args.group == "tls":
        args.long = 0.0  # the RSS run is the h2c addon's
    sizes = [int(s) for s in args.sizes.split(",")]
    if not shutil.which("node"):
        print("bench_live: needs node (Node.js 20)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="h2ws-bench-live-"))
    print(
        f"h2ws live benchmark — {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    cert = make_certificate(work / "tls")
    server, (h2_port, h1_port, h2_tls_port, h1_tls_port) = start_server(work, cert)
    tables = work / "tables"

    def proxy(
        name: str, port: int, addon: bool = True, tls: bool = False, **options: object
    ) -> Mitmdump:
        scheme = "https" if tls else "http"
        return Mitmdump(
            work / name,
            addon=addon,
            mode=f"reverse:{scheme}://127.0.0.1:{port}",
            options=options,
            upstream_ca=cert.ca if tls else None,
            args=["--set", "flow_detail=0"],
            lifetime=7200,
            name=name,
        )

    # Groups take turns within each repetition (each first in turn); the paths of a group run
    # one right after the other, so that ``paired`` compares runs a minute of noise apart at most.
    groups: list[list[Route]] = []
    if args.group == "all":
        groups += [
            [Route("direct h2 (RFC 8441)", "h2", port=h2_port),
             Route("direct h1", "h1", port=h1_port)],
            [Route("stock mitmdump, h1", "h1", proxy("stock", h1_port, addon=False))],
            [Route("addon, RFC 8441", "h2", proxy("addon", h2_port)),
             Route("addon + tables, no frames", "h2",
                   proxy("noframes", h2_port, h2ws_out=work / "noframes", h2ws_frames=False)),
             Route("addon + tables, RFC 8441", "h2", proxy("tables", h2_port, h2ws_out=tables))],
        ]  # fmt: skip
    # TLS on both legs: intercept mode's HTTP/2 is mitmproxy's own (h2c is relayed), and stock
    # mitmdump's HTTP/1.1 relay over TLS too, so that intercept / stock is like with like.
    groups += [
        [Route("direct h2 TLS", "h2", port=h2_tls_port, ca=cert.ca),
         Route("direct h1 TLS", "h1", port=h1_tls_port, ca=cert.ca)],
        [Route("stock mitmdump, h1 TLS", "h1", proxy("stock_tls", h1_tls_port, addon=False,
                                                     tls=True))],
        [Route("intercept, TLS", "h2", proxy("icpt", h2_tls_port, tls=True)),
         Route("intercept + tables, TLS", "h2",
               proxy("icpt_t", h2_tls_port, tls=True, h2ws_out=work / "icpt_t"), legs=2),
         Route("intercept + tables here, TLS", "h2",
               proxy("icpt_l", h2_tls_port, tls=True, h2ws_out=work / "icpt_l",
                     h2ws_table_worker=False), legs=2),
         Route("intercept, h2's DATA path, TLS", "h2",
               proxy("icpt_s", h2_tls_port, tls=True, h2ws_fast_data=False))],
        [Route("observe, TLS", "h2", proxy("obs", h2_tls_port, tls=True, h2ws_mode="observe")),
         Route("observe + tables, TLS", "h2",
               proxy("obs_t", h2_tls_port, tls=True, h2ws_mode="observe",
                     h2ws_out=work / "obs_t"))],
    ]  # fmt: skip
    paths = [p for group in groups for p in group]
    by_name = {p.name: p for p in paths}
    failures: list[str] = []
    rss = None
    try:
        for p in paths:
            if p.proxy is not None:
                p.proxy.start()
                p.port = p.proxy.port
                if p.proxy.upstream_ca is not None:
                    p.ca = p.proxy.ca_cert  # the client trusts mitmproxy's CA
            load(p.port, p.proto, 4096, 200, args.window, args.sockets, ca=p.ca)  # warm-up
        for size in sizes:
            for rep in range(args.reps):
                order: list[Route] = []
                for group in groups[rep % len(groups) :] + groups[: rep % len(groups)]:
                    k = rep % len(group)
                    order += group[k:] + group[:k]
                for p in order:
                    pid = p.proxy.proc.pid if p.proxy is not None and p.proxy.proc else None
                    cpu = cpu_seconds(pid) if pid else 0.0
                    result = load(
                        p.port, p.proto, size, 0, args.window, args.sockets, args.seconds, p.ca
                    )
                    if pid:
                        # The proxy's CPU per MB relayed: steadier than throughput on a shared
                        # machine, and what the recording overhead costs in the first place.
                        result["cpu_us_per_mb"] = (cpu_seconds(pid) - cpu) / result["bytes"] * 1e12
                    result["load"] = os.getloadavg()[0]
                    p.runs.setdefault(size, []).append(result)
            for p in paths:
                p.latency[size] = load(p.port, p.proto, size, 500, 1, 1, ca=p.ca)
        if args.long > 0:
            rss = rss_run(by_name["addon + tables, RFC 8441"], args)
    finally:
        for p in paths:
            if p.proxy is not None:
                p.proxy.stop()
        server.stop()

    # The tables hold every data message of every run through their proxy (once per leg).
    checked = [tables] if args.group == "all" else []
    checked += [work / "icpt_t", work / "icpt_l", work / "obs_t"]
    for out, name in zip(checked, [p.name for p in paths if "tables" in p.name and
                                   "no frames" not in p.name], strict=True):  # fmt: skip
        p = by_name[name]
        expected = sum(r["messages"] * 2 for runs in p.runs.values() for r in runs)
        expected += 2 * 200 * args.sockets  # warm-up
        expected += sum(r["messages"] * 2 for r in p.latency.values())
        if rss and name == "addon + tables, RFC 8441":
            expected += 2 * rss["messages"]
        got = count_messages(out)
        if got != expected * p.legs:
            failures.append(
                f"{name}: {got} binary messages in its tables, the clients exchanged {expected}"
                + (f" (x {p.legs} legs)" if p.legs > 1 else "")
            )

    report(paths, sizes, args, rss, failures)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory kept: {work}")
    return 1 if failures else 0


def rss_run(path: Route, args: argparse.Namespace) -> dict[str, Any]:
    """Sustained load through the addon with tables; RSS sampled every second."""
    assert path.proxy is not None and path.proxy.proc is not None
    pid = path.proxy.proc.pid
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_kib(pid)))
            stop.wait(1.0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = load(path.port, path.proto, 16384, 0, args.window, args.sockets, args.long)
    finally:
        stop.set()
        thread.join()
    n = len(samples)
    early = statistics.median(s[1] for s in samples[max(1, n // 10) : max(2, n // 5)])
    late = statistics.median(s[1] for s in samples[-max(1, n // 10) :])
    return {"messages": result["messages"], "mbps": result["mbps"], "samples": samples,
            "early_kib": early, "late_kib": late, "seconds": args.long}  # fmt: skip


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def paired(base: Route, other: Route, size: int, key: str) -> tuple[float, float, float]:
    """How much ``other`` differs from ``base`` in %, as the median (and range) over the
    repetitions of the difference within each: the two paths run one right after the other
    in every repetition, so a neighbour's burst or a slow minute of the shared machine moves
    both, where medians taken apart mix a fast minute of one with a slow one of the other.
    Throughput: how much less ``other`` carries; CPU per MB: how much more it costs."""
    diffs = []
    for b, o in zip(base.runs[size], other.runs[size], strict=True):
        if key == "mbps":
            diffs.append((b[key] - o[key]) / b[key] * 100)
        else:
            diffs.append((o[key] - b[key]) / b[key] * 100)
    return statistics.median(diffs), min(diffs), max(diffs)


def addon_ratios(by_name: dict[str, Route], sizes: list[int]) -> None:
    """Observe mode over h2c against stock mitmdump's cleartext HTTP/1.1 relay (issue #4)."""
    stock, addon, tables = (by_name["stock mitmdump, h1"], by_name["addon, RFC 8441"],
                            by_name["addon + tables, RFC 8441"])  # fmt: skip
    nofr = by_name["addon + tables, no frames"]
    print("ratios (throughput):")
    for size in sizes:
        a, s = (median(p.runs[size], "mbps") for p in (addon, stock))
        d = median(by_name["direct h2 (RFC 8441)"].runs[size], "mbps")
        goal = "ok" if a >= s else "BELOW GOAL"
        overhead, low, high = paired(addon, tables, size, "mbps")
        ogoal = "ok" if overhead <= 10 else "ABOVE GOAL"
        cpu, cpu_low, cpu_high = paired(addon, tables, size, "cpu_us_per_mb")
        print(
            f"  {size:>6} B: addon / stock h1 = {a / s:4.2f}x ({goal}); recording overhead = "
            f"{overhead:5.1f} % ({ogoal}; runs {low:.1f} to {high:.1f}), "
            f"{paired(addon, nofr, size, 'mbps')[0]:5.1f} % without frame rows; "
            f"addon / direct = {a / d:4.2f}x; CPU per MB with tables {cpu:+.1f} % "
            f"(runs {cpu_low:+.1f} to {cpu_high:+.1f}; "
            f"{paired(addon, nofr, size, 'cpu_us_per_mb')[0]:+.1f} % without frame rows)"
        )


def report(
    paths: list[Route], sizes: list[int], args: argparse.Namespace,
    rss: dict[str, Any] | None, failures: list[str],
) -> None:  # fmt: skip
    by_name = {p.name: p for p in paths}
    print(
        f"\n{args.sockets} WebSockets, {args.window} messages in flight each, runs of "
        f"{args.seconds:g} s, median of {args.reps}; RTT: 1 message in flight, 500 messages\n"
    )
    header = (f"{'size':>7}  {'path':<28} {'MB/s':>8} {'msg/s':>9} {'RTT p50':>9} {'RTT p99':>9}"
              f" {'CPU us/MB':>10}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for size in sizes:
        for p in paths:
            lat = p.latency[size]["rtt_us"]
            mbps = median(p.runs[size], "mbps")
            msgs = mbps * 1e6 / (2 * size)  # echoed messages per second
            cpu = f"{median(p.runs[size], 'cpu_us_per_mb'):>10.0f}" if p.proxy else f"{'':>10}"
            print(f"{size:>7}  {p.name:<28} {mbps:>8.1f} {msgs:>9.0f} "
                  f"{lat['p50'] / 1000:>7.2f}ms {lat['p99'] / 1000:>7.2f}ms {cpu}")  # fmt: skip
        print()
    if "addon, RFC 8441" in by_name:
        addon_ratios(by_name, sizes)
    print("intercept and observe mode, TLS on both legs (throughput, RTT p50 / p99):")
    stock_tls = by_name["stock mitmdump, h1 TLS"]
    stock_h1 = by_name.get("stock mitmdump, h1")
    icpt, obs = by_name["intercept, TLS"], by_name["observe, TLS"]
    for size in sizes:
        i, o_, st = (median(p.runs[size], "mbps") for p in (icpt, obs, stock_tls))
        i_over, i_low, i_high = paired(icpt, by_name["intercept + tables, TLS"], size, "mbps")
        o_over, o_low, o_high = paired(obs, by_name["observe + tables, TLS"], size, "mbps")
        i_cpu = paired(icpt, by_name["intercept + tables, TLS"], size, "cpu_us_per_mb")[0]
        here = by_name["intercept + tables here, TLS"]
        h_over, h_low, h_high = paired(icpt, here, size, "mbps")
        h_cpu = paired(icpt, here, size, "cpu_us_per_mb")[0]
        o_cpu = paired(obs, by_name["observe + tables, TLS"], size, "cpu_us_per_mb")[0]
        slow = by_name["intercept, h2's DATA path, TLS"]
        s_less, s_low, s_high = paired(icpt, slow, size, "mbps")
        s_cpu = paired(icpt, slow, size, "cpu_us_per_mb")[0]
        lat_i, lat_o = icpt.latency[size]["rtt_us"], obs.latency[size]["rtt_us"]
        goal = "ok" if i >= st else "BELOW GOAL"
        cpu_ratio = median(stock_tls.runs[size], "cpu_us_per_mb") / median(
            icpt.runs[size], "cpu_us_per_mb"
        )
        clear = ""
        if stock_h1 is not None:
            clear = f" ({i / median(stock_h1.runs[size], 'mbps'):4.2f}x stock h1 cleartext)"
        print(
            f"  {size:>6} B: intercept {i:6.1f} MB/s = {i / st:4.2f}x stock h1 TLS "
            f"({st:.1f} MB/s; {goal}){clear}, {i / o_:4.2f}x observe ({o_:.1f} MB/s), "
            f"intercept / stock by CPU per MB {cpu_ratio:4.2f}x; without the DATA fast path "
            f"(h2ws_fast_data=false) {s_less:.1f} % less (runs {s_low:.1f} to {s_high:.1f}; "
            f"CPU per MB {s_cpu:+.1f} %);"
            f" recording overhead intercept {i_over:5.1f} % (runs {i_low:.1f} to {i_high:.1f}; "
            f"CPU per MB {i_cpu:+.1f} %; decoded in the proxy's process {h_over:.1f} %, runs "
            f"{h_low:.1f} to {h_high:.1f}, CPU per MB {h_cpu:+.1f} %), "
            f"observe {o_over:5.1f} % (runs {o_low:.1f} to "
            f"{o_high:.1f}; CPU per MB {o_cpu:+.1f} %); RTT intercept "
            f"{lat_i['p50'] / 1000:.2f} / {lat_i['p99'] / 1000:.2f} ms, observe "
            f"{lat_o['p50'] / 1000:.2f} / {lat_o['p99'] / 1000:.2f} ms"
        )
    loads = [r["load"] for p in paths for runs in p.runs.values() for r in runs]
    print(f"load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f}")
    if rss:
        growth = rss["late_kib"] - rss["early_kib"]
        print(
            f"\nRSS, addon + tables, {rss['seconds']:.0f} s of 16 KiB messages at "
            f"{rss['mbps']:.0f} MB/s ({rss['messages']} echoed): "
            f"{rss['early_kib'] / 1024:.0f} MiB early, "
            f"{rss['late_kib'] / 1024:.0f} MiB at the end ({growth / 1024:+.1f} MiB)"
        )
        if growth > 0.2 * rss["early_kib"] + 32 * 1024:
            failures.append(f"RSS grew by {growth / 1024:.0f} MiB during the long run")
    for failure in failures:
        print(f"FAIL: {failure}")


if __name__ == "__main__":
    sys.exit(main())
