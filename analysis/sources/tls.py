"""TLS decryption between TCP reassembly and the decoder core: key logs in, plaintext chunks out.

Sans-IO, like the rest of the core: :class:`TlsLayer` is a filter over chunk events
(:mod:`h2ws.analysis.core.chunks`).  It decides per connection from the first bytes whether the
connection speaks TLS; a connection that does not is handed through untouched (one dict lookup
per event), so cleartext captures pay nothing.  A TLS connection is parsed record by record in
each direction; the ciphertext is reported as :class:`Wire` (byte counts stay TCP's), the
handshake becomes one :class:`TlsInfo`, and decrypted application data becomes :class:`Data` for
the same ``ConnectionDecoder`` that reads cleartext - which is why HTTP/2, RFC 8441 and HTTP/1.1
WebSockets decode the same either way.

Secrets come from NSS key logs (SSLKEYLOGFILE, ``--tls-keylog``, ``keylog_filename``, pcapng
Decryption Secrets Blocks), looked up by the ClientHello's random.  Keys may be learnt after the
packets that need them (a Decryption Secrets Block further on in the file): a direction that needs
a key it does not have stops at that record and keeps what follows (bounded), and resumes when
:class:`KeyLog` learns the key.  Only when the connection ends without it is it "no keys".

Every cryptographic operation is ``cryptography``'s: AEADs (AES-GCM, ChaCha20-Poly1305, AES-CCM),
HKDF-Expand and HMAC; this module only computes nonces, additional data and key schedules.

Secrets never leave this module: not in reprs, exceptions nor diagnostics.  A client random is
public (it is sent in clear) and is named in diagnostics, so that users can find the key log
line that is missing.

Diagnostic codes (layer ``tls``; ``conn_id`` set):

- ``tls_no_keys`` (warning): the key log has no secret for this connection (or for part of it);
  the connection is a row with its handshake facts and byte counts.
- ``tls_bad_record_mac`` (error): a record failed authentication (wrong or mismatched keys, or
  corrupted bytes); that direction is not decrypted further.
- ``tls_unsupported_cipher`` (warning): a protocol version or cipher suite this module does not
  decrypt (CBC suites, TLS 1.0/1.1, ...); counted only.
- ``tls_midstream`` (warning): the capture starts after the ClientHello; counted only.
- ``tls_incomplete_handshake`` (warning): the connection ended before a ServerHello was seen.
- ``tls_alert`` (info for close_notify, warning, or error for fatal alerts).
- ``tls_gap`` (error): bytes of a direction were lost; the rest of that direction cannot be
  decrypted (record boundaries and sequence numbers are lost with them).
- ``tls_malformed`` (error): bytes that are not TLS records or handshake messages; that
  direction stops.
- ``tls_truncated`` (warning): a direction ended inside a TLS record.
- ``tls_resumed`` (info): an abbreviated TLS 1.2 handshake or a TLS 1.3 PSK handshake.
- ``tls_early_data_skipped`` (info): 0-RTT data the server rejected (its EncryptedExtensions
  say so), skipped as the server skipped it.  Accepted 0-RTT data is decoded like any other.
- ``tls_internal_error`` (error): a bug; the connection is counted only, the capture goes on.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from h2ws.analysis.core.chunks import ChunkEvent, Closed, Data, Gap, Opened, TlsInfo, Wire
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.records import DiagnosticRecord, Direction

__all__ = ["SUITES", "KeyLog", "Suite", "TlsLayer", "hkdf_expand_label", "tls12_prf"]

# -- key logs -----------------------------------------------------------------------------------

#: The NSS key log labels that decrypt something (others, e.g. EXPORTER_SECRET, are ignored).
KEYLOG_LABELS: Final = frozenset(
    {
        "CLIENT_RANDOM",
        "CLIENT_EARLY_TRAFFIC_SECRET",
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    }
)


class KeyLog:
    """Secrets of an NSS key log, by ``(label, client_random)``.

    ``add`` takes whole key log texts (a file, a Decryption Secrets Block) and ignores whatever
    is not a well-formed line of a useful label, so comments, blank lines and foreign lines are
    harmless.  ``added`` lists the client randoms of new secrets in order, so that a
    :class:`TlsLayer` waiting for keys looks only at the connections that may now decrypt.
    """

    __slots__ = ("_secrets", "added")

    def __init__(self, text: bytes | str | None = None) -> None:
        self._secrets: dict[tuple[str, bytes], bytes] = {}
        self.added: list[bytes] = []
        if text:
            self.add(text)

    def add(self, text: bytes | str) -> int:
        """Learn every secret in ``text``; returns how many were new."""
        if isinstance(text, str):
            text = text.encode("utf-8", "replace")
        new = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            label = parts[0].decode("ascii", "replace")
            if label not in KEYLOG_LABELS:
                continue
            try:
                client_random = bytes.fromhex(parts[1].decode("ascii"))
                secret = bytes.fromhex(parts[2].decode("ascii"))
            except ValueError:
                continue
            if len(client_random) != 32 or not 16 <= len(secret) <= 64:
                continue
            key = (label, client_random)
            if self._secrets.get(key) != secret:
                self._secrets[key] = secret
                self.added.append(client_random)
                new += 1
        return new

    def get(self, label: str, client_random: bytes) -> bytes | None:
        return self._secrets.get((label, client_random))

    def has(self, label: str, client_random: bytes) -> bool:
        return (label, client_random) in self._secrets

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:  # never the secrets
        return f"<KeyLog: {len(self._secrets)} secrets>"


# -- cipher suites and key schedules ------------------------------------------------------------


class _Aead(Protocol):
    def decrypt(
        self, nonce: bytes, data: bytes | memoryview, associated_data: bytes | None
    ) -> bytes: ...


class Suite:
    """What decrypting records of one cipher suite takes.

    ``iv_len`` is the IV of TLS 1.3 (12) or the implicit part of TLS 1.2's nonce (4 for GCM and
    CCM, whose records carry the other 8 bytes; 12 for ChaCha20-Poly1305, RFC 7905).
    """

    __slots__ = ("aead", "code", "hash", "iv_len", "key_len", "name", "tag_len", "tls13")

    def __init__(
        self,
        code: int,
        name: str,
        aead: str | None,
        key_len: int = 16,
        hash_name: str = "sha256",
        tag_len: int = 16,
    ) -> None:
        self.code = code
        self.name = name
        self.aead = aead  # gcm | chacha | ccm | None (not decrypted)
        self.key_len = key_len
        self.hash: type[hashes.SHA256] | type[hashes.SHA384] = (
            hashes.SHA384 if hash_name == "sha384" else hashes.SHA256
        )
        self.tls13 = 0x1301 <= code <= 0x1305
        self.iv_len = 12 if self.tls13 or aead == "chacha" else 4
        self.tag_len = tag_len

    def new_aead(self, key: bytes) -> _Aead:
        if self.aead == "gcm":
            return AESGCM(key)
        if self.aead == "chacha":
            return ChaCha20Poly1305(key)
        if self.aead == "ccm":
            return AESCCM(key, tag_length=self.tag_len)
        raise ValueError(f"cipher suite {self.name} is not decrypted")

    def __repr__(self) -> str:
        return f"<Suite {self.name}>"


def _suites(*items: Suite) -> dict[int, Suite]:
    return {s.code: s for s in items}


#: Cipher suites by code.  Those with ``aead=None`` are only named (CBC, RC4, ...).
SUITES: Final = _suites(
    Suite(0x1301, "TLS_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0x1302, "TLS_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0x1303, "TLS_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0x1304, "TLS_AES_128_CCM_SHA256", "ccm", 16),
    Suite(0x1305, "TLS_AES_128_CCM_8_SHA256", "ccm", 16, tag_len=8),
    Suite(0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0x009F, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0x00A8, "TLS_PSK_WITH_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0x00A9, "TLS_PSK_WITH_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0xCCAA, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0xCCAB, "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0xCCAC, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0xCCAD, "TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "chacha", 32),
    Suite(0xD001, "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256", "gcm", 16),
    Suite(0xD002, "TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384", "gcm", 32, "sha384"),
    Suite(0xC09C, "TLS_RSA_WITH_AES_128_CCM", "ccm", 16),
    Suite(0xC09D, "TLS_RSA_WITH_AES_256_CCM", "ccm", 32),
    Suite(0xC0A0, "TLS_RSA_WITH_AES_128_CCM_8", "ccm", 16, tag_len=8),
    Suite(0xC0A1, "TLS_RSA_WITH_AES_256_CCM_8", "ccm", 32, tag_len=8),
    Suite(0xC0AC, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "ccm", 16),
    Suite(0xC0AD, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "ccm", 32),
    Suite(0xC0AE, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "ccm", 16, tag_len=8),
    Suite(0xC0AF, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8", "ccm", 32, tag_len=8),
    # Named, not decrypted.
    Suite(0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA", None),
    Suite(0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", None),
    Suite(0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256", None),
    Suite(0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256", None),
    Suite(0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", None),
    Suite(0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
    Suite(0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
    Suite(0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
    Suite(0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
    Suite(0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", None),
    Suite(0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", None),
    Suite(0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", None),
    Suite(0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", None),
)


def suite_name(code: int) -> str:
    suite = SUITES.get(code)
    return suite.name if suite else f"0x{code:04x}"


def hkdf_expand_label(
    hash_cls: type[hashes.SHA256] | type[hashes.SHA384],
    secret: bytes,
    label: bytes,
    context: bytes,
    length: int,
) -> bytes:
    """RFC 8446 section 7.1."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + bytes((len(context),)) + context
    return HKDFExpand(hash_cls(), length, info).derive(secret)


