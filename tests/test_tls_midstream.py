"""TLS connections whose handshake was not captured (issue #14, TLS part): the real TLS 1.3
samples cut after the handshake -- between records, inside a record, after N application
records -- decrypt, per direction, exactly to the whole capture's plaintext from the first record
the cut capture holds whole.  Plus: key logs without the connection, TLS 1.2, a sequence number
beyond the window, key updates, cleartext cut mid-connection, and the AES-GCM fast search
against trying every sequence number.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ws.analysis.core.chunks import ChunkEvent, Data, Gap, TlsInfo
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.records import DiagnosticRecord, Direction
from h2ws.analysis.sources.pcap import CaptureReader
from h2ws.analysis.sources.tcp import TcpReassembler, TcpSegment
from h2ws.analysis.sources.tls import KeyLog, TlsLayer
from h2ws.analysis.sources.tls.midstream import (
    MIDSTREAM_GCM_WINDOW,
    MIDSTREAM_SEQ_WINDOW,
    NEED,
    NOT_FOUND,
    find_boundary,
    gcm_find_seq,
    slow_find_seq,
)
from h2ws.testkit.tls_peers import synth

from .paths import SAMPLE_CAPTURES
from .requires import missing_sample

pytestmark = pytest.mark.timeout(240)

SAMPLES = ["tls_node_ws", "ff153_hypercorn_pmd"]  # TLS 1.3: AES-256-GCM and AES-128-GCM


def sample(name: str) -> tuple[list[TcpSegment], KeyLog, Path]:
    capture, keys = SAMPLE_CAPTURES / f"{name}.pcapng", SAMPLE_CAPTURES / f"{name}.keys"
    if not capture.exists():
        capture = capture.with_suffix(".pcap")
    if not capture.exists() or not keys.exists():
        missing_sample(f"{capture} is not there")
    segments = [s for s in CaptureReader(capture) if isinstance(s, TcpSegment)]
    return segments, KeyLog(keys.read_bytes()), keys


@dataclass
class Out:
    events: list[ChunkEvent]
    plain: dict[str, bytes]  # by direction, of the one TLS connection
    diags: list[DiagnosticRecord]
    infos: list[TlsInfo]

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diags]


def tcp_events(segments: list[TcpSegment]) -> list[ChunkEvent]:
    tcp = TcpReassembler(capture="cut")
    out: list[ChunkEvent] = []
    for s in segments:
        out.extend(tcp.feed(s))
    out.extend(tcp.finish())
    return out


def tls(events: list[ChunkEvent], keylog: KeyLog) -> Out:
    layer = TlsLayer(keylog)
    out: list[ChunkEvent] = []
    for e in events:
        out.extend(layer.feed(e))
    out.extend(layer.finish())
    plain: dict[str, bytearray] = defaultdict(bytearray)
    for e in out:
        if isinstance(e, Data):
            plain[e.direction] += e.data
    return Out(
        out,
        {d: bytes(plain[d]) for d in ("c2s", "s2c")},
        [e for e in out if isinstance(e, DiagnosticRecord) and e.layer == "tls"],
        [e for e in out if isinstance(e, TlsInfo)],
    )


def tls_connection(segments: list[TcpSegment]) -> list[TcpSegment]:
    """The segments of the sample's one connection that carries TLS application data."""
    by_port: dict[int, list[TcpSegment]] = defaultdict(list)
    for s in segments:
        by_port[min(s.sport, s.dport) * 65536 + max(s.sport, s.dport)].append(s)
    return max(by_port.values(), key=lambda segs: sum(len(s.payload) for s in segs))


def wire(events: list[ChunkEvent], direction: str) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data) and e.direction == direction)


def boundaries(stream: bytes) -> list[int]:
    out, pos = [], 0
    while pos + 5 <= len(stream):
        out.append(pos)
        pos += 5 + int.from_bytes(stream[pos + 3 : pos + 5])
    return out


