"""A local port that leads through an HTTP proxy's CONNECT tunnel to a target.

The Node.js RFC 8441 client connects to a host and port, not through a proxy; pointed at this
tunnel's port, its bytes reach ``target`` through ``CONNECT`` on the proxy, exactly as a browser
configured with ``--proxy-server`` sends them.  One thread per direction; everything stops with
the tunnel (``close()``) or after ``lifetime`` seconds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class ConnectTunnel:
    def __init__(self, proxy_port: int, target: tuple[str, int], lifetime: float = 60.0) -> None:
        self.proxy_port = proxy_port
        self.target = target
        self.deadline = time.monotonic() + lifetime
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ConnectTunnel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._sockets.append(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=10)
            self._sockets.append(upstream)
            host, port = self.target
            upstream.sendall(
                f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                data = upstream.recv(4096)
                if not data:
                    raise ConnectionError("proxy closed during CONNECT")
                head += data
            status_line = head.split(b"\r\n", 1)[0]
            if b" 200" not in status_line:
                raise ConnectionError(f"CONNECT refused: {status_line!r}")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                client.sendall(rest)
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
            _pump(client, upstream)
        except OSError as exc:
            self.errors.append(repr(exc))
            client.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copies until EOF, then half-closes, so both directions end as the peers end them."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            dst.close()
