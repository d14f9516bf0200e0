"""TLS decryption (``h2ws.analysis.sources.tls``): key schedules against published vectors,
synthetic conversations cut at arbitrary points, the shared browser/Node samples through the CLI
(key files, injected Decryption Secrets Blocks, keys learnt late, no keys), and live peers over
TLS captured during the run, checked against what the clients logged and against tshark.
"""

from __future__ import annotations

import base64
import json
import os
import random
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import hashes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ws.analysis.core.chunks import ChunkEvent, Closed, Data, Gap, Opened, TlsInfo, Wire
from h2ws.analysis.records import DiagnosticRecord
from h2ws.analysis.sources.pcap import CaptureReader
from h2ws.analysis.sources.tcp import TcpReassembler, TcpSegment
from h2ws.analysis.sources.tls import KeyLog, TlsLayer, hkdf_expand_label, tls12_prf
from h2ws.testkit.tls_peers import harness, synth

from .paths import SAMPLE_CAPTURES
from .requires import missing_peer, missing_sample

pytestmark = pytest.mark.timeout(240)

SAMPLES = SAMPLE_CAPTURES
TABLES = ("connections", "streams", "frames", "messages", "diagnostics")
Rows = list[dict[str, Any]]
Tables = dict[str, Rows]


# ------------------------------------------------------------------------------------ helpers


@dataclass
class Result:
    """What a TlsLayer made of some events."""

    events: list[ChunkEvent]
    plain: dict[tuple[str, str], bytes] = field(default_factory=dict)
    wire: Counter[tuple[str, str]] = field(default_factory=Counter)
    infos: list[TlsInfo] = field(default_factory=list)
    diags: list[DiagnosticRecord] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diags]


def run(events: list[ChunkEvent], keylog: KeyLog, **kw: Any) -> Result:
    layer = TlsLayer(keylog, **kw)
    out: list[ChunkEvent] = []
    for e in events:
        out.extend(layer.feed(e))
    out.extend(layer.finish())
    return collect(out)


def collect(out: list[ChunkEvent]) -> Result:
    res = Result(out)
    plain: dict[tuple[str, str], bytearray] = defaultdict(bytearray)
    decrypted: set[str] = set()
    for e in out:
        if isinstance(e, Data):
            assert e.conn_id in decrypted or not res.infos, "plaintext before TlsInfo"
            plain[(e.conn_id, e.direction)] += e.data
        elif isinstance(e, Wire):
            res.wire[(e.conn_id, e.direction)] += e.length
        elif isinstance(e, TlsInfo):
            assert e.conn_id not in {i.conn_id for i in res.infos}, "two TlsInfo"
            res.infos.append(e)
            decrypted.add(e.conn_id)
        elif isinstance(e, DiagnosticRecord):
            res.diags.append(e)
        elif isinstance(e, Gap):
            res.gaps.append(e)
    res.plain = {k: bytes(v) for k, v in plain.items()}
    return res


def secret_free(res: Result, secrets: list[bytes]) -> None:
    """No secret, in hex or raw, in any diagnostic or TlsInfo."""
    text = " ".join(str(e) for e in res.events if not isinstance(e, Data))
    for s in secrets:
        assert s.hex() not in text.lower()
        assert repr(s) not in text


