"""Intercept mode's tables: each leg of a proxied connection decoded from its own bytes.

In intercept mode mitmproxy terminates HTTP on both sides, so the client ↔ proxy connection and
each proxy ↔ server connection carry different bytes (their own SETTINGS, stream ids, and the
messages as addons left them).  ``intercept.STATE.tap`` hands :class:`LegRecorder` a copy of
the plaintext each of mitmproxy's HTTP connection layers receives and sends; every connection
gets its own decoder (the same core as captures) with ``leg`` = ``client`` or ``server`` in its
``connections`` row.  :class:`LegRecorder` runs on the event loop, inside the layer's call, and
hands each chunk to a :class:`Legs`: by default :class:`~h2ws.addon.legworker.LegWorker`, which
decodes in a process of its own, or :class:`LocalLegs`, which decodes here
(``h2ws_table_worker=false``).  Decoding errors are the decoder's (a ``decoder_failed`` row),
never the proxy's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mitmproxy import connection

from h2ws.addon.recorder import LiveDecoders
from h2ws.analysis.core.chunks import ConnectionInfo, TlsInfo
from h2ws.analysis.records import Direction, Record
from h2ws.analysis.sources.mitmmodel import tls_version_name

#: set on each HTTP connection layer at its first chunk: True when it is not decoded
_SKIP = "_h2ws_skip"


@dataclass(slots=True)
class _Leg:
    conn_id: str
    client_side: bool
    #: plaintext of a TLS leg: its bytes count as the leg's bytes (TLS does not count them)
    tls: bool


def _addr(address: object) -> tuple[str | None, int | None]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None, None


def leg_info(conn: connection.Connection) -> ConnectionInfo:
    """The leg ``conn`` is: the client's (client ↔ proxy) or a server's (proxy ↔ server)."""
    if isinstance(conn, connection.Client):
        client, server = _addr(conn.peername), _addr(conn.sockname)
        leg = "client"
    else:
        address = conn.address if isinstance(conn, connection.Server) else None
        client, server = _addr(conn.sockname), _addr(conn.peername or address)
        leg = "server"
    return ConnectionInfo(
        conn_id=conn.id,
        client_addr=client[0],
        client_port=client[1],
        server_addr=server[0],
        server_port=server[1],
        source="live",
        leg=leg,
    )


def leg_tls(conn: connection.Connection) -> TlsInfo | None:
    if not (conn.tls and conn.tls_established):
        return None
    return TlsInfo(
        conn_id=conn.id,
        ts=conn.timestamp_tls_setup or conn.timestamp_start or time.time(),
        version=tls_version_name(conn.tls_version),
        cipher=conn.cipher,
        sni=conn.sni,
        alpn=conn.alpn.decode("ascii", "replace") if conn.alpn else None,
        decrypted=True,
    )


class Legs(Protocol):
    """Where the legs' chunks go to be decoded."""

    def open(self, info: ConnectionInfo, tls: TlsInfo | None) -> None: ...

    def feed(
        self, conn_id: str, direction: Direction, data: bytes, ts: float, wire: bool
    ) -> None: ...

    def close(self, conn_id: str, ts: float, cause: str, error: str | None) -> None: ...


class LocalLegs:
    """Decoded in mitmproxy's process, on its event loop, records to ``emit``."""

    def __init__(self, decoders: LiveDecoders, emit: Callable[[list[Record]], None]) -> None:
        self.decoders = decoders
        self.emit = emit

    def open(self, info: ConnectionInfo, tls: TlsInfo | None) -> None:
        self.emit(self.decoders.open(info, tls))

    def feed(self, conn_id: str, direction: Direction, data: bytes, ts: float, wire: bool) -> None:
        self.emit(self.decoders.feed(conn_id, direction, data, ts, wire))

    def close(self, conn_id: str, ts: float, cause: str, error: str | None) -> None:
        self.emit(self.decoders.close(conn_id, ts, cause, error))


class LegRecorder:
    def __init__(self, legs: Legs) -> None:
        self.legs = legs
        self._legs: dict[str, _Leg] = {}

    def __len__(self) -> int:
        return len(self._legs)

    def tap(self, layer: object, conn: connection.Connection, received: bool, data: bytes) -> None:
        """``intercept.STATE.tap``: ``data`` crossed ``conn`` in mitmproxy's HTTP connection
        layer ``layer``; ``received``: from its peer.

        A regular proxy's client first sends ``CONNECT host:port`` to mitmproxy's HTTP/1 layer,
        then speaks (TLS and) HTTP inside the tunnel to a new layer on the same connection: the
        tunnel request is mitmproxy's business, not the client's HTTP, and is not decoded.
        """
        state = layer.__dict__.get(_SKIP)
        if state is None:
            tunnel = (
                received and isinstance(conn, connection.Client) and data.startswith(b"CONNECT ")
            )
            layer.__dict__[_SKIP] = state = tunnel
        if state:
            return
        leg = self._legs.get(conn.id)
        if leg is None:
            tls = leg_tls(conn)
            client_side = isinstance(conn, connection.Client)
            leg = self._legs[conn.id] = _Leg(conn.id, client_side, tls is not None)
            self.legs.open(leg_info(conn), tls)
        # c2s is always client -> server of that leg: on the server leg the proxy is the client
        direction: Direction = "c2s" if received == leg.client_side else "s2c"
        self.legs.feed(leg.conn_id, direction, data, time.time(), leg.tls)

    def closed(self, conn: connection.Connection, cause: str = "closed") -> None:
        leg = self._legs.pop(conn.id, None)
        if leg is not None:
            self.legs.close(leg.conn_id, time.time(), cause, conn.error or None)

    def close_all(self) -> None:
        self._legs.clear()