def expected_suffix(full: list[ChunkEvent], keylog: KeyLog, direction: str, dropped: int) -> bytes:
    """The whole capture's plaintext of ``direction`` from the first record that starts at or
    after byte ``dropped`` of its TCP stream: the whole capture decrypted with that direction
    stopped at that record, subtracted from the whole capture's plaintext."""
    stream = wire(full, direction)
    start = next((b for b in boundaries(stream) if b >= dropped), len(stream))
    kept: list[ChunkEvent] = []
    seen = 0
    for e in full:
        if isinstance(e, Data) and e.direction == direction:
            if seen >= start:
                continue
            e = Data(e.conn_id, e.direction, e.ts, e.data[: start - seen])
            seen += len(e.data)
        kept.append(e)
    whole = tls(full, keylog).plain[direction]
    prefix = tls(kept, keylog).plain[direction]
    assert whole.startswith(prefix)
    return whole[len(prefix) :]


def cut(segments: list[TcpSegment], index: int, trim: int) -> list[TcpSegment]:
    """The segments from ``index`` on (the TCP handshake and the TLS handshake dropped), the
    first one with payload starting ``trim`` bytes later (inside a record)."""
    rest = list(segments[index:])
    for i, s in enumerate(rest):
        if s.payload and trim:
            trim = min(trim, len(s.payload) - 1)
            rest[i] = s._replace(seq=(s.seq + trim) & 0xFFFFFFFF, payload=s.payload[trim:])
            break
    return rest


def after_handshake(segments: list[TcpSegment], keylog: KeyLog) -> int:
    """Index of the first segment after the client's first application data (and so after
    both Finished messages)."""
    full = tcp_events(segments)
    first = next(
        e for e in tls(full, keylog).events if isinstance(e, Data) and e.direction == "c2s"
    )
    return next(i for i, s in enumerate(segments) if s.ts > first.ts)


def check_cut(segments: list[TcpSegment], keylog: KeyLog, index: int, trim: int) -> Out:
    full = tcp_events(segments)
    part = tcp_events(cut(segments, index, trim))
    assert any(isinstance(e, DiagnosticRecord) and e.code == "midstream_start" for e in part)
    res = tls(part, keylog)
    assert "tls_internal_error" not in res.codes
    wants = {}
    for direction in ("c2s", "s2c"):
        dropped = len(wire(full, direction)) - len(wire(part, direction))
        wants[direction] = expected_suffix(full, keylog, direction, dropped)
    if not any(wants.values()):
        return res  # nothing whole left to decrypt (nor, maybe, to tell it is TLS)
    for direction, want in wants.items():
        assert res.plain[direction] == want, (direction, index, trim)
    assert [i.decrypted for i in res.infos] == [True], res.diags
    assert res.infos[0].version == "TLS 1.3"
    found = {d.message.split(":")[0] for d in res.diags if d.code == "tls_midstream_decrypted"}
    assert {d for d in wants if wants[d]} <= found, res.diags
    for d in res.diags:  # a warning only for a direction left with no whole record
        assert d.severity == "info" or (d.code == "tls_midstream" and not wants[d.message[:3]])
    return res


def no_secret(res: Out, keys: Path) -> None:
    text = " ".join(str(e) for e in res.events if not isinstance(e, Data)).lower()
    for line in keys.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            assert parts[2].lower() not in text, "a secret in an output"


# ---------------------------------------------------------------------- the real captures


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize(
    ("later", "trim"),
    [(0, 0), (0, 1), (0, 7), (1, 3), (3, 0), (3, 100), (6, 0), (10, 11)],
)
def test_cut_real_capture(name: str, later: int, trim: int) -> None:
    """Cut ``later`` segments after the handshake, ``trim`` bytes into a record."""
    segments, keylog, keys = sample(name)
    conn = tls_connection(segments)
    index = after_handshake(conn, keylog) + later
    if index >= len(conn):
        pytest.skip("capture too short for this cut")
    res = check_cut(conn, keylog, index, trim)
    assert res.plain["c2s"] or res.plain["s2c"]
    no_secret(res, keys)


