"""Intercept mode's table worker (``addon/legworker.py``): a real child process, fed the chunks
of real HTTP/2 exchanges, writes the same tables as decoding in the proxy's process; the proxy
side never waits for it, whatever the child does (stopped, killed, interrupted)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from wsproto.frame_protocol import Opcode

from h2ws.addon import legworker
from h2ws.addon.legs import LocalLegs
from h2ws.addon.legworker import LegWorker
from h2ws.addon.recorder import LiveDecoders, TableWriter
from h2ws.analysis.core.chunks import ConnectionInfo, TlsInfo
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import PayloadPolicy
from h2ws.testkit.h2pair import H2Pair, ws_peer
from h2ws.testkit.live.compare import TABLES, read_tables

Chunk = tuple[str, bytes, float]
POLICY = PayloadPolicy("full")
OPTIONS = DecodeOptions(payload=POLICY)


def exchange(messages: int = 40, size: int = 3000) -> list[Chunk]:
    """An RFC 8441 WebSocket (echoed messages, masked one way) and a GET on one connection."""
    pair = H2Pair()
    sid = pair.open_websocket()
    pair.get("/index.html")
    client, server = ws_peer("c2s"), ws_peer("s2c")
    for i in range(messages):
        payload = bytes([i % 256]) * (size + i)
        pair.send("c2s", sid, client._serialize_frame(Opcode.BINARY, payload))
        pair.send("s2c", sid, server._serialize_frame(Opcode.BINARY, payload))
    pair.send("c2s", sid, client.close(1000, "bye"))
    pair.send("s2c", sid, server.close(1000, "bye"), end_stream=True)
    return [(d, bytes(b), ts) for d, b, ts in pair.chunks]


def info(conn_id: str, leg: str = "client") -> ConnectionInfo:
    return ConnectionInfo(
        conn_id=conn_id,
        client_addr="127.0.0.1",
        client_port=50000,
        server_addr="127.0.0.1",
        server_port=443,
        source="live",
        leg=leg,
    )


TLS = TlsInfo(conn_id="a", ts=1.0, version="TLSv1.3", alpn="h2", decrypted=True)


def record(legs: Any, chunks: dict[str, list[Chunk]]) -> None:
    for conn_id in chunks:
        legs.open(info(conn_id), TLS if conn_id == "a" else None)
    for i in range(max(len(c) for c in chunks.values())):  # interleaved, as on a proxy
        for conn_id, conn_chunks in chunks.items():
            if i < len(conn_chunks):
                direction, data, ts = conn_chunks[i]
                legs.feed(conn_id, direction, data, ts, conn_id == "a")  # type: ignore[arg-type]
    for conn_id, conn_chunks in chunks.items():
        legs.close(conn_id, conn_chunks[-1][2] + 1, "closed", None)


def in_process(out: Path, chunks: dict[str, list[Chunk]]) -> dict[str, list[dict[str, Any]]]:
    tables = TableWriter(out, "parquet", POLICY)
    record(LocalLegs(LiveDecoders(OPTIONS), tables.write), chunks)
    tables.close()
    return read_tables(out)


def worker(out: Path, **kwargs: Any) -> LegWorker:
    return LegWorker(str(out), "parquet", OPTIONS, POLICY, 1, **kwargs)


def sort_rows(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {t: sorted(repr(sorted(r.items())) for r in tables[t]) for t in TABLES}


def test_the_worker_writes_what_decoding_here_writes(tmp_path: Path) -> None:
    chunks = {"a": exchange(), "b": exchange(25, 70_000)}
    expected = in_process(tmp_path / "here", chunks)
    assert len(expected["messages"]) == 2 * 40 + 2 * 25 + 4
    for conn in expected["connections"]:  # TLS ("a") or not, the leg's bytes are counted once
        for direction in ("c2s", "s2c"):
            sent = sum(len(d) for dd, d, _ in chunks[conn["conn_id"]] if dd == direction)
            assert conn[f"bytes_{direction}"] == sent, (conn["conn_id"], direction)
    legs = worker(tmp_path / "worker")
    # a pipe of 1 MiB: the default 64 KiB cost a write and a wake-up per 64 KiB
    assert fcntl.fcntl(legs._fd, fcntl.F_GETPIPE_SZ) == legworker.PIPE_BYTES
    record(legs, chunks)
    legs.stop()
    assert legs.failed is None
    assert sort_rows(read_tables(tmp_path / "worker")) == sort_rows(expected)


def test_a_stopped_child_costs_the_proxy_no_wait_only_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP the child: the pipe fills, then ``backlog_bytes`` in the proxy, then chunks
    become gaps -- each feed returns at once.  Resumed, the child writes everything it got,
    and the connection says that bytes are missing."""
    legs = worker(tmp_path / "out", backlog_bytes=256 * 1024)
    chunks = exchange(200, 20_000)
    os.kill(legs.pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING):
            start = time.monotonic()
            record(legs, {"a": chunks})
            elapsed = time.monotonic() - start
    finally:
        os.kill(legs.pid, signal.SIGCONT)
    assert elapsed < 2.0, elapsed
    warnings = [r.message for r in caplog.records if "table worker" in r.message]
    assert len(warnings) == 1 and "behind" in warnings[0], warnings
    legs.stop()
    tables = read_tables(tmp_path / "out")
    (conn,) = tables["connections"]
    assert "bytes missing" in (conn["error"] or ""), conn
    sent = sum(len(d) for _, d, _ in chunks)
    assert 256 * 1024 < conn["bytes_c2s"] + conn["bytes_s2c"] < sent


