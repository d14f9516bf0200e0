"""What every source reduces its input to: ordered chunks of bytes per connection and direction.

Sources (pcap files, mitmproxy flow files, the live addon) emit these events in the order the
bytes were seen; :mod:`h2ws.analysis.sources.pipeline` hands them to one ``ConnectionDecoder`` per
connection.  Nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from h2ws.analysis.records import DiagnosticRecord, Direction


@dataclass(slots=True, frozen=True)
class ConnectionInfo:
    """Who talks to whom.  ``client`` is the side that opened the connection (sent the SYN)."""

    conn_id: str
    client_addr: str | None = None
    client_port: int | None = None
    server_addr: str | None = None
    server_port: int | None = None
    source: str = "pcap"
    capture: str | None = None
    #: A proxied connection (``source`` live or flowfile): the proxy's own address on the
    #: client leg, the one the client connected to.  ``server_*`` is the upstream server, on
    #: another TCP connection, so the Community ID is computed over client <-> proxy instead.
    proxy_addr: str | None = None
    proxy_port: int | None = None
    #: The addon's intercept mode decodes each leg on its own: ``client`` (client <-> proxy) or
    #: ``server`` (proxy <-> server); None for captures and observe mode (one relayed byte stream).
    leg: str | None = None
    #: The capture missed the connection's start (no SYN seen): the decoder may then
    #: recognise HTTP/2 or a WebSocket from bytes in the middle of the protocol
    #: (:mod:`h2ws.analysis.core.midstream`).
    midstream: bool = False


@dataclass(slots=True, frozen=True)
class Opened:
    conn: ConnectionInfo
    ts: float


@dataclass(slots=True)  # not frozen: built once per segment, and frozen costs 2x to build
class Data:
    conn_id: str
    direction: Direction
    ts: float
    data: bytes


@dataclass(slots=True, frozen=True)
class Gap:
    """Bytes of one direction that were never seen (lost segment, capture started late)."""

    conn_id: str
    direction: Direction
    ts: float
    length: int | None


@dataclass(slots=True, frozen=True)
class TlsInfo:
    """What a TLS layer learnt from the handshake.  Sent before the first plaintext ``Data``.

    After it, ``Data`` events of the connection carry decrypted application data, and the bytes
    on the wire are reported by ``Wire`` events instead (so that byte counts stay TCP's).
    """

    conn_id: str
    ts: float
    version: str | None = None  # "TLS 1.3", "TLS 1.2"
    cipher: str | None = None
    sni: str | None = None
    alpn: str | None = None
    #: False when there are no keys: then no ``Data`` follows, only ``Wire``.
    decrypted: bool = False


@dataclass(slots=True, frozen=True)
class Wire:
    """Bytes on the wire that are not given as ``Data`` (TLS records): counted, not decoded."""

    conn_id: str
    direction: Direction
    ts: float
    length: int


@dataclass(slots=True, frozen=True)
class Closed:
    conn_id: str
    ts: float
    cause: str  # fin | rst | capture_ended | closed


ChunkEvent = Opened | Data | Gap | Closed | TlsInfo | Wire | DiagnosticRecord
