"""Helpers of the live tests (``tests/test_addon_*.py``) and of ``bench/bench_live.py``.

- ``proxy.py``: mitmdump / mitmweb with the h2ws addon (or stock), 127.0.0.1, free port,
  bounded; always with ``guard.py``, which refuses (403) everything not on localhost.
- ``tunnel.py``: a local port that leads through the proxy's CONNECT tunnel (regular mode for
  clients without proxy support).
- ``clients.py`` + ``node_close_fallback.mjs``: the shared Node.js RFC 8441 client, with a
  fallback for a Node.js 20 hang on close seen through any TCP relay.
- ``servers.py``: the Node.js ``http2`` RFC 8441 server (``node_server.mjs``, faults on request)
  and the browsers' page server (``browser_app.py``, hypercorn); ``browsers.py`` runs headless
  Chromium and Firefox ESR.
- ``node_fault_client.mjs``: resets, cut connections, aborts; ``probe.py``: an addon that logs
  the WebSocket hooks it sees; ``sabotage.py``: breaks the decoder on purpose.
- ``compare.py``: the tables against a client's log.
- ``bench_echo_server.mjs`` + ``ws_load.mjs``: the benchmark's echo server and load client.
"""