def _hmac(hash_cls: type[hashes.SHA256] | type[hashes.SHA384], key: bytes, msg: bytes) -> bytes:
    h = hmac.HMAC(key, hash_cls())
    h.update(msg)
    return h.finalize()


def tls12_prf(
    hash_cls: type[hashes.SHA256] | type[hashes.SHA384],
    secret: bytes,
    label: bytes,
    seed: bytes,
    length: int,
) -> bytes:
    """RFC 5246 section 5: P_hash(secret, label + seed)."""
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = _hmac(hash_cls, secret, a)
        out += _hmac(hash_cls, secret, a + seed)
    return bytes(out[:length])


class _Keys13:
    """One direction's record protection for one TLS 1.3 traffic secret.

    The secret is kept only to derive the next generation on KeyUpdate.
    """

    __slots__ = ("_secret", "aead", "iv", "seq", "suite")

    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.suite = suite
        self._secret = secret
        key = hkdf_expand_label(suite.hash, secret, b"key", b"", suite.key_len)
        self.aead = suite.new_aead(key)
        self.iv = int.from_bytes(hkdf_expand_label(suite.hash, secret, b"iv", b"", 12))
        self.seq = 0

    def next_generation(self) -> _Keys13:
        size = self.suite.hash.digest_size
        return _Keys13(
            self.suite, hkdf_expand_label(self.suite.hash, self._secret, b"traffic upd", b"", size)
        )

    def open(self, header: bytes, body: memoryview) -> bytes:
        """The inner plaintext of one record; the sequence number moves only on success."""
        pt = self.aead.decrypt((self.iv ^ self.seq).to_bytes(12), body, header)
        self.seq += 1
        return pt


class _Keys12:
    """One direction's record protection after a TLS 1.2 ChangeCipherSpec (AEAD suites only)."""

    __slots__ = ("aead", "explicit", "iv", "salt", "seq", "tag_len")

    def __init__(self, suite: Suite, key: bytes, iv: bytes) -> None:
        self.aead = suite.new_aead(key)
        self.explicit = suite.aead != "chacha"  # GCM and CCM: 8 nonce bytes in each record
        self.salt = iv
        self.iv = int.from_bytes(iv)
        self.tag_len = suite.tag_len
        self.seq = 0

    def open(self, ctype: int, version: int, body: memoryview) -> bytes:
        if self.explicit:
            if len(body) < 8 + self.tag_len:
                raise InvalidTag
            nonce = self.salt + bytes(body[:8])
            body = body[8:]
        else:
            if len(body) < self.tag_len:
                raise InvalidTag
            nonce = (self.iv ^ self.seq).to_bytes(12)
        aad = struct.pack("!QBHH", self.seq, ctype, version, len(body) - self.tag_len)
        pt = self.aead.decrypt(nonce, body, aad)
        self.seq += 1
        return pt