def test_shutdown_waits_for_a_stuck_child_no_longer_than_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legs = worker(tmp_path / "out")
    os.kill(legs.pid, signal.SIGSTOP)
    try:
        record(legs, {"a": exchange(100, 20_000)})  # more than the pipe holds
        assert legs._pending_bytes > 0
        start = time.monotonic()
        with caplog.at_level(logging.WARNING):
            legs.stop(timeout=1)
        assert time.monotonic() - start < 3
    finally:
        os.kill(legs.pid, signal.SIGKILL)
        os.kill(legs.pid, signal.SIGCONT)
        legs._proc.wait(10)
    assert any("did not take the last" in r.message for r in caplog.records), caplog.records


def test_a_killed_child_is_one_line_and_the_proxy_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legs = worker(tmp_path / "out")
    os.kill(legs.pid, signal.SIGKILL)
    legs._proc.wait(5)
    with caplog.at_level(logging.ERROR):
        record(legs, {"a": exchange(100, 10_000)})
        legs.stop(timeout=5)
    errors = [r.message for r in caplog.records if "table worker stopped" in r.message]
    assert len(errors) == 1, errors
    assert legs.failed


def test_the_child_finishes_the_tables_when_the_proxy_dies_or_gets_sigint(
    tmp_path: Path,
) -> None:
    """mitmproxy killed (its end of the pipe closes without ``stop``) after Ctrl-C reached the
    whole process group: the child ignores SIGINT and writes every row it got."""
    legs = worker(tmp_path / "out")
    assert os.getpgid(legs.pid) != os.getpgid(0)  # a terminal's Ctrl-C does not reach it
    record(legs, {"a": exchange()})
    deadline = time.monotonic() + 30
    while not (tmp_path / "out").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the child has read its start message
    os.kill(legs.pid, signal.SIGINT)
    assert legs._write_all(time.monotonic() + 30)
    assert legs._proc.stdin is not None
    legs._proc.stdin.close()  # what the kernel does when the proxy is killed
    assert legs._proc.wait(30) == 0
    tables = read_tables(tmp_path / "out")
    assert len(tables["messages"]) == 2 * 40 + 2
    assert tables["connections"][0]["ts_end"] is not None


