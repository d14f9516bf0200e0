"""Real TLS peers for ``tests/test_tls.py``: servers, clients and the browser page they share."""