def cli_extract(capture: Path, out: Path, *extra: str) -> tuple[Tables, str]:
    cmd = [
        sys.executable, "-m", "h2ws.analysis.cli", "extract", str(capture),
        "-o", str(out), "--payload", "full", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    tables = {t: pq.read_table(out / f"{t}.parquet").to_pylist() for t in TABLES}
    return tables, proc.stdout + proc.stderr


def keylog_secrets(path: Path) -> list[bytes]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            out.append(bytes.fromhex(parts[2]))
    return out


def assert_no_secrets(tables: Tables, log_text: str, secrets: list[bytes]) -> None:
    text = json.dumps(tables, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
    text += log_text
    for s in secrets:
        assert s.hex() not in text.lower(), "key material in an output"


def by_conn(tables: Tables, table: str, conn_id: str) -> Rows:
    return [r for r in tables[table] if r["conn_id"] == conn_id]


def ws_messages(tables: Tables, conn_id: str, stream_id: int | None, direction: str) -> Rows:
    rows = [
        m
        for m in tables["messages"]
        if m["conn_id"] == conn_id and m["stream_id"] == stream_id and m["direction"] == direction
    ]
    return sorted(rows, key=lambda m: m["index"])


def as_pairs(rows: Rows) -> list[tuple[str, bytes]]:
    return [(m["opcode"], m["payload"] or b"") for m in rows]


def logged(msgs: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [(m["opcode"], base64.b64decode(m["payload_b64"])) for m in msgs]


def strip_capture(tables: Tables, name: str) -> Tables:
    """Tables with the capture's name taken out, to compare two files of the same traffic."""
    text = json.dumps(tables, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
    result: Tables = json.loads(text.replace(name, "CAPTURE"))
    return result


def decrypted_streams(capture: Path, keylog: KeyLog) -> tuple[Result, dict[str, Opened]]:
    """Every connection's plaintext per direction and TlsInfo, through the Python API."""
    reader = CaptureReader(capture)
    tcp = TcpReassembler(capture=capture.name)
    tls = TlsLayer(keylog)
    out: list[ChunkEvent] = []
    blocks = 0
    for item in reader:
        for block in reader.tls_key_log[blocks:]:
            keylog.add(block)
        blocks = len(reader.tls_key_log)
        if isinstance(item, TcpSegment):
            for e in tcp.feed(item):
                out.extend(tls.feed(e))
    for e in tcp.finish():
        out.extend(tls.feed(e))
    out.extend(tls.finish())
    opened = {e.conn.conn_id: e for e in out if isinstance(e, Opened)}
    return collect(out), opened


def tshark_matches(capture: Path, keys: Path) -> None:
    """h2ws's decrypted byte streams equal ``tshark -z follow,tls,raw`` for every connection."""
    res, opened = decrypted_streams(capture, KeyLog(keys.read_bytes()))
    plain = res.plain
    follow = harness.tshark_tls_streams(capture, keys, len(opened) + 2)
    by_ports: dict[tuple[int, int], str] = {}
    for conn_id, e in opened.items():
        assert e.conn.client_port is not None and e.conn.server_port is not None
        by_ports[(e.conn.client_port, e.conn.server_port)] = conn_id
    compared = 0
    for node0, a, b in follow.values():
        if not a and not b:
            continue
        port0 = int(node0.rsplit(":", 1)[1])
        matches = [
            cid
            for (cport, sport), cid in by_ports.items()
            if port0 in (cport, sport)
            and {plain.get((cid, "c2s"), b""), plain.get((cid, "s2c"), b"")} == {a, b}
        ]
        assert matches, f"no h2ws stream equals tshark's stream from {node0}"
        compared += 1
    ours = {cid for (cid, _), data in plain.items() if data}
    assert compared == len(ours), (compared, ours)


# --------------------------------------------------------------------- key schedule vectors


def test_hkdf_expand_label_rfc8448() -> None:
    """RFC 8448 section 3: the server's handshake write key and IV."""
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    key = hkdf_expand_label(hashes.SHA256, secret, b"key", b"", 16)
    iv = hkdf_expand_label(hashes.SHA256, secret, b"iv", b"", 12)
    assert key.hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert iv.hex() == "5d313eb2671276ee13000b30"


def test_tls12_prf_sha256_vector() -> None:
    """The TLS 1.2 PRF (P_SHA256) test vector published on the IETF TLS list."""
    out = tls12_prf(
        hashes.SHA256,
        bytes.fromhex("9bbe436ba940f017b17652849a71db35"),
        b"test label",
        bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"),
        100,
    )
    assert out.hex() == (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e"
        "14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5"
        "a72e5a5110fff70187347b66"
    )


def test_keylog_parsing_and_privacy() -> None:
    cr, secret = os.urandom(32), os.urandom(32)
    text = (
        b"# SSL/TLS secrets log file\n\nnot a line\nCLIENT_RANDOM zz yy\n"
        b"EXPORTER_SECRET " + cr.hex().encode() + b" " + secret.hex().encode() + b"\r\n"
        b"SERVER_TRAFFIC_SECRET_0 " + cr.hex().encode() + b" " + secret.hex().encode() + b"\r\n"
        b"CLIENT_RANDOM " + b"ab" * 31 + b" " + b"00" * 48 + b"\n"  # short client random
    )
    log = KeyLog()
    assert log.add(text) == 1
    assert log.add(text) == 0  # nothing new
    assert log.get("SERVER_TRAFFIC_SECRET_0", cr) == secret
    assert log.get("EXPORTER_SECRET", cr) is None
    assert secret.hex() not in repr(log) and str(len(log)) in repr(log)
    assert secret.hex() not in repr(TlsLayer(log))


# ------------------------------------------------------------------ synthetic conversations


def check_decrypted(conv: synth.Conversation, res: Result, alpn: str | None = "h2") -> None:
    assert res.plain.get(("t:0", "c2s"), b"") == conv.plain["c2s"]
    assert res.plain.get(("t:0", "s2c"), b"") == conv.plain["s2c"]
    sent = {d: sum(len(b) for dd, b in conv.flights if dd == d) for d in ("c2s", "s2c")}
    assert res.wire[("t:0", "c2s")] == sent["c2s"] and res.wire[("t:0", "s2c")] == sent["s2c"]
    [info] = res.infos
    assert info.decrypted and info.sni == "example.test" and info.alpn == alpn
    assert not [d for d in res.diags if d.severity != "info"], res.diags
    assert not res.gaps
    secret_free(res, conv.secrets)


@pytest.mark.parametrize("suite", [0x1301, 0x1302, 0x1303, 0x1304, 0x1305])
def test_tls13_suites_and_key_update(suite: int) -> None:
    conv = synth.tls13(suite, key_update=True, pad=7)
    res = run(conv.events(), KeyLog(conv.keylog))
    check_decrypted(conv, res)
    names = {
        0x1301: "TLS_AES_128_GCM_SHA256",
        0x1302: "TLS_AES_256_GCM_SHA384",
        0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        0x1304: "TLS_AES_128_CCM_SHA256",
        0x1305: "TLS_AES_128_CCM_8_SHA256",
    }
    assert (res.infos[0].version, res.infos[0].cipher) == ("TLS 1.3", names[suite])
    assert res.codes.count("tls_alert") == 2  # close_notify both ways, decrypted


@pytest.mark.parametrize("suite", [0xC02F, 0xC030, 0xCCA8, 0xCCA9, 0xC02B, 0xC0AC, 0xC0AE])
def test_tls12_suites(suite: int) -> None:
    conv = synth.tls12(suite)
    res = run(conv.events(), KeyLog(conv.keylog))
    check_decrypted(conv, res)
    assert res.infos[0].version == "TLS 1.2"


def test_tls12_resumption() -> None:
    conv = synth.tls12(0xC02F, resumed=True)
    res = run(conv.events(), KeyLog(conv.keylog))
    check_decrypted(conv, res)
    assert "tls_resumed" in res.codes


def test_tls13_hello_retry_request() -> None:
    conv = synth.tls13(0x1302, hrr=True)
    check_decrypted(conv, run(conv.events(), KeyLog(conv.keylog)))


@pytest.mark.parametrize("early", ["accepted", "rejected"])
def test_tls13_early_data(early: str) -> None:
    conv = synth.tls13(0x1301, early=early)
    res = run(conv.events(), KeyLog(conv.keylog))
    check_decrypted(conv, res)
    assert ("tls_early_data_skipped" in res.codes) == (early == "rejected")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_segmentation(data: st.DataObject) -> None:
    """Records split across chunks anywhere, several records per chunk: the same plaintext."""
    kind = data.draw(st.sampled_from(["tls13", "tls12"]))
    conv = synth.tls13(0x1303) if kind == "tls13" else synth.tls12(0xC030)
    cuts = [
        data.draw(st.lists(st.integers(0, len(b)), max_size=6), label=f"cuts{i}")
        for i, (_, b) in enumerate(conv.flights)
    ]
    check_decrypted(conv, run(conv.events(cuts), KeyLog(conv.keylog)))


def test_one_byte_chunks() -> None:
    conv = synth.tls13(0x1301, big=3000)
    cuts = [list(range(1, len(b))) for _, b in conv.flights]
    check_decrypted(conv, run(conv.events(cuts), KeyLog(conv.keylog)))


def test_keys_learnt_later() -> None:
    """Secrets that arrive after the records (a Decryption Secrets Block further on): the
    records wait and decrypt then, with the times of the chunks they came in."""
    conv = synth.tls13(0x1301)
    events = conv.events()
    reference = run(events, KeyLog(conv.keylog))
    keylog = KeyLog()
    layer = TlsLayer(keylog)
    out: list[ChunkEvent] = []
    for i, e in enumerate(events):
        if i == len(events) - 3:  # before the last flights and the close
            keylog.add(conv.keylog)
        out.extend(layer.feed(e))
    out.extend(layer.finish())
    late = collect(out)
    check_decrypted(conv, late)
    data = [(e.direction, e.ts, e.data) for e in out if isinstance(e, Data)]
    want = [(e.direction, e.ts, e.data) for e in reference.events if isinstance(e, Data)]
    by_dir = {d: b"".join(x for dd, _, x in data if dd == d) for d in ("c2s", "s2c")}
    assert by_dir == {d: b"".join(x for dd, _, x in want if dd == d) for d in ("c2s", "s2c")}
    assert sorted(ts for _, ts, _ in data) == sorted(ts for _, ts, _ in want)


def test_no_keys() -> None:
    conv = synth.tls13(0x1301, key_update=False)
    res = run(conv.events(), KeyLog())
    [info] = res.infos
    assert not info.decrypted and info.version == "TLS 1.3" and info.sni == "example.test"
    assert info.alpn is None  # two protocols offered, EncryptedExtensions unreadable
    assert res.codes == ["tls_no_keys"]
    assert conv.client_random.hex() in res.diags[0].message
    assert not res.plain
    assert sum(res.wire.values()) == sum(len(b) for _, b in conv.flights)


def test_no_keys_settled_at_once_when_the_key_log_is_complete() -> None:
    conv = synth.tls12(0xC02F)
    events = conv.events()
    layer = TlsLayer(KeyLog(), wait_for_keys=False)
    out: list[ChunkEvent] = []
    for e in events[:4]:
        out.extend(layer.feed(e))
    assert "tls_no_keys" in collect(out).codes  # before the close


def test_held_bytes_are_bounded() -> None:
    conv = synth.tls13(0x1301, big=200_000)
    res = run(conv.events(), KeyLog(), max_held=50_000)
    assert res.codes == ["tls_no_keys"] and "too much data" in res.diags[0].message
    assert sum(res.wire.values()) == sum(len(b) for _, b in conv.flights)


def test_only_handshake_secrets() -> None:
    """Handshake keys but no traffic secrets: TlsInfo from EncryptedExtensions, then no keys."""
    conv = synth.tls13(0x1301, key_update=False)
    keys = b"".join(line + b"\n" for line in conv.keylog.splitlines() if b"HANDSHAKE" in line)
    res = run(conv.events(), KeyLog(keys))
    [info] = res.infos
    assert info.decrypted and info.alpn == "h2"
    assert "tls_no_keys" in res.codes and "TRAFFIC_SECRET_0" in res.diags[-1].message
    assert {g.direction for g in res.gaps} == {"c2s", "s2c"}
    assert not res.plain


def test_bad_record_mac_in_one_direction() -> None:
    conv = synth.tls13(0x1301, key_update=False)
    index = next(i for i, (d, b) in enumerate(conv.flights) if d == "c2s" and b"\x17\x03\x03" in b)
    direction, data = conv.flights[index]
    corrupted = bytearray(data)
    corrupted[-1] ^= 1  # the last record's tag
    conv.flights[index] = (direction, bytes(corrupted))
    res = run(conv.events(), KeyLog(conv.keylog))
    assert "tls_bad_record_mac" in res.codes
    assert [g.direction for g in res.gaps] == ["c2s"]
    assert res.plain[("t:0", "s2c")] == conv.plain["s2c"]  # the other direction goes on


def test_wrong_keys() -> None:
    conv = synth.tls13(0x1301)
    other = synth.tls13(0x1301)
    wrong = other.keylog.replace(
        other.client_random.hex().encode(), conv.client_random.hex().encode()
    )
    res = run(conv.events(), KeyLog(wrong))
    assert [i.decrypted for i in res.infos] == [False]
    assert "tls_bad_record_mac" in res.codes and not res.plain


def test_gap_ends_one_direction() -> None:
    conv = synth.tls12(0xC02F)
    events = conv.events()
    last_c2s = max(i for i, e in enumerate(events) if isinstance(e, Data) and e.direction == "c2s")
    before = events[last_c2s]
    assert isinstance(before, Data)
    gap = Gap("t:0", "c2s", before.ts, 10)
    res = run([*events[:last_c2s], gap, *events[last_c2s:]], KeyLog(conv.keylog))
    assert "tls_gap" in res.codes
    assert [g.direction for g in res.gaps] == ["c2s"]
    assert res.plain[("t:0", "s2c")] == conv.plain["s2c"]


def test_midstream_and_unsupported() -> None:
    conv = synth.tls13(0x1301)
    later = conv.events()
    res = run([later[0], *later[4:]], KeyLog(conv.keylog))  # from the session tickets on
    assert res.codes[:2] == ["tls_midstream_decrypted"] * 2 and res.infos[0].decrypted
    assert conv.plain["s2c"].endswith(res.plain[("t:0", "s2c")])  # tests/test_tls_midstream.py
    res = run([later[0], *later[4:]], KeyLog())  # without keys: counted only
    assert res.codes[0] == "tls_midstream" and not res.infos[0].decrypted
    cbc = synth.tls12(0xC02F)
    cbc.flights[1] = (
        "s2c",
        cbc.flights[1][1].replace(b"\x33\xc0\x2f\x00", b"\x33\xc0\x13\x00", 1),
    )
    res = run(cbc.events(), KeyLog(cbc.keylog))
    assert res.codes == ["tls_unsupported_cipher"]
    assert res.infos[0].cipher == "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"


def test_incomplete_handshake() -> None:
    conv = synth.tls13(0x1301)
    res = run([*conv.events()[:2], Closed("t:0", synth.T0 + 1, "rst")], KeyLog(conv.keylog))
    assert res.codes == ["tls_incomplete_handshake"]
    assert res.infos[0].sni == "example.test" and res.infos[0].version is None


def test_cleartext_untouched() -> None:
    conv = synth.Conversation()
    conv.add("c2s", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    conv.add("s2c", b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    events = conv.events([[1, 2], []])
    layer = TlsLayer(KeyLog())
    got = [x for e in events for x in layer.feed(e)] + layer.finish()
    assert all(a is b for a, b in zip(got, events, strict=True)) and len(got) == len(events)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["c2s", "s2c"]), st.binary(min_size=1, max_size=300)),
        max_size=12,
    ),
    st.sampled_from([b"", b"\x16\x03\x01", b"\x17\x03\x03", b"\x16\x03\x03\x00\x30\x01"]),
)
def test_garbage_never_raises(flights: list[tuple[str, bytes]], head: bytes) -> None:
    conv = synth.Conversation()
    for i, (d, b) in enumerate(flights):
        conv.add(d, head + b if i == 0 else b)
    res = run(conv.events(), KeyLog())
    assert "tls_internal_error" not in res.codes
    passed = sum(len(e.data) for e in res.events if isinstance(e, Data))  # not TLS: untouched
    assert sum(res.wire.values()) + passed == sum(len(b) for _, b in conv.flights)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_conversations_never_raise(data: st.DataObject) -> None:
    """A valid conversation with bytes flipped, cut or dropped: diagnostics, never exceptions,
    and every byte is still counted."""
    kind = data.draw(st.sampled_from(["tls13", "tls12", "early"]))
    conv = {
        "tls13": lambda: synth.tls13(0x1301, big=2000),
        "tls12": lambda: synth.tls12(0xCCA8),
        "early": lambda: synth.tls13(0x1303, early="accepted", big=100),
    }[kind]()
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    flights = []
    for d, b in conv.flights:
        buf = bytearray(b)
        for _ in range(data.draw(st.integers(0, 3))):
            op = rng.choice(["flip", "cut", "drop"])
            if not buf:
                break
            pos = rng.randrange(len(buf))
            if op == "flip":
                buf[pos] ^= 1 << rng.randrange(8)
            elif op == "cut":
                del buf[pos:]
            else:
                del buf[pos : pos + rng.randint(1, 40)]
        if buf:
            flights.append((d, bytes(buf)))
    conv.flights = flights
    events = conv.events()
    res = run(events, KeyLog(conv.keylog))
    assert "tls_internal_error" not in res.codes
    sent = sum(len(b) for _, b in flights)
    if res.wire:  # taken for TLS: every byte counted
        assert sum(res.wire.values()) == sent
    else:  # not TLS: handed through untouched
        assert [e for e in res.events if isinstance(e, Data)] == [
            e for e in events if isinstance(e, Data)
        ]


# ------------------------------------------------------------------------ the shared samples


@dataclass(frozen=True)
class Sample:
    name: str
    messages: int


NODE = Sample("tls_node_ws", 24)
FIREFOX = Sample("ff153_hypercorn_pmd", 14)
CHROMIUM = Sample("chr_h1_fallback_newconn", 10)
ALL_SAMPLES = [NODE, FIREFOX, CHROMIUM]


def sample_paths(sample: Sample) -> tuple[Path, Path]:
    capture, keys = SAMPLES / f"{sample.name}.pcapng", SAMPLES / f"{sample.name}.keys"
    if not capture.exists() or not keys.exists():
        missing_sample(f"{capture} is not there")
    return capture, keys


def need(*tools: str) -> None:
    missing = harness.missing(*tools)
    if missing:
        missing_peer(f"needs {', '.join(missing)}")


def move_dsb(src: Path, dst: Path, after_packets: int) -> Path:
    """A copy of a little-endian pcapng whose Decryption Secrets Blocks come after the first
    ``after_packets`` packets instead of before them."""
    data = src.read_bytes()
    blocks: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        blocks.append((btype, data[pos : pos + blen]))
        pos += blen
    dsbs = [b for t, b in blocks if t == 0x0A]
    assert dsbs, "no Decryption Secrets Block"
    out, packets = [], 0
    for btype, block in blocks:
        if btype == 0x0A:
            continue
        out.append(block)
        if btype in (6, 3, 2):
            packets += 1
            if packets == after_packets:
                out.extend(dsbs)
    dst.write_bytes(b"".join(out))
    return dst


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Tables]:
    """Each sample through the CLI: with its key file, with injected secrets, with secrets
    that come only after the handshake packets, and with no keys at all."""
    work = tmp_path_factory.mktemp("tls-samples")
    runs: dict[tuple[str, str], Tables] = {}
    for sample in ALL_SAMPLES:
        capture, keys = SAMPLES / f"{sample.name}.pcapng", SAMPLES / f"{sample.name}.keys"
        if not capture.exists():
            continue
        secrets = keylog_secrets(keys)
        tables, text = cli_extract(capture, work / f"{sample.name}-keys", "--keylog", str(keys))
        assert_no_secrets(tables, text, secrets)
        runs[(sample.name, "keys")] = tables
        runs[(sample.name, "none")], _ = cli_extract(capture, work / f"{sample.name}-none")
        if harness.missing("editcap"):
            continue
        injected = harness.inject_secrets(capture, keys, work / f"{sample.name}.pcapng")
        tables, text = cli_extract(injected, work / f"{sample.name}-dsb")
        assert_no_secrets(tables, text, secrets)
        runs[(sample.name, "injected")] = tables
        late = move_dsb(injected, work / f"{sample.name}-late.pcapng", 7)
        runs[(sample.name, "late")], _ = cli_extract(late, work / f"{sample.name}-late")
    return runs


def sample_tables(runs: dict[tuple[str, str], Tables], sample: Sample, mode: str) -> Tables:
    sample_paths(sample)
    if (sample.name, mode) not in runs:
        missing_peer("needs editcap")
    return runs[(sample.name, mode)]


def tls_problems(tables: Tables) -> Rows:
    return [
        d
        for d in tables["diagnostics"]
        if d["layer"] == "tls" and d["severity"] != "info" and d["code"] != "tls_no_keys"
    ]


@pytest.mark.parametrize("mode", ["keys", "injected", "late"])
def test_sample_node(sample_runs: dict[tuple[str, str], Tables], mode: str) -> None:
    tables = sample_tables(sample_runs, NODE, mode)
    [conn] = tables["connections"]
    assert conn["tls"] and conn["tls_version"] == "TLS 1.3"
    assert (conn["sni"], conn["alpn"], conn["http_version"]) == ("localhost", "h2", "h2")
    [ws] = [s for s in tables["streams"] if s["kind"] == "websocket"]
    assert ws["protocol"] == "websocket" and ws["status"] == 200
    msgs = [m for m in tables["messages"] if m["stream_id"] == ws["stream_id"]]
    assert len(msgs) == NODE.messages == len(tables["messages"])
    assert Counter(m["opcode"] for m in msgs) == {"text": 20, "binary": 2, "close": 2}
    assert not tls_problems(tables) and not [
        d for d in tables["diagnostics"] if d["code"] == "tls_no_keys"
    ]


@pytest.mark.parametrize("mode", ["keys", "injected", "late"])
def test_sample_firefox_permessage_deflate(
    sample_runs: dict[tuple[str, str], Tables], mode: str
) -> None:
    tables = sample_tables(sample_runs, FIREFOX, mode)
    [conn] = tables["connections"]
    assert (conn["tls_version"], conn["sni"], conn["alpn"]) == ("TLS 1.3", "localhost", "h2")
    assert conn["http_version"] == "h2" and conn["enable_connect_protocol"]
    [ws] = [s for s in tables["streams"] if s["kind"] == "websocket"]
    assert "permessage-deflate" in ws["ws_extensions"]
    msgs = ws_messages(tables, conn["conn_id"], ws["stream_id"], "c2s")
    msgs += ws_messages(tables, conn["conn_id"], ws["stream_id"], "s2c")
    assert len(msgs) == FIREFOX.messages
    data = [m for m in msgs if m["opcode"] in ("text", "binary")]
    assert len(data) == 12 and all(m["compressed"] for m in data)
    assert not tls_problems(tables)


@pytest.mark.parametrize("mode", ["keys", "injected", "late"])
def test_sample_chromium_fallback(sample_runs: dict[tuple[str, str], Tables], mode: str) -> None:
    tables = sample_tables(sample_runs, CHROMIUM, mode)
    tls = [c for c in tables["connections"] if c["tls"]]
    assert all(c["tls_version"] == "TLS 1.3" and c["sni"] == "localhost" for c in tls)
    # ALPN says h2 for Chromium's spare connection too; the page's is the one with streams.
    h2 = [c for c in tls if c["http_version"] == "h2" and c["streams"]]
    h1 = [c for c in tls if c["http_version"] == "http/1.1"]
    assert len(h2) == 1 and len(h1) == 1
    assert h2[0]["alpn"] == "h2" and h1[0]["alpn"] == "http/1.1"
    assert h2[0]["websockets"] == 0 and h2[0]["streams"] >= 3
    [ws] = by_conn(tables, "streams", h1[0]["conn_id"])
    assert ws["kind"] == "websocket" and ws["status"] == 101 and ws["stream_id"] is None
    assert len(tables["messages"]) == CHROMIUM.messages
    assert all(m["conn_id"] == h1[0]["conn_id"] for m in tables["messages"])
    assert not tls_problems(tables)
    # Chromium logged no keys for the connection it dropped after the ServerHello; no other.
    _, keys = sample_paths(CHROMIUM)
    randoms = {line.split()[1] for line in keys.read_text().splitlines() if line.strip()}
    for d in tables["diagnostics"]:
        if d["code"] == "tls_no_keys":
            assert not any(r in d["message"] for r in randoms), d


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=lambda s: s.name)
def test_samples_injected_equal_key_file(
    sample_runs: dict[tuple[str, str], Tables], sample: Sample
) -> None:
    keys = sample_tables(sample_runs, sample, "keys")
    for mode in ("injected", "late"):
        other = sample_tables(sample_runs, sample, mode)
        name = {"injected": f"{sample.name}.pcapng", "late": f"{sample.name}-late.pcapng"}[mode]
        assert strip_capture(other, name) == strip_capture(keys, f"{sample.name}.pcapng"), mode