@pytest.mark.parametrize("tls", [True, False])
def test_a_legs_bytes_are_counted_once_with_tls_or_without(tmp_path: Path, tls: bool) -> None:
    """``LegRecorder.tap`` on a client leg: TLS does not count the plaintext mitmproxy hands
    over, so the leg's chunks are its bytes (they were 0 on TLS legs)."""
    from mitmproxy import connection

    from h2ws.addon.legs import LegRecorder

    client = connection.Client(
        peername=("127.0.0.1", 40000),
        sockname=("127.0.0.1", 8443),
        timestamp_start=1.0,
        state=connection.ConnectionState.OPEN,
    )
    if tls:
        client.tls = True
        client.timestamp_tls_setup = 1.5
        client.alpn = b"h2"
    tables = TableWriter(tmp_path, "parquet", POLICY)
    recorder = LegRecorder(LocalLegs(LiveDecoders(OPTIONS), tables.write))
    layer = type("Layer", (), {})()
    chunks = exchange(5)
    for direction, data, _ in chunks:
        recorder.tap(layer, client, direction == "c2s", data)
    recorder.closed(client)
    tables.close()
    (conn,) = read_tables(tmp_path)["connections"]
    assert conn["tls"] is tls and conn["leg"] == "client"
    for direction in ("c2s", "s2c"):
        sent = sum(len(d) for dd, d, _ in chunks if dd == direction)
        assert conn[f"bytes_{direction}"] == sent, direction


def test_the_chunks_of_a_moment_go_in_one_write(tmp_path: Path, monkeypatch: Any) -> None:
    """On mitmproxy's event loop the chunks wait ``SEND_DELAY`` and go in one ``writev``:
    a write per chunk woke the child for each, which cost more CPU than the decoding."""
    import asyncio

    writes: list[int] = []
    writev = os.writev

    def counting(fd: int, buffers: list[bytes]) -> int:
        writes.append(len(buffers))
        return writev(fd, buffers)

    monkeypatch.setattr(legworker.os, "writev", counting)
    chunks = exchange(20, 1000)

    async def proxy() -> LegWorker:
        legs = worker(tmp_path / "out")
        legs.open(info("a"), None)
        for direction, data, ts in chunks:  # a chunk per event-loop turn, as a busy proxy
            legs.feed("a", direction, data, ts, False)  # type: ignore[arg-type]
            await asyncio.sleep(0)
        legs.close("a", chunks[-1][2] + 1, "closed", None)
        await asyncio.sleep(legworker.SEND_DELAY * 5)
        return legs

    legs = asyncio.run(proxy())
    assert len(writes) <= 3 and sum(writes) == 2 + 2 * len(chunks) + 1, writes
    legs.stop()
    assert len(read_tables(tmp_path / "out")["messages"]) == 2 * 20 + 2


def test_a_stopped_worker_never_touches_the_closed_pipe(tmp_path: Path) -> None:
    """A change of options stops the worker without waiting (``stop(0)``); a chunk that still
    reaches it (a tap of that moment) must not be written to the closed pipe's file
    descriptor, by then perhaps another file's."""
    import asyncio

    chunks = exchange(5)

    async def proxy() -> LegWorker:
        legs = worker(tmp_path / "out")
        record(legs, {"a": chunks})
        legs.stop(0)
        reused = os.open(tmp_path / "reused", os.O_WRONLY | os.O_CREAT)  # takes the fd number
        try:
            legs.open(info("b"), None)
            legs.feed("b", "c2s", chunks[0][1], chunks[0][2], False)
            await asyncio.sleep(legworker.SEND_DELAY * 5)
        finally:
            os.close(reused)
        return legs

    legs = asyncio.run(proxy())
    assert (tmp_path / "reused").read_bytes() == b""
    assert legs.failed is None
    assert legs._proc.wait(30) == 0
    assert len(read_tables(tmp_path / "out")["messages"]) == 2 * 5 + 2
