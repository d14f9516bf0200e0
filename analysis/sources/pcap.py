"""Capture files in, TCP segments out: classic pcap and pcapng, streamed in bounded memory.

Covers the link layers of the supported link types (Ethernet with VLAN tags, MPLS and PPPoE,
null/loopback, Linux cooked, raw IP), IPv4 (RFC 791) and IPv6 with its extension headers
(RFC 8200), and the TCP header (RFC 9293 §3.1); pcapng blocks per the pcapng specification,
Decryption Secrets Blocks included.

The file is read in chunks of :data:`CHUNK` bytes and headers are decoded with ``struct`` at
offsets into the chunk; only a TCP payload is ever copied.  dpkt's readers and packet classes
do the same job, but (measured) decoding every packet into dpkt objects made reading several
times slower, and its readers stop short of what captures need: ``dpkt.pcap.Reader`` gives
nanosecond timestamps as ``Decimal`` and does not notice a truncated last record;
``dpkt.pcapng.Reader`` knows one interface per file and drops Decryption Secrets Blocks.

Whatever is wrong with the input becomes a :class:`DiagnosticRecord` (layer ``capture``,
``conn_id`` None) in file order; iteration never raises because of the input.  Codes:

- ``not_a_capture`` (error): the file cannot be opened, or is neither pcap nor pcapng.
- ``truncated_file`` (warning): the file ends inside a record; what came before was yielded.
- ``corrupt_file`` (error): a record length that cannot be right; reading stops there.
- ``unknown_linktype`` (error): once per interface whose packets are skipped.
- ``truncated_packet`` (warning): a TCP/IP packet shorter than its headers say (snap length).
- ``ip_fragment`` (warning): a fragment of a TCP/IP packet; reassembling IP is not done.
- ``malformed_packet`` (warning): impossible header values, or an unknown pcapng interface.

Non-TCP packets are skipped silently; that is what a capture filter would have done.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from socket import AF_INET, AF_INET6, inet_ntop
from typing import BinaryIO

from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.records import DiagnosticRecord
from h2ws.analysis.sources.tcp import TcpSegment, make_segment, new_segment

Result = TcpSegment | DiagnosticRecord | None
#: Decodes one captured frame ``buf[off:end]`` seen at ``ts``.
Decoder = Callable[[bytes, int, int, float], Result]

CHUNK = 1 << 20
#: Larger records are taken as corruption rather than read into memory.
MAX_RECORD = 64 << 20

_U16 = struct.Struct("!H").unpack_from
_U32LE = struct.Struct("<I").unpack_from
_IP4 = struct.Struct("!BxHxxHxB").unpack_from  # version/ihl, total length, frag field, proto
_IP6 = struct.Struct("!4xHB").unpack_from  # payload length, next header
_TCP = struct.Struct("!HHIIH").unpack_from  # ports, seq, ack, data offset + flags
#: Ethernet type, then _IP4's fields and both addresses, then _TCP's
_ETH_IP4_TCP = struct.Struct("!12xHBxHxxHxBxx8sHHIIH").unpack_from

_ETH_IP4, _ETH_IP6 = 0x0800, 0x86DD
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
_MPLS = frozenset({0x8847, 0x8848})
_PPPOE_SESSION = 0x8864
_TCP_PROTO = 6
#: IPv6 extension headers that may precede TCP, and how their length field counts.
_IP6_EXT_8 = frozenset({0, 43, 60, 135, 139, 140})  # (len + 1) * 8 bytes
_IP6_AH, _IP6_FRAG = 51, 44
#: Address family values of the null/loopback header (BSD values differ for IPv6).
_AF_IP = frozenset({2, 10, 23, 24, 28, 30})


def _truncated(ts: float, what: str) -> DiagnosticRecord:
    return diagnostic(
        None, "capture", "warning", "truncated_packet", f"packet too short for its {what}", ts=ts
    )


_names: dict[bytes, tuple[str, str]] = {}


def _addrs(raw: bytes) -> tuple[str, str]:
    """Source and destination in text form, from both raw addresses back to back.

    Cached, since a capture repeats few address pairs many times.
    """
    names = _names.get(raw)
    if names is None:
        if len(_names) > 65536:
            _names.clear()
        half = len(raw) // 2
        family = AF_INET if half == 4 else AF_INET6
        names = _names[raw] = (inet_ntop(family, raw[:half]), inet_ntop(family, raw[half:]))
    return names


# -- network and transport layers ---------------------------------------------------------------


def _tcp(buf: bytes, off: int, end: int, ts: float, addrs: bytes) -> Result:
    if off + 20 > end:
        return _truncated(ts, "TCP header")
    sport, dport, seq, ack, off_flags = _TCP(buf, off)
    hlen = (off_flags >> 12) * 4
    if hlen < 20:
        return diagnostic(
            None, "capture", "warning", "malformed_packet", f"TCP header length {hlen}", ts=ts
        )
    if off + hlen > end:
        return _truncated(ts, "TCP header")
    src, dst = _addrs(addrs)
    return new_segment(
        ts, src, sport, dst, dport, seq, ack, off_flags & 0x1FF, buf[off + hlen : end]
    )


def _ip4(buf: bytes, off: int, end: int, ts: float) -> Result:
    if off + 20 > end:
        return _truncated(ts, "IPv4 header")
    vihl, total, frag, proto = _IP4(buf, off)
    if proto != _TCP_PROTO:
        return None
    hlen = (vihl & 0x0F) * 4
    if total == 0:
        total = end - off  # segmentation offload: the stack left the length to the NIC
    if hlen < 20 or total < hlen:
        return diagnostic(
            None,
            "capture",
            "warning",
            "malformed_packet",
            f"IPv4 header length {hlen}, total length {total}",
            ts=ts,
        )
    if frag & 0x3FFF:
        return diagnostic(
            None,
            "capture",
            "warning",
            "ip_fragment",
            "IPv4 fragment of a TCP packet skipped",
            ts=ts,
        )
    if off + total > end:
        return _truncated(ts, "IPv4 total length")
    return _tcp(buf, off + hlen, off + total, ts, buf[off + 12 : off + 20])


def _ip6(buf: bytes, off: int, end: int, ts: float) -> Result:
    if off + 40 > end:
        return _truncated(ts, "IPv6 header")
    plen, nh = _IP6(buf, off)
    stop = off + 40 + plen if plen else end  # 0: jumbogram or segmentation offload
    if stop > end:
        return _truncated(ts, "IPv6 payload length")
    pos = off + 40
    while nh != _TCP_PROTO:
        if nh in _IP6_EXT_8 or nh == _IP6_AH:
            if pos + 2 > stop:
                return _truncated(ts, "IPv6 extension header")
            size = (buf[pos + 1] + 1) * 8 if nh != _IP6_AH else (buf[pos + 1] + 2) * 4
        elif nh == _IP6_FRAG:
            if pos + 8 > stop:
                return _truncated(ts, "IPv6 fragment header")
            if _U16(buf, pos + 2)[0] & 0xFFF9:
                if buf[pos] == _TCP_PROTO:
                    return diagnostic(
                        None,
                        "capture",
                        "warning",
                        "ip_fragment",
                        "IPv6 fragment of a TCP packet skipped",
                        ts=ts,
                    )
                return None
            size = 8  # an atomic fragment: the whole packet
        else:
            return None
        nh = buf[pos]
        pos += size
    return _tcp(buf, pos, stop, ts, buf[off + 8 : off + 40])


def _ip(buf: bytes, off: int, end: int, ts: float) -> Result:
    if off >= end:
        return _truncated(ts, "IP header")
    version = buf[off] >> 4
    if version == 4:
        return _ip4(buf, off, end, ts)
    if version == 6:
        return _ip6(buf, off, end, ts)
    return None


# -- link layers --------------------------------------------------------------------------------


def _ethertype(etype: int, buf: bytes, off: int, end: int, ts: float) -> Result:
    """Payload of an Ethernet type, through VLAN tags, MPLS labels and PPPoE sessions."""
    while True:
        if etype == _ETH_IP4:
            return _ip4(buf, off, end, ts)
        if etype == _ETH_IP6:
            return _ip6(buf, off, end, ts)
        if etype in _VLAN_TPIDS:
            if off + 4 > end:
                return _truncated(ts, "VLAN tag")
            etype = _U16(buf, off + 2)[0]
            off += 4
        elif etype in _MPLS:
            while True:
                if off + 4 > end:
                    return _truncated(ts, "MPLS label")
                off += 4
                if buf[off - 2] & 0x01:  # bottom of stack
                    return _ip(buf, off, end, ts)
        elif etype == _PPPOE_SESSION:
            if off + 8 > end:
                return _truncated(ts, "PPPoE header")
            proto = _U16(buf, off + 6)[0]
            off += 8
            if proto == 0x0021:
                return _ip4(buf, off, end, ts)
            if proto == 0x0057:
                return _ip6(buf, off, end, ts)
            return None
        else:
            return None


def _ethernet_ip4_tcp(buf: bytes, off: int, end: int, ts: float) -> Result:
    """Ethernet, then the common case read with one ``struct`` call: IPv4 without options, not
    fragmented, with TCP.  Anything else (and anything short or odd, which has a diagnostic to
    give) goes to :func:`_ethernet`.  A third of the cost per packet of the general path,
    which matters because every packet of a capture comes this way, and with ``--jobs`` every
    process reads every packet."""
    if end - off >= 54:
        etype, vihl, total, frag, proto, addrs, sport, dport, seq, ack, off_flags = _ETH_IP4_TCP(
            buf, off
        )
        if etype == _ETH_IP4 and vihl == 0x45 and proto == _TCP_PROTO and not frag & 0x3FFF:
            hlen = (off_flags >> 12) * 4
            stop = off + 14 + total
            if hlen >= 20 and 20 + hlen <= total and stop <= end:
                names = _names.get(addrs) or _addrs(addrs)
                return make_segment(
                    (ts, names[0], sport, names[1], dport, seq, ack, off_flags & 0x1FF,
                     buf[off + 34 + hlen : stop])
                )  # fmt: skip
    return _ethernet(buf, off, end, ts)


def _ethernet(buf: bytes, off: int, end: int, ts: float) -> Result:
    if off + 14 > end:
        return _truncated(ts, "Ethernet header")
    etype = _U16(buf, off + 12)[0]
    if etype == _ETH_IP4:  # the common case, one call shorter
        return _ip4(buf, off + 14, end, ts)
    return _ethertype(etype, buf, off + 14, end, ts)


def _sll(buf: bytes, off: int, end: int, ts: float) -> Result:
    if off + 16 > end:
        return _truncated(ts, "Linux cooked header")
    return _ethertype(_U16(buf, off + 14)[0], buf, off + 16, end, ts)


def _sll2(buf: bytes, off: int, end: int, ts: float) -> Result:
    if off + 20 > end:
        return _truncated(ts, "Linux cooked v2 header")
    return _ethertype(_U16(buf, off)[0], buf, off + 20, end, ts)


def _null(buf: bytes, off: int, end: int, ts: float) -> Result:
    """BSD loopback: a 4-byte address family in the byte order of the capturing host."""
    if off + 4 > end:
        return _truncated(ts, "loopback header")
    family = _U32LE(buf, off)[0]
    if family > 0xFFFF:
        family = int.from_bytes(buf[off : off + 4])
    return _ip(buf, off + 4, end, ts) if family in _AF_IP else None


LINKTYPES: dict[int, Decoder] = {
    0: _null,  # LINKTYPE_NULL
    1: _ethernet_ip4_tcp,  # LINKTYPE_ETHERNET
    12: _ip,  # DLT_RAW on most platforms
    14: _ip,  # DLT_RAW on some BSDs
    101: _ip,  # LINKTYPE_RAW
    108: _null,  # LINKTYPE_LOOP (OpenBSD; network byte order)
    113: _sll,  # LINKTYPE_LINUX_SLL
    228: _ip4,  # LINKTYPE_IPV4
    229: _ip6,  # LINKTYPE_IPV6
    276: _sll2,  # LINKTYPE_LINUX_SLL2
}


# -- files --------------------------------------------------------------------------------------

_PCAP_MAGICS: dict[bytes, tuple[str, int, int]] = {
    # magic as stored -> byte order, ticks per second, record header size
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000, 16),
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000, 16),
    b"\xa1\xb2\xcd\x34": (">", 1_000_000, 24),  # Kuznetzov's modified pcap
    b"\x34\xcd\xb2\xa1": ("<", 1_000_000, 24),
}
_SHB = 0x0A0D0D0A
_IDB, _PB, _SPB, _EPB, _DSB = 1, 2, 3, 6, 0x0A
_TLS_KEY_LOG = 0x544C534B
_OPT_TSRESOL, _OPT_TSOFFSET = 9, 14


class _Truncated(Exception):
    """The file ended inside a record."""


class _Corrupt(Exception):
    """A record length that cannot be right."""


class _Chunks:
    """A read-ahead window over the file, so that records are sliced out of large reads."""

    __slots__ = ("buf", "f", "pos")

    def __init__(self, f: BinaryIO, head: bytes) -> None:
        self.f = f
        self.buf = head
        self.pos = 0

    def need(self, n: int) -> bool:
        """Make ``n`` bytes available at ``pos``; False at a clean end of file."""
        have = len(self.buf) - self.pos
        if have >= n:
            return True
        if n > MAX_RECORD:
            raise _Corrupt(f"record of {n} bytes")
        self.buf = self.buf[self.pos :] + self.f.read(max(CHUNK, n - have))
        self.pos = 0
        if len(self.buf) >= n:
            return True
        if self.buf:
            raise _Truncated(f"{len(self.buf)} bytes left, {n} needed")
        return False


class _Interface:
    __slots__ = ("decode", "offset", "snaplen", "units")

    def __init__(self, decode: Decoder | None, units: int, offset: int, snaplen: int) -> None:
        self.decode = decode
        self.units = units  # timestamp ticks per second
        self.offset = offset  # if_tsoffset, in ticks
        self.snaplen = snaplen


class CaptureReader:
    """TCP segments and diagnostics of a pcap or pcapng file, in file order.

    ``tls_key_log`` collects the TLS key logs of pcapng Decryption Secrets Blocks as they are
    met (one entry per block), so a consumer sees each before the packets that follow it.
    Iterating again reads the file again.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.tls_key_log: list[bytes] = []
        self.packets_read = 0

    def __iter__(self) -> Iterator[TcpSegment | DiagnosticRecord]:
        self.tls_key_log = []
        self.packets_read = 0
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, around the yields
        except OSError as exc:
            yield diagnostic(None, "capture", "error", "not_a_capture", f"cannot open: {exc}")
            return
        with f:
            try:
                head = f.read(4)
                if len(head) == 4 and int.from_bytes(head) == _SHB:
                    yield from self._pcapng(_Chunks(f, head))
                elif head in _PCAP_MAGICS:
                    yield from self._pcap(_Chunks(f, head), *_PCAP_MAGICS[head])
                else:
                    yield diagnostic(
                        None, "capture", "error", "not_a_capture", "neither pcap nor pcapng"
                    )
            except _Truncated as exc:
                yield diagnostic(
                    None,
                    "capture",
                    "warning",
                    "truncated_file",
                    f"file ends inside a record: {exc}",
                )
            except _Corrupt as exc:
                yield diagnostic(
                    None, "capture", "error", "corrupt_file", f"reading stopped: {exc}"
                )
            except OSError as exc:
                yield diagnostic(None, "capture", "warning", "truncated_file", f"read error: {exc}")

    def _pcap(
        self, src: _Chunks, order: str, ticks: int, hdr_len: int
    ) -> Iterator[TcpSegment | DiagnosticRecord]:
        if not src.need(24):
            raise _Truncated("no file header")
        snaplen, linktype = struct.unpack_from(order + "II", src.buf, 16)
        linktype &= 0xFFFF  # the upper bits carry FCS information
        decode = LINKTYPES.get(linktype)
        if decode is None:
            yield diagnostic(None, "capture", "error", "unknown_linktype", f"link type {linktype}")
        record = struct.Struct(order + "IIII").unpack_from
        limit = max(snaplen, 262144)
        buf, pos = src.buf, 24
        while True:
            if pos + hdr_len > len(buf):
                src.pos = pos
                if not src.need(hdr_len):
                    return
                buf, pos = src.buf, src.pos
            sec, frac, caplen, _wire = record(buf, pos)
            if caplen > limit:
                raise _Corrupt(f"packet record of {caplen} bytes, snap length {snaplen}")
            start = pos + hdr_len
            pos = start + caplen
            if pos > len(buf):
                src.pos = start - hdr_len
                if not src.need(hdr_len + caplen):
                    raise _Truncated("packet record header without data")
                buf, start = src.buf, src.pos + hdr_len
                pos = start + caplen
            self.packets_read += 1
            if decode is not None:
                result = decode(buf, start, pos, (sec * ticks + frac) / ticks)
                if result is not None:
                    yield result

    def _pcapng(self, src: _Chunks) -> Iterator[TcpSegment | DiagnosticRecord]:
        order = "<"
        interfaces: list[_Interface] = []
        block = struct.Struct("<II").unpack_from
        u32 = struct.Struct("<I").unpack_from
        last_ts = 0.0
        while src.need(8):
            pos, buf = src.pos, src.buf
            btype = int.from_bytes(buf[pos : pos + 4])  # the SHB type reads the same both ways
            if btype == _SHB:
                if not src.need(12):
                    raise _Truncated("section header")
                pos, buf = src.pos, src.buf
                magic = buf[pos + 8 : pos + 12]
                if magic not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                    raise _Corrupt("section header without byte-order magic")
                order = "<" if magic[0] == 0x4D else ">"
                block = struct.Struct(order + "II").unpack_from
                u32 = struct.Struct(order + "I").unpack_from
                interfaces = []
            btype, blen = block(buf, pos)
            if blen < 12 or blen % 4:
                raise _Corrupt(f"block of {blen} bytes")
            if not src.need(blen):
                raise _Truncated(f"block of type {btype:#x}")
            pos, buf = src.pos, src.buf
            src.pos = pos + blen
            if u32(buf, pos + blen - 4)[0] != blen:
                raise _Corrupt(f"block of type {btype:#x}: lengths disagree")
            body, end = pos + 8, pos + blen - 4
            if btype in (_EPB, _PB):
                if body + 20 > end:
                    raise _Corrupt("packet block too short")
                if btype == _EPB:
                    iface, hi, lo, caplen, _w = struct.unpack_from(order + "5I", buf, body)
                else:
                    iface, _drops, hi, lo, caplen, _w = struct.unpack_from(
                        order + "HH4I", buf, body
                    )
                start = body + 20
                self.packets_read += 1
                if start + caplen > end:
                    raise _Corrupt("packet longer than its block")
                if iface >= len(interfaces):
                    yield diagnostic(
                        None,
                        "capture",
                        "warning",
                        "malformed_packet",
                        f"packet of undeclared interface {iface}",
                    )
                    continue
                idb = interfaces[iface]
                last_ts = (((hi << 32) | lo) + idb.offset) / idb.units
                if idb.decode is not None:
                    result = idb.decode(buf, start, start + caplen, last_ts)
                    if result is not None:
                        yield result
            elif btype == _SPB:
                if body + 4 > end:
                    raise _Corrupt("simple packet block too short")
                self.packets_read += 1
                if not interfaces:
                    yield diagnostic(
                        None,
                        "capture",
                        "warning",
                        "malformed_packet",
                        "simple packet block before any interface",
                    )
                    continue
                idb = interfaces[0]
                (wire,) = u32(buf, body)
                caplen = min(wire, end - body - 4, idb.snaplen or wire)
                # It has no timestamp: the last one seen keeps time monotonic.
                if idb.decode is not None:
                    result = idb.decode(buf, body + 4, body + 4 + caplen, last_ts)
                    if result is not None:
                        yield result
            elif btype == _IDB:
                if body + 8 > end:
                    raise _Corrupt("interface block too short")
                linktype, _res, snaplen = struct.unpack_from(order + "HHI", buf, body)
                units, offset = _interface_options(buf, body + 8, end, order)
                decode = LINKTYPES.get(linktype)
                if decode is None:
                    yield diagnostic(
                        None,
                        "capture",
                        "error",
                        "unknown_linktype",
                        f"link type {linktype} of interface {len(interfaces)}",
                    )
                interfaces.append(_Interface(decode, units, offset * units, snaplen))
            elif btype == _DSB and body + 8 <= end:
                kind, size = struct.unpack_from(order + "II", buf, body)
                if kind == _TLS_KEY_LOG:
                    self.tls_key_log.append(buf[body + 8 : min(body + 8 + size, end)])


def _interface_options(buf: bytes, pos: int, end: int, order: str) -> tuple[int, int]:
    """``if_tsresol`` as ticks per second and ``if_tsoffset`` in seconds (defaults 10**6, 0)."""
    units, offset = 1_000_000, 0
    option = struct.Struct(order + "HH").unpack_from
    while pos + 4 <= end:
        code, size = option(buf, pos)
        value = buf[pos + 4 : min(pos + 4 + size, end)]
        if code == 0:
            break
        if code == _OPT_TSRESOL and size >= 1:
            exp = value[0]
            units = 1 << (exp & 0x7F) if exp & 0x80 else 10**exp
        elif code == _OPT_TSOFFSET and size >= 8:
            (offset,) = struct.unpack(order + "q", value[:8])
        pos += 4 + (size + 3) // 4 * 4
    return units, offset