def test_embedded_and_given_keys_combine(
    sample_runs: dict[tuple[str, str], Tables], tmp_path: Path
) -> None:
    """Half of the connections' secrets in the capture, the other half in a --keylog file."""
    need("editcap")
    capture, keys = sample_paths(CHROMIUM)
    lines = [line for line in keys.read_text().splitlines() if line.strip()]
    randoms = sorted({line.split()[1] for line in lines})
    assert len(randoms) >= 2
    first = tmp_path / "first.keys"
    first.write_text("".join(f"{x}\n" for x in lines if x.split()[1] == randoms[0]))
    rest = tmp_path / "rest.keys"
    rest.write_text("".join(f"{x}\n" for x in lines if x.split()[1] != randoms[0]))
    injected = harness.inject_secrets(capture, first, tmp_path / "half.pcapng")
    tables, _ = cli_extract(injected, tmp_path / "out", "--keylog", str(rest))
    expected = sample_tables(sample_runs, CHROMIUM, "keys")
    assert strip_capture(tables, "half.pcapng") == strip_capture(
        expected, f"{CHROMIUM.name}.pcapng"
    )


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=lambda s: s.name)
def test_samples_without_keys(sample_runs: dict[tuple[str, str], Tables], sample: Sample) -> None:
    tables = sample_tables(sample_runs, sample, "none")
    tls = [c for c in tables["connections"] if c["tls"]]
    assert tls and all(c["tls_version"] == "TLS 1.3" and c["sni"] == "localhost" for c in tls)
    assert not tables["messages"] and not tables["streams"]
    no_keys = {d["conn_id"] for d in tables["diagnostics"] if d["code"] == "tls_no_keys"}
    assert no_keys == {c["conn_id"] for c in tls}
    keyed = sample_tables(sample_runs, sample, "keys")
    for c in tls:  # byte counts stay TCP's
        [k] = by_conn(keyed, "connections", c["conn_id"])
        assert (c["bytes_c2s"], c["bytes_s2c"]) == (k["bytes_c2s"], k["bytes_s2c"])
    if sample is NODE:
        assert tls[0]["alpn"] == "h2" and tls[0]["http_version"] == "h2"  # one offered


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=lambda s: s.name)
def test_samples_match_tshark(sample: Sample) -> None:
    need("tshark")
    capture, keys = sample_paths(sample)
    tshark_matches(capture, keys)


