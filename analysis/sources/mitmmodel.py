"""mitmproxy's connection and flow objects as h2ws facts, for the flow-file reader and the addon.

One job: read what the tables need from mitmproxy's model -- the metadata key the addon keeps on
flows, connection ids and addresses (``ConnectionInfo``), TLS facts (``TlsInfo``), how a
connection ended -- and turn a relayed TCP flow into chunk events (the same a capture gives).
mitmproxy itself is only imported for types: the objects are handed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from h2ws.analysis.core.chunks import (
    ChunkEvent,
    Closed,
    ConnectionInfo,
    Data,
    Opened,
    TlsInfo,
    Wire,
)
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.records import (
    DiagnosticRecord,
    Direction,
)

if TYPE_CHECKING:
    from mitmproxy import connection, tcp

#: ``flow.metadata`` key under which the addon keeps what it knows about a flow (plain data,
#: so that it survives ``-w``): ``relay`` (a relayed connection), ``ts_end``, ``raw_dropped``,
#: ``mirror`` (a read-only WebSocket flow mirrored from an RFC 8441 stream; never recorded again),
#: ``exchange`` (the number of an HTTP exchange on its connection).
METADATA_KEY = "h2ws"


def h2ws_meta(flow: Any) -> dict[str, Any]:
    """What the addon keeps on ``flow`` (under :data:`METADATA_KEY`), or nothing."""
    meta = flow.metadata.get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


def is_mirror(flow: Any) -> bool:
    """A WebSocket flow the addon made from an RFC 8441 stream: its bytes are in a TCP flow."""
    return bool(h2ws_meta(flow).get("mirror"))


# ------------------------------------------------------------------------------ connections


#: Listening on every interface: not the address a client connected to.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def address(peer: Any) -> tuple[str | None, int | None]:
    """Host and port of one of mitmproxy's peername/sockname tuples (None, None if unset)."""
    if not peer:
        return None, None
    host, port, *_ = peer
    return str(host), int(port)


def tls_version_name(version: str | None) -> str | None:
    """mitmproxy's ``TLSv1.3`` as the tables write it (``TLS 1.3``)."""
    if version and version.startswith("TLSv"):
        return "TLS " + version[4:]
    return version


def connection_info(
    client: connection.Client,
    server: connection.Server,
    source: str,
    capture: str | None,
) -> ConnectionInfo:
    """The two legs of a proxied connection as one: the client's address and the server's.

    ``conn_id`` is mitmproxy's client connection id (a UUID), unique across runs and kept in
    flow files, so a live run and its flow file name their connections alike.  The proxy's
    address on the client leg (``sockname``) is kept for the Community ID, which is the client
    leg's (:func:`~h2ws.analysis.core.decoder.community_id`); a wildcard address is no address.
    """
    client_addr, client_port = address(client.peername)
    server_addr, server_port = address(server.peername or server.address)
    proxy_addr, proxy_port = address(client.sockname)
    if proxy_addr in _WILDCARDS:
        proxy_addr = proxy_port = None
    return ConnectionInfo(
        conn_id=client.id,
        client_addr=client_addr,
        client_port=client_port,
        server_addr=server_addr,
        server_port=server_port,
        source=source,
        capture=capture,
        proxy_addr=proxy_addr,
        proxy_port=proxy_port,
    )


def tls_info(client: connection.Client) -> TlsInfo | None:
    """The client leg's TLS facts (mitmproxy decrypted it: what follows is plaintext)."""
    if not (client.tls and client.tls_established):
        return None
    alpn = client.alpn.decode("ascii", "replace") if client.alpn else None
    return TlsInfo(
        conn_id=client.id,
        ts=client.timestamp_tls_setup or client.timestamp_start,
        version=tls_version_name(client.tls_version),
        cipher=client.cipher,
        sni=client.sni,
        alpn=alpn,
        decrypted=True,
    )


def end_of(flow: tcp.TCPFlow) -> tuple[float | None, str]:
    """When and how a relayed connection ended, as the live addon recorded it.

    The addon stores the time it saw the end in the flow's metadata (``ts_end``) so that a flow
    file gives the same ``ts_end`` as the live run; older or foreign files fall back to
    mitmproxy's own timestamps.
    """
    meta = h2ws_meta(flow)
    ts = meta.get("ts_end")
    if not isinstance(ts, int | float):
        candidates = [
            t
            for t in (flow.client_conn.timestamp_end, flow.server_conn.timestamp_end)
            if t is not None
        ]
        if flow.messages:
            candidates.append(flow.messages[-1].timestamp)
        ts = max(candidates) if candidates else None
    return (float(ts) if ts is not None else None), ("error" if flow.error else "closed")


def tcp_flow_events(flow: tcp.TCPFlow, source: str, capture: str | None) -> Iterator[ChunkEvent]:
    """A whole TCP flow as chunk events, as the live addon feeds them one hook at a time."""
    info = connection_info(flow.client_conn, flow.server_conn, source, capture)
    conn_id = info.conn_id
    first_ts = flow.messages[0].timestamp if flow.messages else flow.client_conn.timestamp_start
    yield Opened(info, first_ts or 0.0)
    tls = tls_info(flow.client_conn)
    if tls is not None:
        yield tls
    if h2ws_meta(flow).get("raw_dropped"):
        yield diagnostic(
            conn_id,
            "capture",
            "warning",
            "flowfile_no_raw",
            "this relayed connection was saved without its raw chunks "
            "(h2ws_keep_raw=false); record with --set h2ws_keep_raw=true to analyse it offline",
            ts=first_ts,
        )
    for message in flow.messages:
        direction: Direction = "c2s" if message.from_client else "s2c"
        if tls is not None:
            yield Wire(conn_id, direction, message.timestamp, len(message.content))
        yield Data(conn_id, direction, message.timestamp, message.content)
    ts, cause = end_of(flow)
    if flow.error:
        yield connection_error(conn_id, ts, flow.error.msg)
    yield Closed(conn_id, ts or 0.0, cause)


def connection_error(conn_id: str, ts: float | None, message: str) -> DiagnosticRecord:
    return diagnostic(conn_id, "tcp", "warning", "connection_error", f"mitmproxy: {message}", ts=ts)


# ------------------------------------------------------------------------------ HTTP flows


__all__ = [
    "METADATA_KEY",
    "address",
    "connection_error",
    "connection_info",
    "end_of",
    "h2ws_meta",
    "is_mirror",
    "tcp_flow_events",
    "tls_info",
    "tls_version_name",
]