@pytest.mark.parametrize("name", SAMPLES)
def test_cut_inside_the_handshake(name: str) -> None:
    """Cut before every segment of the TLS handshake: with the ClientHello captured it decodes
    as usual; without it, the server's cleartext ServerHello (or ChangeCipherSpec) and its
    encrypted handshake records come before its application data, and both directions still
    decrypt exactly from their first whole application record (MIDSTREAM_HANDSHAKE_RECORDS).
    A server that sends no ChangeCipherSpec: test_handshake_cut_real_capture."""
    segments, keylog, keys = sample(name)
    conn = tls_connection(segments)
    full = tcp_events(conn)
    whole = tls(full, keylog).plain
    midstream = 0
    for index in range(1, after_handshake(conn, keylog)):
        for trim in (0, 3) if name == "tls_node_ws" else (0,):
            part = tcp_events(cut(conn, index, trim))
            tcp_mid = any(
                isinstance(e, DiagnosticRecord) and e.code == "midstream_start" for e in part
            )
            if trim and not tcp_mid:
                continue  # a capture that holds the SYN-ACK holds the first payload byte too
            if wire(part, "c2s") != wire(full, "c2s"):  # the ClientHello was cut
                res = check_cut(conn, keylog, index, trim)
                midstream += 1
            else:  # only TCP's handshake was cut, the ClientHello is there
                res = tls(part, keylog)
                assert res.plain == whole, (index, trim)
            no_secret(res, keys)
    assert midstream, "no cut inside the TLS handshake"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_cut_anywhere_after_the_handshake(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(SAMPLES))
    segments, keylog, _ = sample(name)
    conn = tls_connection(segments)
    first = after_handshake(conn, keylog)
    index = data.draw(st.integers(first, len(conn) - 1))
    check_cut(conn, keylog, index, data.draw(st.integers(0, 300)))


def test_key_log_without_the_connection() -> None:
    """The other sample's key log: no secret opens it -- tls_midstream with the reason."""
    segments, keylog, _ = sample("tls_node_ws")
    _, other, other_keys = sample("ff153_hypercorn_pmd")
    conn = tls_connection(segments)
    part = tcp_events(cut(conn, after_handshake(conn, keylog) + 2, 5))
    res = tls(part, other)
    assert res.codes == ["tls_midstream"] and [i.decrypted for i in res.infos] == [False]
    assert "no key log secret opens" in res.diags[0].message
    assert "c2s:" in res.diags[0].message and "s2c:" in res.diags[0].message
    assert not any(res.plain.values())
    no_secret(res, other_keys)
    res = tls(part, KeyLog())
    assert res.codes == ["tls_midstream"] and "no SERVER_TRAFFIC_SECRET_0" in res.diags[0].message


def test_cli_on_a_cut_pcapng(tmp_path: Path) -> None:
    """`h2ws extract` on a pcapng file whose first packets were dropped: no traceback, the
    connection decrypted, and no secret in the tables or the log."""
    capture, keys = SAMPLE_CAPTURES / "tls_node_ws.pcapng", SAMPLE_CAPTURES / "tls_node_ws.keys"
    if not capture.exists():
        missing_sample(f"{capture} is not there")
    data = capture.read_bytes()
    blocks, pos, packets = [], 0, 0
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if btype == 6:  # Enhanced Packet Block
            packets += 1
        if btype != 6 or packets > 14:  # the TCP and TLS handshakes and more dropped
            blocks.append(data[pos : pos + blen])
        pos += blen
    cut_file = tmp_path / "cut.pcapng"
    cut_file.write_bytes(b"".join(blocks))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "h2ws.analysis.cli", "extract", str(cut_file), "-o", str(out),
         "--keylog", str(keys)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    import pyarrow.parquet as pq

    diags = pq.read_table(out / "diagnostics.parquet").to_pylist()
    codes = {d["code"] for d in diags}
    assert "tls_midstream_decrypted" in codes and "tls_midstream" not in codes, codes
    text = str(diags) + proc.stdout + proc.stderr
    text += str(pq.read_table(out / "connections.parquet").to_pylist())
    for line in keys.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            assert parts[2].lower() not in text.lower()


