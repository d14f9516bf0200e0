"""``h2ws demo`` (and ``make demo``): live RFC 8441 traffic through mitmdump and the addon, then
tables, summary and report.html — with Python peers only, so that ``pip install
'h2ws[live,report]'`` is all it needs.

What runs, all on 127.0.0.1 with free ports and all bounded in time (nothing can dial out: the
proxy is a reverse proxy to the local server and also loads ``testkit/live/guard.py``):

1. hypercorn serving :mod:`h2ws.testkit.peers.echo_app` over TLS (ALPN ``h2`` and ``http/1.1``,
   a certificate made for this run): RFC 8441 on HTTP/2, ``Upgrade: websocket`` on HTTP/1.1;
2. mitmdump with the h2ws addon in front of it (``--mode reverse:https://localhost:PORT``,
   ``h2ws_out=<out>/tables``, observe mode unless ``mode`` says intercept: see :data:`MODES`),
   its CA trusted by the clients;
3. ``clients`` Python h2 clients at once (:mod:`h2ws.testkit.peers.h2_py_client`), each one
   TLS connection carrying ``websockets`` extended-CONNECT WebSockets and ``gets`` GETs
   (300 kB, small, 404) side by side;
4. the same number of WebSockets the HTTP/1.1 way, all at once
   (:mod:`h2ws.testkit.peers.h1_ws_client` ``--parallel``): one TLS connection per WebSocket,
   which is what RFC 8441 saves;
5. mitmdump stops (SIGINT, so the addon writes its last rows) and the tables (in intercept
   mode their client leg) are checked against what every client logged: each WebSocket's
   messages both ways, each GET, one connection per h2 client, no error diagnostic;
6. ``summary.txt`` and ``report.html`` (the report notebook) next to the tables.

Every process is stopped on the way out, also on Ctrl-C (the proxy by SIGINT, the server by
closing its stdin, the clients killed) and after its own lifetime if this process dies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2ws.analysis.records import TABLES
from h2ws.analysis.sinks.reader import read_table
from h2ws.testkit.live.proxy import Mitmdump
from h2ws.testkit.peers.runner import EchoServer, make_certificate, python_client_cmd

Rows = list[dict[str, Any]]
#: A file in every demo output directory: a second run may replace what a first one wrote, and
#: nothing else (``-o`` naming another non-empty directory is refused).
MARKER = ".h2ws-demo"


class DemoError(RuntimeError):
    """A step failed; the message is one line (details, if any, are in ``run/``)."""


@dataclass
class Workload:
    clients: int = 3
    websockets: int = 4
    gets: int = 6
    seed: int = 7
    timeout: float = 120.0
    #: The addon's mode (``h2ws_mode``); see :data:`MODES`.
    mode: str = "intercept"


#: The addon's modes (``h2ws_mode``); the demo runs intercept mode, the addon's default.
MODES = ("observe", "intercept")


def mitmdump_command() -> Path:
    """The ``mitmdump`` of this Python's environment (where the addon can import h2ws)."""
    path = Path(sys.executable).parent / "mitmdump"
    if not path.is_file():
        raise DemoError(
            f"no mitmdump next to {sys.executable} (the 'live' extra installs it: "
            "pip install 'h2ws[live]')"
        )
    return path


