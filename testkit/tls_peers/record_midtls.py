"""Records the small real captures of tests/test_tls_midstream.py's handshake cuts (issue #14).

    python -m h2ws.testkit.tls_peers.record_midtls OUT_DIR

Each capture is one connection of :mod:`.py_client` (``--plan small --big 3000``: a GET, then an
RFC 8441 WebSocket with :func:`.py_client.small_messages` echoed) to :mod:`.server` (hypercorn),
on loopback with tcpdump, and the client's ``SSLKEYLOGFILE``:

* ``py_hypercorn_t12_gcm``: TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256 (an explicit nonce per record);
* ``py_hypercorn_t12_chacha``: TLS 1.2, ECDHE-ECDSA-CHACHA20-POLY1305 (the sequence number only
  in the nonce);
* ``py_hypercorn_t13_nocss``: TLS 1.3 with OpenSSL's middlebox compatibility mode off on both
  sides, so the server sends no ChangeCipherSpec.

Everything binds 127.0.0.1 and stops by itself (harness).  The outputs are
``OUT_DIR/NAME.pcap``, ``NAME.keys`` and ``NAME.json`` (the client's log: what was sent and
received).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from h2ws.testkit.tls_peers import harness

#: name: (server arguments, client arguments)
RECORDINGS: dict[str, tuple[list[str], list[str]]] = {
    "py_hypercorn_t12_gcm": (
        ["--tls", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        ["--tls", "1.2"],
    ),
    "py_hypercorn_t12_chacha": (
        ["--tls", "1.2", "--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        ["--tls", "1.2"],
    ),
    "py_hypercorn_t13_nocss": (["--tls", "1.3", "--no-compat"], ["--tls", "1.3", "--no-compat"]),
}


def record(out: Path, name: str, cert: harness.Certificate) -> None:
    server_args, client_args = RECORDINGS[name]
    work = out / f".{name}"
    work.mkdir(parents=True, exist_ok=True)
    keys = out / f"{name}.keys"
    keys.unlink(missing_ok=True)
    with harness.hypercorn_server(work, cert, name, *server_args) as server:
        port = int(server.ready)
        with harness.Capture(out / f"{name}.pcap", port):
            cmd = [
                sys.executable, "-m", "h2ws.testkit.tls_peers.py_client", "--port", str(port),
                "--ca", str(cert.ca), "--keylog", str(keys), "--log", str(out / f"{name}.json"),
                "--plan", "small", "--big", "3000", *client_args,
            ]  # fmt: skip
            subprocess.run(cmd, cwd=harness.REPO, check=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cert = harness.make_certificate(out / ".cert")
    for name in args[1:] or list(RECORDINGS):
        record(out, name, cert)
        print(f"recorded {out / name}.pcap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
