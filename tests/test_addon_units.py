"""The addon's parts without a proxy: fast, exact, and about the cases live runs rarely hit.

HTTP/2 byte streams come from ``testkit/h2pair.py`` (python-hyper h2 on both sides), mitmproxy
flows from ``mitmproxy.test.tflow``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from communityid import CommunityID, FlowTuple
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import io as mio
from mitmproxy import tcp
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from h2ws.addon.compat import unsupported_mitmproxy
from h2ws.addon.flows import FlowMirror
from h2ws.addon.recorder import LiveDecoders, trim_payload
from h2ws.analysis.core.chunks import Closed, ConnectionInfo, Data, Opened
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import PayloadPolicy
from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    MessageRecord,
    Record,
    StreamRecord,
)
from h2ws.analysis.sources import flowfile
from h2ws.analysis.sources.flowfile import flow_records, is_flow_file
from h2ws.analysis.sources.mitmflows import HttpFlowRecorder
from h2ws.analysis.sources.mitmmodel import connection_info
from h2ws.analysis.sources.pipeline import Pipeline
from h2ws.testkit.h2pair import H2Pair, ws_peer

FULL = DecodeOptions(payload=PayloadPolicy("full"))
REPO = Path(__file__).resolve().parents[1]


def ws_connection(messages: list[bytes], close: bool = True) -> H2Pair:
    """A GET and one RFC 8441 WebSocket: the client's text messages echoed by the server."""
    pair = H2Pair()
    pair.get("/hello")
    sid = pair.open_websocket("/ws/unit")
    client, server = ws_peer("c2s"), ws_peer("s2c")
    for text in messages:
        pair.send("c2s", sid, client.send_data(text.decode(), fin=True))
        pair.send("s2c", sid, server.send_data(text.decode(), fin=True))
    if close:
        pair.send("c2s", sid, client.close(1000, "bye"))
        pair.send("s2c", sid, server.close(1000, "bye"), end_stream=True)
        pair.client.end_stream(sid)
        pair.flush()
    return pair


def relayed_flow(pair: H2Pair) -> tcp.TCPFlow:
    flow = tflow.ttcpflow(messages=[])
    flow.client_conn.tls = False
    flow.client_conn.timestamp_tls_setup = None
    for direction, data, ts in pair.chunks:
        flow.messages.append(tcp.TCPMessage(direction == "c2s", data, ts))
    return flow


# ------------------------------------------------------------------------------ compat


@pytest.mark.parametrize("version", ["12.3.0", "12.3.1", "12.4.2", "12.9"])
def test_supported_versions(version: str) -> None:
    assert unsupported_mitmproxy(version) is None


@pytest.mark.parametrize("version", ["11.1.3", "12.2.9", "13.0.0", "dev"])
def test_unsupported_versions_say_what_to_install(version: str) -> None:
    message = unsupported_mitmproxy(version)
    assert message is not None and "\n" not in message
    assert f"mitmproxy {version} is not supported" in message and "pip install" in message


def test_installed_mitmproxy_is_supported() -> None:
    assert unsupported_mitmproxy() is None


# ------------------------------------------------------------------------------ payloads


def test_trim_payload() -> None:
    def record() -> MessageRecord:
        return MessageRecord(payload=b"x" * 300, length=300)

    assert trim_payload(record(), PayloadPolicy("full")).payload == b"x" * 300
    none = trim_payload(record(), PayloadPolicy("none"))
    assert (none.payload, none.payload_truncated) == (
        None,
        True,
    )  # as a capture says: the message had bytes
    preview = trim_payload(record(), PayloadPolicy("preview", 256))
    assert (len(preview.payload or b""), preview.payload_truncated) == (256, True)
    short = MessageRecord(payload=b"abc", length=3)
    assert trim_payload(short, PayloadPolicy("preview", 256)).payload == b"abc"


_payload_policies = st.one_of(
    st.just(PayloadPolicy("full")),
    st.just(PayloadPolicy("none")),
    st.builds(PayloadPolicy, st.just("preview"), st.integers(0, 40)),
)
_messages = st.builds(
    lambda payload, extra, truncated: MessageRecord(
        payload=payload,
        length=(0 if payload is None else len(payload)) + extra,
        payload_truncated=truncated,
    ),
    st.none() | st.binary(max_size=60),
    st.integers(0, 3),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_messages, max_size=20), _payload_policies)
