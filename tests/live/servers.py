"""The Node.js ``http2`` RFC 8441 server (``node_server.mjs``) in a subprocess, like
``tests.peers.runner.EchoServer``: 127.0.0.1, a free port, stops with stdin or its lifetime."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.peers.runner import REPO, Certificate, PeerError, _readline_with_timeout, _tail

NODE_SERVER = Path(__file__).resolve().parent / "node_server.mjs"


class NodeServer:
    def __init__(
        self, workdir: Path, certificate: Certificate | None = None, lifetime: float = 300.0
    ) -> None:
        self.workdir = workdir
        self.certificate = certificate
        self.lifetime = lifetime
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stderr_path = workdir / ("node-server-tls.err" if certificate else "node-server.err")

    def start(self) -> NodeServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = ["node", str(NODE_SERVER), "--lifetime", str(self.lifetime)]
        if self.certificate:
            cmd += [
                "--tls",
                "--cert",
                str(self.certificate.cert),
                "--key",
                str(self.certificate.key),
            ]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        line = _readline_with_timeout(self.proc, 20)
        match = re.match(rb"READY (\d+)", line or b"")
        if not match:
            self.stop()
            raise PeerError(f"node server did not start ({line!r}): {_tail(self.stderr_path)}")
        self.port = int(match.group(1))
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> NodeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PageServer:
    """``browser_app.py`` (hypercorn, TLS, ALPN h2 and http/1.1): the browsers' page and
    WebSocket; ``events()`` is what the server saw (HTTP versions, the page's result)."""

    def __init__(self, workdir: Path, certificate: Certificate, lifetime: float = 120.0) -> None:
        self.workdir = workdir
        self.certificate = certificate
        self.lifetime = lifetime
        self.events_path = workdir / "server-events.jsonl"
        self.stderr_path = workdir / "page-server.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> PageServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "tests.live.browser_app",
            "--certfile", str(self.certificate.cert), "--keyfile", str(self.certificate.key),
            "--events", str(self.events_path), "--lifetime", str(self.lifetime),
        ]  # fmt: skip
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        line = _readline_with_timeout(self.proc, 20)
        match = re.match(rb"READY (\d+)", line or b"")
        if not match:
            self.stop()
            raise PeerError(f"page server did not start ({line!r}): {_tail(self.stderr_path)}")
        self.port = int(match.group(1))
        return self

    def events(self) -> list[dict[str, Any]]:
        try:
            lines = self.events_path.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def reset(self) -> None:
        self.events_path.unlink(missing_ok=True)

    def result(self) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("path") == "/result"), None)

    stop = NodeServer.stop

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