def test_cleartext_cut_mid_connection_is_untouched() -> None:
    """h2c captured from the middle on: not taken for TLS, every event handed through."""
    capture = SAMPLE_CAPTURES / "h2c_hypercorn_ws.pcap"
    if not capture.exists():
        missing_sample(f"{capture} is not there")
    segments = [s for s in CaptureReader(capture) if isinstance(s, TcpSegment)]
    for index in (5, len(segments) // 3, len(segments) // 2):
        part = tcp_events(cut(segments, index, 3))
        res = tls(part, KeyLog())
        assert not res.infos and not res.diags
        assert [e for e in res.events if isinstance(e, Data)] == [
            e for e in part if isinstance(e, Data)
        ]


# ---------------------------------------------------------------- synthetic conversations

MID = diagnostic("t:0", "tcp", "warning", "midstream_start", "handshake not captured", ts=0.0)


def many_records(
    count: int, suite: int = 0x1301, seq: int = 2, extra: int = 0
) -> tuple[synth.Conversation, list[bytes]]:
    """A TLS 1.3 conversation whose server sends ``count`` small records after the handshake,
    one flight each (the handshake flights first)."""
    conv = synth.tls13(suite, key_update=False, big=0)
    keys = {
        line.split()[0]: bytes.fromhex(line.split()[2].decode())
        for line in conv.keylog.splitlines()
        if line.count(b" ") == 2 and not line.startswith(b"#")
    }
    s0 = synth.Sealer13(synth.SUITES[suite], keys[b"SERVER_TRAFFIC_SECRET_0"])
    s0.seq = seq  # 2: the handshake's 0.5-RTT record and the session ticket came first
    records = [s0.seal(23, b"record %d" % i) for i in range(count + extra)]
    return conv, records


def server_records(conv: synth.Conversation, records: list[bytes], first: int) -> list[ChunkEvent]:
    head = conv.events(close=False)[:1]
    t = synth.T0 + 1
    body: list[ChunkEvent] = [
        Data("t:0", "s2c", t + i * 1e-6, r) for i, r in enumerate(records[first:])
    ]
    return [*head, MID, *body]


def test_sequence_number_window() -> None:
    """ChaCha20-Poly1305: the last record inside the window decrypts; one beyond it is a
    documented diagnostic."""
    conv, records = many_records(MIDSTREAM_SEQ_WINDOW + 2, 0x1303)
    inside = MIDSTREAM_SEQ_WINDOW - 1 - 2  # sequence number MIDSTREAM_SEQ_WINDOW - 1
    res = tls(server_records(conv, records, inside), KeyLog(conv.keylog))
    assert res.plain["s2c"].startswith(b"record %d" % inside)
    assert f"sequence number {MIDSTREAM_SEQ_WINDOW - 1} " in res.diags[0].message
    res = tls(server_records(conv, records, inside + 1), KeyLog(conv.keylog))
    assert res.codes == ["tls_midstream"] and not res.plain["s2c"]
    assert f"0-{MIDSTREAM_SEQ_WINDOW - 1} for ChaCha20-Poly1305" in res.diags[0].message


@pytest.mark.parametrize("suite", [0x1301, 0x1302])
def test_gcm_sequence_number_window(suite: int) -> None:
    """AES-GCM: any sequence number below 2**32 is found at the same cost; 2**32 is not."""
    for seq, found in [(MIDSTREAM_GCM_WINDOW - 1, True), (MIDSTREAM_GCM_WINDOW, False)]:
        conv, records = many_records(0, suite, seq=seq, extra=3)
        res = tls(server_records(conv, records, 0), KeyLog(conv.keylog))
        if found:
            assert res.plain["s2c"] == b"record 0record 1record 2"
            assert f"sequence number {seq} " in res.diags[0].message
        else:
            assert res.codes == ["tls_midstream"] and not res.plain["s2c"]
            assert f"0-{MIDSTREAM_GCM_WINDOW - 1} for AES-GCM" in res.diags[0].message


@pytest.mark.parametrize("suite", [0x1301, 0x1302, 0x1303])
@pytest.mark.parametrize(("flight", "c2s_gen", "s2c_gen"), [(5, 1, 0), (9, 2, 1)])
def test_suites_key_updates_and_many_candidates(
    suite: int, flight: int, c2s_gen: int, s2c_gen: int
) -> None:
    """Each suite h2ws tries; cuts after key updates (synth.tls13's flights: 5 is the client's
    first record after its KeyUpdate, 9 after its second); a key log with 400 other secrets
    (10 for ChaCha20, whose search has a budget) before the right ones."""
    conv = synth.tls13(suite, key_update=True, big=100)
    size = 48 if suite == 0x1302 else 32
    noise = b"".join(
        f"{label} {os.urandom(32).hex()} {os.urandom(size).hex()}\n".encode()
        for _ in range(5 if suite == 0x1303 else 200)  # ChaCha20: MIDSTREAM_SLOW_BYTES
        for label in ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")
    )
    events = conv.events()  # Opened, then one Data per flight
    res = tls([events[0], MID, *events[flight + 1 :]], KeyLog(noise + conv.keylog))
    assert [i.decrypted for i in res.infos] == [True]
    assert conv.plain["c2s"].endswith(res.plain["c2s"]) and res.plain["c2s"]
    found = {d.message.split(":")[0]: d.message for d in res.diags if d.severity == "info"}
    assert f"generation {c2s_gen} on" in found["c2s"]
    assert f"generation {s2c_gen} on" in found["s2c"]
    assert res.codes.count("tls_alert") == 2  # close_notify both ways, decrypted


def test_tls12_stays_midstream_with_the_reason() -> None:
    conv = synth.tls12(0xC02F)
    events = conv.events()
    res = tls([events[0], MID, *events[5:]], KeyLog(conv.keylog))
    assert res.codes == ["tls_midstream"] and not any(res.plain.values())
    assert "look like TLS 1.2" in res.diags[0].message
    assert "ServerHello's random" in res.diags[0].message


def test_find_boundary() -> None:
    rec = b"\x17\x03\x03\x00\x20" + bytes(32)
    noise = bytes(range(250, 256)) * 7  # no "\x03\x03"
    assert find_boundary(noise + rec + rec, False) == len(noise)
    assert find_boundary(noise + rec, False) == NEED  # one header: wait for the next
    assert find_boundary(noise + rec, True) == len(noise)  # ends exactly at a record's end
    assert find_boundary(noise + rec[:-1], True) == NOT_FOUND
    assert find_boundary(rec[:9], False) == 0  # a header at the start is taken
    assert find_boundary(os.urandom(20_000).replace(b"\x03\x03", b"\x03\x04"), False) == NOT_FOUND


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([16, 32]),
    st.one_of(
        st.integers(0, 2 * MIDSTREAM_SEQ_WINDOW),
        st.integers(MIDSTREAM_GCM_WINDOW - 3, MIDSTREAM_GCM_WINDOW + 3),
    ),
    st.binary(min_size=0, max_size=600),
    st.binary(min_size=12, max_size=12),
)
def test_gcm_fast_search_agrees_with_trying_every_number(
    key_len: int, seq: int, plain: bytes, iv: bytes
) -> None:
    key = os.urandom(key_len)
    header = b"\x17\x03\x03" + (len(plain) + 16).to_bytes(2)
    body = AESGCM(key).encrypt((int.from_bytes(iv) ^ seq).to_bytes(12), plain, header)
    slow, _ = slow_find_seq(AESGCM(key), iv, header, body, MIDSTREAM_SEQ_WINDOW)
    fast = gcm_find_seq(key, iv, header, body)
    assert slow == (seq if seq < MIDSTREAM_SEQ_WINDOW else None)
    if seq < MIDSTREAM_SEQ_WINDOW:
        assert fast == slow
    assert fast == (seq if seq < MIDSTREAM_GCM_WINDOW else None)
    assert gcm_find_seq(os.urandom(key_len), iv, header, body) is None  # another key