def test_payloads_trimmed_on_columns_as_trim_payload_trims_rows(
    rows: list[MessageRecord], policy: PayloadPolicy
) -> None:
    """The live writer trims the payload columns when it converts the rows
    (PayloadPolicy.trim_columns); rows with long payloads it trims one by one as they come
    (trim_payload): the two agree."""
    from h2ws.analysis.sinks.writers import _TableBuffer

    buffer = _TableBuffer("messages", policy)
    for row in rows:
        buffer.append(row)
    got = buffer.take_table().to_pylist()
    expected = [trim_payload(r, policy) for r in rows]
    assert [(m["payload"], m["payload_truncated"]) for m in got] == [
        (r.payload, r.payload_truncated) for r in expected
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), _payload_policies)
def test_payload_rule_is_one_for_captures_flow_files_and_live(
    payload: bytes, policy: PayloadPolicy
) -> None:
    """A capture's decoder applies the policy to a whole message (PayloadPolicy.cut); flow
    files and the live recorder trim a row that kept all of it (trim, trim_columns): each
    path writes the same payload and payload_truncated, under every mode (``none``
    included: truncated whenever the message had a byte)."""
    length = len(payload)
    expected = policy.cut(payload, length)
    assert policy.trim(payload, length, False) == expected
    kept, truncated = policy.trim_columns([payload], [length], [False])
    assert (kept[0], truncated[0]) == expected


def test_live_tables_without_rows_get_an_empty_part(tmp_path: Path) -> None:
    """A live run with no diagnostic (the usual case) still leaves a diagnostics table: one
    empty part with the schema, so that DuckDB's read_parquet over the folder works."""
    import duckdb

    from h2ws.addon.recorder import TableWriter
    from h2ws.analysis.records import FrameRecord

    writer = TableWriter(tmp_path, "parquet", PayloadPolicy())
    writer.write([FrameRecord("c", 0)])
    writer.flush()
    writer.close()
    for table in ("connections", "streams", "frames", "messages", "diagnostics"):
        assert len(list((tmp_path / table).glob("*.parquet"))) == 1, table
    glob = str(tmp_path / "diagnostics" / "*.parquet")
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall() == [(0,)]
    glob = str(tmp_path / "frames" / "*.parquet")
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall() == [(1,)]


def test_table_writer_trims_long_payloads_at_once_and_leaves_the_records(
    tmp_path: Path,
) -> None:
    """Payloads up to HOLD_BYTES wait for the conversion, longer ones are trimmed as they
    come (which bounds the rows waiting); either way the records handed in (the mirror's)
    keep the whole payload, and a policy changed meanwhile applies to the rows waiting."""
    from h2ws.addon.recorder import HOLD_BYTES, TableWriter
    from h2ws.analysis.sinks.reader import read_table

    short = MessageRecord(index=0, payload=b"s" * 100, length=100)
    long = MessageRecord(index=1, payload=b"l" * (HOLD_BYTES + 1), length=HOLD_BYTES + 1)
    writer = TableWriter(tmp_path, "parquet", PayloadPolicy("preview", 10))
    for batch in ([short], [long]):
        handed_in = list(batch)
        writer.write(batch)
        assert batch == handed_in
    assert long.payload == b"l" * (HOLD_BYTES + 1)
    pending = writer.sink._buffers["messages"].pending_values
    payload = MessageRecord._fields.index("payload")
    assert pending[payload :: len(MessageRecord._fields)] == [b"s" * 100, b"l" * 10]
    writer.payload = PayloadPolicy("preview", 5)
    writer.close()
    rows = read_table(tmp_path, "messages").to_pylist()
    assert [(r["payload"], r["payload_truncated"]) for r in rows] == [
        (b"s" * 5, True),
        (b"l" * 5, True),
    ]


# ------------------------------------------------------------------------------ decoders


def test_live_decoders_isolate_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = ws_connection([b"one", b"two"])
    decoders = LiveDecoders(FULL)
    for name in ("good", "bad"):
        decoders.open(connection_info(_client(name), _server(), "live", None), None)
    original = ConnectionDecoder.feed

    def feed(self: ConnectionDecoder, direction: str, data: bytes, ts: float) -> list[Record]:
        if self.info.conn_id == "bad":
            raise ValueError("boom")
        return original(self, direction, data, ts)  # type: ignore[arg-type]

    monkeypatch.setattr(ConnectionDecoder, "feed", feed)
    good: list[Record] = []
    bad: list[Record] = []
    for direction, data, ts in pair.chunks:
        good += decoders.feed("good", direction, data, ts, wire=False)  # type: ignore[arg-type]
        bad += decoders.feed("bad", direction, data, ts, wire=False)  # type: ignore[arg-type]
    good += decoders.close("good", pair.ts, "closed")
    bad += decoders.close("bad", pair.ts, "closed")
    (diag,) = [r for r in bad if isinstance(r, DiagnosticRecord)]
    assert diag.code == "decoder_failed" and "boom" in diag.message
    (conn,) = [r for r in bad if isinstance(r, ConnectionRecord)]
    assert conn.end_cause == "error" and "boom" in (conn.error or "")
    assert len(bad) == 2  # nothing more once it failed, and no second connection row
    texts = [r.payload for r in good if isinstance(r, MessageRecord) and r.opcode == "text"]
    assert texts == [b"one", b"one", b"two", b"two"]
    assert len(decoders) == 0