def prepare(out: Path) -> None:
    """``out`` empty or made, or a previous demo's output (replaced); anything else refused."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"-o {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DemoError(f"-o {out}: not empty and not a previous demo's output")
        for name in ("run", "tables", "report.html", "summary.txt"):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by h2ws demo; a next run replaces this directory\n")


def run_clients(commands: list[tuple[list[str], Path]], timeout: float) -> list[dict[str, Any]]:
    """Starts every client at once (so their connections overlap, as a browser's would), waits
    for all, and returns their logs; a client that fails or hangs fails the demo.  Clients
    still running when this returns (an error, Ctrl-C) are killed."""
    procs = [
        (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), log)
        for cmd, log in commands
    ]
    try:
        end = time.monotonic() + timeout
        logs, failures = [], []
        for proc, log in procs:
            try:
                _, err = proc.communicate(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                failures.append(f"{log.stem}: no result after {timeout:.0f} s")
                continue
            if proc.returncode != 0:
                last = err.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                failures.append(f"{log.stem} exited {proc.returncode}: {last[0]}")
                continue
            logs.append(json.loads(log.read_text()))
        if failures:
            raise DemoError("client failed: " + "; ".join(failures))
        return logs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def check(
    tables: dict[str, Rows], h2_logs: list[dict[str, Any]], h1_log: dict[str, Any]
) -> list[str]:
    """What the client leg of the tables must hold, given what the clients logged; returns the
    problems.  Intercept mode decodes each leg's own bytes, so the client leg has exactly what
    each client sent and received (pings, pongs and closes included)."""
    problems: list[str] = []
    conns = [c for c in tables["connections"] if c.get("leg") in (None, "client")]
    by_port = {c["client_port"]: c for c in conns}
    streams: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for s in tables["streams"]:
        streams.setdefault((s["conn_id"], s["stream_id"]), []).append(s)
    counted = Counter((m["conn_id"], m["stream_id"], m["direction"]) for m in tables["messages"])

    def expect(what: str, got: object, want: object) -> None:
        if got != want:
            problems.append(f"{what}: tables have {got!r}, the client logged {want!r}")

    for log in h2_logs:
        conn = by_port.get(log["local_port"])
        if conn is None:
            problems.append(f"no connection from client port {log['local_port']}")
            continue
        name = f"h2 connection :{log['local_port']}"
        expect(f"{name} http_version", conn["http_version"], "h2")
        expect(f"{name} SETTINGS_ENABLE_CONNECT_PROTOCOL", conn["enable_connect_protocol"], True)
        expect(f"{name} websockets", conn["websockets"], len(log["websockets"]))
        expect(f"{name} streams", conn["streams"], len(log["websockets"]) + len(log["requests"]))
        for ws in log["websockets"]:
            key = (conn["conn_id"], ws["stream_id"])
            kinds = [s["kind"] for s in streams.get(key, [])]
            expect(f"{name} stream {ws['stream_id']} kind", kinds, ["websocket"])
            expect(f"{name} stream {ws['stream_id']} c2s", counted[(*key, "c2s")], len(ws["sent"]))
            got = counted[(*key, "s2c")]
            expect(f"{name} stream {ws['stream_id']} s2c", got, len(ws["received"]))
        for req in log["requests"]:
            rows = streams.get((conn["conn_id"], req["stream_id"]), [])
            statuses = [s["status"] for s in rows]
            expect(f"{name} GET {req['path']} status", statuses, [req["status"]])
    for ws in h1_log["websockets"]:
        conn = by_port.get(ws["local_port"])
        name = f"HTTP/1.1 WebSocket {ws['path']} (:{ws['local_port']})"
        if conn is None:
            problems.append(f"{name}: no connection in the tables")
            continue
        expect(f"{name} http_version", conn["http_version"], "http/1.1")
        expect(f"{name} websockets", conn["websockets"], 1)
        ws_rows = [m for m in tables["messages"] if m["conn_id"] == conn["conn_id"]]
        for direction, side in (("c2s", "sent"), ("s2c", "received")):
            seen = Counter(m["opcode"] for m in ws_rows if m["direction"] == direction)
            want: Counter[str]
            if conn.get("leg") is not None:  # intercept mode: the client leg's own bytes
                want = Counter(m["opcode"] for m in ws[side])
            else:
                # observe mode records HTTP/1.1 WebSockets from mitmproxy's hooks: data
                # messages and the client's close, no ping/pong, and mitmproxy answers the
                # client's close itself (its echo is not the server's).
                want = Counter(m["opcode"] for m in ws[side] if m["opcode"] in ("text", "binary"))
                if direction == "c2s":
                    want["close"] += 1
            expect(f"{name} {direction} messages", dict(seen), dict(want))
    for d in tables["diagnostics"]:
        if d["severity"] == "error":
            problems.append(f"error diagnostic: {d['code']}: {d['message']}")
    return problems


def run_live(out: Path, load: Workload, say: Any = print) -> dict[str, Rows]:
    """Steps 1 to 5: the peers and the proxy, the workload, the check; returns the tables."""
    work, tables_dir = out / "run", out / "tables"
    work.mkdir(parents=True, exist_ok=True)
    mitmdump = mitmdump_command()
    certificate = make_certificate(work / "certificate")
    lifetime = load.timeout + 60
    server = EchoServer(work / "server", certificate, lifetime=lifetime)
    with server:
        proxy = Mitmdump(
            work / "proxy",
            mode=f"reverse:https://localhost:{server.port}",
            options={
                "h2ws_mode": load.mode,
                "h2ws_out": tables_dir,
                "h2ws_payload": "preview",
                "h2ws_flush_interval": 2,
            },
            upstream_ca=certificate.ca,
            lifetime=lifetime,
            tool=mitmdump,
        )
        with proxy:
            say(f"   hypercorn on 127.0.0.1:{server.port} (TLS), mitmdump + h2ws addon "
                f"({load.mode} mode) on 127.0.0.1:{proxy.port}")  # fmt: skip
            tls = ["--tls", "--ca", str(proxy.ca_cert), "--timeout", str(load.timeout)]
            commands = []
            for i in range(load.clients):
                log = work / f"h2-client-{i}.json"
                args = ["--websockets", str(load.websockets), "--gets", str(load.gets),
                        "--seed", str(load.seed + i), *tls]  # fmt: skip
                commands.append((python_client_cmd("h2_py_client", proxy.port, log, *args), log))
            h1_log = work / "h1-client.json"
            h1_args = ["--ws", str(load.clients * load.websockets), "--seed", str(load.seed),
                       "--parallel", "--get-first", *tls]  # fmt: skip
            commands.append(
                (python_client_cmd("h1_ws_client", proxy.port, h1_log, *h1_args), h1_log)
            )
            started = time.monotonic()
            logs = run_clients(commands, load.timeout)
            seconds = time.monotonic() - started
            returncode = proxy.stop()
        say(
            f"   workload done in {seconds:.1f} s: {load.clients} HTTP/2 connections x "
            f"({load.websockets} RFC 8441 WebSockets + {load.gets} GETs), "
            f"{load.clients * load.websockets} HTTP/1.1 WebSockets"
        )
        if returncode != 0 or "Traceback" in proxy.log():
            raise DemoError(f"mitmdump exited {returncode}; its log: {proxy.log_path}")

    tables = {name: read_table(tables_dir, name).to_pylist() for name in TABLES}
    problems = check(tables, logs[:-1], logs[-1])
    if problems:
        details = work / "problems.txt"
        details.write_text("\n".join(problems) + "\n")
        raise DemoError(
            f"the tables do not match what the clients did ({len(problems)} problems, "
            f"first: {problems[0]}; all in {details})"
        )
    legs = (
        " (each proxied connection twice: client and server leg)"
        if load.mode == "intercept"
        else ""
    )
    say(
        f"   tables match the clients' logs: {len(tables['connections'])} connections, "
        f"{len(tables['streams'])} streams, {len(tables['messages'])} WebSocket messages{legs}"
    )
    return tables


def run(out: Path, load: Workload, report: bool = True, say: Any = print) -> None:
    """The whole demo into ``out``; raises :class:`DemoError` naming the step that failed."""
    from h2ws.analysis.report.summary import summarise

    shown = out  # the paths printed at the end, as the user gave them
    out = out.absolute()  # the peers run in other working directories
    prepare(out)
    say("== 1. live: hypercorn <- mitmdump + h2ws addon <- Python h2 clients (RFC 8441) and "
        "HTTP/1.1 WebSockets")  # fmt: skip
    run_live(out, load, say)
    say("== 2. summary")
    (out / "summary.txt").write_text(summarise(out / "tables") + "\n")
    if report:
        from h2ws.analysis.report.runner import run_report

        say("== 3. report")
        run_report(out / "tables", out / "report.html")
    say("")
    say(f"tables:  {shown}/tables/   (Parquet part files, one folder per table)")
    say(f"summary: {shown}/summary.txt")
    if report:
        say(f"report:  {shown}/report.html")
    say(f"proxy:   {shown}/run/proxy/mitmdump.log")
