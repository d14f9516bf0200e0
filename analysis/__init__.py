"""The capture analyser of h2ws: captures and flow files in, tables out, reports on the tables.

The folders are the layers of the design: ``core/`` (the sans-IO decoder: RFC 9113 framing,
RFC 7541 HPACK, RFC 8441 §4-5 classification, RFC 6455 framing, RFC 7692 inflate),
``sources/`` (pcap/pcapng reading, TCP reassembly, TLS 1.2/1.3 record decryption per RFC 5246
and RFC 8446, mitmproxy flow files), ``records.py`` (the tables' schema), ``sinks/`` (writers
and the reader), ``metrics/`` (one module per report question, on the tables only),
``report/`` (notebooks, figures, the text summary) and ``cli.py``.
"""