def _client(conn_id: str) -> object:
    client = tflow.tclient_conn()
    client.id = conn_id
    return client


def _server() -> object:
    return tflow.tserver_conn()


# ------------------------------------------------------------------------------ community id


def _legs(sockname: tuple[str, int]) -> tuple[object, object]:
    client = tflow.tclient_conn()
    client.peername, client.sockname = ("10.0.0.1", 50000), sockname
    server = tflow.tserver_conn()
    server.address = server.peername = ("192.0.2.7", 443)
    return client, server


def _cid(a: str, b: str, pa: int, pb: int) -> str:
    return str(CommunityID().calc(FlowTuple.make_tcp(a, b, pa, pb)))


@pytest.mark.parametrize("source", ["live", "flowfile"])
def test_community_id_of_a_proxied_connection_is_the_client_legs(source: str) -> None:
    client, server = _legs(("10.0.0.2", 8080))
    client_leg = _cid("10.0.0.1", "10.0.0.2", 50000, 8080)
    assert client_leg != _cid("10.0.0.1", "192.0.2.7", 50000, 443)  # the old, mixed tuple
    info = connection_info(client, server, source, None)  # type: ignore[arg-type]
    rec = ConnectionDecoder(info).record
    assert rec.community_id == client_leg
    # The address columns still name the client and the upstream server.
    assert (rec.client_addr, rec.client_port, rec.server_addr, rec.server_port) == (
        "10.0.0.1", 50000, "192.0.2.7", 443,
    )  # fmt: skip


def test_community_id_of_hook_recorded_connections_is_the_client_legs() -> None:
    flow = tflow.tflow(resp=True)
    flow.client_conn, flow.server_conn = _legs(("10.0.0.2", 8080))  # type: ignore[assignment]
    recorder = HttpFlowRecorder(FULL, "live")
    out = recorder.request(flow) + recorder.response(flow)
    out += recorder.connection_closed(flow.client_conn, 946681206.0)
    (conn,) = [r for r in out if isinstance(r, ConnectionRecord)]
    assert conn.community_id == _cid("10.0.0.1", "10.0.0.2", 50000, 8080)


@pytest.mark.parametrize("sockname", [("", 0), ("0.0.0.0", 8080), ("::", 8080)])
def test_community_id_is_null_without_the_proxy_address(sockname: tuple[str, int]) -> None:
    client, server = _legs(sockname)
    info = connection_info(client, server, "live", None)  # type: ignore[arg-type]
    assert ConnectionDecoder(info).record.community_id is None


def test_community_id_of_a_capture_is_client_to_server() -> None:
    info = ConnectionInfo("c:0", "10.0.0.1", 50000, "192.0.2.7", 443, proxy_addr="10.0.0.2")
    expected = _cid("10.0.0.1", "192.0.2.7", 50000, 443)
    assert ConnectionDecoder(info).record.community_id == expected


# ------------------------------------------------------------------------------ mirror


def mirror_steps(pair: H2Pair, max_bytes: int = 0) -> tuple[tcp.TCPFlow, list[object]]:
    flow = relayed_flow(pair)
    decoders = LiveDecoders(FULL)
    conn_id = flow.client_conn.id
    decoders.open(connection_info(flow.client_conn, flow.server_conn, "live", None), None)
    mirror = FlowMirror(max_bytes)
    steps: list[object] = []
    for message in flow.messages:
        direction = "c2s" if message.from_client else "s2c"
        records = decoders.feed(conn_id, direction, message.content, message.timestamp, False)
        steps += mirror.hooks_for(flow, conn_id, decoders.open_streams(conn_id), records)
    records = decoders.close(conn_id, pair.ts, "closed")
    steps += mirror.hooks_for(flow, conn_id, (), records)
    steps += mirror.close_connection(conn_id)
    assert len(mirror) == 0
    return flow, steps


def steps_of(steps: list[object], stream_id: int) -> list[object]:
    """The steps of one mirrored stream's flow."""
    return [s for s in steps if s.hook.args()[0].metadata["h2ws"]["stream_id"] == stream_id]  # type: ignore[attr-defined]


