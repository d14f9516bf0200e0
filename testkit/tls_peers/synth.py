"""Synthetic TLS conversations for unit tests: handshake messages and records written here, the
protection done by ``cryptography`` (the key schedule functions of ``h2ws.analysis.sources.tls``
are checked against published vectors first, in ``tests/test_tls.py``).

A :class:`Conversation` is a list of flights ``(direction, bytes)`` plus the key log that
decrypts it and the application data each direction carried.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import cast

from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from h2ws.analysis.core.chunks import ChunkEvent, Closed, ConnectionInfo, Data, Opened
from h2ws.analysis.records import Direction
from h2ws.analysis.sources.tls import HRR_RANDOM, SUITES, Suite, hkdf_expand_label, tls12_prf

T0 = 1_700_000_000.0


def vec(size: int, body: bytes) -> bytes:
    return len(body).to_bytes(size) + body


def ext(etype: int, body: bytes) -> bytes:
    return etype.to_bytes(2) + vec(2, body)


def hs(mtype: int, body: bytes) -> bytes:
    return bytes((mtype,)) + len(body).to_bytes(3) + body


def record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return bytes((ctype,)) + version.to_bytes(2) + vec(2, body)


def client_hello(
    random: bytes,
    *,
    sni: str | None = "example.test",
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    tls13: bool = True,
    early: bool = False,
    session_id: bytes = b"\x11" * 32,
) -> bytes:
    exts = b""
    if sni is not None:
        exts += ext(0, vec(2, b"\x00" + vec(2, sni.encode())))
    if alpn:
        exts += ext(16, vec(2, b"".join(vec(1, p.encode()) for p in alpn)))
    if tls13:
        exts += ext(43, vec(1, b"\x03\x04\x03\x03"))
    if early:
        exts += ext(42, b"")
        exts += ext(41, vec(2, vec(2, b"ticket") + b"\x00\x00\x00\x00") + vec(2, vec(1, b"b" * 32)))
    suites = b"\x13\x01\x13\x02\x13\x03\xc0\x2b\xc0\x2f\xcc\xa8\xc0\x13"
    body = b"\x03\x03" + random + vec(1, session_id) + vec(2, suites) + b"\x01\x00" + vec(2, exts)
    return hs(1, body)


def server_hello(
    random: bytes,
    suite: int,
    *,
    tls13: bool = True,
    alpn: str | None = None,
    session_id: bytes = b"\x11" * 32,
    psk: bool = False,
) -> bytes:
    exts = b""
    if tls13:
        exts += ext(43, b"\x03\x04") + ext(51, b"\x00\x1d" + vec(2, b"k" * 32))
    if alpn:
        exts += ext(16, vec(2, vec(1, alpn.encode())))
    if psk:
        exts += ext(41, b"\x00\x00")
    body = b"\x03\x03" + random + vec(1, session_id) + suite.to_bytes(2) + b"\x00" + vec(2, exts)
    return hs(2, body)


def _aead(suite: Suite, key: bytes) -> AESGCM | ChaCha20Poly1305 | AESCCM:
    if suite.aead == "gcm":
        return AESGCM(key)
    if suite.aead == "chacha":
        return ChaCha20Poly1305(key)
    return AESCCM(key, tag_length=suite.tag_len)


class Sealer13:
    """Writes TLS 1.3 records under one traffic secret; ``update()`` is a KeyUpdate."""

    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.suite = suite
        self.secret = secret
        key = hkdf_expand_label(suite.hash, secret, b"key", b"", suite.key_len)
        self.aead = _aead(suite, key)
        self.iv = int.from_bytes(hkdf_expand_label(suite.hash, secret, b"iv", b"", 12))
        self.seq = 0

    def seal(self, ctype: int, content: bytes, pad: int = 0) -> bytes:
        inner = content + bytes((ctype,)) + b"\x00" * pad
        header = b"\x17\x03\x03" + (len(inner) + self.suite.tag_len).to_bytes(2)
        nonce = (self.iv ^ self.seq).to_bytes(12)
        self.seq += 1
        return header + self.aead.encrypt(nonce, inner, header)

    def update(self) -> Sealer13:
        size = self.suite.hash.digest_size
        return Sealer13(
            self.suite, hkdf_expand_label(self.suite.hash, self.secret, b"traffic upd", b"", size)
        )


class Sealer12:
    """Writes TLS 1.2 AEAD records (GCM/CCM: explicit nonce = sequence number, or random with
    ``random_nonce``, which RFC 5288 allows too; ChaCha20)."""

    def __init__(self, suite: Suite, key: bytes, iv: bytes, random_nonce: bool = False) -> None:
        self.suite = suite
        self.aead = _aead(suite, key)
        self.iv = iv
        self.seq = 0
        self.random_nonce = random_nonce

    def seal(self, ctype: int, content: bytes) -> bytes:
        aad = struct.pack("!QBHH", self.seq, ctype, 0x0303, len(content))
        if self.suite.aead == "chacha":
            nonce = (int.from_bytes(self.iv) ^ self.seq).to_bytes(12)
            body = self.aead.encrypt(nonce, content, aad)
        else:
            explicit = os.urandom(8) if self.random_nonce else self.seq.to_bytes(8)
            body = explicit + self.aead.encrypt(self.iv + explicit, content, aad)
        self.seq += 1
        return record(ctype, body)


@dataclass
class Conversation:
    flights: list[tuple[str, bytes]] = field(default_factory=list)
    keylog: bytes = b""
    plain: dict[str, bytes] = field(default_factory=lambda: {"c2s": b"", "s2c": b""})
    client_random: bytes = b""
    secrets: list[bytes] = field(default_factory=list)

    def add(self, direction: str, data: bytes) -> None:
        self.flights.append((direction, data))

    def app(self, direction: str, data: bytes) -> bytes:
        self.plain[direction] += data
        return data

    def events(
        self, cuts: list[list[int]] | None = None, conn_id: str = "t:0", close: bool = True
    ) -> list[ChunkEvent]:
        """Opened, one Data per piece of each flight (cut at ``cuts[i]``), Closed."""
        info = ConnectionInfo(conn_id, "10.0.0.1", 40000, "10.0.0.2", 443)
        out: list[ChunkEvent] = [Opened(info, T0)]
        ts = T0
        for i, (direction, data) in enumerate(self.flights):
            points = sorted({c for c in (cuts[i] if cuts else []) if 0 < c < len(data)})
            prev = 0
            for c in [*points, len(data)]:
                ts += 0.001
                out.append(Data(conn_id, cast(Direction, direction), ts, data[prev:c]))
                prev = c
        if close:
            out.append(Closed(conn_id, ts + 0.001, "fin"))
        return out


def tls13(
    suite_code: int = 0x1301,
    *,
    key_update: bool = True,
    hrr: bool = False,
    early: str | None = None,  # None | "accepted" | "rejected"
    alpn: str = "h2",
    pad: int = 0,
    big: int = 40_000,
) -> Conversation:
    suite = SUITES[suite_code]
    conv = Conversation()
    cr, sr = os.urandom(32), os.urandom(32)
    conv.client_random = cr
    size = suite.hash.digest_size
    names = [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
        "CLIENT_EARLY_TRAFFIC_SECRET",
    ]
    secrets = {n: os.urandom(size) for n in names}
    conv.secrets = list(secrets.values())
    conv.keylog = b"# a comment\n\n" + b"".join(
        f"{n} {cr.hex()} {s.hex()}\n".encode() for n, s in secrets.items()
    )
    chs = Sealer13(suite, secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
    shs = Sealer13(suite, secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
    c0 = Sealer13(suite, secrets["CLIENT_TRAFFIC_SECRET_0"])
    s0 = Sealer13(suite, secrets["SERVER_TRAFFIC_SECRET_0"])
    cearly = Sealer13(suite, secrets["CLIENT_EARLY_TRAFFIC_SECRET"])

    ch = client_hello(cr, early=early is not None)
    conv.add("c2s", record(22, ch, 0x0301))
    if hrr:
        conv.add("s2c", record(22, server_hello(HRR_RANDOM, suite_code)))
        conv.add("c2s", record(20, b"\x01") + record(22, ch))
    if early is not None:
        data = b"early request bytes"
        if early == "accepted":
            conv.app("c2s", data)
        conv.add("c2s", record(20, b"\x01") + cearly.seal(23, data))
        if early == "accepted":
            conv.add("c2s", cearly.seal(22, hs(5, b"")))
    ee_exts = ext(16, vec(2, vec(1, alpn.encode()))) if alpn else b""
    if early == "accepted":
        ee_exts += ext(42, b"")
    certificate = hs(11, b"\x00" + vec(3, vec(3, b"C" * 5000) + vec(2, b"")))
    flight = record(22, server_hello(sr, suite_code, psk=early is not None))
    flight += record(20, b"\x01")
    hs_bytes = hs(8, vec(2, ee_exts)) + certificate + hs(15, b"\x04\x03" + vec(2, b"s" * 70))
    cut = len(hs_bytes) // 2  # a handshake message split across two records
    flight += shs.seal(22, hs_bytes[:cut], pad) + shs.seal(22, hs_bytes[cut:])
    flight += shs.seal(22, hs(20, b"f" * size))
    flight += s0.seal(23, conv.app("s2c", b"0.5-RTT data"))
    conv.add("s2c", flight)
    flight = b"" if early is not None else record(20, b"\x01")
    flight += chs.seal(22, hs(20, b"F" * size))
    flight += c0.seal(23, conv.app("c2s", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), pad)
    conv.add("c2s", flight)
    payload = bytes(range(256)) * (big // 256 + 1)
    flight = s0.seal(22, hs(4, b"\x00" * 20)) + s0.seal(23, b"", 3)  # an empty record
    for i in range(0, big, 16384):
        flight += s0.seal(23, conv.app("s2c", payload[i : min(i + 16384, big)]))
    conv.add("s2c", flight)
    if key_update:
        conv.add("c2s", c0.seal(22, hs(24, b"\x01")))  # update_requested
        c0 = c0.update()
        conv.add("c2s", c0.seal(23, conv.app("c2s", b"after the client's KeyUpdate")))
        conv.add("s2c", s0.seal(22, hs(24, b"\x00")))
        s0 = s0.update()
        conv.add("s2c", s0.seal(23, conv.app("s2c", b"after the server's KeyUpdate")))
        conv.add("c2s", c0.seal(22, hs(24, b"\x00")))  # a second generation
        c0 = c0.update()
    conv.add("c2s", c0.seal(23, conv.app("c2s", b"last client data")) + c0.seal(21, b"\x01\x00"))
    conv.add("s2c", s0.seal(21, b"\x01\x00"))
    return conv


def tls12(
    suite_code: int = 0xC02F,
    *,
    resumed: bool = False,
    alpn: str | None = "h2",
    random_nonce: bool = False,
) -> Conversation:
    suite = SUITES[suite_code]
    conv = Conversation()
    cr, sr = os.urandom(32), os.urandom(32)
    conv.client_random = cr
    master = os.urandom(48)
    conv.secrets = [master]
    conv.keylog = f"CLIENT_RANDOM {cr.hex()} {master.hex()}\r\n".encode()
    k, i = suite.key_len, suite.iv_len
    block = tls12_prf(suite.hash, master, b"key expansion", sr + cr, 2 * (k + i))
    client = Sealer12(suite, block[:k], block[2 * k : 2 * k + i], random_nonce)
    server = Sealer12(suite, block[k : 2 * k], block[2 * k + i :], random_nonce)
    session = b"\x22" * 32
    conv.add("c2s", record(22, client_hello(cr, tls13=False, session_id=session), 0x0301))
    sh = server_hello(
        sr, suite_code, tls13=False, alpn=alpn, session_id=session if resumed else b"\x33" * 32
    )
    if resumed:
        conv.add("s2c", record(22, sh) + record(20, b"\x01") + server.seal(22, hs(20, b"v" * 12)))
        conv.add("c2s", record(20, b"\x01") + client.seal(22, hs(20, b"w" * 12)))
    else:
        cert = hs(11, vec(3, vec(3, b"C" * 3000)))
        conv.add("s2c", record(22, sh + cert + hs(12, b"x" * 100) + hs(14, b"")))
        flight = record(22, hs(16, vec(1, b"y" * 65))) + record(20, b"\x01")
        conv.add("c2s", flight + client.seal(22, hs(20, b"w" * 12)))
        flight = record(22, hs(4, b"\x00" * 10)) + record(20, b"\x01")
        conv.add("s2c", flight + server.seal(22, hs(20, b"v" * 12)))
    conv.add("c2s", client.seal(23, conv.app("c2s", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")))
    payload = os.urandom(30_000)
    flight = b"".join(
        server.seal(23, conv.app("s2c", payload[j : j + 16384])) for j in range(0, 30_000, 16384)
    )
    conv.add("s2c", flight)
    conv.add("c2s", client.seal(21, b"\x01\x00"))
    return conv
