"""The live half of ``make demo``: real RFC 8441 traffic through ``mitmdump -s addon/addon.py``.

What runs, all on 127.0.0.1 and all bounded in time (nothing here can dial out: the proxy is a
reverse proxy to the local server and also loads ``testkit/live/guard.py``):

1. hypercorn serving ``testkit/peers/echo_app.py`` over TLS (ALPN ``h2`` and ``http/1.1``, a
   certificate made for this run): RFC 8441 on HTTP/2, ``Upgrade: websocket`` on HTTP/1.1;
2. mitmdump with the h2ws addon in front of it (``--mode reverse:https://localhost:PORT``,
   ``h2ws_out=<out>/tables``), its CA trusted by the clients;
3. the RFC 8441 workload: ``--clients`` Node.js ``http2`` clients at once
   (``testkit/peers/h2_client.mjs``), each one TCP connection carrying ``--websockets``
   extended-CONNECT WebSockets and ``--gets`` ordinary GETs (small, 300 kB, 404) side by side,
   paced like an application (a message every ``--interval`` ms, the GETs spread out);
4. the same number of WebSockets the HTTP/1.1 way, at the same time as each other
   (``testkit/peers/h1_ws_client.py --parallel``): one TLS connection per WebSocket, which is
   what RFC 8441 saves;
5. mitmdump stops (SIGINT, so the addon writes its last rows) and the tables are checked
   against what every client logged: each WebSocket's messages, each GET, one connection per
   Node.js client.  Anything missing or any error diagnostic fails the demo, loudly.

``scripts/demo.sh`` then runs ``h2ws summary`` and ``h2ws report`` on the tables.

    .venv/bin/python scripts/demo_live.py --out out/demo [--clients 3 --websockets 4 --gets 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from h2ws.analysis.sinks.reader import read_table  # noqa: E402
from h2ws.testkit.live.clients import node_client_cmd  # noqa: E402
from h2ws.testkit.live.proxy import Mitmdump  # noqa: E402
from h2ws.testkit.peers.runner import EchoServer, make_certificate, python_client_cmd  # noqa: E402

Rows = list[dict[str, Any]]
TABLES = ("connections", "streams", "frames", "messages", "diagnostics")


class DemoError(RuntimeError):
    pass


def run_clients(commands: list[tuple[list[str], Path]], timeout: float) -> list[dict[str, Any]]:
    """Starts every client at once (so their connections overlap, as a browser's would), waits
    for all, and returns their logs; a client that fails or hangs fails the demo."""
    procs = [
        (subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE), log)
        for cmd, log in commands
    ]
    end = time.monotonic() + timeout
    logs, failures = [], []
    for proc, log in procs:
        try:
            _, err = proc.communicate(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            failures.append(f"{' '.join(proc.args)}: no result after {timeout:.0f} s")  # type: ignore[arg-type]
            continue
        if proc.returncode != 0:
            failures.append(f"{log.name} exited {proc.returncode}: {err.decode()[-1500:]}")
            continue
        logs.append(json.loads(log.read_text()))
    if failures:
        raise DemoError("client failed:\n" + "\n".join(failures))
    return logs


def check(
    tables: dict[str, Rows], h2_logs: list[dict[str, Any]], h1_log: dict[str, Any]
) -> list[str]:
    """What the tables must hold, given what the clients logged; returns the problems."""
    problems: list[str] = []
    conns = tables["connections"]
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
        # mitmproxy's own relay shows the addon data messages and the close, not ping/pong,
        # and answers the client's close itself (its echo is not the server's).
        ws_rows = [m for m in tables["messages"] if m["conn_id"] == conn["conn_id"]]
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            got = Counter(m["opcode"] for m in ws_rows if m["direction"] == direction)
            want = Counter(m["opcode"] for m in ws[key] if m["opcode"] in ("text", "binary"))
            if direction == "c2s":
                want["close"] += 1
            expect(f"{name} {direction} messages", dict(got), dict(want))
    for d in tables["diagnostics"]:
        if d["severity"] == "error":
            problems.append(f"error diagnostic: {d['code']}: {d['message']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--clients", type=int, default=3, help="HTTP/2 connections (Node.js)")
    parser.add_argument("--websockets", type=int, default=4, help="per HTTP/2 connection")
    parser.add_argument("--gets", type=int, default=6, help="per HTTP/2 connection")
    parser.add_argument("--messages", type=int, default=20, help="extra messages per WebSocket")
    parser.add_argument(
        "--interval", type=int, default=40, help="ms between a WebSocket's messages (0: burst)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=120.0, help="for the whole workload")
    args = parser.parse_args(argv)

    work, tables_dir = args.out / "run", args.out / "tables"
    work.mkdir(parents=True, exist_ok=True)
    certificate = make_certificate(work / "certificate")
    lifetime = args.timeout + 60
    server = EchoServer(work / "server", certificate, lifetime=lifetime)
    with server:
        proxy = Mitmdump(
            work / "proxy",
            mode=f"reverse:https://localhost:{server.port}",
            # observe mode: the demo checks the tables against the clients' own logs, which
            # holds for the verbatim relay (intercept mode records both legs, see README)
            options={
                "h2ws_mode": "observe",
                "h2ws_out": tables_dir,
                "h2ws_payload": "preview",
                "h2ws_flush_interval": 2,
            },
            upstream_ca=certificate.ca,
            lifetime=lifetime,
        )
        with proxy:
            print(f"   hypercorn on 127.0.0.1:{server.port} (TLS), mitmdump + h2ws addon on "
                  f"127.0.0.1:{proxy.port}, tables -> {tables_dir}")  # fmt: skip
            tls = {"tls": True, "ca": proxy.ca_cert, "servername": "localhost"}
            commands = []
            for i in range(args.clients):
                log = work / f"h2-client-{i}.json"
                cmd = node_client_cmd(proxy.port, log, ws=args.websockets, gets=args.gets,
                                      seed=args.seed + i, messages=args.messages,
                                      interval=args.interval, **tls)  # fmt: skip
                commands.append((cmd, log))
            h1_log = work / "h1-client.json"
            h1_args = ["--ws", str(args.clients * args.websockets), "--seed", str(args.seed),
                       "--parallel", "--get-first", "--tls", "--ca", str(proxy.ca_cert),
                       "--timeout", str(args.timeout)]  # fmt: skip
            commands.append(
                (python_client_cmd("h1_ws_client", proxy.port, h1_log, *h1_args), h1_log)
            )
            started = time.monotonic()
            logs = run_clients(commands, args.timeout)
            seconds = time.monotonic() - started
            returncode = proxy.stop()
        print(
            f"   workload done in {seconds:.1f} s: {args.clients} HTTP/2 connections x "
            f"({args.websockets} RFC 8441 WebSockets + {args.gets} GETs), "
            f"{args.clients * args.websockets} HTTP/1.1 WebSockets"
        )
        if returncode != 0 or "Traceback" in proxy.log():
            raise DemoError(f"mitmdump exited {returncode}:\n{proxy.log()[-3000:]}")

    tables = {name: read_table(tables_dir, name).to_pylist() for name in TABLES}
    problems = check(tables, logs[:-1], logs[-1])
    if problems:
        raise DemoError("the tables do not match what the clients did:\n  " + "\n  ".join(problems))
    print(
        f"   tables match the clients' logs: {len(tables['connections'])} connections, "
        f"{len(tables['streams'])} streams, {len(tables['messages'])} WebSocket messages"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