def test_client_guessed_wrong() -> None:
    """The TCP layer took the server for the client: each direction opens with the other
    side's secret, and the diagnostic says so."""
    conv = synth.tls13(0x1301, key_update=False, big=100)
    events = conv.events()
    swap: dict[str, Direction] = {"c2s": "s2c", "s2c": "c2s"}
    flipped = [
        Data(e.conn_id, swap[e.direction], e.ts, e.data) if isinstance(e, Data) else e
        for e in events[4:]
    ]
    res = tls([events[0], MID, *flipped], KeyLog(conv.keylog))
    assert res.plain["c2s"] and conv.plain["s2c"].endswith(res.plain["c2s"])
    assert res.plain["s2c"] and conv.plain["c2s"].endswith(res.plain["s2c"])
    found = [d.message for d in res.diags if d.code == "tls_midstream_decrypted"]
    assert len(found) == 2 and all("took the wrong client" in m for m in found)


@pytest.mark.parametrize(
    "blob",
    [
        os.urandom(40_000),  # no header at all
        (b"\x16\x03\x03\x00\x00" * 3 + os.urandom(3000)) * 12,  # headers that chain a little
        b"\x17\x03\x03\x00\x05hello" * 4000,  # records, no key
    ],
    ids=["noise", "fake-headers", "records"],
)
def test_one_byte_chunks_of_a_midstream_connection_stay_linear(blob: bytes) -> None:
    """Deciding whether a connection seen from its middle is TLS, and finding a boundary, do
    not rescan for every byte: 40 KB in 1-byte chunks take well under a second (bound: 20 s)."""
    events: list[ChunkEvent] = [
        *synth.Conversation().events(close=False)[:1],
        MID,
        *(Data("t:0", "c2s", synth.T0, blob[i : i + 1]) for i in range(1, len(blob))),
    ]
    t0 = time.perf_counter()
    res = tls(events, KeyLog())
    assert time.perf_counter() - t0 < 20
    assert "tls_internal_error" not in res.codes


