"""Issue 13 points 6-8: no credential in any output, non-ASCII HTTP/1.1 values, one tallied
line for snap-length truncation.  Each through ``h2ws extract`` on a capture, as a user runs it.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import hpack
import pyarrow.parquet as pq
import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, SettingsFrame

from h2ws.analysis.core.chunks import ConnectionInfo
from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.h2 import PREFACE
from h2ws.analysis.core.headers import redact_text
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import TABLES, ConnectionRecord, DiagnosticRecord, Record, StreamRecord
from h2ws.analysis.sinks.reader import read_table
from h2ws.analysis.sinks.writers import FORMATS, PartitionedSink, TableSink, escape_text
from tests.test_pcap import ACK, PSH, SYN, ether, ip_tcp, write_pcap

SECRET = "PLANTED-s3cr3t-TOKEN"
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "h2c_hypercorn_ws.pcap"


def tcp_conn(port: int, c2s: list[bytes], s2c: list[bytes], t0: float) -> list[tuple[float, bytes]]:
    """A TCP connection (handshake, then the payloads alternating, client first) as frames."""
    cli, srv = "10.0.0.1", "10.0.0.2"
    cseq, sseq = 1000, 5000
    out: list[tuple[float, bytes]] = []
    t = t0

    def put(ip: bytes) -> None:
        nonlocal t
        t += 0.001
        out.append((t, ether(ip)))

    put(ip_tcp(cli, srv, port, 80, cseq, 0, SYN, b""))
    put(ip_tcp(srv, cli, 80, port, sseq, cseq + 1, SYN | ACK, b""))
    cseq += 1
    sseq += 1
    for i in range(max(len(c2s), len(s2c))):
        if i < len(c2s):
            put(ip_tcp(cli, srv, port, 80, cseq, sseq, ACK | PSH, c2s[i]))
            cseq += len(c2s[i])
        if i < len(s2c):
            put(ip_tcp(srv, cli, 80, port, sseq, cseq, ACK | PSH, s2c[i]))
            sseq += len(s2c[i])
    return out


def planted_capture(path: Path) -> Path:
    """Connections that put a credential where h2ws once leaked it, and some that must decode."""
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    # h11 quotes this malformed line in its error ("illegal header line").
    bad_line = f"GET / HTTP/1.1\r\nhost: a\r\nAuthorization : Bearer {SECRET}\r\n\r\n".encode()
    valid = (
        f"GET /x HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {SECRET}\r\n"
        f"cookie: s={SECRET}\r\nproxy-authorization: Basic {SECRET}\r\n\r\n"
    ).encode()
    # A garbage line after a credential: the error quotes the buffer, credential first.
    garbage = f"GET / HTTP/1.1\r\ncookie: {SECRET}\r\n\x01\x02 junk\r\n\r\n".encode()
    enc = hpack.Encoder()
    block = enc.encode(
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/"),
            ("authorization", f"Bearer {SECRET}"),
        ]
    )
    h = HeadersFrame(1)
    h.data = block
    h.flags.add("END_HEADERS")
    h.flags.add("END_STREAM")
    goaway = GoAwayFrame(0)
    goaway.error_code = 1
    goaway.additional_data = f"bad request authorization: Bearer {SECRET}".encode()
    h2 = PREFACE + SettingsFrame(0).serialize() + h.serialize()
    frames = (
        tcp_conn(40001, [bad_line], [], 1.0)
        + tcp_conn(40002, [valid], [ok], 2.0)
        + tcp_conn(40003, [garbage], [], 3.0)
        + tcp_conn(40004, [h2], [SettingsFrame(0).serialize() + goaway.serialize()], 4.0)
    )
    return write_pcap(path, frames)


def extract(capture: Path, out: Path, fmt: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cli = [sys.executable, "-m", "h2ws.analysis.cli"]
    return subprocess.run(
        [*cli, "extract", str(capture), "-o", str(out), "--format", fmt, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def every_text(out: Path) -> str:
    """Every byte written, and for Parquet every value (its pages may be compressed)."""
    parts = []
    for f in sorted(out.rglob("*")):
        if f.is_file():
            parts.append(f.read_bytes().decode("utf-8", "replace"))
            if f.suffix == ".parquet":
                parts.append(str(pq.read_table(f).to_pylist()))
    return "\n".join(parts)


def test_redact_text_covers_the_shapes_libraries_quote() -> None:
    for text in [
        f"illegal header line: bytearray(b'Authorization : Bearer {SECRET}')",
        f"b'cookie: a={SECRET}\\r\\nhost: x'",
        f"Proxy-Authorization:Basic {SECRET}",
        f"set-cookie = {SECRET}; Path=/",
        f"token was bearer {SECRET}",
    ]:
        assert SECRET not in redact_text(text), text
    assert redact_text("host: example.com") == "host: example.com"


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_credential_in_any_output(tmp_path: Path, fmt: str) -> None:
    capture = planted_capture(tmp_path / "planted.pcap")
    out = tmp_path / "out"
    done = extract(capture, out, fmt)
    assert done.returncode == 0, done.stderr
    written = every_text(out)
    assert "illegal header line" in written  # the diagnostic is there ...
    assert "<redacted" in written
    assert SECRET not in written  # ... and quotes no credential
    assert SECRET not in done.stderr + done.stdout
    assert "http1_protocol_error" in done.stderr  # stderr names the problem


def http1(chunks: list[tuple[str, bytes]]) -> list[Record]:
    decoder = ConnectionDecoder(ConnectionInfo("t:1"), DecodeOptions())
    out: list[Record] = []
    for i, (d, data) in enumerate(chunks):
        out += decoder.feed(d, data, 1.0 + i)  # type: ignore[arg-type]
    return out + decoder.close(9.0, "fin")


@pytest.mark.parametrize("name", ["Host", "Upgrade", "Connection"])
def test_non_ascii_header_values_do_not_end_http1_decoding(name: str) -> None:
    """h11 cannot send a decoded value back (U+FFFD): the stand-in request uses the bytes."""
    value = b"caf\xc3\xa9-\xff\xfe"
    first = b"GET /one HTTP/1.1\r\nHost: a\r\n" + name.encode() + b": " + value + b"\r\n\r\n"
    if name == "Host":
        first = b"GET /one HTTP/1.1\r\nHost: " + value + b"\r\n\r\n"
    second = b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    records = http1([("c2s", first), ("s2c", ok), ("c2s", second), ("s2c", ok)])
    codes = {r.code for r in records if isinstance(r, DiagnosticRecord)}
    assert "http1_internal_error" not in codes, codes
    paths = [r.path for r in records if isinstance(r, StreamRecord)]
    assert paths == ["/one", "/two"]


def test_non_ascii_target_is_one_clear_protocol_error() -> None:
    """RFC 9112 request-targets are ASCII; h11 refuses the line.  That is a protocol error with
    a clear diagnostic and a connection row -- not an internal error, not a traceback."""
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    records = http1([("c2s", b"GET /x\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n"), ("s2c", ok)])
    codes = [r.code for r in records if isinstance(r, DiagnosticRecord)]
    assert codes == ["http1_protocol_error"]
    assert any(getattr(r, "error", None) for r in records)  # the connection row says why


def snapped(src: Path, dst: Path, snaplen: int) -> int:
    """The sample capture, every packet cut to ``snaplen`` bytes as tcpdump -s would."""
    data = src.read_bytes()
    out = bytearray(data[:24])
    struct.pack_into("<I", out, 16, snaplen)
    pos, n = 24, 0
    while pos + 16 <= len(data):
        sec, frac, caplen, wire = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + caplen][:snaplen]
        out += struct.pack("<IIII", sec, frac, len(frame), wire) + frame
        pos += 16 + caplen
        n += 1
    dst.write_bytes(bytes(out))
    return n


def test_snap_length_truncation_is_one_tallied_line(tmp_path: Path) -> None:
    capture = tmp_path / "snapped.pcap"
    packets = snapped(SAMPLE, capture, 40)  # shorter than Ethernet + IPv4 + TCP
    done = extract(capture, tmp_path / "out", "csv")
    lines = [line for line in done.stderr.splitlines() if "truncated_packet" in line]
    assert len(lines) == 1, done.stderr
    assert f"{packets} x truncated_packet" in lines[0], lines


# Points 3 and 5: recording never stops on a value a table cannot hold.
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("partitioned", [False, True], ids=["extract", "live"])
def test_recording_survives_non_utf8_and_out_of_range_timestamps(
    tmp_path: Path, fmt: str, partitioned: bool
) -> None:
    """A path carrying bytes that were not UTF-8 (as mitmproxy gives it: surrogateescape) and a
    timestamp past year 9999: escaped / null with a diagnostic, and every later row written;
    no ``.partial`` left behind."""
    rows: list[Record] = [
        StreamRecord(conn_id="c:1", path="/x\udcff\udcfe"),
        ConnectionRecord(conn_id="c:1", ts_start=1e300, ts_end=float("inf")),
        ConnectionRecord(conn_id="c:2", ts_start=5.0),
        StreamRecord(conn_id="c:2", path="/later"),
    ]
    out = tmp_path / "out"
    if partitioned:
        live = PartitionedSink(out, fmt)
        live.write_all(rows[:2])
        live.flush()
        live.write_all(rows[2:])
        live.close()
    else:
        with TableSink(out, fmt) as sink:
            sink.write_all(rows)
    assert not list(out.rglob("*.partial"))
    tables = {t: read_table(out, t).to_pylist() for t in TABLES}
    assert [s["path"] for s in tables["streams"]] == ["/x\\xff\\xfe", "/later"]
    conns = {c["conn_id"]: c for c in tables["connections"]}
    assert conns["c:1"]["ts_start"] is None and conns["c:1"]["ts_end"] is None
    assert conns["c:2"]["ts_start"] is not None
    codes = [d["code"] for d in tables["diagnostics"]]
    assert codes.count("timestamp_out_of_range") == 2, codes


def test_escape_text_is_the_bytes_as_backslash_x() -> None:
    assert escape_text(b"/a\xff\xc3\xa9".decode("utf-8", "surrogateescape")) == "/a\\xff\u00e9"


# Point 4: damaged flow files.
def write_flow_file(path: Path, damage: int | None = None) -> Path:
    """Three HTTP flows (mitmproxy's own test flows), the ``damage``-th with a key its state
    loading needs removed (``KeyError`` inside mitmproxy), written as ``mitmdump -w`` does."""
    from mitmproxy.io import tnetstring
    from mitmproxy.test import tflow

    with path.open("wb") as f:
        for i in range(3):
            flow = tflow.tflow(resp=True)
            flow.request.path = f"/flow{i}"
            state = flow.get_state()
            if i == damage:
                del state["request"]["host"]
            tnetstring.dump(state, f)
    return path


def test_damaged_flow_is_one_line_and_a_diagnostic(tmp_path: Path) -> None:
    flows = write_flow_file(tmp_path / "flows.mitm", damage=1)
    out = tmp_path / "out"
    done = extract(flows, out, "jsonl")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "flow_unreadable" in line]
    assert len(lines) == 1 and "flows.mitm" in lines[0], done.stderr
    assert [s["path"] for s in read_table(out, "streams").to_pylist()] == ["/flow0", "/flow2"]
    codes = [d["code"] for d in read_table(out, "diagnostics").to_pylist()]
    assert "flow_unreadable" in codes
    assert not list(out.rglob("*.partial"))


def test_mutated_flow_files_never_raise(tmp_path: Path) -> None:
    """Byte mutations of a valid flow file (fixed seed): every one reads to rows and
    diagnostics, none raises."""
    import random

    from h2ws.analysis.sources.flowfile import flow_records

    good = write_flow_file(tmp_path / "good.mitm").read_bytes()
    rng = random.Random(13)
    bad = tmp_path / "bad.mitm"
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        bad.write_bytes(bytes(data))
        list(flow_records(bad))


def test_addon_header_limit_options_reach_the_decoder(tmp_path: Path) -> None:
    """The h2ws_max_header_* options of the addon are the limits its decoding uses."""
    from mitmproxy.test import taddons

    from h2ws.addon.observer import H2wsAddon

    addon = H2wsAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, h2ws_max_header_block_bytes=1000, h2ws_max_hpack_table_bytes=2048)
        limits = addon.decoders.options.headers
        assert (limits.max_block_bytes, limits.max_table_bytes) == (1000, 2048)
        with pytest.raises(Exception, match="must be positive"):
            tctx.configure(addon, h2ws_max_continuations=0)