def test_mirror_hooks_come_in_mitmproxy_order() -> None:
    _, steps = mirror_steps(ws_connection([b"one", b"two", b"three"]))
    steps = steps_of(steps, 3)
    seen = []
    for step in steps:
        hook = step.apply()  # type: ignore[attr-defined]
        flow = hook.args()[0]
        if hook.name == "requestheaders":
            assert flow.response is None
        if hook.name == "websocket_message":
            seen.append(flow.websocket.messages[-1].content)  # its own message, every time
        if hook.name == "websocket_end":
            ws = flow.websocket
            assert (ws.close_code, ws.close_reason, ws.closed_by_client) == (1000, "bye", True)
            assert flow.error is None
        seen_name = hook.name
    names = [step.hook.name for step in steps]  # type: ignore[attr-defined]
    assert names[:5] == ["requestheaders", "request", "responseheaders", "response",
                         "websocket_start"]  # fmt: skip
    assert names[5:] == ["websocket_message"] * 6 + ["websocket_end"]
    assert seen == [b"one", b"one", b"two", b"two", b"three", b"three"]
    assert seen_name == "websocket_end"
    meta = flow.metadata["h2ws"]
    assert meta["mirror"] is True and meta["stream_id"] == 3 and flow.live is False


def test_mirror_http_requests_in_mitmproxy_order() -> None:
    """The GET of the connection is a read-only HTTP flow too, with mitmproxy's hooks."""
    pair = ws_connection([b"one"])
    pair.get("/empty", body=b"", status=204)
    _, all_steps = mirror_steps(pair)
    flows = {}
    for stream_id in (1, 5):
        steps = steps_of(all_steps, stream_id)
        names = []
        for step in steps:
            hook = step.apply()  # type: ignore[attr-defined]
            flow = hook.args()[0]
            names.append(hook.name)
            if hook.name == "requestheaders":
                assert flow.response is None and flow.request.raw_content is None
            if hook.name == "request":
                assert flow.request.raw_content == b""  # a GET without a body
            if hook.name == "responseheaders":
                assert flow.response.raw_content is None
        assert names == ["requestheaders", "request", "responseheaders", "response"]
        flows[stream_id] = flow
    hello, empty = flows[1], flows[5]
    assert (hello.request.method, hello.request.path, hello.request.http_version) == (
        "GET", "/hello", "HTTP/2.0",
    )  # fmt: skip
    assert hello.response.status_code == 200 and hello.websocket is None
    assert hello.response.raw_content is None  # 5 body bytes went by, not kept
    assert empty.response.status_code == 204 and empty.response.raw_content == b""
    for flow in (hello, empty):
        assert flow.live is False and flow.error is None
        meta = flow.metadata["h2ws"]
        assert meta["mirror"] is True and meta["bodies_kept"] is False
        assert meta["stream_end"] == "end_stream"


def test_mirror_http_request_reset_is_an_error() -> None:
    pair = H2Pair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        sid,
        [(":method", "GET"), (":scheme", "http"), (":authority", "example"), (":path", "/r")],
        end_stream=True,
    )
    pair.flush()
    pair.server.send_headers(sid, [(":status", "200")])
    pair.flush()
    pair.server.reset_stream(sid)
    pair.flush()
    _, steps = mirror_steps(pair)
    hooks = [step.apply() for step in steps]  # type: ignore[attr-defined]
    assert [h.name for h in hooks] == ["requestheaders", "request", "responseheaders", "error"]
    flow = hooks[-1].args()[0]
    assert flow.response.status_code == 200
    assert flow.error.msg == "stream ended mid-response: rst_stream:NO_ERROR"


def test_mirror_keeps_a_bounded_tail() -> None:
    _, steps = mirror_steps(ws_connection([b"a" * 100] * 10), max_bytes=450)
    for step in steps:
        step.apply()  # type: ignore[attr-defined]
    http_flow = steps[-1].hook.args()[0]  # type: ignore[attr-defined]
    assert sum(len(m.content) for m in http_flow.websocket.messages) <= 450
    assert len(http_flow.websocket.messages) == 4
    assert http_flow.metadata["h2ws"]["messages_dropped"] == 16


def test_mirror_marks_a_stream_cut_short() -> None:
    _, steps = mirror_steps(ws_connection([b"one"], close=False))
    hooks = [step.apply() for step in steps]  # type: ignore[attr-defined]
    hook = hooks[-1]
    assert hook.name == "websocket_end"
    flow = hook.args()[0]
    assert flow.websocket.close_code == 1006 and "connection_closed" in flow.error.msg


# ------------------------------------------------------------------------------ HTTP flows