def test_sample_starting_midstream(tmp_path: Path) -> None:
    need("editcap")
    capture, keys = sample_paths(NODE)
    cut = tmp_path / "midstream.pcapng"
    subprocess.run(["editcap", "-r", str(capture), str(cut), "9-28"], check=True, timeout=30)
    tables, _ = cli_extract(cut, tmp_path / "out", "--keylog", str(keys))
    [conn] = tables["connections"]
    assert conn["tls"] and conn["bytes_c2s"] + conn["bytes_s2c"] > 0
    # The handshake is gone, the key log still opens it (tests/test_tls_midstream.py).
    assert "tls_midstream_decrypted" in {d["code"] for d in tables["diagnostics"]}
    assert conn["tls_version"] == "TLS 1.3"
    tables, _ = cli_extract(cut, tmp_path / "out2")  # without keys: counted only
    assert "tls_midstream" in {d["code"] for d in tables["diagnostics"]}


def test_cli_rejects_unreadable_key_log(tmp_path: Path) -> None:
    capture, _ = sample_paths(NODE)
    cmd = [
        sys.executable, "-m", "h2ws.analysis.cli", "extract", str(capture),
        "-o", str(tmp_path / "o"), "--keylog", str(tmp_path / "missing.keys"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "missing.keys" in proc.stderr


# -------------------------------------------------------------------------------- live peers

#: Node.js server listeners: (name, version, cipher the server forces).
NODE_CONFIGS = [
    ("t13-aes128gcm", "TLSv1.3", "TLS_AES_128_GCM_SHA256"),
    ("t13-chacha20", "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
    ("t13-aes128ccm", "TLSv1.3", "TLS_AES_128_CCM_SHA256"),
    ("t13-aes128ccm8", "TLSv1.3", "TLS_AES_128_CCM_8_SHA256"),
    ("t12-aes256gcm", "TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("t12-chacha20", "TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("t12-aes128ccm", "TLSv1.2", "ECDHE-ECDSA-AES128-CCM"),
]
#: What h2ws must report for each Python client run: (tls_version, cipher).
PY_EXPECTED = {
    "t13-aes128gcm": ("TLS 1.3", "TLS_AES_128_GCM_SHA256"),
    "t13-chacha20": ("TLS 1.3", "TLS_CHACHA20_POLY1305_SHA256"),
    "t13-aes128ccm": ("TLS 1.3", "TLS_AES_128_CCM_SHA256"),
    "t13-aes128ccm8": ("TLS 1.3", "TLS_AES_128_CCM_8_SHA256"),
    "t12-aes256gcm": ("TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    "t12-chacha20": ("TLS 1.2", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    "t12-aes128ccm": ("TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"),
    "hypercorn-t13-keyupdate": ("TLS 1.3", "TLS_AES_256_GCM_SHA384"),
    "hypercorn-t12-aes128gcm": ("TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
}
NODE_CLIENT = harness.REPO / "testkit" / "peers" / "h2_client.mjs"
BROWSERS = ("chromium", "firefox")
#: Offering the TLS 1.3 CCM suites (OpenSSL does not by default; Python has no API for it).
CCM_CONF = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256:TLS_AES_128_GCM_SHA256
"""


@dataclass
class Live:
    capture: Path
    keys: list[Path]
    all_keys: Path
    py_logs: dict[str, dict[str, Any]]
    node_logs: dict[str, dict[str, Any]]
    reports: dict[str, dict[str, Any]]
    browsers_run: list[str]
    tables: Tables = field(default_factory=dict)
    infos: dict[str, TlsInfo] = field(default_factory=dict)
    injected: Tables = field(default_factory=dict)
    injected_name: str = ""


def _wait_all(procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> dict[str, str]:
    errors = {}
    end = time.monotonic() + timeout
    for name, proc in procs.items():
        try:
            proc.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            harness.stop_process(proc)
        if proc.returncode != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            errors[name] = f"exit {proc.returncode}: {err[-1500:]}"
        if proc.stderr:
            proc.stderr.close()
    return errors


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One loopback capture of every live scenario at once: Python ssl clients against a Node.js
    http2 server forcing each version and AEAD suite and against hypercorn (TLS 1.3 with a
    KeyUpdate each way; TLS 1.2), the Node.js client (``--tls-keylog``) against hypercorn, and
    headless Chromium and Firefox loading a page whose script opens a same-origin wss://."""
    need("tcpdump", "node")
    work = tmp_path_factory.mktemp("tls-live")
    cert = harness.make_certificate(work / "cert")
    (work / "ccm.cnf").write_text(CCM_CONF)
    reports = work / "reports.jsonl"
    configs = [
        {"name": n, "minVersion": v, "maxVersion": v, "ciphers": c} for n, v, c in NODE_CONFIGS
    ]
    with (
        harness.hypercorn_server(work, cert, "hc13", log=reports) as hc13,
        harness.hypercorn_server(
            work, cert, "hc12", "--tls", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"
        ) as hc12,
        harness.node_server(work, cert, configs) as node,
    ):
        ports: dict[str, int] = json.loads(node.ready)
        ports["hypercorn-t13-keyupdate"] = int(hc13.ready)
        ports["hypercorn-t12-aes128gcm"] = int(hc12.ready)
        capture = harness.Capture(work / "live.pcap", sorted(set(ports.values()))).start()
        procs: dict[str, subprocess.Popen[bytes]] = {}
        keys: list[Path] = []
        try:
            for name, port in ports.items():
                keylog = work / f"py-{name}.keys"
                keys.append(keylog)
                cmd = [
                    sys.executable, "-m", "h2ws.testkit.tls_peers.py_client", "--port", str(port),
                    "--ca", str(cert.ca), "--keylog", str(keylog),
                    "--log", str(work / f"py-{name}.json"),
                ]  # fmt: skip
                env = dict(os.environ)
                if name == "hypercorn-t13-keyupdate":
                    cmd.append("--key-update")
                elif name == "t12-aes128ccm":
                    cmd += ["--ciphers", "ECDHE-ECDSA-AES128-CCM"]
                elif "ccm" in name:
                    env["OPENSSL_CONF"] = str(work / "ccm.cnf")
                procs[f"py-{name}"] = subprocess.Popen(
                    cmd, cwd=harness.REPO, env=env, stderr=subprocess.PIPE
                )
            if NODE_CLIENT.exists():
                for name in ("hypercorn-t13-keyupdate", "hypercorn-t12-aes128gcm"):
                    keylog = work / f"node-{name}.keys"
                    keys.append(keylog)
                    cmd = [
                        "node", f"--tls-keylog={keylog}", str(NODE_CLIENT),
                        "--port", str(ports[name]), "--log", str(work / f"node-{name}.json"),
                        "--tls", "--ca", str(cert.ca), "--ws", "2", "--gets", "1",
                        "--seed", "8441",
                    ]  # fmt: skip
                    procs[f"node-{name}"] = subprocess.Popen(
                        cmd, cwd=harness.REPO, stderr=subprocess.PIPE
                    )
            browsers: dict[str, subprocess.Popen[bytes]] = {}
            url = f"https://localhost:{ports['hypercorn-t13-keyupdate']}/page?who="
            if harness.chromium_binary():
                keys.append(work / "chromium.keys")
                browsers["chromium"] = harness.start_chromium(
                    url + "chromium", work, work / "chromium.keys"
                )
            if harness.firefox_binary() and not harness.missing("certutil"):
                keys.append(work / "firefox.keys")
                browsers["firefox"] = harness.start_firefox(
                    url + "firefox", work, work / "firefox.keys", cert.ca
                )
            errors = _wait_all(procs, 45)
            got: dict[str, dict[str, Any]] = {}
            end = time.monotonic() + 45
            while time.monotonic() < end and set(got) < set(browsers):
                if reports.exists():
                    for line in reports.read_text().splitlines():
                        report = json.loads(line)
                        got[report["who"]] = report
                time.sleep(0.1)
            for proc in browsers.values():
                harness.stop_process(proc)
        finally:
            for proc in procs.values():
                harness.stop_process(proc)
            capture.stop()
    assert not errors, errors
    assert not capture.dropped, f"tcpdump dropped {capture.dropped} packets"
    keys = [k for k in keys if k.exists()]
    all_keys = work / "all.keys"
    all_keys.write_bytes(b"".join(k.read_bytes() for k in keys))

    def load(prefix: str) -> dict[str, dict[str, Any]]:
        return {
            p.stem[len(prefix) :]: json.loads(p.read_text()) for p in work.glob(f"{prefix}*.json")
        }

    result = Live(capture.path, keys, all_keys, load("py-"), load("node-"), got, sorted(browsers))
    args: list[str] = []
    for k in keys:
        args += ["--keylog", str(k)]
    result.tables, text = cli_extract(capture.path, work / "out", *args)
    api, _ = decrypted_streams(capture.path, KeyLog(all_keys.read_bytes()))
    result.infos = {i.conn_id: i for i in api.infos}
    secrets = [s for k in keys for s in keylog_secrets(k)]
    assert_no_secrets(result.tables, text, secrets)
    if not harness.missing("editcap"):
        injected = harness.inject_secrets(capture.path, all_keys, work / "live-dsb.pcapng")
        result.injected, text = cli_extract(injected, work / "out-dsb")
        result.injected_name = injected.name
        assert_no_secrets(result.injected, text, secrets)
    yield result


def conn_by_port(tables: Tables, port: int) -> dict[str, Any]:
    [conn] = [c for c in tables["connections"] if c["client_port"] == port]
    return conn


@pytest.mark.parametrize("name", sorted(PY_EXPECTED))
def test_live_python_client(live: Live, name: str) -> None:
    log = live.py_logs[name]
    tables = live.tables
    conn = conn_by_port(tables, log["local_port"])
    version, cipher = PY_EXPECTED[name]
    assert (conn["tls"], conn["tls_version"], conn["sni"]) == (True, version, "localhost")
    assert (conn["alpn"], conn["http_version"], conn["error"]) == ("h2", "h2", None)
    ws = log["websocket"]
    cid = conn["conn_id"]
    assert as_pairs(ws_messages(tables, cid, ws["stream_id"], "c2s")) == logged(ws["sent"])
    assert as_pairs(ws_messages(tables, cid, ws["stream_id"], "s2c")) == logged(ws["received"])
    [get] = [
        s for s in by_conn(tables, "streams", cid) if s["stream_id"] == log["get"]["stream_id"]
    ]
    assert get["status"] == 200 and get["bytes_s2c"] >= log["get"]["length"] == 200_000
    assert not [d for d in by_conn(tables, "diagnostics", cid) if d["severity"] != "info"]
    assert live.infos[cid].cipher == cipher and live.infos[cid].decrypted


def test_live_key_update_seen(live: Live) -> None:
    """Both directions really sent a KeyUpdate (tshark says so), and decoding went on after."""
    need("tshark")
    log = live.py_logs["hypercorn-t13-keyupdate"]
    cmd = [
        "tshark", "-n", "-r", str(live.capture), "-o", f"tls.keylog_file:{live.all_keys}",
        "-Y", f"tls.handshake.type == 24 && tcp.port == {log['local_port']}",
        "-T", "fields", "-e", "tcp.srcport",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    senders = set(proc.stdout.split())
    assert str(log["local_port"]) in senders and len(senders) == 2, proc.stdout
    conn = conn_by_port(live.tables, log["local_port"])
    ws = log["websocket"]
    got = ws_messages(live.tables, conn["conn_id"], ws["stream_id"], "s2c")
    assert as_pairs(got) == logged(ws["received"])


@pytest.mark.parametrize("name", ["hypercorn-t13-keyupdate", "hypercorn-t12-aes128gcm"])
def test_live_node_client(live: Live, name: str) -> None:
    if name not in live.node_logs:
        missing_peer(f"{NODE_CLIENT} is not there")
    log = live.node_logs[name]
    conn = conn_by_port(live.tables, log["local_port"])
    assert conn["alpn"] == "h2" and conn["http_version"] == "h2"
    assert conn["tls_version"] == ("TLS 1.3" if "t13" in name else "TLS 1.2")
    assert len(log["websockets"]) == 2
    for ws in log["websockets"]:
        for direction, key in (("c2s", "sent"), ("s2c", "received")):
            got = ws_messages(live.tables, conn["conn_id"], ws["stream_id"], direction)
            assert as_pairs(got) == logged(ws[key]), (ws["stream_id"], direction)


@pytest.mark.parametrize("browser", BROWSERS)
def test_live_browser(live: Live, browser: str) -> None:
    if browser not in live.browsers_run:
        missing_peer(f"{browser} is not installed")
    assert browser in live.reports, f"{browser} did not report (see its .err in the work dir)"
    report = live.reports[browser]
    assert not report.get("error") and report["close"]["code"] == 1000
    tables = live.tables
    [ws] = [
        s
        for s in tables["streams"]
        if s["kind"] == "websocket" and s["path"] == f"/ws?who={browser}"
    ]
    assert ws["stream_id"] is not None and ws["protocol"] == "websocket"  # RFC 8441, not h1
    [conn] = by_conn(tables, "connections", ws["conn_id"])
    assert (conn["tls_version"], conn["sni"], conn["alpn"]) == ("TLS 1.3", "localhost", "h2")
    assert conn["enable_connect_protocol"]
    assert any(
        s["path"] == f"/page?who={browser}" for s in by_conn(tables, "streams", ws["conn_id"])
    ), "the WebSocket rides on the page's connection"
    for direction, key in (("c2s", "sent"), ("s2c", "received")):
        rows = ws_messages(tables, ws["conn_id"], ws["stream_id"], direction)
        data = [m for m in rows if m["opcode"] in ("text", "binary")]
        assert as_pairs(data) == logged(report[key]), direction
        assert [m["opcode"] for m in rows][-1] == "close"
    if "permessage-deflate" in (report.get("extensions") or ""):
        c2s = ws_messages(tables, ws["conn_id"], ws["stream_id"], "c2s")
        assert any(m["compressed"] for m in c2s)


def test_live_injected_secrets_equal_key_files(live: Live) -> None:
    if not live.injected:
        missing_peer("needs editcap")

    def rows(tables: Tables, name: str) -> dict[str, list[str]]:
        # Row order may differ: keyless connections are settled when their key is needed
        # with key files only (a classic pcap), at their close when keys may still come.
        plain = strip_capture(tables, name)
        return {t: sorted(json.dumps(r, sort_keys=True) for r in plain[t]) for t in plain}

    assert rows(live.injected, live.injected_name) == rows(live.tables, live.capture.name)


def test_live_match_tshark(live: Live) -> None:
    need("tshark")
    tshark_matches(live.capture, live.all_keys)


def test_live_every_tls_connection_decoded(live: Live) -> None:
    """Every connection with keys decrypted; the only ones without are the browsers' aborted
    or idle spares (no keys logged, or no application data), never an error."""
    problems = [
        d for d in live.tables["diagnostics"] if d["layer"] == "tls" and d["severity"] == "error"
    ]
    assert not problems
    logged_randoms = {
        line.split()[1] for k in live.keys for line in k.read_text().splitlines() if line.strip()
    }
    for d in live.tables["diagnostics"]:
        if d["code"] == "tls_no_keys":
            assert not any(r in d["message"] for r in logged_randoms), d
