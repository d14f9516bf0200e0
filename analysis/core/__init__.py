"""The sans-IO decoder core: one connection's bytes in, records out (no sockets, files, clocks)."""
