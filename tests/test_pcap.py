"""Capture reading rules, each with a case that must fail when the rule is broken.

Packets are built with dpkt (an independent encoder of IP/TCP) and files with dpkt's writers or
hand-built pcapng blocks (what dpkt cannot write: several interfaces, timestamp resolutions,
big-endian sections, Decryption Secrets Blocks, simple and obsolete packet blocks).
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from socket import AF_INET, AF_INET6, inet_pton

import dpkt  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ws.analysis.core.chunks import Data, Opened
from h2ws.analysis.records import DiagnosticRecord
from h2ws.analysis.sources.pcap import CaptureReader
from h2ws.analysis.sources.tcp import ACK, FIN, PSH, SYN, TcpReassembler, TcpSegment

from .paths import SHARED_CAPTURES
from .requires import needs_tools

CAPTURES = SHARED_CAPTURES
TS = 1_700_000_000.123456

# -- packet and file builders -------------------------------------------------------------------


def ip_tcp(
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    sport: int = 40000,
    dport: int = 443,
    seq: int = 1000,
    ack: int = 0,
    flags: int = ACK | PSH,
    payload: bytes = b"hello",
    *,
    v6: bool = False,
) -> bytes:
    """An IPv4 or IPv6 packet carrying one TCP segment."""
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, data=payload)
    if v6:
        body = bytes(tcp)
        ip6 = dpkt.ip6.IP6(
            src=inet_pton(AF_INET6, src), dst=inet_pton(AF_INET6, dst), nxt=6, hlim=64, data=body
        )
        ip6.plen = len(body)
        return bytes(ip6)
    return bytes(
        dpkt.ip.IP(src=inet_pton(AF_INET, src), dst=inet_pton(AF_INET, dst), p=6, data=tcp)
    )


def v6_tcp(**kw: object) -> bytes:
    return ip_tcp(src="2001:db8::1", dst="2001:db8::2", v6=True, **kw)  # type: ignore[arg-type]


def ether(ip: bytes, *, vlans: Iterable[int] = ()) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    tags = b"".join(struct.pack("!HH", tpid, 7) for tpid in vlans)
    return b"\x02" * 6 + b"\x04" * 6 + tags + struct.pack("!H", etype) + ip


def sll(ip: bytes) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return bytes(dpkt.sll.SLL(ethtype=etype, data=ip))


def sll2(ip: bytes) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return bytes(dpkt.sll2.SLL2(ethtype=etype, data=ip))


def mpls(ip: bytes) -> bytes:
    labels = struct.pack("!II", 16 << 12 | 64, 17 << 12 | 0x100 | 64)  # two labels, then IP
    return b"\x02" * 6 + b"\x04" * 6 + b"\x88\x47" + labels + ip


def pppoe(ip: bytes) -> bytes:
    proto = 0x0057 if ip[0] >> 4 == 6 else 0x0021
    session = struct.pack("!BBHHH", 0x11, 0, 1, len(ip) + 2, proto)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x88\x64" + session + ip


def null(ip: bytes, order: str = "<") -> bytes:
    family = 30 if ip[0] >> 4 == 6 else 2  # Darwin's AF_INET6
    return struct.pack(order + "I", family) + ip


def write_pcap(
    path: Path,
    frames: Iterable[tuple[float, bytes]],
    linktype: int = 1,
    *,
    nano: bool = False,
    order: str = "<",
) -> Path:
    """Classic pcap, either byte order (dpkt's writer only writes the host's)."""
    ticks = 10**9 if nano else 10**6
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
        for ts, frame in frames:
            total = round(ts * ticks)
            sec, frac = divmod(total, ticks)
            f.write(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return path


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(order: str, btype: int, body: bytes) -> bytes:
    body = _pad(body)
    size = len(body) + 12
    return struct.pack(order + "II", btype, size) + body + struct.pack(order + "I", size)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + _pad(value)


def shb(order: str = "<") -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += option(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + opts)


def epb(order: str, iface: int, ticks: int, frame: bytes) -> bytes:
    head = struct.pack(order + "5I", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
    return block(order, 6, head + frame)


def spb(order: str, frame: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(frame)) + frame)


def pb(order: str, iface: int, ticks: int, frame: bytes) -> bytes:
    head = struct.pack(
        order + "HH4I", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    return block(order, 2, head + frame)


def dsb(order: str, secrets: bytes, kind: int = 0x544C534B) -> bytes:
    return block(order, 0x0A, struct.pack(order + "II", kind, len(secrets)) + secrets)


def read(path: Path) -> tuple[list[TcpSegment], list[DiagnosticRecord], CaptureReader]:
    reader = CaptureReader(path)
    items = list(reader)
    segs = [x for x in items if isinstance(x, TcpSegment)]
    diags = [x for x in items if isinstance(x, DiagnosticRecord)]
    assert len(segs) + len(diags) == len(items)
    return segs, diags, reader


def codes(diags: list[DiagnosticRecord]) -> list[str]:
    return [d.code for d in diags]


def write_bulk_pcap(path: Path, segments: int, payload: int = 200, conns: int = 50) -> int:
    """A large Ethernet/IPv4 capture of ``conns`` interleaved connections; returns bytes of data.

    For throughput measurements: handshake, data both ways (one ACK per two data segments, as
    delayed ACKs do), FINs.
    """
    rng = random.Random(1)
    data = bytes(rng.randrange(256) for _ in range(payload))
    header = struct.Struct("<IIII")
    total = 0
    ts = TS
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

        def put(frame: bytes) -> None:
            nonlocal ts
            ts += 0.00001
            sec, usec = divmod(round(ts * 1e6), 1_000_000)
            f.write(header.pack(sec, usec, len(frame), len(frame)) + frame)

        per_conn = max(segments // conns, 6)
        for c in range(conns):
            cport = 30000 + c
            cseq, sseq = 1000 + c, 5000 + c * 7
            put(ether(ip_tcp(sport=cport, seq=cseq, flags=SYN, payload=b"")))
            put(ether(ip_tcp(src="10.0.0.2", dst="10.0.0.1", sport=443, dport=cport, seq=sseq,
                             ack=cseq + 1, flags=SYN | ACK, payload=b"")))  # fmt: skip
            cseq += 1
            sseq += 1
            template_c = ether(ip_tcp(sport=cport, seq=0, ack=0, payload=data))
            template_s = ether(
                ip_tcp(src="10.0.0.2", dst="10.0.0.1", sport=443, dport=cport, payload=data)
            )
            for i in range(per_conn - 4):
                client = i % 3 == 0
                frame = bytearray(template_c if client else template_s)
                seq = cseq if client else sseq
                struct.pack_into("!II", frame, 14 + 20 + 4, seq, sseq if client else cseq)
                put(bytes(frame))
                total += payload
                if client:
                    cseq += payload
                else:
                    sseq += payload
            put(ether(ip_tcp(sport=cport, seq=cseq, ack=sseq, flags=FIN | ACK, payload=b"")))
            put(ether(ip_tcp(src="10.0.0.2", dst="10.0.0.1", sport=443, dport=cport, seq=sseq,
                             ack=cseq + 1, flags=FIN | ACK, payload=b"")))  # fmt: skip
    return total


# -- link types, network layers -----------------------------------------------------------------

LINKS: list[tuple[int, Callable[[bytes], bytes]]] = [
    (1, ether),
    (1, lambda ip: ether(ip, vlans=[0x8100])),
    (1, lambda ip: ether(ip, vlans=[0x88A8, 0x8100])),
    (1, mpls),
    (1, pppoe),
    (113, sll),
    (276, sll2),
    (0, null),
    (0, lambda ip: null(ip, ">")),
    (108, lambda ip: null(ip, ">")),
    (101, lambda ip: ip),
    (12, lambda ip: ip),
    (14, lambda ip: ip),
]


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize(("linktype", "wrap"), LINKS)
def test_link_types(
    tmp_path: Path, linktype: int, wrap: Callable[[bytes], bytes], v6: bool
) -> None:
    ip = v6_tcp(seq=7, ack=9, flags=ACK | PSH | FIN) if v6 else ip_tcp(seq=7, ack=9)
    segs, diags, reader = read(write_pcap(tmp_path / "x.pcap", [(TS, wrap(ip))], linktype))
    assert diags == []
    assert reader.packets_read == 1
    (seg,) = segs
    src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("10.0.0.1", "10.0.0.2")
    flags = ACK | PSH | FIN if v6 else ACK | PSH
    assert seg == TcpSegment(TS, src, 40000, dst, 443, 7, 9, flags, b"hello")


@pytest.mark.parametrize(("linktype", "v6"), [(228, False), (229, True)])
def test_ipv4_and_ipv6_link_types(tmp_path: Path, linktype: int, v6: bool) -> None:
    segs, diags, _ = read(
        write_pcap(tmp_path / "x.pcap", [(TS, v6_tcp() if v6 else ip_tcp())], linktype)
    )
    assert [s.payload for s in segs] == [b"hello"] and diags == []


def test_ethernet_padding_is_trimmed_by_ip_length(tmp_path: Path) -> None:
    frames = [
        (TS, ether(ip_tcp(payload=b"")) + b"\0" * 6),
        (TS, ether(v6_tcp(payload=b"x")) + b"\xff" * 4),
    ]
    segs, _, _ = read(write_pcap(tmp_path / "x.pcap", frames))
    assert [s.payload for s in segs] == [b"", b"x"]


def test_offloaded_ipv4_length_and_bad_tcp_header(tmp_path: Path) -> None:
    tso = bytearray(ip_tcp(payload=b"big"))
    struct.pack_into("!H", tso, 2, 0)  # total length left to the NIC
    bad = bytearray(ip_tcp())
    bad[20 + 12] = 4 << 4  # TCP header length 16
    segs, diags, _ = read(
        write_pcap(tmp_path / "x.pcap", [(TS, bytes(tso)), (TS, bytes(bad))], 101)
    )
    assert [s.payload for s in segs] == [b"big"]
    assert codes(diags) == ["malformed_packet"]


def test_ipv6_extension_headers_before_tcp(tmp_path: Path) -> None:
    inner = v6_tcp()
    tcp = inner[40:]
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # hop-by-hop -> destination options
    dest = bytes([44, 0]) + b"\x01\x04\0\0\0\0"  # destination options -> fragment
    frag = bytes([6, 0]) + b"\0\0" + b"\0\0\0\1"  # atomic fragment (offset 0, no more) -> TCP
    exts = hop + dest + frag
    head = bytearray(inner[:40])
    struct.pack_into("!HB", head, 4, len(exts) + len(tcp), 0)
    segs, diags, _ = read(write_pcap(tmp_path / "x.pcap", [(TS, ether(bytes(head) + exts + tcp))]))
    assert diags == [] and [s.payload for s in segs] == [b"hello"]


def test_non_tcp_is_skipped_silently(tmp_path: Path) -> None:
    udp = bytes(
        dpkt.ip.IP(
            src=b"\1\1\1\1", dst=b"\2\2\2\2", p=17, data=dpkt.udp.UDP(sport=1, dport=2, data=b"x")
        )
    )
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    frames = [(TS, ether(udp)), (TS, arp), (TS, ether(ip_tcp()))]
    segs, diags, reader = read(write_pcap(tmp_path / "x.pcap", frames))
    assert diags == [] and len(segs) == 1 and reader.packets_read == 3


def test_ip_fragments_are_reported_and_skipped(tmp_path: Path) -> None:
    ip4 = bytearray(ip_tcp())
    struct.pack_into("!H", ip4, 6, 0x2000)  # more fragments
    ip6 = bytearray(v6_tcp())
    frag = bytes([6, 0]) + struct.pack("!H", 0x0001) + b"\0\0\0\7"
    ip6 = ip6[:40] + frag + ip6[40:]
    struct.pack_into("!HB", ip6, 4, len(ip6) - 40, 44)
    segs, diags, _ = read(
        write_pcap(tmp_path / "x.pcap", [(TS, ether(bytes(ip4))), (TS, ether(bytes(ip6)))])
    )
    assert segs == []
    assert codes(diags) == ["ip_fragment", "ip_fragment"]
    assert all(
        d.severity == "warning" and d.layer == "capture" and d.conn_id is None for d in diags
    )


def test_truncated_packets_are_reported_and_skipped(tmp_path: Path) -> None:
    full = ether(ip_tcp(payload=b"x" * 100))
    frames = [(TS, full[:60]), (TS, full[:30]), (TS, full[:10]), (TS + 1, full)]
    segs, diags, reader = read(write_pcap(tmp_path / "x.pcap", frames))
    assert codes(diags) == ["truncated_packet"] * 3
    assert [d.ts for d in diags] == [TS] * 3
    assert len(segs) == 1 and segs[0].payload == b"x" * 100
    assert reader.packets_read == 4


# -- classic pcap -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    ts = 1_700_000_000.987654321 if nano else 1_700_000_000.987654
    segs, _, _ = read(
        write_pcap(tmp_path / "x.pcap", [(ts, ether(ip_tcp()))], nano=nano, order=order)
    )
    (seg,) = segs
    assert seg.ts == ts
    assert round(seg.ts * 1e6) == round(ts * 1e6)  # microseconds survive exactly


def test_pcap_written_by_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1, nano=True)
        w.writepkt(ether(ip_tcp(payload=b"a")), ts=TS)
        w.writepkt(ether(v6_tcp(payload=b"b")), ts=TS + 1)
    segs, diags, _ = read(path)
    assert [s.payload for s in segs] == [b"a", b"b"] and diags == []


def test_truncated_pcap_yields_what_was_read_then_stops(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "x.pcap", [(TS + i, ether(ip_tcp(seq=i))) for i in range(3)])
    data = path.read_bytes()
    for cut in (len(data) - 5, len(data) - len(ether(ip_tcp())) - 8):
        path.write_bytes(data[:cut])
        items = list(CaptureReader(path))
        assert [type(x) for x in items] == [TcpSegment, TcpSegment, DiagnosticRecord]
        assert items[-1].code == "truncated_file"  # type: ignore[union-attr]


def test_garbage_missing_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "g").write_bytes(b"GET / HTTP/1.1\r\n\r\n" * 10)
    (tmp_path / "e").write_bytes(b"")
    for name in ("g", "e", "missing"):
        items = list(CaptureReader(tmp_path / name))
        assert [x.code for x in items] == ["not_a_capture"]  # type: ignore[union-attr]
        assert items[0].severity == "error"  # type: ignore[union-attr]


def test_unknown_link_type_pcap(tmp_path: Path) -> None:
    frames = [(TS, ether(ip_tcp()))] * 3
    segs, diags, reader = read(write_pcap(tmp_path / "x.pcap", frames, linktype=147))
    assert segs == [] and codes(diags) == ["unknown_linktype"] and reader.packets_read == 3


# -- pcapng ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_with_different_link_types_and_resolutions(
    tmp_path: Path, order: str
) -> None:
    base = 1_700_000_000
    blocks = [
        shb(order),
        idb(order, 1, tsresol=9),  # Ethernet, nanoseconds
        idb(order, 101, tsresol=0x80 | 20, tsoffset=base),  # raw IP, 2**-20 s, offset
        idb(order, 113),  # Linux cooked, default microseconds
        epb(order, 0, base * 10**9 + 123456789, ether(ip_tcp(payload=b"eth"))),
        epb(order, 1, 3 * 2**20 + 2**19, v6_tcp(payload=b"raw")),
        epb(order, 2, base * 10**6 + 250, sll(ip_tcp(payload=b"sll"))),
    ]
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blocks))
    segs, diags, reader = read(path)
    assert diags == [] and reader.packets_read == 3
    assert [s.payload for s in segs] == [b"eth", b"raw", b"sll"]
    assert segs[0].ts == base + 0.123456789
    assert segs[1].ts == base + 3.5
    assert segs[2].ts == base + 0.00025


def test_pcapng_sections_of_both_byte_orders_reset_interfaces(tmp_path: Path) -> None:
    blocks = [
        shb("<"),
        idb("<", 1),
        epb("<", 0, 10**6, ether(ip_tcp(payload=b"one"))),
        shb(">"),
        idb(">", 101, tsresol=3),
        epb(">", 0, 2000, ip_tcp(payload=b"two")),  # interface 0 is now the raw one
        epb(">", 1, 2000, ip_tcp(payload=b"bad")),  # no interface 1 in this section
    ]
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blocks))
    segs, diags, _ = read(path)
    assert [(s.payload, s.ts) for s in segs] == [(b"one", 1.0), (b"two", 2.0)]
    assert codes(diags) == ["malformed_packet"]


def test_pcapng_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    blocks = [
        shb(),
        idb("<", 1),
        pb("<", 0, 5 * 10**6, ether(ip_tcp(payload=b"pb"))),
        spb("<", ether(ip_tcp(payload=b"spb"))),
    ]
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blocks))
    segs, diags, reader = read(path)
    assert [(s.payload, s.ts) for s in segs] == [(b"pb", 5.0), (b"spb", 5.0)]
    assert diags == [] and reader.packets_read == 2


def test_decryption_secrets_blocks_anywhere(tmp_path: Path) -> None:
    first = b"CLIENT_RANDOM aa bb\n"
    second = b"CLIENT_HANDSHAKE_TRAFFIC_SECRET cc dd\n"
    blocks = [
        shb(),
        dsb("<", first),  # before any interface
        idb("<", 1),
        epb("<", 0, 1, ether(ip_tcp(payload=b"a"))),
        dsb("<", b"wireguard", kind=0x57474B4C),  # not TLS: ignored
        block("<", 0x0BAD, b"unknown block"),  # skipped
        epb("<", 0, 2, ether(ip_tcp(payload=b"b"))),
        dsb("<", second),  # after packets
    ]
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blocks))
    reader = CaptureReader(path)
    seen = []
    for item in reader:
        assert isinstance(item, TcpSegment)
        seen.append((item.payload, list(reader.tls_key_log)))
    assert seen == [(b"a", [first]), (b"b", [first])]
    assert reader.tls_key_log == [first, second]


def test_pcapng_written_by_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f, linktype=1)
        w.writepkt(ether(ip_tcp(payload=b"a")), ts=TS)
    segs, diags, _ = read(path)
    assert [(s.payload, s.ts) for s in segs] == [(b"a", TS)] and diags == []


def test_pcapng_unknown_link_type_once_per_interface(tmp_path: Path) -> None:
    blocks = [shb(), idb("<", 147), idb("<", 1)]
    blocks += [epb("<", i % 2, i, ether(ip_tcp(seq=i))) for i in range(4)]
    path = tmp_path / "x.pcapng"
    path.write_bytes(b"".join(blocks))
    segs, diags, reader = read(path)
    assert codes(diags) == ["unknown_linktype"]
    assert [s.seq for s in segs] == [1, 3] and reader.packets_read == 4


def test_truncated_and_corrupt_pcapng(tmp_path: Path) -> None:
    good = shb() + idb("<", 1) + epb("<", 0, 1, ether(ip_tcp()))
    path = tmp_path / "x.pcapng"
    path.write_bytes(good + epb("<", 0, 2, ether(ip_tcp()))[:-10])
    items = list(CaptureReader(path))
    assert [type(x) for x in items] == [TcpSegment, DiagnosticRecord]
    assert items[-1].code == "truncated_file"  # type: ignore[union-attr]
    bad = bytearray(epb("<", 0, 2, ether(ip_tcp())))
    bad[-1] ^= 0xFF  # trailing length disagrees with the leading one
    path.write_bytes(good + bytes(bad) + epb("<", 0, 3, ether(ip_tcp())))
    items = list(CaptureReader(path))
    assert [type(x) for x in items] == [TcpSegment, DiagnosticRecord]
    assert items[-1].code == "corrupt_file"  # type: ignore[union-attr]


# -- robustness ---------------------------------------------------------------------------------


def _sample_files() -> list[bytes]:
    buf = io.BytesIO()
    frames = [ether(ip_tcp(seq=i, payload=b"p" * i)) for i in range(4)] + [null(v6_tcp())]
    buf.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for i, frame in enumerate(frames):
        buf.write(struct.pack("<IIII", i, 0, len(frame), len(frame)) + frame)
    ng = shb(">") + idb(">", 1, tsresol=9) + idb(">", 0) + dsb(">", b"k")
    ng += b"".join(epb(">", i % 2, i, f) for i, f in enumerate(frames)) + spb(">", frames[0])
    return [buf.getvalue(), ng]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
    tail=st.binary(max_size=64),
)
def test_mutated_captures_never_raise(
    tmp_path: Path, which: int, edits: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(_sample_files()[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    data = data[: cut % (len(data) + 1)] + tail
    path = tmp_path / "m"
    path.write_bytes(bytes(data))
    for item in CaptureReader(path):
        assert isinstance(item, TcpSegment | DiagnosticRecord)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    head=st.sampled_from([b"", b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a"]),
    body=st.binary(max_size=300),
)
def test_random_bytes_never_raise(tmp_path: Path, head: bytes, body: bytes) -> None:
    path = tmp_path / "r"
    path.write_bytes(head + body)
    items = list(CaptureReader(path))
    assert all(isinstance(x, TcpSegment | DiagnosticRecord) for x in items)


# -- real captures, cross-checked with tshark ---------------------------------------------------

SAMPLES = sorted(CAPTURES.glob("*.pcap*")) if CAPTURES.is_dir() else []
needs_tshark = needs_tools("tshark")


def tshark(*args: str) -> str:
    return subprocess.run(
        ["tshark", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


def tshark_follow(path: Path, stream: int) -> tuple[str, bytes, bytes]:
    """(node 0 as "addr:port", bytes node 0 sent, bytes node 1 sent) of ``follow,tcp,raw``."""
    out = tshark("-r", str(path), "-q", "-z", f"follow,tcp,raw,{stream}")
    node0 = ""
    sent: list[bytearray] = [bytearray(), bytearray()]
    for line in out.splitlines():
        if line.startswith("Node 0: "):
            node0 = line[8:].replace("[", "").replace("]", "")
        elif line and not line.startswith(("=", "Follow", "Filter", "Node")):
            sent[line.startswith("\t")] += bytes.fromhex(line.strip())
    return node0, bytes(sent[0]), bytes(sent[1])


@needs_tshark
@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_captures_match_tshark(path: Path) -> None:
    reader = CaptureReader(path)
    tcp = TcpReassembler(str(path))
    events = []
    for item in reader:
        assert isinstance(item, TcpSegment), item
        events += tcp.feed(item)
    events += tcp.finish()
    frames = tshark("-r", str(path), "-Y", "tcp", "-T", "fields", "-e", "frame.number").split()
    assert reader.packets_read == len(frames)
    opened = [e.conn for e in events if isinstance(e, Opened)]
    convs = [
        line
        for line in tshark("-r", str(path), "-q", "-z", "conv,tcp").splitlines()
        if "<->" in line
    ]
    assert len(opened) == len(convs) > 0
    assert not any(isinstance(e, DiagnosticRecord) for e in events)
    for n, conn in enumerate(opened):
        ours = {
            d: b"".join(
                e.data
                for e in events
                if isinstance(e, Data) and e.conn_id == conn.conn_id and e.direction == d
            )
            for d in ("c2s", "s2c")
        }
        node0, sent0, sent1 = tshark_follow(path, n)
        assert node0 == f"{conn.client_addr}:{conn.client_port}"
        assert (ours["c2s"], ours["s2c"]) == (sent0, sent1)


def test_bulk_capture_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "bulk.pcap"
    total = write_bulk_pcap(path, 3000, conns=10)
    tcp = TcpReassembler(str(path))
    got = 0
    closed = 0
    for item in CaptureReader(path):
        assert isinstance(item, TcpSegment)
        for event in tcp.feed(item):
            got += len(event.data) if isinstance(event, Data) else 0
            closed += type(event).__name__ == "Closed"
    assert tcp.finish() == []
    assert got == total and closed == 10


@settings(max_examples=400, deadline=None)
@given(
    st.binary(min_size=0, max_size=40),
    st.integers(0, 80),
    st.lists(st.tuples(st.integers(0, 90), st.integers(0, 255)), max_size=4),
    st.integers(-20, 20),
)
def test_fast_ethernet_path_agrees_with_the_general_one(
    payload: bytes, options: int, mutations: list[tuple[int, int]], cut: int
) -> None:
    """The one-``struct`` path for Ethernet/IPv4/TCP gives exactly what the layered decoders
    give - segment or diagnostic - for valid packets with any TCP options and payload, and for
    packets with bytes changed (lengths, versions, flags, fragments) or cut short."""
    from h2ws.analysis.sources import pcap

    tcp = dpkt.tcp.TCP(sport=40000, dport=443, seq=7, ack=9, flags=ACK | PSH, data=payload)
    tcp.opts = bytes(options // 4 * 4)
    frame = bytearray(ether(bytes(dpkt.ip.IP(src=b"\n\0\0\1", dst=b"\n\0\0\2", p=6, data=tcp))))
    for pos, value in mutations:
        if pos < len(frame):
            frame[pos] = value
    data = bytes(frame[: len(frame) + cut] if cut < 0 else frame + bytes(cut))
    fast = pcap._ethernet_ip4_tcp(data, 0, len(data), TS)
    general = pcap._ethernet(data, 0, len(data), TS)
    assert fast == general
    assert type(fast) is type(general)