# ------------------------------------------- real captures cut inside the handshake (TLS 1.2)

#: Recorded by ``python -m h2ws.testkit.tls_peers.record_midtls``: Python ssl -> hypercorn, one
#: connection (a GET, then an RFC 8441 WebSocket with 8 messages each way and the close).
HANDSHAKE_SAMPLES = ["py_hypercorn_t12_gcm", "py_hypercorn_t12_chacha", "py_hypercorn_t13_nocss"]


def decode_messages(
    events: list[ChunkEvent], midstream: bool
) -> dict[tuple[int | None, str], list[tuple[str, int, str]]]:
    """The WebSocket messages (opcode, length, sha256, in order) the decoder makes of the TLS
    layer's plaintext."""
    from dataclasses import replace

    from h2ws.analysis.core.chunks import Opened
    from h2ws.analysis.core.decoder import ConnectionDecoder
    from h2ws.analysis.core.options import DecodeOptions, PayloadPolicy
    from h2ws.analysis.records import MessageRecord

    info = next(e.conn for e in events if isinstance(e, Opened))
    decoder = ConnectionDecoder(
        replace(info, midstream=midstream), DecodeOptions(payload=PayloadPolicy(mode="full"))
    )
    records = []
    for e in events:
        if isinstance(e, Data):
            records += decoder.feed(e.direction, e.data, e.ts)
    records += decoder.close(None, "capture_ended")
    out: dict[tuple[int | None, str], list[tuple[str, int, str]]] = {}
    for m in records:
        if isinstance(m, MessageRecord):
            out.setdefault((m.stream_id, m.direction), []).append((m.opcode, m.length, m.sha256))
    return out


