"""A user's addon for the intercept-mode tests: what ``mitmdump -s`` scripts do to flows.

- ``request``: adds ``x-h2ws-test: added`` to every request (the server notes it);
  a flow held by ``--set intercept=…`` (mitmproxy's own intercept addon) is resumed after
  ``HOLD`` seconds.
- ``websocket_message``: ``modify me`` becomes ``modified``, ``drop me`` is dropped, and on
  ``inject`` one message is injected each way (``to client``; ``to server``, echoed back).
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, http
from mitmproxy.addons.intercept import Intercept

HOLD = 1.0
logger = logging.getLogger(__name__)


class Hooks:
    def request(self, flow: http.HTTPFlow) -> None:
        flow.request.headers["x-h2ws-test"] = "added"
        if flow.intercepted:
            logger.warning(f"hooks_addon: holding {flow.request.path} for {HOLD} s")
            asyncio.get_running_loop().call_later(HOLD, flow.resume)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if not message.from_client or message.injected:
            return
        if message.content == b"modify me":
            message.content = b"modified"
        elif message.content == b"drop me":
            message.drop()
        elif message.content == b"inject":
            ctx.master.commands.call("inject.websocket", flow, True, b"to client")
            ctx.master.commands.call("inject.websocket", flow, False, b"to server")


# mitmdump does not load mitmproxy's intercept addon (mitmproxy and mitmweb do): load it here,
# first, so that ``--set intercept=FILTER`` marks flows before ``Hooks.request`` sees them.
addons = [Intercept(), Hooks()]