def test_http_flow_recorder_websocket() -> None:
    recorder = HttpFlowRecorder(FULL, "live")
    flow = tflow.twebsocketflow(close_reason="Close Reason")
    messages = flow.websocket.messages
    flow.websocket.messages = []
    out: list[Record] = list(recorder.request(flow))
    out += recorder.response(flow)  # a WebSocket: nothing until it ends
    assert out == []
    out += recorder.websocket_start(flow)
    for message in messages:
        flow.websocket.messages.append(message)
        out += recorder.websocket_message(flow)
    out += recorder.websocket_end(flow)
    out += recorder.connection_closed(flow.client_conn, 946681206.0)
    rows = [r for r in out if isinstance(r, MessageRecord)]
    assert [(r.direction, r.index, r.opcode, r.payload) for r in rows] == [
        ("c2s", 0, "binary", b"hello binary"),
        ("c2s", 1, "text", b"hello text"),
        ("s2c", 0, "text", b"it's me"),
        ("s2c", 1, "close", b"\x03\xe8Close Reason"),
    ]
    assert (rows[-1].close_code, rows[-1].close_reason) == (1000, "Close Reason")
    (stream,) = [r for r in out if isinstance(r, StreamRecord)]
    assert (stream.kind, stream.exchange, stream.status, stream.ws_accepted) == (
        "websocket", 0, 101, True,
    )  # fmt: skip
    assert (stream.close_cause, stream.ws_close_by, stream.messages_c2s) == (
        "ws_close:1000", "s2c", 2,
    )  # fmt: skip
    (conn,) = [r for r in out if isinstance(r, ConnectionRecord)]
    assert (conn.http_version, conn.streams, conn.websockets, conn.end_cause) == (
        "http/1.1", 1, 1, "closed",
    )  # fmt: skip
    assert any(isinstance(r, DiagnosticRecord) and r.code == "hooks_recorded" for r in out)
    assert flow.metadata["h2ws"]["exchange"] == 0


def test_http_flow_recorder_skips_mirrors() -> None:
    recorder = HttpFlowRecorder(FULL, "live")
    flow = tflow.twebsocketflow()
    flow.metadata["h2ws"] = {"mirror": True}
    assert recorder.request(flow) == [] and recorder.websocket_start(flow) == []
    assert recorder.websocket_message(flow) == [] and recorder.websocket_end(flow) == []
    assert recorder.finish(None) == []


def test_http_flow_recorder_plain_exchanges_are_numbered() -> None:
    recorder = HttpFlowRecorder(FULL, "live")
    first, second = tflow.tflow(resp=True), tflow.tflow(resp=True)
    second.client_conn = first.client_conn
    out: list[Record] = []
    for flow in (first, second):
        out += recorder.request(flow)
    out += recorder.response(second)
    out += recorder.response(first)
    streams = sorted((r for r in out if isinstance(r, StreamRecord)), key=lambda r: r.exchange or 0)
    assert [(s.exchange, s.kind, s.status, s.close_cause) for s in streams] == [
        (0, "http", 200, "end_stream"),
        (1, "http", 200, "end_stream"),
    ]


# ------------------------------------------------------------------------------ flow files


def write_flows(path: Path, flows: list[object]) -> None:
    with open(path, "wb") as f:
        writer = mio.FlowWriter(f)
        for flow in flows:
            writer.add(flow)  # type: ignore[arg-type]


def test_is_flow_file(tmp_path: Path) -> None:
    flows = tmp_path / "flows.mitm"
    write_flows(flows, [tflow.ttcpflow()])
    assert is_flow_file(flows)
    assert not is_flow_file(REPO / "samples" / "h2c_hypercorn_ws.pcap")
    (tmp_path / "junk").write_bytes(b"12:not a flow")
    assert not is_flow_file(tmp_path / "junk")
    assert not is_flow_file(tmp_path / "missing")


def test_flow_file_decodes_like_the_chunks(tmp_path: Path) -> None:
    """A relayed connection saved with its chunks gives the rows a direct decode gives."""
    pair = ws_connection([b"one", b"two"])
    flow = relayed_flow(pair)
    flow.metadata["h2ws"] = {"relay": "h2c", "ts_end": pair.ts}
    path = tmp_path / "flows.mitm"
    write_flows(path, [flow, tflow.twebsocketflow()])
    stats: Counter[str] = Counter()
    from_file = list(flow_records(path, FULL, stats))
    assert stats["flows"] == 2

    info = connection_info(flow.client_conn, flow.server_conn, "flowfile", "flows.mitm")
    events = [Opened(info, pair.chunks[0][2])]
    events += [Data(info.conn_id, d, ts, data) for d, data, ts in pair.chunks]  # type: ignore[arg-type]
    pipeline = Pipeline(FULL)
    direct = [r for e in events for r in pipeline.handle(e)]
    direct += pipeline.handle(Closed(info.conn_id, pair.ts, "closed"))
    relayed = [r for r in from_file if getattr(r, "conn_id", None) == info.conn_id]
    assert relayed == direct
    # The stock HTTP/1.1 WebSocket flow of the file is there too, from mitmproxy's model.
    ws_rows = [r for r in from_file if isinstance(r, MessageRecord) and r.stream_id is None]
    assert len(ws_rows) == 4


