"""TLS record and handshake vocabulary, and hello parsing (RFC 8446 §4.1-§4.3, RFC 5246 §7.4).

One job: the constants of the record layer and handshake (content types, handshake types,
extensions, limits, alert names) and the parsers of the handshake messages an observer needs --
ClientHello (random, SNI, ALPN offer, PSK and early-data offers), ServerHello (random, version,
suite, ALPN, PSK; HelloRetryRequest), EncryptedExtensions (ALPN, early data accepted).  Bytes that
cannot be these messages raise :class:`Malformed`, whose text names what was expected and quotes
no data.
"""

from __future__ import annotations

from typing import Final

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


class Malformed(Exception):
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
            raise Malformed("handshake message too short")
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
            raise Malformed("vector longer than its message")
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


class Hello:
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


def parse_client_hello(body: bytes) -> Hello:
    r = _Reader(body)
    h = Hello()
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


def parse_server_hello(body: bytes) -> Hello:
    r = _Reader(body)
    h = Hello()
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


def parse_encrypted_extensions(body: bytes) -> Hello:
    h = Hello()
    ext = _extensions(_Reader(body))
    if EXT_ALPN in ext:
        h.alpn = _alpn_list(ext[EXT_ALPN])
    h.early_data = EXT_EARLY_DATA in ext
    return h