# -- record and handshake parsing ---------------------------------------------------------------

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
CLIENT_HELLO, SERVER_HELLO, NEW_SESSION_TICKET, END_OF_EARLY_DATA = 1, 2, 4, 5
ENCRYPTED_EXTENSIONS, FINISHED, KEY_UPDATE = 8, 20, 24
EXT_SERVER_NAME, EXT_ALPN, EXT_PRE_SHARED_KEY, EXT_EARLY_DATA = 0, 16, 41, 42
EXT_SUPPORTED_VERSIONS = 43

#: RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
#: 2**14 plus the largest expansion any version allows (TLS 1.2: 2048).
MAX_RECORD: Final = (1 << 14) + 2048
#: A handshake message larger than this is taken as garbage (certificate chains stay far below).
MAX_HANDSHAKE: Final = 1 << 20
VERSIONS: Final = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
ALERTS: Final = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


class _Malformed(Exception):
    """Bytes that cannot be TLS; the message says what was expected (no data in it)."""


class _Reader:
    """Bounds-checked reads of a handshake message body."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Malformed("handshake message too short")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2))

    def vec(self, size_len: int) -> _Reader:
        """A reader over the next length-prefixed vector, which it skips."""
        n = int.from_bytes(self.take(size_len))
        if self.pos + n > self.end:
            raise _Malformed("vector longer than its message")
        sub = _Reader(self.buf, self.pos, self.pos + n)
        self.pos += n
        return sub

    def left(self) -> int:
        return self.end - self.pos

    def take_all(self) -> bytes:
        return self.take(self.end - self.pos)


def _extensions(r: _Reader) -> dict[int, _Reader]:
    """Extensions of a hello message (the first of each type); none if the block is absent."""
    out: dict[int, _Reader] = {}
    if not r.left():
        return out
    block = r.vec(2)
    while block.left():
        etype = block.u16()
        out.setdefault(etype, block.vec(2))
    return out


def _alpn_list(r: _Reader) -> list[str]:
    names = r.vec(2)
    out = []
    while names.left():
        out.append(names.vec(1).take_all().decode("ascii", "replace"))
    return out


class _Hello:
    """What a ClientHello or ServerHello says that matters here."""

    __slots__ = (
        "alpn",
        "cipher",
        "early_data",
        "psk",
        "random",
        "server_name",
        "session_id",
        "version",
    )

    def __init__(self) -> None:
        self.random = b""
        self.session_id = b""
        self.version = 0
        self.cipher = 0
        self.server_name: str | None = None
        self.alpn: list[str] = []
        self.early_data = False
        self.psk = False


def parse_client_hello(body: bytes) -> _Hello:
    r = _Reader(body)
    h = _Hello()
    h.version = r.u16()
    h.random = r.take(32)
    h.session_id = r.vec(1).take_all()
    r.vec(2)  # cipher suites
    r.vec(1)  # compression methods
    ext = _extensions(r)
    if EXT_SERVER_NAME in ext:
        names = ext[EXT_SERVER_NAME].vec(2)
        while names.left():
            kind = names.u8()
            name = names.vec(2).take_all()
            if kind == 0:
                h.server_name = name.decode("ascii", "replace")
                break
    if EXT_ALPN in ext:
        h.alpn = _alpn_list(ext[EXT_ALPN])
    h.early_data = EXT_EARLY_DATA in ext
    h.psk = EXT_PRE_SHARED_KEY in ext
    return h


def parse_server_hello(body: bytes) -> _Hello:
    r = _Reader(body)
    h = _Hello()
    h.version = r.u16()
    h.random = r.take(32)
    h.session_id = r.vec(1).take_all()
    h.cipher = r.u16()
    r.u8()  # compression method
    ext = _extensions(r)
    if EXT_SUPPORTED_VERSIONS in ext:
        h.version = ext[EXT_SUPPORTED_VERSIONS].u16()
    if EXT_ALPN in ext:
        h.alpn = _alpn_list(ext[EXT_ALPN])
    h.psk = EXT_PRE_SHARED_KEY in ext
    return h


def parse_encrypted_extensions(body: bytes) -> _Hello:
    h = _Hello()
    ext = _extensions(_Reader(body))
    if EXT_ALPN in ext:
        h.alpn = _alpn_list(ext[EXT_ALPN])
    h.early_data = EXT_EARLY_DATA in ext
    return h


# -- the layer ----------------------------------------------------------------------------------

#: Phases of one direction.
_PLAIN, _EARLY, _HANDSHAKE, _APP = 0, 1, 2, 3
_SECRET_LABELS: Final = {
    ("c2s", _EARLY): "CLIENT_EARLY_TRAFFIC_SECRET",
    ("c2s", _HANDSHAKE): "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    ("s2c", _HANDSHAKE): "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    ("c2s", _APP): "CLIENT_TRAFFIC_SECRET_0",
    ("s2c", _APP): "SERVER_TRAFFIC_SECRET_0",
}
#: Why a direction waits.
_NOT_WAITING, _WAIT_KEYS, _WAIT_PEER = 0, 1, 2
#: What a connection is.
_UNDECIDED, _TLS, _COUNT = 0, 1, 2
_NEVER = 1 << 62

Plain = list[bytes | memoryview]  # application data of consecutive records, joined once


class _Dir:
    """One direction of a TLS connection."""

    __slots__ = (
        "dead",
        "direction",
        "early_skipped",
        "gap",
        "gap_ts",
        "have",
        "held",
        "held_bytes",
        "hs",
        "keys",
        "need",
        "parts",
        "phase",
        "protected",
        "wait_seq",
        "wait_ts",
        "waiting",
    )

    def __init__(self, direction: Direction) -> None:
        self.direction: Direction = direction
        #: Bytes not yet parsed, as a list so that a record arriving in many segments is joined
        #: once; ``need`` is how many bytes the next step takes (a header or a whole record).
        self.parts: list[bytes] = []
        self.have = 0
        self.need = 5
        self.hs = bytearray()  # handshake message bytes not yet complete
        self.phase = _PLAIN
        #: Records are protected (TLS 1.2 after ChangeCipherSpec; TLS 1.3 after ServerHello).
        self.protected = False
        self.keys: _Keys13 | _Keys12 | None = None
        self.waiting = _NOT_WAITING
        self.wait_ts = 0.0  # when the bytes in ``parts`` had all arrived
        self.wait_seq = 0  # and the arrival number of the chunk that completed them
        #: Chunks that arrived while waiting: (arrival number, time, bytes), replayed in order.
        self.held: list[tuple[int, float, bytes]] = []
        self.held_bytes = 0  # of ``parts`` and ``held``, while waiting for keys
        self.dead = False  # nothing more is parsed: only counted
        self.gap = False  # bytes were lost after what ``parts`` and ``held`` hold
        self.gap_ts = 0.0
        self.early_skipped = 0


class _Conn:
    __slots__ = (
        "alpn",
        "c2s",
        "client_hello",
        "client_random",
        "conn_id",
        "decrypted",
        "early_accepted",
        "held",
        "info_sent",
        "key_block",
        "missing",
        "s2c",
        "server_random",
        "sni",
        "state",
        "suite",
        "suite_code",
        "version",
    )

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.state = _UNDECIDED
        self.held: list[ChunkEvent] = []  # events while undecided
        self.c2s = _Dir("c2s")
        self.s2c = _Dir("s2c")
        self.client_hello: _Hello | None = None
        self.client_random: bytes | None = None
        self.server_random: bytes | None = None
        self.version: int | None = None
        self.suite: Suite | None = None
        self.suite_code: int | None = None
        self.sni: str | None = None
        self.alpn: str | None = None
        self.info_sent = False
        self.decrypted = False
        self.key_block: tuple[bytes, bytes, bytes, bytes] | None = None
        self.missing: set[str] = set()
        #: 0-RTT: None until the server's EncryptedExtensions say whether it read early data.
        self.early_accepted: bool | None = None

    @property
    def tls13(self) -> bool:
        return self.version == 0x0304

    def dir(self, direction: Direction) -> _Dir:
        return self.c2s if direction == "c2s" else self.s2c

    def peer(self, d: _Dir) -> _Dir:
        return self.s2c if d is self.c2s else self.c2s


class TlsLayer:
    """Chunk events in, chunk events out: TLS connections decrypted, others untouched.

    ``wait_for_keys``: False when the key log is known to be complete (a classic pcap file, whose
    keys can only come from key log files): a connection without keys is settled at once instead
    of being held.  ``max_held`` bounds what one connection holds while it waits for keys,
    ``max_held_total`` what all connections hold together; past them it is "no keys".
    """

    def __init__(
        self,
        keylog: KeyLog,
        *,
        wait_for_keys: bool = True,
        max_held: int = 8 << 20,
        max_held_total: int = 256 << 20,
    ) -> None:
        self.keylog = keylog
        self.wait_for_keys = wait_for_keys
        self.max_held = max_held
        self.max_held_total = max_held_total
        self._conns: dict[str, _Conn] = {}
        #: Connections waiting for keys, by client random.
        self._waiting: dict[bytes, dict[str, _Conn]] = {}
        self._keys_seen = len(keylog.added)
        self._held_total = 0
        #: Arrival numbers of chunks: replays keep both directions in order.
        self._seq = 0
        self._seq_now = 0
        self._last_ts = 0.0  # for what ``finish`` settles

    def __repr__(self) -> str:
        return f"<TlsLayer: {len(self._conns)} connections, {self.keylog!r}>"

    # -- events -------------------------------------------------------------------------------

    def feed(self, event: ChunkEvent) -> list[ChunkEvent]:
        """Events that ``event`` causes, in order."""
        if len(self.keylog.added) != self._keys_seen:
            out: list[ChunkEvent] = []
            self._retry(out)
            out.extend(self.feed(event))
            return out
        if isinstance(event, Opened):
            self._conns[event.conn.conn_id] = _Conn(event.conn.conn_id)
            return [event]
        conn = self._conns.get(event.conn_id)  # type: ignore[arg-type]  # None: never found
        if conn is None:  # not TLS, or not a connection's event: the cheap path
            return [event]
        out = []
        try:
            self._feed(conn, event, out)
        except Exception as exc:  # a bug must not lose the rest of the capture
            self._internal_error(conn, event, exc, out)
        return out

    def finish(self) -> list[ChunkEvent]:
        """Settle every connection the source did not close (no ``Closed`` is made up)."""
        out: list[ChunkEvent] = []
        if len(self.keylog.added) != self._keys_seen:
            self._retry(out)
        for conn in list(self._conns.values()):
            try:
                self._end(conn, self._last_ts, out)
            except Exception as exc:
                self._internal_error(conn, None, exc, out)
        self._conns.clear()
        self._waiting.clear()
        self._held_total = 0
        return out

    def _feed(self, conn: _Conn, event: ChunkEvent, out: list[ChunkEvent]) -> None:
        if conn.state == _UNDECIDED:
            self._undecided(conn, event, out)
        elif type(event) is Data:
            if conn.state == _COUNT:
                out.append(Wire(event.conn_id, event.direction, event.ts, len(event.data)))
            else:
                self._data(conn, event, out)
        elif type(event) is Closed:
            self._last_ts = event.ts
            self._end(conn, event.ts, out)
            self._conns.pop(conn.conn_id, None)
            out.append(event)
        elif type(event) is Gap and conn.state == _TLS:
            self._gap(conn, event, out)
        else:
            out.append(event)

    # -- deciding what a connection speaks ----------------------------------------------------

    def _undecided(self, conn: _Conn, event: ChunkEvent, out: list[ChunkEvent]) -> None:
        """Holds a connection's events until its first three bytes tell whether it is TLS."""
        if type(event) is DiagnosticRecord:
            out.append(event)
            return
        if type(event) is Closed:
            self._conns.pop(conn.conn_id, None)
            out.extend(conn.held)
            out.append(event)
            return
        conn.held.append(event)
        if type(event) is not Data:
            return
        first = next(e for e in conn.held if type(e) is Data)
        assert isinstance(first, Data)
        head = b""
        for e in conn.held:
            if type(e) is Data and e.direction == first.direction:
                head += e.data[: 3 - len(head)]
        if len(head) < 3:
            return
        held, conn.held = conn.held, []
        if not (head[1] == 3 and head[2] <= 4 and 20 <= head[0] <= 24):
            self._conns.pop(conn.conn_id, None)  # not TLS: untouched from now on
            out.extend(held)
            return
        conn.state = _TLS
        if first.direction != "c2s" or head[0] != HANDSHAKE:
            self._midstream(conn, first.ts, out)
        for e in held:
            self._feed(conn, e, out)

    def _midstream(self, conn: _Conn, ts: float, out: list[ChunkEvent]) -> None:
        self._give_up(
            conn,
            ts,
            out,
            "warning",
            "tls_midstream",
            "the capture starts after the TLS handshake began; encrypted bytes only counted",
        )

    # -- records ------------------------------------------------------------------------------

    def _data(self, conn: _Conn, event: Data, out: list[ChunkEvent]) -> None:
        data = event.data
        self._last_ts = event.ts
        out.append(Wire(conn.conn_id, event.direction, event.ts, len(data)))
        d = conn.dir(event.direction)
        if not d.dead and not d.gap and data:
            self._seq += 1
            self._chunk(conn, d, self._seq, event.ts, data, out)

    def _chunk(
        self, conn: _Conn, d: _Dir, seq: int, ts: float, data: bytes, out: list[ChunkEvent]
    ) -> None:
        if d.waiting:
            d.held.append((seq, ts, data))
            d.held_bytes += len(data)
            self._held_total += len(data)
            if d.held_bytes > self.max_held or self._held_total > self.max_held_total:
                if d.waiting == _WAIT_KEYS:
                    self._stop_waiting(conn, ts, out, "too much data held while waiting")
                else:
                    self._kill(conn, d, ts, out, "tls_malformed", "0-RTT data without a reply")
            return
        d.parts.append(data)
        d.have += len(data)
        if d.have >= d.need:
            self._seq_now = seq
            self._pump(conn, d, ts, out)

    def _pump(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent]) -> None:
        """Parse every complete record of ``d``; then the peer's, if it waited for ``d``."""
        self._records(conn, d, ts, out)
        peer = conn.peer(d)
        if peer.waiting == _WAIT_PEER and (
            conn.early_accepted is not None
            if peer.phase == _EARLY
            else conn.server_random is not None
        ):
            self._resume(conn, [peer], out)

    def _records(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent]) -> None:
        if d.dead or d.waiting or conn.state != _TLS or d.have < 5:
            return
        buf = d.parts[0] if len(d.parts) == 1 else b"".join(d.parts)
        view = memoryview(buf)
        n = len(buf)
        pos = 0
        plain: Plain = []
        while n - pos >= 5:
            ctype = buf[pos]
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            if not 20 <= ctype <= 24 or buf[pos + 1] != 3 or length > MAX_RECORD:
                self._flush(conn, d, ts, plain, out)
                self._kill(conn, d, ts, out, "tls_malformed", "bytes that are not a TLS record")
                break
            end = pos + 5 + length
            if end > n:
                break
            keys = d.keys
            if ctype == APPLICATION_DATA and keys is not None and d.protected:
                # The bulk of any capture: one record of application data under known keys.
                try:
                    if type(keys) is _Keys13:
                        pt = keys.open(buf[pos : pos + 5], view[pos + 5 : end])
                        if pt and pt[-1] == APPLICATION_DATA:
                            plain.append(memoryview(pt)[:-1])
                        else:
                            self._inner(conn, d, pt, ts, plain, out)
                    else:
                        assert isinstance(keys, _Keys12)
                        version = (buf[pos + 1] << 8) | buf[pos + 2]
                        plain.append(keys.open(ctype, version, view[pos + 5 : end]))
                    pos = end
                    if d.dead or conn.state != _TLS:
                        break
                    continue
                except (InvalidTag, ValueError):
                    pass  # the general path below reports it
            if not self._record(conn, d, ctype, buf, view, pos, end, ts, plain, out):
                break  # it waits: the record stays
            pos = end
            if d.dead or conn.state != _TLS:
                break
        self._flush(conn, d, ts, plain, out)
        if d.dead or conn.state != _TLS:
            self._drop(d)
            return
        rest = buf[pos:] if pos else buf
        d.parts = [rest] if rest else []
        d.have = len(rest)
        if d.waiting:
            d.wait_ts = ts
            d.wait_seq = self._seq_now
            d.need = _NEVER
            d.held_bytes = d.have
            self._held_total += d.have
            if d.waiting == _WAIT_KEYS:
                self._wait_keys(conn, d, ts, out)
        elif d.have >= 5:
            d.need = 5 + ((rest[3] << 8) | rest[4])
        else:
            d.need = 5

    def _drop(self, d: _Dir) -> None:
        self._held_total -= d.held_bytes
        d.held_bytes = 0
        d.parts = []
        d.held = []
        d.have = 0
        d.need = _NEVER

    def _flush(self, conn: _Conn, d: _Dir, ts: float, plain: Plain, out: list[ChunkEvent]) -> None:
        """Application data decrypted so far becomes one ``Data``."""
        if not plain:
            return
        if not conn.info_sent:
            conn.decrypted = True
            self._send_info(conn, ts, out)
        data = b"".join(plain)
        plain.clear()
        if data:
            out.append(Data(conn.conn_id, d.direction, ts, data))

    def _record(
        self,
        conn: _Conn,
        d: _Dir,
        ctype: int,
        buf: bytes,
        view: memoryview,
        pos: int,
        end: int,
        ts: float,
        plain: Plain,
        out: list[ChunkEvent],
    ) -> bool:
        """Handles one record; False when it must wait (for keys, or for the peer's hello)."""
        if ctype == CHANGE_CIPHER_SPEC:
            if conn.server_random is not None and not conn.tls13:
                d.protected = True  # TLS 1.2: this direction's next records use new keys
                d.keys = None
            return True  # TLS 1.3 sends it only for middleboxes
        if not (d.protected and (ctype == APPLICATION_DATA or not conn.tls13)):
            if ctype == APPLICATION_DATA:
                if d.phase == _EARLY:
                    return self._early_record(conn, d, buf, view, pos, end, ts, plain, out)
                if d.direction == "c2s" and conn.server_random is None:
                    d.waiting = _WAIT_PEER  # 0-RTT data before the ServerHello was seen
                    return False
                self._flush(conn, d, ts, plain, out)
                self._kill(conn, d, ts, out, "tls_malformed", "application data in clear")
                return True
            self._content(conn, d, ctype, view[pos + 5 : end], ts, plain, out)
            return True
        keys = d.keys
        if keys is None:
            keys = self._load_keys(conn, d)
            if keys is None:
                d.waiting = _WAIT_KEYS
                return False
        try:
            if type(keys) is _Keys13:
                pt = keys.open(buf[pos : pos + 5], view[pos + 5 : end])
            else:
                assert isinstance(keys, _Keys12)
                pt = keys.open(ctype, (buf[pos + 1] << 8) | buf[pos + 2], view[pos + 5 : end])
        except (InvalidTag, ValueError):
            self._flush(conn, d, ts, plain, out)
            self._kill(
                conn,
                d,
                ts,
                out,
                "tls_bad_record_mac",
                f"a {d.direction} record failed authentication (wrong keys, or corrupted "
                "bytes); the rest of that direction is not decrypted",
            )
            return True
        if type(keys) is _Keys13:
            self._inner(conn, d, pt, ts, plain, out)
        else:
            self._content(conn, d, ctype, memoryview(pt), ts, plain, out)
        return True

    def _inner(
        self, conn: _Conn, d: _Dir, pt: bytes, ts: float, plain: Plain, out: list[ChunkEvent]
    ) -> None:
        """TLS 1.3 inner plaintext: content, content type, zero padding (RFC 8446 5.2)."""
        i = len(pt) - 1
        if i >= 0 and pt[i] == 0:
            i = len(pt.rstrip(b"\x00")) - 1
        if i < 0:
            self._flush(conn, d, ts, plain, out)
            self._kill(conn, d, ts, out, "tls_malformed", "record without a content type")
            return
        self._content(conn, d, pt[i], memoryview(pt)[:i], ts, plain, out)

    def _early_record(
        self,
        conn: _Conn,
        d: _Dir,
        buf: bytes,
        view: memoryview,
        pos: int,
        end: int,
        ts: float,
        plain: Plain,
        out: list[ChunkEvent],
    ) -> bool:
        """A client record after a ClientHello that offered 0-RTT.  Whether it is early data
        the server read or ignored is known only from the server's EncryptedExtensions, so it
        waits for them; ignored early data is skipped until a record opens with the handshake
        key (RFC 8446 4.2.10: what the server does too)."""
        if conn.early_accepted is None:
            d.waiting = _WAIT_PEER
            return False
        keys = d.keys
        if keys is None:
            keys = self._load_keys(conn, d)
            if keys is None:
                d.waiting = _WAIT_KEYS
                return False
        assert isinstance(keys, _Keys13)
        try:
            pt = keys.open(buf[pos : pos + 5], view[pos + 5 : end])
        except (InvalidTag, ValueError):
            if conn.early_accepted:
                self._flush(conn, d, ts, plain, out)
                self._kill(conn, d, ts, out, "tls_bad_record_mac", "0-RTT record failed")
                return True
            d.early_skipped += 1
            if d.early_skipped == 1:
                out.append(
                    diagnostic(
                        conn.conn_id,
                        "tls",
                        "info",
                        "tls_early_data_skipped",
                        "0-RTT data the server rejected is not decoded",
                        ts=ts,
                    )
                )
            return True
        if not conn.early_accepted:
            d.phase = _HANDSHAKE  # the first handshake record: early data is over
            d.protected = True
        self._inner(conn, d, pt, ts, plain, out)
        return True

    def _content(
        self,
        conn: _Conn,
        d: _Dir,
        ctype: int,
        payload: memoryview,
        ts: float,
        plain: Plain,
        out: list[ChunkEvent],
    ) -> None:
        if ctype == APPLICATION_DATA:
            plain.append(payload)
            return
        self._flush(conn, d, ts, plain, out)
        if ctype == HANDSHAKE:
            d.hs += payload
            self._handshake_messages(conn, d, ts, out)
        elif ctype == ALERT:
            self._alert(conn, d, bytes(payload), ts, out)
        elif ctype not in (HEARTBEAT, CHANGE_CIPHER_SPEC):
            self._kill(conn, d, ts, out, "tls_malformed", f"unknown content type {ctype}")

    def _alert(
        self, conn: _Conn, d: _Dir, payload: bytes, ts: float, out: list[ChunkEvent]
    ) -> None:
        if len(payload) != 2:
            return
        level, code = payload
        name = ALERTS.get(code, f"alert {code}")
        severity = "info" if code == 0 else "error" if level == 2 else "warning"
        out.append(
            diagnostic(
                conn.conn_id,
                "tls",
                severity,
                "tls_alert",
                f"{d.direction} {name} (level {level})",
                ts=ts,
            )
        )

    # -- handshake ----------------------------------------------------------------------------

    def _handshake_messages(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent]) -> None:
        hs = d.hs
        pos = 0
        while len(hs) - pos >= 4 and conn.state == _TLS and not d.dead:
            mtype = hs[pos]
            mlen = int.from_bytes(hs[pos + 1 : pos + 4])
            if mlen > MAX_HANDSHAKE:
                self._kill(conn, d, ts, out, "tls_malformed", "handshake message too large")
                return
            if len(hs) - pos - 4 < mlen:
                break
            body = bytes(hs[pos + 4 : pos + 4 + mlen])
            pos += 4 + mlen
            try:
                self._handshake(conn, d, mtype, body, ts, out)
            except _Malformed as exc:
                self._kill(conn, d, ts, out, "tls_malformed", str(exc))
                return
        del hs[:pos]

    def _handshake(
        self, conn: _Conn, d: _Dir, mtype: int, body: bytes, ts: float, out: list[ChunkEvent]
    ) -> None:
        if d.direction == "c2s" and mtype == CLIENT_HELLO:
            hello = parse_client_hello(body)
            if conn.client_hello is not None and conn.server_random is None:
                hello.early_data |= conn.client_hello.early_data  # after a HelloRetryRequest
            conn.client_hello = hello
            conn.client_random = hello.random
            conn.sni = hello.server_name
        elif conn.client_random is None:
            self._midstream(conn, ts, out)
        elif mtype == SERVER_HELLO and d.direction == "s2c":
            self._server_hello(conn, parse_server_hello(body), ts, out)
        elif not conn.tls13:
            return
        elif mtype == FINISHED and d.phase == _HANDSHAKE:
            d.phase = _APP  # RFC 8446 7.1: application traffic secrets from here on
            d.keys = None
        elif mtype == KEY_UPDATE and d.phase == _APP and type(d.keys) is _Keys13:
            d.keys = d.keys.next_generation()
        elif mtype == ENCRYPTED_EXTENSIONS and d.direction == "s2c":
            ee = parse_encrypted_extensions(body)
            if ee.alpn:
                conn.alpn = ee.alpn[0]
            if conn.c2s.phase == _EARLY:
                conn.early_accepted = ee.early_data
            conn.decrypted = True
            self._send_info(conn, ts, out)
        elif mtype == END_OF_EARLY_DATA and d.phase == _EARLY:
            d.phase = _HANDSHAKE
            d.protected = True
            d.keys = None

    def _server_hello(self, conn: _Conn, sh: _Hello, ts: float, out: list[ChunkEvent]) -> None:
        ch = conn.client_hello
        assert ch is not None
        conn.version = sh.version
        conn.suite_code = sh.cipher
        conn.suite = SUITES.get(sh.cipher)
        if sh.random == HRR_RANDOM:
            return  # HelloRetryRequest: a second ClientHello and ServerHello follow
        conn.server_random = sh.random
        conn.key_block = None
        if sh.alpn:
            conn.alpn = sh.alpn[0]
        same_session = bool(sh.session_id) and sh.session_id == ch.session_id
        if sh.psk if conn.tls13 else same_session:
            out.append(
                diagnostic(
                    conn.conn_id,
                    "tls",
                    "info",
                    "tls_resumed",
                    "PSK handshake" if conn.tls13 else "abbreviated handshake (session resumption)",
                    ts=ts,
                )
            )
        suite = conn.suite
        if sh.version not in (0x0303, 0x0304) or suite is None or suite.aead is None:
            what = (
                f"version {VERSIONS.get(sh.version, hex(sh.version))}"
                if sh.version not in (0x0303, 0x0304)
                else f"cipher suite {suite_name(sh.cipher)}"
            )
            self._give_up(
                conn, ts, out, "warning", "tls_unsupported_cipher", f"{what} is not decrypted"
            )
            return
        if suite.tls13 != conn.tls13:
            self._give_up(conn, ts, out, "error", "tls_malformed", "suite does not fit version")
            return
        if conn.tls13:
            conn.s2c.phase = _HANDSHAKE
            conn.s2c.protected = True
            conn.s2c.keys = None
            c2s = conn.c2s
            if ch.early_data:
                c2s.phase = _EARLY  # records are early data or handshake: tried when met
            else:
                c2s.phase = _HANDSHAKE
                c2s.protected = True
                c2s.keys = None
        elif self.keylog.has("CLIENT_RANDOM", ch.random):
            conn.decrypted = True
            self._send_info(conn, ts, out)

    # -- keys ---------------------------------------------------------------------------------

    def _load_keys(self, conn: _Conn, d: _Dir) -> _Keys13 | _Keys12 | None:
        suite = conn.suite
        cr = conn.client_random
        assert suite is not None and cr is not None
        if conn.tls13:
            phase = d.phase
            if phase == _EARLY and not conn.early_accepted:
                phase = _HANDSHAKE  # rejected early data is skipped by trying this key
            label = _SECRET_LABELS[(d.direction, phase)]
            secret = self.keylog.get(label, cr)
            if secret is None:
                conn.missing.add(label)
                return None
            d.keys = _Keys13(suite, secret)
            return d.keys
        if conn.key_block is None:
            master = self.keylog.get("CLIENT_RANDOM", cr)
            if master is None or conn.server_random is None:
                conn.missing.add("CLIENT_RANDOM")
                return None
            k, i = suite.key_len, suite.iv_len
            block = tls12_prf(
                suite.hash, master, b"key expansion", conn.server_random + cr, 2 * (k + i)
            )
            conn.key_block = (block[:k], block[k : 2 * k], block[2 * k : 2 * k + i], block[-i:])
        ckey, skey, civ, siv = conn.key_block
        if d.direction == "c2s":
            d.keys = _Keys12(suite, ckey, civ)
        else:
            d.keys = _Keys12(suite, skey, siv)
        return d.keys

    def _wait_keys(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent]) -> None:
        """No secret yet: wait for the key log to grow, or settle now if it cannot."""
        if not self.wait_for_keys:
            self._stop_waiting(conn, ts, out, "")
            return
        cr = conn.client_random
        assert cr is not None
        self._waiting.setdefault(cr, {})[conn.conn_id] = conn

    def _retry(self, out: list[ChunkEvent]) -> None:
        """The key log grew: connections waiting for one of the new client randoms go on."""
        added = self.keylog.added
        fresh = set(added[self._keys_seen :])
        self._keys_seen = len(added)
        for cr in fresh:
            conns = self._waiting.pop(cr, None)
            for conn in (conns or {}).values():
                try:
                    waiting = [d for d in (conn.c2s, conn.s2c) if d.waiting == _WAIT_KEYS]
                    self._resume(conn, waiting, out)
                except Exception as exc:
                    self._internal_error(conn, None, exc, out)

    def _resume(self, conn: _Conn, dirs: list[_Dir], out: list[ChunkEvent]) -> None:
        """Parse what waited, then replay the chunks held meanwhile: both directions merged
        in arrival order, each with its own time, as if the keys had been there all along."""
        steps: list[tuple[int, _Dir, float, bytes | None]] = []
        for d in dirs:
            self._held_total -= d.held_bytes
            d.held_bytes = 0
            d.waiting = _NOT_WAITING
            d.need = 5
            steps.append((d.wait_seq, d, d.wait_ts, None))
            steps.extend((seq, d, ts, data) for seq, ts, data in d.held)
            d.held = []
        steps.sort(key=lambda step: step[0])
        for seq, d, ts, data in steps:
            if conn.state != _TLS:
                break
            if data is None:
                self._seq_now = seq
                self._pump(conn, d, ts, out)
            elif not d.dead:
                self._chunk(conn, d, seq, ts, data, out)  # held again if it waits again
        for d in dirs:
            self._after_gap(conn, d, out)

    def _stop_waiting(self, conn: _Conn, ts: float | None, out: list[ChunkEvent], why: str) -> None:
        """No keys after all: the directions that waited are counted only from now on."""
        waited = [d for d in (conn.c2s, conn.s2c) if d.waiting == _WAIT_KEYS]
        if waited:  # stamped when the key was first needed, however late this is decided
            ts = min(d.wait_ts for d in waited)
        self._unwait(conn)
        labels = ", ".join(sorted(conn.missing)) or "secrets"
        cr = conn.client_random.hex() if conn.client_random else "?"
        message = f"no {labels} for client random {cr} in the key logs"
        if why:
            message += f" ({why})"
        if not conn.info_sent or not conn.decrypted:
            self._give_up(conn, ts, out, "warning", "tls_no_keys", message)
            return
        out.append(diagnostic(conn.conn_id, "tls", "warning", "tls_no_keys", message, ts=ts))
        for d in waited:
            out.append(Gap(conn.conn_id, d.direction, ts or d.wait_ts, None))

    def _unwait(self, conn: _Conn) -> None:
        for d in (conn.c2s, conn.s2c):
            if d.waiting == _WAIT_KEYS:
                d.waiting = _NOT_WAITING
                d.dead = True
                self._drop(d)
        cr = conn.client_random
        if cr is not None and cr in self._waiting:
            self._waiting[cr].pop(conn.conn_id, None)
            if not self._waiting[cr]:
                del self._waiting[cr]

    # -- endings ------------------------------------------------------------------------------

    def _gap(self, conn: _Conn, event: Gap, out: list[ChunkEvent]) -> None:
        d = conn.dir(event.direction)
        if d.dead or d.gap:
            return
        d.gap = True  # what came before may still wait for keys: it is parsed first
        d.gap_ts = event.ts
        self._after_gap(conn, d, out)

    def _after_gap(self, conn: _Conn, d: _Dir, out: list[ChunkEvent]) -> None:
        if not d.gap or d.waiting or d.dead or conn.state != _TLS:
            return
        self._kill(
            conn,
            d,
            d.gap_ts,
            out,
            "tls_gap",
            f"{d.direction} bytes missing from the capture; the rest of that direction is "
            "not decrypted",
        )

    def _end(self, conn: _Conn, ts: float | None, out: list[ChunkEvent]) -> None:
        """The connection ended: settle whatever is still open about it."""
        if conn.state == _UNDECIDED:
            out.extend(conn.held)
            conn.held = []
            return
        if conn.state != _TLS:
            return
        if conn.c2s.waiting == _WAIT_KEYS or conn.s2c.waiting == _WAIT_KEYS:
            self._stop_waiting(conn, ts, out, "")
            if conn.state != _TLS:
                return
        for d in (conn.c2s, conn.s2c):
            if d.waiting == _WAIT_PEER:
                d.waiting = _NOT_WAITING
                d.dead = True
                self._drop(d)
            elif not d.dead and d.have and not d.gap:
                out.append(
                    diagnostic(
                        conn.conn_id,
                        "tls",
                        "warning",
                        "tls_truncated",
                        f"{d.direction} ends inside a TLS record ({d.have} bytes)",
                        ts=ts,
                    )
                )
        if conn.server_random is None:
            self._give_up(
                conn, ts, out, "warning", "tls_incomplete_handshake", "no ServerHello captured"
            )
        elif not conn.info_sent:
            self._send_info(conn, ts, out)

    # -- output -------------------------------------------------------------------------------

    def _send_info(self, conn: _Conn, ts: float | None, out: list[ChunkEvent]) -> None:
        if conn.info_sent:
            return
        conn.info_sent = True
        alpn = conn.alpn
        if alpn is None and not conn.decrypted and conn.client_hello is not None:
            offered = conn.client_hello.alpn
            if len(offered) == 1:
                alpn = offered[0]  # the server could accept only that one (or none)
        version = None
        if conn.version is not None:
            version = VERSIONS.get(conn.version, f"0x{conn.version:04x}")
        out.append(
            TlsInfo(
                conn.conn_id,
                ts or 0.0,
                version=version,
                cipher=suite_name(conn.suite_code) if conn.suite_code is not None else None,
                sni=conn.sni,
                alpn=alpn,
                decrypted=conn.decrypted,
            )
        )

    def _give_up(
        self,
        conn: _Conn,
        ts: float | None,
        out: list[ChunkEvent],
        severity: str,
        code: str,
        message: str,
    ) -> None:
        """The whole connection is counted only from now on."""
        if conn.state == _COUNT:
            return
        self._unwait(conn)
        if not conn.info_sent:
            conn.decrypted = False
            self._send_info(conn, ts, out)
        out.append(diagnostic(conn.conn_id, "tls", severity, code, message, ts=ts))
        conn.state = _COUNT
        for d in (conn.c2s, conn.s2c):
            d.dead = True
            self._drop(d)
            d.hs = bytearray()
            d.keys = None
        conn.key_block = None

    def _kill(
        self,
        conn: _Conn,
        d: _Dir,
        ts: float | None,
        out: list[ChunkEvent],
        code: str,
        message: str,
    ) -> None:
        """One direction cannot be parsed further; the whole connection, before plaintext."""
        if not conn.info_sent or not conn.decrypted:
            self._give_up(conn, ts, out, "error", code, message)
            return
        out.append(diagnostic(conn.conn_id, "tls", "error", code, message, ts=ts))
        d.dead = True
        d.keys = None
        self._drop(d)
        d.waiting = _NOT_WAITING
        out.append(Gap(conn.conn_id, d.direction, ts or 0.0, None))

    def _internal_error(
        self, conn: _Conn, event: ChunkEvent | None, exc: Exception, out: list[ChunkEvent]
    ) -> None:
        ts = getattr(event, "ts", None)
        if conn.state == _UNDECIDED:  # cannot happen in a TLS layer without bugs
            out.extend(conn.held)
            conn.held = []
        conn.state = _TLS
        # Not the exception's text: it could quote bytes of a secret.
        self._give_up(
            conn, ts, out, "error", "tls_internal_error", f"TLS layer failed ({type(exc).__name__})"
        )
        if type(event) is Closed:
            self._conns.pop(conn.conn_id, None)
            out.append(event)
