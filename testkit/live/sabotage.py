"""A mitmproxy script that breaks the h2ws decoder on purpose, for the isolation test.

Loaded after the addon, it wraps ``ConnectionDecoder.feed`` so that it raises once the first
connection it sees has been fed 100 kB; every other connection decodes normally.  What the test
checks is that such a failure stays a diagnostic: the relay goes on untouched.
"""

from __future__ import annotations

from typing import Any

from h2ws.analysis.core.decoder import ConnectionDecoder

_feed = ConnectionDecoder.feed
_state: dict[str, Any] = {"victim": None, "fed": 0}


def _sabotaged_feed(self: ConnectionDecoder, direction: Any, data: bytes, ts: float) -> Any:
    if _state["victim"] is None:
        _state["victim"] = self.info.conn_id
    if self.info.conn_id == _state["victim"]:
        _state["fed"] += len(data)
        if _state["fed"] > 100_000:
            raise RuntimeError("sabotage: the decoder breaks here on purpose")
    return _feed(self, direction, data, ts)


ConnectionDecoder.feed = _sabotaged_feed  # type: ignore[method-assign]
addons: list[object] = []
