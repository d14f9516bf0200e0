"""Write a large, synthetic but protocol-exact h2c capture full of RFC 8441 WebSockets.

Why synthetic: the benchmark needs captures of any size (hundreds of thousands to millions of
WebSocket messages) whose exact content is known, so that the decoder's output can be checked row
for row, and that can be made in seconds on any machine without running servers or tcpdump.

Why still exact: every HTTP/2 byte is written by two python-hyper ``h2`` connections talking to
each other in memory (a client, and a server that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL), so
preface, SETTINGS, HPACK, stream ids, flow control and WINDOW_UPDATEs are what a real strict peer
writes; every WebSocket frame is written by ``wsproto``'s RFC 6455 frame writer (client frames
masked, server frames not). Only TCP/IP is hand-made here: a SYN/SYN-ACK/ACK handshake, correct
sequence and acknowledgement numbers, MSS-sized segments (small writes sometimes coalesced, large
ones split, ACKs every second segment or piggybacked), IP and TCP checksums, FIN at the end, and
timestamps that only go forward.

Traffic: ``--connections`` TCP connections, each with ``--streams`` WebSocket streams opened by
extended CONNECT after the server's SETTINGS arrived, and ordinary GET/POST requests with bodies of
varied size interleaved on the same connections. On the WebSocket streams the client sends text or
binary messages (mostly 20-200 bytes, some up to 24 KiB, a few fragmented) and the server echoes
each; now and then a ping is answered by a pong; at the end each stream closes with a close
handshake and END_STREAM, the client sends GOAWAY and both sides FIN.

With ``--tls 1.3`` (or ``1.2``) every connection is HTTP/2 over TLS, as browsers speak it, on
port 443: after the TCP handshake a full TLS handshake in real wire format (ClientHello with
random, SNI, ALPN h2 and, for 1.3, supported_versions and an X25519 key share; ServerHello
choosing TLS_AES_128_GCM_SHA256, or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 for 1.2; a self-signed
RSA certificate, a real RSA-PSS CertificateVerify / ServerKeyExchange signature and correct
Finished MACs), then every HTTP/2 byte in application-data records of at most 16 KiB of plaintext,
one or more per application write, split across TCP segments wherever the MSS falls; close_notify
alerts before the FINs.  The traffic secrets (1.3) or master secret (1.2) are drawn from the
seeded generator - there is no real key exchange, which no decryptor can tell - and written to
an NSS key log ``FILE.keys`` next to the capture, from which ``tshark -o tls.keylog_file:`` and
``h2ws extract --keylog`` decrypt it.  Records are sealed by ``cryptography``'s AES-GCM; only
nonces, additional data and the key schedules (HKDF-Expand-Label, the TLS 1.2 PRF) are here.

A JSON sidecar (``FILE.json``) records what was written - messages per direction and opcode,
streams, connections, HTTP/2 frames per type, packets - so that a benchmark can check a decoder.
Payload sizes, choices, timing and TCP sequence numbers follow ``--seed``; wsproto draws the
WebSocket masking keys from ``os.urandom`` as RFC 6455 requires, so the client payload bytes on the
wire differ between runs while every count and every unmasked payload stays the same.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import random
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import dpkt
import h2.config
import h2.connection
import h2.events
import h2.settings
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from wsproto.frame_protocol import CloseReason, FrameProtocol

C2S = 0
S2C = 1
DIRECTION_NAMES = ("c2s", "s2c")

FRAME_TYPE_NAMES = {
    0: "DATA",
    1: "HEADERS",
    2: "PRIORITY",
    3: "RST_STREAM",
    4: "SETTINGS",
    5: "PUSH_PROMISE",
    6: "PING",
    7: "GOAWAY",
    8: "WINDOW_UPDATE",
    9: "CONTINUATION",
}
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SIDECAR_FORMAT = 1  # bump when the sidecar's meaning changes, so old captures are remade
CLOSE_REASON = "bye"
CLOSE_PAYLOAD = struct.pack("!H", CloseReason.NORMAL_CLOSURE) + CLOSE_REASON.encode()

CLIENT_IP = bytes([127, 0, 0, 1])
SERVER_IP = bytes([127, 0, 0, 1])
DLT_EN10MB = 1
DLT_LINUX_SLL = 113

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_PSH = 0x08
TCP_ACK = 0x10
WINDOW_SCALE = 7
WINDOW_FIELD = 1024  # x 2**7 = 128 KiB advertised receive window, never the bottleneck here

_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_TCP_HEADER = struct.Struct("!HHIIBBHHH")
_PSEUDO_HEADER = struct.Struct("!4s4sBBH")


# -- TCP/IP ----------------------------------------------------------------------------------


class Clock:
    """Capture time in integer microseconds, so pcap timestamps never round backwards."""

    def __init__(self, rng: random.Random, start_us: int = 1_700_000_000_000_000) -> None:
        self.now_us = start_us
        self._randint = rng.randint
        self._expovariate = rng.expovariate

    def step(self, low: int, high: int) -> int:
        self.now_us += self._randint(low, high)
        return self.now_us

    def idle(self, mean_us: float) -> None:
        """A pause between application actions (exponential, like independent arrivals)."""
        self.now_us += 1 + int(self._expovariate(1.0 / mean_us))


class PcapSink:
    """Classic pcap through dpkt's writer, with an Ethernet or Linux cooked (SLL) link layer."""

    def __init__(self, stream: BinaryIO, link: str) -> None:
        self.link_type = DLT_EN10MB if link == "ethernet" else DLT_LINUX_SLL
        self._writer = dpkt.pcap.Writer(stream, snaplen=65535, linktype=self.link_type)
        if link == "ethernet":
            # tcpdump on Linux "lo" shows zero MAC addresses and type IPv4.
            header = bytes(12) + b"\x08\x00"
            self._link_headers = (header, header)
        else:
            # SLL: packet type (4 = sent by us, 0 = to us), ARPHRD_LOOPBACK, empty address, IPv4.
            self._link_headers = (
                struct.pack("!HHH8sH", 4, 772, 0, b"", 0x0800),
                struct.pack("!HHH8sH", 0, 772, 0, b"", 0x0800),
            )
        self.packets = 0
        self.bytes = 0

    def write(self, direction: int, ip_packet: bytes, ts_us: int) -> None:
        frame = self._link_headers[direction] + ip_packet
        self._writer.writepkt_time(frame, ts_us / 1_000_000)
        self.packets += 1
        self.bytes += len(frame)


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum (dpkt's in_cksum sums 16-bit words in C via array)."""
    result: int = dpkt.in_cksum(data)
    return result


class TcpFlow:
    """One TCP connection on the wire: sequence numbers, segmentation, ACKs, handshake, FIN.

    Every byte a side sends is delivered at once (no loss), so an ACK always acknowledges
    everything the peer sent so far; a receiver ACKs every second segment of a flight and
    otherwise piggybacks on its next segment or sends a pure ACK when the exchange is over.
    """

    def __init__(
        self,
        sink: PcapSink,
        clock: Clock,
        rng: random.Random,
        client_port: int,
        server_port: int,
        mss: int,
        coalesce: float,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._random = rng.random
        self._ports = ((client_port, server_port), (server_port, client_port))
        self._addrs = ((CLIENT_IP, SERVER_IP), (SERVER_IP, CLIENT_IP))
        self._next_seq = [rng.getrandbits(32), rng.getrandbits(32)]
        self._ip_id = [rng.getrandbits(16), rng.getrandbits(16)]
        self._unacked = [0, 0]  # segments received by this side and not yet acknowledged
        self.mss = mss
        self.coalesce = coalesce

    def _segment(
        self, direction: int, flags: int, payload: bytes = b"", options: bytes = b""
    ) -> None:
        sport, dport = self._ports[direction]
        src, dst = self._addrs[direction]
        seq = self._next_seq[direction]
        ack = self._next_seq[1 - direction] if flags & TCP_ACK else 0
        window = 65535 if flags & TCP_SYN else WINDOW_FIELD
        offset = (20 + len(options)) // 4 << 4
        header = _TCP_HEADER.pack(sport, dport, seq, ack, offset, flags, window, 0, 0)
        tcp = header + options + payload
        pseudo = _PSEUDO_HEADER.pack(src, dst, 0, 6, len(tcp))
        checksum = _checksum(pseudo + tcp)
        tcp = header[:16] + struct.pack("!H", checksum) + header[18:] + options + payload
        ip_id = self._ip_id[direction]
        self._ip_id[direction] = (ip_id + 1) & 0xFFFF
        ip = _IP_HEADER.pack(0x45, 0, 20 + len(tcp), ip_id, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        self._sink.write(direction, ip + tcp, self._clock.now_us)
        consumed = len(payload) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)  # SYN, FIN: 1 each
        self._next_seq[direction] = (seq + consumed) & 0xFFFFFFFF
        if flags & TCP_ACK:
            self._unacked[direction] = 0
        if payload or flags & (TCP_SYN | TCP_FIN):
            self._unacked[1 - direction] += 1

    def handshake(self) -> None:
        # MSS, NOP, window scale: what Linux would offer minus SACK and timestamps.
        options = struct.pack("!BBHBBBB", 2, 4, self.mss, 1, 3, 3, WINDOW_SCALE)
        self._clock.step(1, 5)
        self._segment(C2S, TCP_SYN, options=options)
        self._clock.step(10, 40)
        self._segment(S2C, TCP_SYN | TCP_ACK, options=options)
        self._clock.step(10, 40)
        self._segment(C2S, TCP_ACK)

    def flight(self, direction: int, writes: list[bytes]) -> None:
        """Send one side's application writes: coalesce some small ones, split at the MSS."""
        if self._unacked[direction]:
            self._clock.step(15, 120)  # turnaround before the reply (which carries the ACK)
        mss = self.mss
        pending = b""
        last = len(writes) - 1
        for i, data in enumerate(writes):
            pending += data
            if i < last and len(pending) < mss and self._random() < self.coalesce:
                continue  # Nagle / cork: this write leaves together with the next one
            for start in range(0, len(pending), mss):
                self._clock.step(1, 6)
                piece = pending[start : start + mss]
                flags = TCP_ACK | (TCP_PSH if start + mss >= len(pending) else 0)
                self._segment(direction, flags, piece)
                if self._unacked[1 - direction] >= 2:
                    self._clock.step(2, 10)
                    self._segment(1 - direction, TCP_ACK)
            pending = b""

    def settle(self) -> None:
        """The exchange is over: whoever still owes an ACK sends a pure one (delayed ACK)."""
        for direction in (C2S, S2C):
            if self._unacked[direction]:
                self._clock.step(20, 200)
                self._segment(direction, TCP_ACK)

    def close(self) -> None:
        self.settle()
        self._clock.step(20, 80)
        self._segment(C2S, TCP_FIN | TCP_ACK)
        self._clock.step(20, 80)
        self._segment(S2C, TCP_FIN | TCP_ACK)
        self._clock.step(20, 80)
        self._segment(C2S, TCP_ACK)


# -- TLS -------------------------------------------------------------------------------------

TLS_VERSIONS = ("1.3", "1.2")
TLS_SUITES = {  # what the server chooses, per version
    "1.3": (0x1301, "TLS_AES_128_GCM_SHA256"),
    "1.2": (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
}
TLS_PORT = 443
SERVER_NAME = "bench.example"
MAX_FRAGMENT = 1 << 14  # plaintext bytes per record (RFC 8446 5.1, RFC 5246 6.2.1)
CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA = 20, 21, 22, 23
CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
CLOSE_NOTIFY = b"\x01\x00"  # warning, close_notify
_RECORD_HEADER = struct.Struct("!BHH")
_TLS12_AAD = struct.Struct("!QBHH")


def _vec(size: int, body: bytes) -> bytes:
    return len(body).to_bytes(size) + body


def _ext(ext_type: int, body: bytes) -> bytes:
    return ext_type.to_bytes(2) + _vec(2, body)


def _handshake_message(msg_type: int, body: bytes) -> bytes:
    return bytes((msg_type,)) + _vec(3, body)


def _record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return _RECORD_HEADER.pack(content_type, version, len(body)) + body


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """RFC 8446 section 7.1, SHA-256 (the only hash of the suites written here)."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + _vec(1, context)
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def tls12_prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 section 5, P_SHA256."""
    seed = label + seed
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, "sha256")
        out += hmac.digest(secret, a + seed, "sha256")
    return out[:length]


class Sealer13:
    """One direction's TLS 1.3 record protection under one traffic secret (AES-128-GCM)."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hkdf_expand_label(secret, b"key", b"", 16))
        self._iv = int.from_bytes(hkdf_expand_label(secret, b"iv", b"", 12))
        self._seq = 0

    def seal(self, content_type: int, content: bytes) -> bytes:
        """TLSCiphertext: opaque type application_data, legacy version 1.2, the inner plaintext
        (content, then its real type, no padding) sealed with nonce = iv XOR seq and the record
        header as additional data."""
        header = _RECORD_HEADER.pack(CT_APPLICATION_DATA, 0x0303, len(content) + 1 + 16)
        nonce = (self._iv ^ self._seq).to_bytes(12)
        self._seq += 1
        return header + self._aead.encrypt(nonce, content + bytes((content_type,)), header)


class Sealer12:
    """One direction's TLS 1.2 AES-GCM record protection (RFC 5288): 4-byte implicit salt, the
    8-byte explicit nonce (the sequence number, as OpenSSL writes it) in front of each record."""

    def __init__(self, key: bytes, salt: bytes) -> None:
        self._aead = AESGCM(key)
        self._salt = salt
        self._seq = 0

    def seal(self, content_type: int, content: bytes) -> bytes:
        explicit = self._seq.to_bytes(8)
        aad = _TLS12_AAD.pack(self._seq, content_type, 0x0303, len(content))
        self._seq += 1
        body = explicit + self._aead.encrypt(self._salt + explicit, content, aad)
        return _record(content_type, body)


class TlsIdentity:
    """The server's RSA key and a self-signed certificate for SERVER_NAME, made once."""

    def __init__(self) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        start = datetime.datetime(2023, 11, 1, tzinfo=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(1)
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        """rsa_pss_rsae_sha256 (0x0804), for CertificateVerify and ServerKeyExchange."""
        from cryptography.hazmat.primitives.asymmetric import padding

        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return self.key.sign(data, pss, hashes.SHA256())


def _x25519_public(rng: random.Random) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = X25519PrivateKey.from_private_bytes(rng.randbytes(32))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class TlsFlow:
    """A TcpFlow that speaks TLS: the handshake first, then each application write sealed into
    records of at most 16 KiB of plaintext (which the TcpFlow then cuts at the MSS).

    Same interface as TcpFlow (handshake, flight, settle, close), so a Connection runs over
    either.  ``keylog`` receives the NSS key log lines of this connection.
    """

    def __init__(
        self,
        tcp: TcpFlow,
        version: str,
        rng: random.Random,
        identity: TlsIdentity,
        keylog: list[str],
    ) -> None:
        self.tcp = tcp
        self.version = version
        self._rng = rng
        self._identity = identity
        self._keylog = keylog
        self._sealers: list[Sealer13 | Sealer12] = []
        self.records = [0, 0]  # per direction, handshake included
        self.handshake_messages = 0
        self.alerts = 0

    def _send(self, direction: int, records: list[bytes]) -> None:
        self.records[direction] += len(records)
        self.tcp.flight(direction, records)

    def _client_hello(self, client_random: bytes, session_id: bytes, key_share: bytes) -> bytes:
        tls13 = self.version == "1.3"
        suites: tuple[int, ...] = (0x1301, 0x1302, 0x1303) if tls13 else ()
        suites += (0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0xC02C, 0xC030)
        extensions = [
            _ext(0, _vec(2, b"\x00" + _vec(2, SERVER_NAME.encode()))),  # server_name
            _ext(10, _vec(2, b"\x00\x1d\x00\x17")),  # supported_groups: x25519, secp256r1
            _ext(11, _vec(1, b"\x00")),  # ec_point_formats: uncompressed
            _ext(13, _vec(2, b"\x08\x04\x04\x03\x04\x01")),  # signature_algorithms
            _ext(16, _vec(2, _vec(1, b"h2") + _vec(1, b"http/1.1"))),  # ALPN
        ]
        if tls13:
            extensions += [
                _ext(43, _vec(1, b"\x03\x04\x03\x03")),  # supported_versions
                _ext(45, _vec(1, b"\x01")),  # psk_key_exchange_modes: psk_dhe_ke
                _ext(51, _vec(2, b"\x00\x1d" + _vec(2, key_share))),  # key_share
            ]
        body = (
            b"\x03\x03"
            + client_random
            + _vec(1, session_id)
            + _vec(2, b"".join(s.to_bytes(2) for s in suites))
            + b"\x01\x00"  # compression: null
            + _vec(2, b"".join(extensions))
        )
        return _handshake_message(1, body)

    def handshake(self) -> None:
        self.tcp.handshake()
        rng = self._rng
        client_random = rng.randbytes(32)
        client_hello = self._client_hello(client_random, rng.randbytes(32), _x25519_public(rng))
        # Record-layer version 1.0 on the ClientHello, as OpenSSL, NSS and BoringSSL write it.
        self._send(C2S, [_record(CT_HANDSHAKE, client_hello, 0x0301)])
        if self.version == "1.3":
            self._handshake13(client_random, client_hello)
        else:
            self._handshake12(client_random, client_hello)

    def _handshake13(self, client_random: bytes, client_hello: bytes) -> None:
        rng = self._rng
        session_id = client_hello[39 : 39 + 32]  # echoed (middlebox compatibility mode)
        server_hello = _handshake_message(
            2,
            b"\x03\x03"
            + rng.randbytes(32)
            + _vec(1, session_id)
            + TLS_SUITES["1.3"][0].to_bytes(2)
            + b"\x00"
            + _vec(2, _ext(43, b"\x03\x04") + _ext(51, b"\x00\x1d" + _vec(2, _x25519_public(rng)))),
        )
        secrets = {
            label: rng.randbytes(32)
            for label in (
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0",
                "SERVER_TRAFFIC_SECRET_0",
            )
        }
        self._keylog += [f"{label} {client_random.hex()} {s.hex()}" for label, s in secrets.items()]
        encrypted_extensions = _handshake_message(8, _vec(2, _ext(16, _vec(2, _vec(1, b"h2")))))
        certificate = _handshake_message(
            11, b"\x00" + _vec(3, _vec(3, self._identity.cert_der) + _vec(2, b""))
        )
        transcript = client_hello + server_hello + encrypted_extensions + certificate
        signed = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00"
        signed += hashlib.sha256(transcript).digest()
        certificate_verify = _handshake_message(
            15, b"\x08\x04" + _vec(2, self._identity.sign(signed))
        )
        transcript += certificate_verify
        server_finished = _handshake_message(
            20, self._finished13(secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"], transcript)
        )
        transcript += server_finished
        client_finished = _handshake_message(
            20, self._finished13(secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], transcript)
        )
        server = Sealer13(secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
        self._send(
            S2C,
            [
                _record(CT_HANDSHAKE, server_hello),
                CCS_RECORD,
                server.seal(CT_HANDSHAKE, encrypted_extensions),
                server.seal(CT_HANDSHAKE, certificate),
                server.seal(CT_HANDSHAKE, certificate_verify),
                server.seal(CT_HANDSHAKE, server_finished),
            ],
        )
        client = Sealer13(secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
        self._send(C2S, [CCS_RECORD, client.seal(CT_HANDSHAKE, client_finished)])
        self._sealers = [
            Sealer13(secrets["CLIENT_TRAFFIC_SECRET_0"]),
            Sealer13(secrets["SERVER_TRAFFIC_SECRET_0"]),
        ]
        # A NewSessionTicket, as most servers send once the client's Finished arrived.
        ticket = _handshake_message(
            4,
            struct.pack("!II", 7200, rng.getrandbits(32))
            + _vec(1, b"\x00" * 8)
            + _vec(2, rng.randbytes(96))
            + _vec(2, b""),
        )
        self._send(S2C, [self._sealers[S2C].seal(CT_HANDSHAKE, ticket)])
        self.handshake_messages += 8  # ClientHello to NewSessionTicket

    @staticmethod
    def _finished13(traffic_secret: bytes, transcript: bytes) -> bytes:
        finished_key = hkdf_expand_label(traffic_secret, b"finished", b"", 32)
        return hmac.digest(finished_key, hashlib.sha256(transcript).digest(), "sha256")

    def _handshake12(self, client_random: bytes, client_hello: bytes) -> None:
        rng = self._rng
        server_random = rng.randbytes(32)
        server_hello = _handshake_message(
            2,
            b"\x03\x03"
            + server_random
            + _vec(1, rng.randbytes(32))  # a new session id
            + TLS_SUITES["1.2"][0].to_bytes(2)
            + b"\x00"
            + _vec(
                2,
                _ext(0xFF01, b"\x00")  # renegotiation_info
                + _ext(11, _vec(1, b"\x00"))
                + _ext(16, _vec(2, _vec(1, b"h2"))),
            ),
        )
        certificate = _handshake_message(11, _vec(3, _vec(3, self._identity.cert_der)))
        params = b"\x03\x00\x1d" + _vec(1, _x25519_public(rng))  # named_curve x25519
        signature = self._identity.sign(client_random + server_random + params)
        key_exchange = _handshake_message(12, params + b"\x08\x04" + _vec(2, signature))
        hello_done = _handshake_message(14, b"")
        client_key_exchange = _handshake_message(16, _vec(1, _x25519_public(rng)))
        master = rng.randbytes(48)
        self._keylog.append(f"CLIENT_RANDOM {client_random.hex()} {master.hex()}")
        transcript = (
            client_hello + server_hello + certificate + key_exchange + hello_done
        ) + client_key_exchange
        client_finished = _handshake_message(
            20, tls12_prf(master, b"client finished", hashlib.sha256(transcript).digest(), 12)
        )
        transcript += client_finished
        server_finished = _handshake_message(
            20, tls12_prf(master, b"server finished", hashlib.sha256(transcript).digest(), 12)
        )
        block = tls12_prf(master, b"key expansion", server_random + client_random, 40)
        client = Sealer12(block[:16], block[32:36])
        server = Sealer12(block[16:32], block[36:40])
        # The server's first flight in one record, the client's in three, as OpenSSL writes them.
        self._send(
            S2C,
            [_record(CT_HANDSHAKE, server_hello + certificate + key_exchange + hello_done)],
        )
        self._send(
            C2S,
            [
                _record(CT_HANDSHAKE, client_key_exchange),
                CCS_RECORD,
                client.seal(CT_HANDSHAKE, client_finished),
            ],
        )
        self._send(S2C, [CCS_RECORD, server.seal(CT_HANDSHAKE, server_finished)])
        self._sealers = [client, server]
        self.handshake_messages += 8  # ClientHello to the server's Finished

    def flight(self, direction: int, writes: list[bytes]) -> None:
        seal = self._sealers[direction].seal
        records = []
        for data in writes:
            for start in range(0, len(data), MAX_FRAGMENT):
                records.append(seal(CT_APPLICATION_DATA, data[start : start + MAX_FRAGMENT]))
        self._send(direction, records)

    def settle(self) -> None:
        self.tcp.settle()

    def close(self) -> None:
        """close_notify each way, then the TCP FINs."""
        for direction in (C2S, S2C):
            self._send(direction, [self._sealers[direction].seal(CT_ALERT, CLOSE_NOTIFY)])
            self.alerts += 1
        self.tcp.close()


def keylog_path(capture: Path) -> Path:
    """The NSS key log written next to a TLS capture: ``FILE.keys``."""
    return capture.with_suffix(".keys")


# -- HTTP/2 + WebSocket ----------------------------------------------------------------------


@dataclass
class Stats:
    """What was written; becomes the JSON sidecar."""

    messages: Counter[tuple[int, str]] = field(default_factory=Counter)  # (direction, opcode)
    ws_frames: Counter[int] = field(default_factory=Counter)  # per direction
    fragmented: int = 0
    h2_frames: Counter[tuple[int, int]] = field(default_factory=Counter)  # (direction, type)
    ws_streams: int = 0
    http_streams: int = 0
    payload_bytes: list[int] = field(default_factory=lambda: [0, 0])  # per direction
    payload_digests: list[int] = field(default_factory=lambda: [0, 0])  # see message()
    http_body_bytes: int = 0

    def message(self, direction: int, opcode: str, payload: bytes, frames: int = 1) -> None:
        """Count one WebSocket message as the application sees it (unmasked, defragmented).

        The SHA-256 digests of a direction's payloads are added up as integers modulo 2**256:
        order does not matter, yet one wrong byte or one missing message changes the sum.
        """
        self.messages[direction, opcode] += 1
        self.ws_frames[direction] += frames
        self.payload_bytes[direction] += len(payload)
        digest = int.from_bytes(hashlib.sha256(payload).digest())
        self.payload_digests[direction] = (self.payload_digests[direction] + digest) % (1 << 256)

    def data_messages(self) -> int:
        return sum(n for (_, op), n in self.messages.items() if op in ("text", "binary"))


class Peer:
    """One side's h2 connection, its queued stream data (flow control) and its writes."""

    def __init__(self, conn: h2.connection.H2Connection, direction: int, stats: Stats) -> None:
        self.conn = conn
        self.direction = direction
        self.writes: list[bytes] = []
        self.queued: dict[int, deque[tuple[bytes, bool]]] = {}
        self._stats = stats
        self._preface_pending = direction == C2S

    def flush(self) -> None:
        """Keep what h2 wrote for the last operation as one application write."""
        data = self.conn.data_to_send()
        if data:
            self._count_frames(data)
            self.writes.append(data)

    def _count_frames(self, data: bytes) -> None:
        """h2 always writes whole frames, so a write's frame headers can be walked directly."""
        offset = 0
        if self._preface_pending:
            assert data.startswith(CLIENT_PREFACE)
            offset = len(CLIENT_PREFACE)
            self._preface_pending = False
        counter = self._stats.h2_frames
        direction = self.direction
        end = len(data)
        while offset < end:
            length = int.from_bytes(data[offset : offset + 3])
            counter[direction, data[offset + 3]] += 1
            offset += 9 + length
        assert offset == end, "h2 wrote a partial frame"

    def queue(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.queued.setdefault(stream_id, deque()).append((data, end_stream))
        self.drain()

    def drain(self) -> None:
        """Send queued stream data as far as the peer's flow-control windows allow."""
        if not self.queued:
            return
        conn = self.conn
        for stream_id in list(self.queued):
            items = self.queued[stream_id]
            while items:
                data, end_stream = items[0]
                window = min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                )
                if len(data) <= window:
                    conn.send_data(stream_id, data, end_stream=end_stream)
                    items.popleft()
                elif window > 0:
                    conn.send_data(stream_id, data[:window])
                    items[0] = (data[window:], end_stream)
                else:
                    break
                self.flush()
            if not items:
                del self.queued[stream_id]


@dataclass
class WsStream:
    stream_id: int
    client: FrameProtocol
    server: FrameProtocol


class Connection:
    """A client and a server h2 connection joined by a TcpFlow; the server echoes WebSockets."""

    def __init__(
        self,
        tcp: TcpFlow | TlsFlow,
        stats: Stats,
        blob: bytes,
        text_blob: bytes,
        scheme: str = "http",
        authority: str = "bench.example:8080",
    ) -> None:
        self.tcp = tcp
        self.stats = stats
        self._scheme = scheme
        self._authority = authority
        self._blob = blob
        self._text_blob = text_blob
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        # h2's own initial SETTINGS (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE) plus RFC 8441's.
        server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: server.DEFAULT_MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        self.client = Peer(client, C2S, stats)
        self.server = Peer(server, S2C, stats)
        self.connect_protocol_enabled = False
        self.ws: list[WsStream] = []
        self._requests: dict[int, dict[bytes, bytes]] = {}
        self._ws_ids: set[int] = set()
        self._handlers: tuple[Callable[[h2.events.Event], None], ...] = (
            self._on_client_event,
            self._on_server_event,
        )

    # Moving bytes --------------------------------------------------------------------------

    def pump(self) -> None:
        """Deliver writes both ways (as TCP flights) until neither side has anything to say."""
        peers = (self.client, self.server)
        while True:
            moved = False
            for sender in peers:
                if not sender.writes:
                    continue
                moved = True
                receiver = peers[1 - sender.direction]
                writes, sender.writes = sender.writes, []
                self.tcp.flight(sender.direction, writes)
                handle = self._handlers[receiver.direction]
                for event in receiver.conn.receive_data(b"".join(writes)):
                    handle(event)
                receiver.flush()
                receiver.drain()
                sender.drain()
            if not moved:
                return

    def _on_client_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            if setting is not None and setting.new_value == 1:
                self.connect_protocol_enabled = True
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            self.client.conn.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
        elif isinstance(event, h2.events.ResponseReceived):
            assert event.headers is not None
            assert (b":status", b"200") in event.headers, event.headers
        elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
            if isinstance(event, h2.events.ConnectionTerminated):
                return  # only the GOAWAY the client itself asked for at the end
            raise RuntimeError(f"unexpected {event}")

    def _on_server_event(self, event: h2.events.Event) -> None:
        server = self.server
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            headers = dict(event.headers)
            if headers[b":method"] == b"CONNECT" and headers.get(b":protocol") == b"websocket":
                self._ws_ids.add(event.stream_id)
                server.conn.send_headers(event.stream_id, [(":status", "200")])
                server.flush()
            else:
                self._requests[event.stream_id] = headers
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            server.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            request = self._requests.pop(event.stream_id, None)
            if request is not None:
                self._respond(event.stream_id, request)
        elif isinstance(event, h2.events.StreamReset):
            raise RuntimeError(f"unexpected {event}")

    def _respond(self, stream_id: int, request: dict[bytes, bytes]) -> None:
        size = int(request[b":path"].rsplit(b"size=", 1)[1])
        body = self._blob[:size]
        self.server.conn.send_headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", "application/octet-stream"),
                ("content-length", str(size)),
                ("cache-control", "no-store"),
            ],
            end_stream=size == 0,
        )
        self.server.flush()
        if size:
            self.server.queue(stream_id, body, end_stream=True)
        self.stats.http_body_bytes += size

    # Application actions --------------------------------------------------------------------

    def start(self, streams: int, rng: random.Random) -> None:
        """TCP handshake, h2 prefaces and SETTINGS, then the WebSocket streams."""
        self.tcp.handshake()
        self.server.conn.initiate_connection()
        self.server.flush()
        self.client.conn.initiate_connection()
        self.client.flush()
        # pump() lets the client speak first: its preface, then the server's SETTINGS and ACK.
        self.pump()
        self.tcp.settle()
        if not self.connect_protocol_enabled:
            raise RuntimeError("server did not enable the extended CONNECT protocol")
        for i in range(streams):
            self.open_websocket(f"/ws/{i}?client={rng.randrange(10**6)}")

    def open_websocket(self, path: str) -> None:
        client = self.client.conn
        stream_id = client.get_next_available_stream_id()
        client.send_headers(
            stream_id,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", self._scheme),
                (":path", path),
                (":authority", self._authority),
                ("sec-websocket-version", "13"),
                ("origin", f"{self._scheme}://{self._authority}"),
            ],
        )
        self.client.flush()
        self.pump()
        self.tcp.settle()
        assert stream_id in self._ws_ids
        self.ws.append(WsStream(stream_id, FrameProtocol(True, []), FrameProtocol(False, [])))
        self.stats.ws_streams += 1

    def request(self, rng: random.Random, body_size: int) -> None:
        """An ordinary request sharing the connection: GET mostly, POST with a body sometimes."""
        client = self.client.conn
        stream_id = client.get_next_available_stream_id()
        post = rng.random() < 0.25
        headers = [
            (":method", "POST" if post else "GET"),
            (":scheme", self._scheme),
            (":path", f"/api/items/{stream_id}?size={body_size}"),
            (":authority", self._authority),
            ("accept", "*/*"),
            ("user-agent", "h2ws-bench/1"),
        ]
        if post:
            upload = rng.randint(16, 4096)
            headers.append(("content-length", str(upload)))
            client.send_headers(stream_id, headers)
            self.client.flush()
            self.client.queue(stream_id, self._blob[-upload:], end_stream=True)
            self.stats.http_body_bytes += upload
        else:
            client.send_headers(stream_id, headers, end_stream=True)
            self.client.flush()
        self.stats.http_streams += 1
        self.pump()
        self.tcp.settle()

    def _payload(self, rng: random.Random, size: int) -> tuple[bytes | str, str]:
        start = rng.randrange(len(self._blob) - size)
        if rng.random() < 0.5:
            return self._text_blob[start : start + size].decode("ascii"), "text"
        return self._blob[start : start + size], "binary"

    def echo(self, rng: random.Random, sizes: list[tuple[WsStream, int]]) -> None:
        """Client messages on some streams in one go, then the server echoes each one."""
        stats = self.stats
        echoes: list[tuple[WsStream, bytes | str, str]] = []
        for ws, size in sizes:
            payload, opcode = self._payload(rng, size)
            frames = 1
            if size >= 8 and rng.random() < 0.02:
                frames = rng.randint(2, 4)
                stats.fragmented += 1
            step = math.ceil(size / frames)
            for i in range(frames):
                piece = payload[i * step : (i + 1) * step]
                self.client.queue(ws.stream_id, bytes(ws.client.send_data(piece, i == frames - 1)))
            raw = payload.encode() if isinstance(payload, str) else payload
            stats.message(C2S, opcode, raw, frames)
            echoes.append((ws, payload, opcode))
        self.pump()
        for ws, payload, opcode in echoes:
            self.server.queue(ws.stream_id, bytes(ws.server.send_data(payload)))
            stats.message(S2C, opcode, payload.encode() if isinstance(payload, str) else payload)
        self.pump()
        self.tcp.settle()

    def ping(self, rng: random.Random) -> None:
        ws = rng.choice(self.ws)
        data = rng.randbytes(8)
        self.client.queue(ws.stream_id, bytes(ws.client.ping(data)))
        self.pump()
        self.server.queue(ws.stream_id, bytes(ws.server.pong(data)))
        self.pump()
        self.tcp.settle()
        self.stats.message(C2S, "ping", data)
        self.stats.message(S2C, "pong", data)

    def finish(self) -> None:
        """Close handshake and END_STREAM on every WebSocket, GOAWAY, then TCP FIN both ways."""
        for ws in self.ws:
            close = ws.client.close(CloseReason.NORMAL_CLOSURE, CLOSE_REASON)
            self.client.queue(ws.stream_id, bytes(close))
            self.pump()
            close = ws.server.close(CloseReason.NORMAL_CLOSURE, CLOSE_REASON)
            self.server.queue(ws.stream_id, bytes(close), end_stream=True)
            self.pump()
            self.client.queue(ws.stream_id, b"", end_stream=True)
            self.pump()
            self.tcp.settle()
            for direction in (C2S, S2C):
                self.stats.message(direction, "close", CLOSE_PAYLOAD)
        self.client.conn.close_connection()
        self.client.flush()
        self.pump()
        self.tcp.close()


# -- the capture -----------------------------------------------------------------------------


@dataclass
class Params:
    messages: int = 200_000
    connections: int = 4
    streams: int = 8
    seed: int = 1
    port: int = 8080
    link: str = "ethernet"
    mss: int = 1460
    coalesce: float = 0.4
    request_every: int = 40  # one ordinary request per this many echo actions, on average
    ping_every: int = 200


def _message_size(rng: random.Random) -> int:
    """Mostly small (20-200 bytes), 1 in 100 from 200 B to 24 KiB (log-uniform).

    The larger ones span several TCP segments and, above 16 KiB, several HTTP/2 DATA frames.
    """
    if rng.random() < 0.01:
        return int(math.exp(rng.uniform(math.log(200), math.log(24 * 1024))))
    return rng.randint(20, 200)


def _body_size(rng: random.Random) -> int:
    """Response bodies from empty to 160 KiB, log-uniform: some wait for WINDOW_UPDATEs."""
    if rng.random() < 0.05:
        return 0
    return int(math.exp(rng.uniform(math.log(16), math.log(160 * 1024))))


def generate(params: Params, output: Path, tls: str | None = None) -> dict[str, Any]:
    """Write the capture and its sidecar; return the sidecar's content.

    ``tls`` ("1.3" or "1.2"): HTTP/2 over TLS, with the NSS key log in ``keylog_path(output)``
    (the TLS version is not a ``Params`` field, so that cached h2c captures keep matching).
    """
    if params.messages < 2:
        raise ValueError("--messages must be at least 2 (a message and its echo)")
    if tls is not None and tls not in TLS_VERSIONS:
        raise ValueError(f"TLS version {tls!r}: one of {', '.join(TLS_VERSIONS)}")
    started = time.perf_counter()
    rng = random.Random(params.seed)
    blob = rng.randbytes(1 << 20)
    text_blob = bytes(32 + b % 95 for b in blob)  # printable ASCII, valid UTF-8
    stats = Stats()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as stream:
        sink = PcapSink(stream, params.link)
        clock = Clock(rng)
        connections: list[Connection] = []
        identity = TlsIdentity() if tls else None
        keylog: list[str] = []
        tls_flows: list[TlsFlow] = []
        for i in range(params.connections):
            tcp = TcpFlow(sink, clock, rng, 40000 + 7 * i, params.port, params.mss, params.coalesce)
            if identity is None:
                connection = Connection(tcp, stats, blob, text_blob)
            else:
                assert tls is not None
                flow = TlsFlow(tcp, tls, rng, identity, keylog)
                tls_flows.append(flow)
                authority = SERVER_NAME + ("" if params.port == TLS_PORT else f":{params.port}")
                connection = Connection(flow, stats, blob, text_blob, "https", authority)
            connection.start(params.streams, rng)
            connections.append(connection)
            clock.idle(2000)

        # Every client message is echoed, so the budget is reached in pairs.
        target_pairs = (params.messages + 1) // 2
        pairs = 0
        while pairs < target_pairs:
            clock.idle(250)
            connection = rng.choice(connections)
            roll = rng.random()
            if roll < 1 / params.request_every:
                connection.request(rng, _body_size(rng))
            elif roll < 1 / params.request_every + 1 / params.ping_every:
                connection.ping(rng)
            else:
                batch = min(rng.choice((1, 1, 1, 2, 2, 3, 4)), target_pairs - pairs)
                chosen = rng.sample(connection.ws, min(batch, len(connection.ws)))
                connection.echo(rng, [(ws, _message_size(rng)) for ws in chosen])
                pairs += len(chosen)
        for connection in connections:
            clock.idle(1000)
            connection.finish()

    messages_by = {
        DIRECTION_NAMES[d]: {op: n for (dd, op), n in sorted(stats.messages.items()) if dd == d}
        for d in (C2S, S2C)
    }
    frames_by = {
        DIRECTION_NAMES[d]: {
            FRAME_TYPE_NAMES.get(t, str(t)): n
            for (dd, t), n in sorted(stats.h2_frames.items())
            if dd == d
        }
        for d in (C2S, S2C)
    }
    total_frames = Counter[str]()
    for per_direction in frames_by.values():
        total_frames.update(per_direction)
    by_opcode = Counter[str]()
    for (_, op), n in stats.messages.items():
        by_opcode[op] += n
    sidecar: dict[str, Any] = {
        "capture": output.name,
        "generator": "bench/make_capture.py",
        "format": SIDECAR_FORMAT,
        "params": vars(params),
        "server_port": params.port,
        "link_type": params.link,
        "packets": sink.packets,
        "bytes": sink.bytes,
        "connections": params.connections,
        "streams": {
            "websocket": stats.ws_streams,
            "http": stats.http_streams,
            "total": stats.ws_streams + stats.http_streams,
        },
        "messages": {
            "total": sum(stats.messages.values()),
            "data": stats.data_messages(),
            "c2s": sum(n for (d, _), n in stats.messages.items() if d == C2S),
            "s2c": sum(n for (d, _), n in stats.messages.items() if d == S2C),
            "by_opcode": dict(sorted(by_opcode.items())),
            "by_direction": messages_by,
            "fragmented": stats.fragmented,
        },
        "ws_frames": {DIRECTION_NAMES[d]: stats.ws_frames[d] for d in (C2S, S2C)},
        "payload_bytes": {DIRECTION_NAMES[d]: stats.payload_bytes[d] for d in (C2S, S2C)},
        "payload_sha256_sum": {
            DIRECTION_NAMES[d]: f"{stats.payload_digests[d]:064x}" for d in (C2S, S2C)
        },
        "http_body_bytes": stats.http_body_bytes,
        "h2_frames": {
            "total": sum(total_frames.values()),
            "by_type": dict(sorted(total_frames.items())),
            "by_direction": frames_by,
        },
        "generator_seconds": round(time.perf_counter() - started, 3),
    }
    if tls is not None:
        keys = keylog_path(output)
        keys.write_text("".join(line + "\n" for line in keylog))
        sidecar["tls"] = {
            "version": f"TLS {tls}",
            "cipher": TLS_SUITES[tls][1],
            "sni": SERVER_NAME,
            "alpn": "h2",
            "keylog": keys.name,
            "keylog_lines": len(keylog),
            "records": {
                DIRECTION_NAMES[d]: sum(f.records[d] for f in tls_flows) for d in (C2S, S2C)
            },
            "handshake_messages": sum(f.handshake_messages for f in tls_flows),
            "alerts": sum(f.alerts for f in tls_flows),
        }
    sidecar_path(output).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def sidecar_path(capture: Path) -> Path:
    return capture.with_name(capture.name + ".json")


# -- checking a capture with tshark ----------------------------------------------------------


def verify_with_tshark(capture: Path, sidecar: dict[str, Any], tshark: str = "tshark") -> list[str]:
    """Let tshark decode the capture; return the disagreements (empty when all is well).

    Checks that tshark sees exactly the HTTP/2 frames h2 wrote (per type) and that its expert
    system reports no malformed packet and no error (e.g. a bad checksum or a TCP problem).
    A TLS capture is decrypted with its key log (``FILE.keys``); HTTP/2 is then found by ALPN,
    and the number of TLS records tshark sees (and how many of them it decrypted) must equal
    the number written.
    """
    import subprocess

    port = str(sidecar["server_port"])
    tls = sidecar.get("tls")
    decode = (
        ["-o", f"tls.keylog_file:{capture.with_name(tls['keylog'])}"]
        if tls
        else ["-d", f"tcp.port=={port},http2"]
    )
    fields = subprocess.run(
        [tshark, "-r", str(capture), *decode, "-o", "tcp.check_checksum:TRUE", "-Y", "http2",
         "-T", "fields", "-e", "http2.type"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    seen = Counter[str]()
    for line in fields.splitlines():
        for value in line.split(","):
            if value:
                seen[FRAME_TYPE_NAMES.get(int(value), value)] += 1
    problems = []
    expected = sidecar["h2_frames"]["by_type"]
    if dict(seen) != expected:
        problems.append(f"tshark frame counts {dict(sorted(seen.items()))} != generated {expected}")
    if tls:
        problems += _tls_record_problems(capture, decode, tls, tshark)
    expert = subprocess.run(
        [tshark, "-r", str(capture), *decode, "-o", "tcp.check_checksum:TRUE", "-o",
         "ip.check_checksum:TRUE", "-q", "-z", "expert,warn"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if any(line.startswith(("Errors", "Warns")) for line in expert.splitlines()):
        problems.append("tshark expert info:\n" + expert.strip())
    return problems


def _tls_record_problems(
    capture: Path, decode: list[str], tls: dict[str, Any], tshark: str
) -> list[str]:
    """tshark must see every TLS record written and decrypt every protected one.

    The HTTP/2 frame count already needs every application-data record decrypted; this adds
    the records themselves (one each, however many TCP segments carry it), the handshake
    messages (EncryptedExtensions, Certificate, CertificateVerify, Finished and the ticket are
    only seen when decrypted) and the close_notify alerts (encrypted too).
    """
    import subprocess

    out = subprocess.run(
        [tshark, "-r", str(capture), *decode, "-Y", "tls", "-T", "fields", "-E", "occurrence=a",
         "-e", "tls.record.content_type", "-e", "tls.handshake.type", "-e",
         "tls.alert_message.desc"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    seen = [0, 0, 0]
    for line in out.splitlines():
        for i, values in enumerate(line.split("\t")):
            seen[i] += len([v for v in values.split(",") if v])
    expected = [sum(tls["records"].values()), tls["handshake_messages"], tls["alerts"]]
    names = ("TLS records", "handshake messages", "alerts")
    return [
        f"tshark sees {n} {what}, {m} were written"
        for what, n, m in zip(names, seen, expected, strict=True)
        if n != m
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=Params.messages,
        metavar="N",
        help="WebSocket data messages, both directions (default %(default)s)",
    )
    parser.add_argument("--connections", type=int, default=Params.connections)
    parser.add_argument(
        "--streams", type=int, default=Params.streams, help="WebSocket streams per connection"
    )
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument(
        "--port", type=int, help=f"server TCP port (default {Params.port}, {TLS_PORT} with --tls)"
    )
    parser.add_argument(
        "--tls",
        choices=TLS_VERSIONS,
        help="HTTP/2 over TLS of this version (key log in FILE.keys) instead of h2c",
    )
    parser.add_argument("--link", choices=("ethernet", "sll"), default=Params.link)
    parser.add_argument("--mss", type=int, default=Params.mss)
    parser.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, check the capture with tshark (slow on large files)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="pcap file to write")
    args = parser.parse_args(argv)  # fmt: skip
    if args.streams < 1 or args.connections < 1:
        parser.error("--connections and --streams must be at least 1")
    params = Params(
        messages=args.messages,
        connections=args.connections,
        streams=args.streams,
        seed=args.seed,
        port=args.port if args.port is not None else TLS_PORT if args.tls else Params.port,
        link=args.link,
        mss=args.mss,
    )
    sidecar = generate(params, args.output, args.tls)
    messages = sidecar["messages"]
    print(
        f"{args.output}: {sidecar['packets']} packets, {sidecar['bytes']} bytes, "
        f"{messages['total']} WebSocket messages ({messages['data']} text/binary, "
        f"{messages['c2s']} c2s, {messages['s2c']} s2c) on {sidecar['streams']['websocket']} "
        f"WebSocket + {sidecar['streams']['http']} HTTP streams, {sidecar['connections']} "
        f"connections, {sidecar['h2_frames']['total']} HTTP/2 frames "
        f"in {sidecar['generator_seconds']:.1f} s; counts in {sidecar_path(args.output)}"
    )
    if args.tls:
        tls = sidecar["tls"]
        print(
            f"{tls['version']} {tls['cipher']}, {sum(tls['records'].values())} records; "
            f"key log in {keylog_path(args.output)}"
        )
    if args.verify:
        problems = verify_with_tshark(args.output, sidecar)
        for problem in problems:
            print(f"verify: {problem}", file=sys.stderr)
        print("verify: tshark agrees" if not problems else "verify: FAILED")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