def test_truncated_flow_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.mitm"
    write_flows(path, [tflow.ttcpflow(), tflow.ttcpflow()])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    rows = list(flow_records(path))
    diags = [r for r in rows if isinstance(r, DiagnosticRecord) and r.layer == "capture"]
    assert diags and diags[-1].code in ("flow_file_truncated", "not_a_flow_file")
    assert sum(isinstance(r, ConnectionRecord) for r in rows) == 1


def test_flow_events_are_chunk_events(tmp_path: Path) -> None:
    path = tmp_path / "flows.mitm"
    write_flows(path, [relayed_flow(ws_connection([b"x"]))])
    events = list(flowfile.flow_events(path))
    assert isinstance(events[0], Opened) and events[0].conn.source == "flowfile"
    assert sum(isinstance(e, Data) for e in events) > 5


def test_websocket_message_opcodes_survive_a_flow_file(tmp_path: Path) -> None:
    flow = tflow.twebsocketflow()
    flow.websocket.messages.append(WebSocketMessage(Opcode.BINARY, False, b"\x00\x01"))
    path = tmp_path / "flows.mitm"
    write_flows(path, [flow])
    rows = [r for r in flow_records(path, FULL) if isinstance(r, MessageRecord)]
    assert [(r.direction, r.opcode) for r in rows if r.opcode != "close"] == [
        ("c2s", "binary"), ("c2s", "text"), ("s2c", "text"), ("s2c", "binary"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------ hook queue


def test_hook_queue_keeps_order_and_sheds_only_messages() -> None:
    import asyncio

    from mitmproxy.proxy.layers.websocket import WebsocketEndHook, WebsocketMessageHook

    from h2ws.addon.flows import HookQueue, Step

    async def scenario() -> tuple[list[str], int, dict[str, object]]:
        release = asyncio.Event()
        seen: list[str] = []

        async def trigger(hook: object) -> None:
            await release.wait()
            seen.append(getattr(hook, "name", "?"))

        flow = tflow.twebsocketflow()
        queue = HookQueue(trigger, max_backlog=3, update_interval=0.01)
        steps = [Step(WebsocketMessageHook(flow), droppable=True) for _ in range(6)]
        queue.put("conn", [*steps, Step(WebsocketEndHook(flow))])
        release.set()
        await queue.wait("conn")
        await asyncio.sleep(0.05)
        return seen, queue.dropped, flow.metadata["h2ws"]

    seen, dropped, meta = asyncio.run(scenario())
    hooks = [name for name in seen if name != "update"]
    assert hooks[-1] == "websocket_end"  # never shed, and last
    assert hooks.count("websocket_message") + dropped == 6 and dropped >= 2
    assert meta["messages_dropped"] == dropped
    # One update right after the end hook, not one per message.
    assert seen.count("update") <= 2 and seen[seen.index("websocket_end") + 1] == "update"


def _addon_chain(calls: list[str]) -> list[object]:
    """Addons that record their websocket_message calls: nested, failing, halting, async."""
    import types

    from mitmproxy import exceptions

    class Rec:
        def __init__(self, name: str, children: list[object] | None = None) -> None:
            self.name = name
            if children is not None:
                self.addons = children

        def websocket_message(self, flow: object) -> None:
            calls.append(f"{self.name}:{type(flow).__name__}")
            if self.name.startswith("fail"):
                raise ValueError(self.name)
            if self.name == "halt":
                raise exceptions.AddonHalt()

    class Async:
        async def websocket_message(self, flow: object) -> None:
            calls.append("async")

    class Silent:
        pass

    module = types.ModuleType("scriptish")
    module.addons = [Rec("in-module")]  # type: ignore[attr-defined]
    module.websocket_message = types.ModuleType("websocket_message")  # type: ignore[attr-defined]
    return [
        Silent(),
        Rec("a", [Rec("a1", [Rec("a11")]), Silent(), Rec("a2")]),
        Rec("fail", [Rec("skipped-after-failure")]),
        Silent(),
        module,
        Async(),
        Rec("b", [Rec("fail-nested"), Rec("skipped")]),
        Rec("c"),
        Rec("halt"),
        Rec("never"),
    ]


def test_trigger_event_calls_what_mitmproxy_calls(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from mitmproxy.addonmanager import AddonManager
    from mitmproxy.proxy.layers.websocket import WebsocketMessageHook

    from h2ws.addon.flows import trigger_event

    hook = WebsocketMessageHook(tflow.twebsocketflow())
    theirs: list[str] = []
    manager = AddonManager.__new__(AddonManager)
    manager.chain = _addon_chain(theirs)
    with caplog.at_level("ERROR"):
        asyncio.run(manager.trigger_event(hook))
        their_log = [(r.name, r.getMessage()) for r in caplog.records]
        caplog.clear()
        ours: list[str] = []
        asyncio.run(trigger_event(_addon_chain(ours), hook))
        our_log = [(r.name, r.getMessage()) for r in caplog.records]
    assert ours == theirs
    assert ours[:3] == ["a:HTTPFlow", "a1:HTTPFlow", "a11:HTTPFlow"] and ours[-1] == "halt:HTTPFlow"
    assert our_log == their_log and len(our_log) == 2


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_table_writer_formats(tmp_path: Path, fmt: str) -> None:
    from h2ws.addon.recorder import TableWriter
    from h2ws.analysis.sinks.reader import read_table

    pair = ws_connection([b"x" * 300])
    decoders = LiveDecoders(FULL)
    info = connection_info(_client("c"), _server(), "live", None)
    writer = TableWriter(tmp_path, fmt, PayloadPolicy("preview", 10))
    writer.write(decoders.open(info, None))
    for direction, data, ts in pair.chunks:
        writer.write(decoders.feed("c", direction, data, ts, wire=False))  # type: ignore[arg-type]
    writer.flush()
    writer.write(decoders.close("c", pair.ts, "closed"))
    writer.close()
    messages = read_table(tmp_path, "messages").to_pylist()
    texts = [m for m in messages if m["opcode"] == "text"]
    assert len(texts) == 2 and all(m["payload_truncated"] for m in texts)
    assert read_table(tmp_path, "connections").num_rows == 1


def test_partitioned_sink_converts_early_and_keeps_every_row_in_order(tmp_path: Path) -> None:
    """Rows converted to Arrow every CONVERT_ROWS (the live addon's path) and rows still
    pending come out as one part per flush, in order, nulls kept."""
    from h2ws.analysis.records import FrameRecord
    from h2ws.analysis.sinks.reader import read_table
    from h2ws.analysis.sinks.writers import CONVERT_ROWS, PartitionedSink

    n = 2 * CONVERT_ROWS + 500
    records = [
        FrameRecord("c", i, 1.5 + i, "c2s", "DATA", "", 1, i, None if i % 3 else i)
        for i in range(n)
    ]
    sink = PartitionedSink(tmp_path)
    sink.write_all(records[: CONVERT_ROWS + 10])
    sink.write_all(records[CONVERT_ROWS + 10 : 2 * CONVERT_ROWS])
    assert sink.counts["frames"] == sink.pending == 2 * CONVERT_ROWS
    sink.flush()
    sink.write_all(records[2 * CONVERT_ROWS :])
    sink.close()
    rows = read_table(tmp_path, "frames").to_pylist()
    assert len(list((tmp_path / "frames").iterdir())) == 2
    assert [r["index"] for r in rows] == list(range(n)) and sink.counts["frames"] == n
    assert [r["data_length"] for r in rows[:4]] == [0, None, None, 3]
    assert rows[n - 1]["ts"].timestamp() == 1.5 + n - 1


def test_partitioned_sink_converts_within_check_calls(tmp_path: Path) -> None:
    """Rows pending conversion stay bounded: once CONVERT_ROWS are pending, they are converted
    within CHECK_CALLS more calls, however few records each call brings."""
    from h2ws.analysis.records import FrameRecord
    from h2ws.analysis.sinks.writers import CHECK_CALLS, CONVERT_ROWS, PartitionedSink

    sink = PartitionedSink(tmp_path)
    frames = sink._buffers["frames"]
    sink.write_all([FrameRecord("c", i) for i in range(CONVERT_ROWS)])
    calls = 1
    while frames.pending and calls <= CHECK_CALLS:
        sink.write_all([])
        calls += 1
    assert frames.pending == 0 and frames.rows == CONVERT_ROWS
    assert calls <= CHECK_CALLS
    sink.close()


def test_a_flush_renames_the_connections_part_last(tmp_path: Path) -> None:
    """A reader (or a kill between two renames) that finds a connection row also finds the
    rows the same flush holds for that connection: the CI run that read ``connections`` as
    soon as it appeared and then killed mitmdump lost the connection's messages."""
    from h2ws.analysis.records import (
        ConnectionRecord,
        DiagnosticRecord,
        FrameRecord,
        MessageRecord,
        StreamRecord,
    )
    from h2ws.analysis.sinks.writers import PartitionedSink

    sink = PartitionedSink(tmp_path)
    sink.write_all(
        [
            ConnectionRecord(conn_id="c"),
            StreamRecord(conn_id="c", stream_id=1),
            FrameRecord("c", 0),
            MessageRecord("c", 1),
            DiagnosticRecord(conn_id="c"),
        ]
    )
    renamed: list[str] = []
    real_replace = os.replace

    def record_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renamed.append(Path(dst).parent.name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("h2ws.analysis.sinks.writers.os.replace", record_rename)
        sink.flush()
    assert sorted(renamed) == sorted(
        ["connections", "streams", "frames", "messages", "diagnostics"]
    )
    assert renamed[-1] == "connections"


def test_table_writer_failure_stops_writing_and_harms_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A part file that cannot be written (full disk) stops the tables, logs one error, and
    raises nothing into the proxy; parts written before it stay."""
    from h2ws.addon.recorder import TableWriter
    from h2ws.analysis.records import FrameRecord
    from h2ws.analysis.sinks.reader import read_table
    from h2ws.analysis.sinks.writers import PartitionedSink

    writer = TableWriter(tmp_path, "parquet", PayloadPolicy())
    writer.write([FrameRecord("c", 0)])
    writer.flush()
    writer.write([FrameRecord("c", 1)])

    def full_disk(self: PartitionedSink, parts: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PartitionedSink, "write_parts", full_disk)
    with caplog.at_level("ERROR"):
        writer.flush()
        writer.write([FrameRecord("c", 2)])
        writer.close()
    assert writer.failed and "No space left" in writer.failed
    assert [r.getMessage() for r in caplog.records if "h2ws" in r.getMessage()] == [
        f"h2ws: writing tables to {tmp_path} failed, stopped: [Errno 28] No space left on device"
    ]
    assert read_table(tmp_path, "frames").column("index").to_pylist() == [0]


# ------------------------------------------------------------------------------ read-only


class _Editor:
    """A user's addon written for mitmproxy's own flows: it edits, drops, kills, intercepts."""

    def request(self, flow: Any) -> None:
        flow.request.headers["x-edit"] = "1"
        flow.request.path = "/elsewhere"
        flow.intercept()

    def responseheaders(self, flow: Any) -> None:
        flow.response.status_code = 500

    def response(self, flow: Any) -> None:
        flow.response.headers["x-edit"] = "1"
        flow.response.content = b"edited"
        flow.kill()

    def websocket_message(self, flow: Any) -> None:
        message = flow.websocket.messages[-1]
        if message.content == b"drop":
            message.drop()
        else:
            message.content = b"edited"


def test_mirror_flows_stay_as_they_crossed_the_wire(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from h2ws.addon.flows import HookQueue, trigger_event

    _, steps = mirror_steps(ws_connection([b"one", b"drop", b"two"]))

    async def scenario() -> None:
        async def trigger(hook: Any) -> None:
            await trigger_event([_Editor()], hook)

        queue = HookQueue(trigger, update_interval=0.01)
        queue.put("conn", steps)  # type: ignore[arg-type]
        await queue.wait("conn")

    with caplog.at_level("WARNING", logger="h2ws.addon.readonly"):
        asyncio.run(scenario())
    flows = {s.hook.args()[0].metadata["h2ws"]["stream_id"]: s.hook.args()[0] for s in steps}  # type: ignore[attr-defined]
    get, ws = flows[1], flows[3]
    for flow in (get, ws):
        assert "x-edit" not in flow.request.headers and "x-edit" not in flow.response.headers
        assert flow.request.path != "/elsewhere" and flow.response.status_code == 200
        assert flow.intercepted is False and flow.error is None
    assert get.response.raw_content is None  # not b"edited": h2ws did not keep the body
    messages = [(m.from_client, m.content, m.dropped) for m in ws.websocket.messages]
    assert messages == [(c, p, False) for p in (b"one", b"drop", b"two") for c in (True, False)]
    warnings = [r.getMessage() for r in caplog.records]
    # one per flow and hook: request, responseheaders, response (GET and WebSocket), and
    # websocket_message once for its six messages
    assert len(warnings) == 7, warnings
    assert sum("websocket_message hook" in w for w in warnings) == 1
    assert any("response hook" in w and "kill()" in w for w in warnings)
    assert any("request hook" in w and "intercept" in w for w in warnings)


@pytest.mark.parametrize("tables", [False, True])
def test_hooks_record_nothing_without_tables(tmp_path: Path, tables: bool) -> None:
    """Without ``h2ws_out`` the HTTP hooks build no records: hashing each message for nobody
    cost intercept mode about 2 % of its CPU on small messages (bench/bench_live.py)."""
    from mitmproxy.test import taddons

    from h2ws.addon.observer import H2wsAddon

    addon = H2wsAddon()
    with taddons.context(addon) as tctx:
        if tables:
            tctx.configure(addon, h2ws_out=str(tmp_path / "t"))
        flow = tflow.twebsocketflow()
        flow.live = False  # a replayed flow: recorded from its hooks when there are tables
        addon.requestheaders(flow)
        addon.websocket_start(flow)
        addon.websocket_message(flow)
        addon.websocket_end(flow)
        assert bool(addon._http) is tables
        addon.done()
