"""HTTP/1.1 decoding: exchanges, Upgrade: websocket (the baseline), Upgrade: h2c."""

from __future__ import annotations

import h2.config
import h2.connection
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import CloseReason

from h2ws.analysis.core.chunks import ConnectionInfo
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.records import ConnectionRecord, DiagnosticRecord, MessageRecord, StreamRecord
from h2ws.testkit.h2pair import ws_peer

from .test_h2 import FULL, codes, conn, of


def decode(chunks: list[tuple[str, bytes]], cause: str = "fin") -> list:  # type: ignore[type-arg]
    decoder = ConnectionDecoder(ConnectionInfo("t:0", "10.0.0.1", 5000, "10.0.0.2", 80), FULL)
    out = []
    for i, (d, data) in enumerate(chunks):
        out += decoder.feed(d, data, 100.0 + i)  # type: ignore[arg-type]
    out += decoder.close(100.0 + len(chunks), cause)
    return out


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: server.example\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def test_plain_exchanges_keep_alive_and_bodies() -> None:
    records = decode(
        [
            ("c2s", b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("s2c", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
            ("c2s", b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz"),
            (
                "s2c",
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
            ),
            ("c2s", b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("s2c", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        ]
    )
    streams = of(records, StreamRecord)
    assert [
        (s.exchange, s.method, s.path, s.status, s.bytes_c2s, s.bytes_s2c) for s in streams
    ] == [
        (0, "GET", "/a", 200, 0, 3),
        (1, "POST", "/b", 404, 4, 2),
        (2, "HEAD", "/c", 200, 0, 0),
    ]
    assert all(s.stream_id is None and s.kind == "http" for s in streams)
    assert conn(records).http_version == "http/1.1"
    assert conn(records).streams == 3


def test_response_until_close() -> None:
    records = decode(
        [
            ("c2s", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("s2c", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstream of bytes"),
        ]
    )
    (s,) = of(records, StreamRecord)
    assert s.bytes_s2c == len(b"stream of bytes")
    assert s.stream_end == "end_stream"


def test_upgrade_websocket_messages_and_close() -> None:
    client, server = ws_peer("c2s"), ws_peer("s2c")
    records = decode(
        [
            ("c2s", UPGRADE),
            ("s2c", SWITCHING + server.send_data("welcome")),
            ("c2s", client.send_data("héllo") + client.send_data(b"\x00\x01", fin=True)),
            ("s2c", server.send_data("héllo")),
            ("c2s", client.close(CloseReason.GOING_AWAY, "tab closed")),
            ("s2c", server.close(CloseReason.GOING_AWAY, "tab closed")),
        ]
    )
    (s,) = of(records, StreamRecord)
    assert (s.kind, s.status, s.ws_accepted, s.stream_id, s.exchange) == (
        "websocket",
        101,
        True,
        None,
        0,
    )
    assert s.close_cause == "ws_close:1001" and s.stream_end == "connection_closed"
    msgs = [(m.direction, m.opcode, m.payload) for m in of(records, MessageRecord)]
    assert msgs == [
        ("s2c", "text", b"welcome"),
        ("c2s", "text", "héllo".encode()),
        ("c2s", "binary", b"\x00\x01"),
        ("s2c", "text", "héllo".encode()),
        ("c2s", "close", b"\x03\xe9tab closed"),
        ("s2c", "close", b"\x03\xe9tab closed"),
    ]
    assert all(m.stream_id is None and m.exchange == 0 for m in of(records, MessageRecord))
    assert conn(records).websockets == 1


def test_refused_upgrade_is_a_rejected_attempt() -> None:
    records = decode(
        [
            ("c2s", UPGRADE),
            ("s2c", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
            ("c2s", b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("s2c", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]
    )
    ws, nxt = of(records, StreamRecord)
    assert (ws.kind, ws.status, ws.ws_accepted) == ("websocket", 403, False)
    assert nxt.path == "/next"
    assert not of(records, MessageRecord)


def test_upgrade_h2c_turns_the_request_into_stream_1() -> None:
    cfg = h2.config.H2Configuration(client_side=True)
    client = h2.connection.H2Connection(cfg)
    settings_header = client.initiate_upgrade_connection()  # already base64url
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_upgrade_connection(settings_header)
    request = (
        b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings_header + b"\r\n\r\n"
    )
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    server.send_headers(1, [(":status", "200")])
    server.send_data(1, b"upgraded!", end_stream=True)
    chunks = [("c2s", request), ("s2c", switching + server.data_to_send())]
    server_bytes = chunks[1][1][len(switching) :]
    client.receive_data(server_bytes)
    sid = client.get_next_available_stream_id()
    client.send_headers(
        sid,
        [(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", "/two")],
        end_stream=True,
    )
    chunks.append(("c2s", client.data_to_send()))
    records = decode(chunks)
    c = conn(records)
    assert (c.http_version, c.h2c_upgrade) == ("h2c", True)
    one = next(s for s in of(records, StreamRecord) if s.stream_id == 1)
    assert (one.method, one.path, one.status, one.bytes_s2c, one.stream_end) == (
        "GET",
        "/up",
        200,
        9,
        "end_stream",
    )
    two = next(s for s in of(records, StreamRecord) if s.stream_id == sid)
    assert (two.path, two.stream_end) == ("/two", "connection_closed")
    assert c.streams == 2


def test_protocol_error_is_a_diagnostic() -> None:
    records = decode(
        [("c2s", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), ("s2c", b"HTTP/9 oops\r\n\r\n")]
    )
    assert "http1_protocol_error" in codes(records)
    assert conn(records).error


def test_unknown_protocol_is_counted() -> None:
    records = decode([("c2s", b"\x00\x01binary-protocol" * 3)])
    assert "unknown_protocol" in codes(records)
    assert conn(records).http_version == "unknown"
    assert conn(records).bytes_c2s == 51


def test_tls_without_keys_is_listed() -> None:
    records = decode([("c2s", b"\x16\x03\x01\x00\x05hello")])
    c = conn(records)
    assert c.tls is True and "tls_no_keys" in codes(records)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500), st.binary(max_size=500))
def test_random_bytes_after_a_request_never_raise(c2s: bytes, s2c: bytes) -> None:
    records = decode([("c2s", UPGRADE + c2s), ("s2c", SWITCHING + s2c)])
    assert of(records, ConnectionRecord)
    # The decoder turns its own exceptions into *_internal_error rows: there must be none.
    assert not [r.code for r in of(records, DiagnosticRecord) if r.code.endswith("_internal_error")]


def test_response_body_in_a_later_segment_then_upgrade() -> None:
    """hypercorn writes headers and body separately; the WebSocket after the GET must survive."""
    client, server = ws_peer("c2s"), ws_peer("s2c")
    records = decode(
        [
            ("c2s", b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"),
            ("s2c", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            ("s2c", b"hello"),
            ("c2s", UPGRADE),
            ("s2c", SWITCHING),
            ("c2s", client.send_data("hi")),
            ("s2c", server.send_data("hi")),
        ]
    )
    get, ws = of(records, StreamRecord)
    assert (get.bytes_s2c, get.stream_end) == (5, "end_stream")
    assert (ws.kind, ws.status, ws.messages_c2s, ws.messages_s2c) == ("websocket", 101, 1, 1)


def test_websocket_message_cut_by_the_connection_closing_keeps_the_cause() -> None:
    client, server = ws_peer("c2s"), ws_peer("s2c")
    records = decode(
        [
            ("c2s", UPGRADE),
            ("s2c", SWITCHING + server.send_data("whole")),
            ("s2c", server.send_data(b"x" * 1000, fin=True)[:300]),
            ("c2s", client.send_data("also whole")),
        ]
    )
    (s,) = of(records, StreamRecord)
    assert (s.stream_end, s.close_cause) == ("connection_closed", "incomplete")
    assert "inside a binary message" in (s.error or "")
    assert codes(records) == {"ws_incomplete_message"}
    assert [m.payload for m in of(records, MessageRecord)] == [b"whole", b"also whole"]
