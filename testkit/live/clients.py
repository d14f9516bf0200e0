"""The shared RFC 8441 clients (``testkit/peers/``), run the way the live tests need them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from h2ws.testkit.peers import runner

CLOSE_FALLBACK = Path(__file__).resolve().parent / "node_close_fallback.mjs"


def node_client_cmd(port: int, log: Path, **options: Any) -> list[str]:
    """``testkit/peers/h2_client.mjs`` with ``node_close_fallback.mjs`` preloaded (a Node.js 20
    hang on close, seen through any TCP relay; see that file)."""
    cmd = runner.node_client_cmd(port, log, **options)
    return [cmd[0], "--import", CLOSE_FALLBACK.as_uri(), *cmd[1:]]


def run_node(port: int, log: Path, timeout: float = 60.0, **options: Any) -> dict[str, Any]:
    return runner.run_client(node_client_cmd(port, log, **options), log, timeout=timeout)
