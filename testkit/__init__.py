"""The test kit: real peers, capture writers, TLS sealing; shared by tests, bench and the demo."""
