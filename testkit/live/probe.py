"""A mitmproxy script standing for "any other addon": it logs what the WebSocket hooks show.

Loaded after the h2ws addon in the tests, it writes one JSON line per ``websocket_start``,
``websocket_message`` and ``websocket_end`` to ``probe_out``, so that a test can check that
RFC 8441 WebSockets reach other addons (and the console, mitmweb, ``-w``) as WebSocket flows.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader


class Probe:
    def load(self, loader: Loader) -> None:
        loader.add_option("probe_out", str, "", "JSON lines file of the WebSocket hooks seen")

    def _write(self, flow: http.HTTPFlow, event: str, **extra: Any) -> None:
        if not ctx.options.probe_out:
            return
        row = {
            "event": event,
            "flow": flow.id,
            "live": flow.live,
            "path": flow.request.path,
            "method": flow.request.method,
            "status": flow.response.status_code if flow.response else None,
            "h2ws": flow.metadata.get("h2ws"),
            **extra,
        }
        with open(ctx.options.probe_out, "a") as f:
            f.write(json.dumps(row) + "\n")

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._write(flow, "start")

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        m = flow.websocket.messages[-1]
        self._write(
            flow,
            "message",
            from_client=m.from_client,
            type=m.type.name.lower(),
            length=len(m.content),
            sha256=hashlib.sha256(m.content).hexdigest(),
        )

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        ws = flow.websocket
        assert ws is not None
        self._write(
            flow,
            "end",
            close_code=ws.close_code,
            closed_by_client=ws.closed_by_client,
            messages=len(ws.messages),
            error=flow.error.msg if flow.error else None,
        )


addons = [Probe()]
