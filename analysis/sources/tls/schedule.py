"""Cipher suites and key schedules: TLS 1.3 (RFC 8446 §7.1, §7.3, §5.3) and TLS 1.2 (RFC 5246 §5,
§6.3; AEAD suites RFC 5288, RFC 7905, RFC 6655).

One job: from a secret of the key log to the AEAD that opens a record -- HKDF-Expand-Label and
traffic keys for TLS 1.3, the PRF and key block for TLS 1.2, per-record nonces and additional
data.  Every cryptographic operation is ``cryptography``'s (AEADs, HKDF-Expand, HMAC); this module
only computes nonces, additional data and key schedules.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand


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


def tls12_key_block(
    suite: Suite, master: bytes, server_random: bytes, client_random: bytes
) -> tuple[bytes, bytes, bytes, bytes]:
    """RFC 5246 section 6.3: (client write key, server write key, client IV, server IV) of an
    AEAD suite (no MAC keys)."""
    k, i = suite.key_len, suite.iv_len
    block = tls12_prf(
        suite.hash, master, b"key expansion", server_random + client_random, 2 * (k + i)
    )
    return block[:k], block[k : 2 * k], block[2 * k : 2 * k + i], block[-i:]


class Keys13:
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

    def next_generation(self) -> Keys13:
        size = self.suite.hash.digest_size
        return Keys13(
            self.suite, hkdf_expand_label(self.suite.hash, self._secret, b"traffic upd", b"", size)
        )

    def open(self, header: bytes, body: memoryview) -> bytes:
        """The inner plaintext of one record; the sequence number moves only on success."""
        pt = self.aead.decrypt((self.iv ^ self.seq).to_bytes(12), body, header)
        self.seq += 1
        return pt


class Keys12:
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