@pytest.mark.parametrize("name", HANDSHAKE_SAMPLES)
def test_handshake_cut_real_capture(name: str) -> None:
    """Cut before every segment up to the first application data, and 3 / 60 bytes into it:
    with the ServerHello whole in the capture (cut inside the ClientHello, or between it and the
    ServerHello) both directions decrypt exactly -- TLS 1.2 from the CLIENT_RANDOM entries,
    TLS 1.3 without any ChangeCipherSpec from the handshake secrets -- and every WebSocket
    message of the whole capture decodes (opcode, length, sha256, order).  TLS 1.2 cut after
    the ServerHello's first byte stays tls_midstream with its reason."""
    segments, keylog, keys = sample(name)
    conn = tls_connection(segments)
    full = tcp_events(conn)
    whole = tls(full, keylog)
    whole_messages = decode_messages(whole.events, False)
    assert sum(map(len, whole_messages.values())) == 18
    tls12 = "t12" in name
    seen = {"decrypted": 0, "midstream": 0, "handshake secret": 0}
    for index in range(1, after_handshake(conn, keylog) + 1):
        for trim in (0, 3, 60):
            part = tcp_events(cut(conn, index, trim))
            tcp_mid = any(
                isinstance(e, DiagnosticRecord) and e.code == "midstream_start" for e in part
            )
            if trim and not tcp_mid:
                continue  # a capture that holds the SYN-ACK holds the first payload byte too
            res = tls(part, keylog)
            assert "tls_internal_error" not in res.codes
            no_secret(res, keys)
            # the TCP layer may take the server for the client (no SYN): map the directions
            server = "s2c" if wire(full, "s2c").endswith(wire(part, "s2c")) else "c2s"
            swap = {"s2c": server, "c2s": "c2s" if server == "s2c" else "s2c"}
            if wire(part, swap["c2s"]) == wire(full, "c2s"):  # the ClientHello is there
                assert res.plain == whole.plain, (index, trim)
                continue
            hello = wire(part, server) == wire(full, "s2c")  # the ServerHello is whole
            if tls12 and not hello:
                assert res.codes == ["tls_midstream"], (index, trim, res.diags)
                assert not any(res.plain.values())
                assert "ServerHello" in res.diags[0].message
                seen["midstream"] += 1
                continue
            for direction in ("c2s", "s2c"):
                dropped = len(wire(full, direction)) - len(wire(part, swap[direction]))
                want = expected_suffix(full, keylog, direction, dropped)
                assert res.plain[swap[direction]] == want, (direction, index, trim)
            assert [i.version for i in res.infos] == ["TLS 1.2" if tls12 else "TLS 1.3"]
            assert [i.decrypted for i in res.infos] == [True]
            found = [d for d in res.diags if d.code == "tls_midstream_decrypted"]
            assert len(found) == 2 and all(d.severity == "info" for d in res.diags), res.diags
            seen["handshake secret"] += any("HANDSHAKE_TRAFFIC_SECRET" in d.message for d in found)
            if hello:  # every application data record is after the cut: every message
                assert decode_messages(res.events, True) == whole_messages, (index, trim)
            seen["decrypted"] += 1
    assert seen["decrypted"] >= 2, seen
    if tls12:
        assert seen["midstream"], seen
    else:  # a cut inside the ServerHello record: the first records are handshake records
        assert seen["handshake secret"], seen


