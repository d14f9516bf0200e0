"""The Node.js ``http2`` RFC 8441 server (``node_server.mjs``) in a subprocess, like
``h2ws.testkit.peers.runner.EchoServer``: 127.0.0.1, a free port, stops with stdin or its
lifetime."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from h2ws.testkit.peers.runner import Certificate, ReadyServer

NODE_SERVER = Path(__file__).resolve().parent / "node_server.mjs"


class NodeServer(ReadyServer):
    def __init__(
        self, workdir: Path, certificate: Certificate | None = None, lifetime: float = 300.0
    ) -> None:
        cmd = ["node", str(NODE_SERVER), "--lifetime", str(lifetime)]
        if certificate:
            cmd += ["--tls", "--cert", str(certificate.cert), "--key", str(certificate.key)]
        err = workdir / ("node-server-tls.err" if certificate else "node-server.err")
        super().__init__(cmd, err, "node server")


class PageServer(ReadyServer):
    """``browser_app.py`` (hypercorn; TLS with ALPN h2 and http/1.1, or cleartext without a
    certificate): the browsers' page and WebSocket; ``events()`` is what the server saw (HTTP
    versions, client ports, the page's result)."""

    def __init__(
        self, workdir: Path, certificate: Certificate | None, lifetime: float = 120.0
    ) -> None:
        self.events_path = workdir / "server-events.jsonl"
        cmd = [
            sys.executable, "-m", "h2ws.testkit.live.browser_app",
            "--events", str(self.events_path), "--lifetime", str(lifetime),
        ]  # fmt: skip
        if certificate is not None:
            cmd += ["--certfile", str(certificate.cert), "--keyfile", str(certificate.key)]
        super().__init__(cmd, workdir / "page-server.err", "page server")

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


class NodePageServer(NodeServer, PageServer):
    """``node_server.mjs`` with ``--events``: the Node.js ``http2`` server (TLS, ALPN h2,
    RFC 8441) serving the intercept page, noting what it saw as ``PageServer`` does."""

    def __init__(self, workdir: Path, certificate: Certificate, lifetime: float = 120.0) -> None:
        self.events_path = workdir / "server-events.jsonl"
        cmd = ["node", str(NODE_SERVER), "--lifetime", str(lifetime), "--tls",
               "--cert", str(certificate.cert), "--key", str(certificate.key),
               "--events", str(self.events_path)]  # fmt: skip
        ReadyServer.__init__(self, cmd, workdir / "node-page-server.err", "node page server")
