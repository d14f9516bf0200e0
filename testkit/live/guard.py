"""A mitmproxy script that keeps a test proxy from ever dialling out (PEERS.md).

Every CONNECT and every request to a host other than localhost / 127.0.0.1 / ::1 is answered
with 403 by the proxy itself: headless browsers ask Google hosts in the background, and a test
must not depend on (or reach) the network.
"""

from __future__ import annotations

import logging

from mitmproxy import http

LOCAL = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _refuse(flow: http.HTTPFlow) -> None:
    logging.info(f"guard: refused {flow.request.method} {flow.request.host}")
    flow.response = http.Response.make(403, b"h2ws test guard: no network\n")


class Guard:
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.request.host not in LOCAL:
            _refuse(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.host not in LOCAL and flow.response is None:
            _refuse(flow)


addons = [Guard()]