def tls12_events(conv: synth.Conversation, drop: set[int]) -> list[ChunkEvent]:
    """synth.tls12's flights from the ServerHello on (0 CH, 1 SH..., 2 c2s CKE+CCS+Finished,
    3 s2c CCS+Finished, 4 c2s data, 5 s2c data, 6 alert), ``drop`` lost (a Gap instead)."""
    events = conv.events()
    out: list[ChunkEvent] = [events[0], MID]
    for i, e in enumerate(events[2:], start=1):
        if i in drop and isinstance(e, Data):
            out.append(Gap(e.conn_id, e.direction, e.ts, len(e.data)))
        else:
            out.append(e)
    return out


@pytest.mark.parametrize("suite", [0xC02F, 0xC030, 0xCCA8, 0xC0AC])
@pytest.mark.parametrize("resumed", [False, True])
def test_tls12_from_the_server_hello(suite: int, resumed: bool) -> None:
    """Each TLS 1.2 AEAD family (AES-128/256-GCM, ChaCha20, CCM), full and abbreviated
    handshakes, 300 other CLIENT_RANDOM entries first: both directions decrypt from the record
    after their ChangeCipherSpec (sequence number 0)."""
    conv = synth.tls12(suite, resumed=resumed)
    noise = b"".join(
        f"CLIENT_RANDOM {os.urandom(32).hex()} {os.urandom(48).hex()}\n".encode()
        for _ in range(300)
    )
    res = tls(tls12_events(conv, set()), KeyLog(noise + conv.keylog))
    assert res.plain == conv.plain
    assert [i.version for i in res.infos] == ["TLS 1.2"]
    found = [d.message for d in res.diags if d.code == "tls_midstream_decrypted"]
    assert len(found) == 2, res.diags
    assert all(f"client random {conv.client_random.hex()}" in m for m in found)
    assert all("sequence number 0 (the record after its ChangeCipherSpec)" in m for m in found)
    res = tls(tls12_events(conv, set()), KeyLog(noise))
    assert res.codes == ["tls_midstream"] and not any(res.plain.values())
    assert "no key log CLIENT_RANDOM master secret opens" in res.diags[0].message


@pytest.mark.parametrize(
    ("suite", "random_nonce", "how"),
    [(0xC02F, False, "its explicit nonce"), (0xC02F, True, "trial"), (0xCCA8, False, "trial")],
)
def test_tls12_without_its_change_cipher_spec(suite: int, random_nonce: bool, how: str) -> None:
    """The ServerHello captured, but the client's ChangeCipherSpec and Finished lost: its
    application data is found at sequence number 1 -- from the explicit nonce when it counts
    records, else by trying 0 .. MIDSTREAM_SEQ_WINDOW - 1."""
    conv = synth.tls12(suite, random_nonce=random_nonce)
    res = tls(tls12_events(conv, {2}), KeyLog(conv.keylog))
    assert res.plain == conv.plain
    [c2s] = [d.message for d in res.diags if d.message.startswith("c2s: TLS 1.2")]
    assert f"sequence number 1 ({how})" in c2s


def test_tls12_server_hello_only_from_the_wrong_side() -> None:
    """The TCP layer took the server for the client: the ServerHello comes "c2s"; the keys
    follow it and the diagnostic says so."""
    conv = synth.tls12(0xC02F)
    swap: dict[str, Direction] = {"c2s": "s2c", "s2c": "c2s"}
    events = [
        Data(e.conn_id, swap[e.direction], e.ts, e.data) if isinstance(e, Data) else e
        for e in tls12_events(conv, set())
    ]
    res = tls(events, KeyLog(conv.keylog))
    assert res.plain == {"c2s": conv.plain["s2c"], "s2c": conv.plain["c2s"]}
    found = [d.message for d in res.diags if d.code == "tls_midstream_decrypted"]
    assert len(found) == 2 and all("took for the client" in m for m in found)
