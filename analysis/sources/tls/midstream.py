"""TLS connections whose handshake was not captured: record boundaries and keys found by trial.

One job: for a direction of a TLS 1.3 connection seen only from some point after its handshake,
find (1) the first record boundary, when the capture starts inside a record, and (2) which key
log entry, cipher suite, key update generation and record sequence number open its records.
:mod:`.records` then decrypts onward as if the handshake had been seen.

Why trial decryption is safe: the client random, which names a connection's key log lines, is
only in the ClientHello.  Without it every ``CLIENT_TRAFFIC_SECRET_0`` / ``SERVER_TRAFFIC_SECRET_0``
of the key logs is a candidate, and a candidate is accepted only when ``cryptography``'s AEAD
authenticates a whole record under it (a 128-bit tag: a wrong key, suite or sequence number
passes with probability about 2**-128 per trial, so at most ``trials * 2**-128`` over a search).

What is tried, bounded by the constants below (one place; docs/schema.md lists them):

* suites by secret length: 32 bytes -- TLS_AES_128_GCM_SHA256, then TLS_CHACHA20_POLY1305_SHA256;
  48 bytes -- TLS_AES_256_GCM_SHA384.  The CCM suites are not tried (CCM_8's 64-bit tag would
  weaken the proof, and no browser or Node.js offers them);
* key update generations 0 to :data:`MIDSTREAM_KEY_UPDATES` of each secret (RFC 8446 7.2);
* record sequence numbers 0 to :data:`MIDSTREAM_GCM_WINDOW` - 1 (AES-GCM) or
  :data:`MIDSTREAM_SEQ_WINDOW` - 1 (ChaCha20-Poly1305) of each generation;
* the first :data:`MIDSTREAM_TRIAL_RECORDS` application data records of the direction (records
  still under handshake keys, when the capture starts inside the handshake, do not open; a
  direction whose cleartext ServerHello or ChangeCipherSpec was captured gets
  :data:`MIDSTREAM_HANDSHAKE_RECORDS` more, for the encrypted handshake records that follow);
* at most :data:`MIDSTREAM_MAX_CANDIDATES` secrets per label, in key log order.

Cost: AES-GCM is searched without one AEAD call per sequence number (:func:`gcm_find_seq`:
two AES-GCM calls and two one-block AES calls per key and record), so its cost does not grow
with the window; ChaCha20-Poly1305 has no such shortcut (its one-time Poly1305 key depends on the
nonce) and takes one AEAD call per sequence number, within :data:`MIDSTREAM_SLOW_BYTES` per
direction.

TLS 1.3 handshake secrets: a capture cut inside the handshake starts a direction with encrypted
handshake records.  The first record of a direction is also tried with the
``*_HANDSHAKE_TRAFFIC_SECRET`` of each key log entry (generation 0); one that opens it gives the
client random, the handshake records that follow open with it, and the direction's application
secret of that client random is then searched with a fresh budget from the first record that
does not (:class:`Search` with ``first_labels``).

TLS 1.2 (:class:`Search12`): its keys are PRF(master, "key expansion", server_random +
client_random), and the NSS key log gives the master secret by client random -- so the
ServerHello (the server random, the suite) must have been captured.  With it, each
``CLIENT_RANDOM`` entry (at most :data:`MIDSTREAM_MAX_CANDIDATES`) gives a key block, tried on
the direction's first protected records: the one right after its ChangeCipherSpec is sequence
number 0 (its Finished); an application data record whose ChangeCipherSpec was not captured
is tried at the sequence number its explicit nonce gives (AES-GCM/CCM: OpenSSL, BoringSSL, NSS
and Go send the sequence number there), then at 0 .. :data:`MIDSTREAM_SEQ_WINDOW` - 1 within
:data:`MIDSTREAM_SLOW_BYTES` (the sequence number is only in the additional data, or for
ChaCha20-Poly1305 in the nonce).  Without the ServerHello there is no key to try.

Secrets never leave this module: :class:`Match` does not show its secret.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from h2ws.analysis.sources.tls.keylog import KeyLog
from h2ws.analysis.sources.tls.schedule import (
    SUITES,
    Keys12,
    Keys13,
    Suite,
    hkdf_expand_label,
    tls12_key_block,
)

#: Record sequence numbers tried per key update generation with ChaCha20-Poly1305 (one AEAD
#: call each): 0 .. MIDSTREAM_SEQ_WINDOW - 1.
MIDSTREAM_SEQ_WINDOW: Final = 4096
#: The same for AES-GCM, whose search costs the same for any window (:func:`gcm_find_seq`).
MIDSTREAM_GCM_WINDOW: Final = 1 << 32
#: Key update generations tried per secret: 0 (the logged secret) .. MIDSTREAM_KEY_UPDATES.
MIDSTREAM_KEY_UPDATES: Final = 3
#: Application data records of a direction tried before it is given up.
MIDSTREAM_TRIAL_RECORDS: Final = 4
#: More records tried in a direction whose ServerHello or ChangeCipherSpec was captured without
#: the ClientHello (a capture cut inside the handshake): its encrypted handshake records, under
#: handshake keys that are not tried, come before its application data.
MIDSTREAM_HANDSHAKE_RECORDS: Final = 8
#: Secrets tried per key log label (in key log order; the rest are not tried, and it is said).
MIDSTREAM_MAX_CANDIDATES: Final = 1024
#: Bytes given to the AEAD per direction by the suites without a fast search (ChaCha20-Poly1305:
#: one call per sequence number), each call counted as the record's length plus 256.
MIDSTREAM_SLOW_BYTES: Final = 1 << 26
#: RFC 8446 5.2: the largest TLS 1.3 record body (2**14 plus 256).
MIDSTREAM_MAX_RECORD: Final = (1 << 14) + 256
#: A record boundary is searched in the first bytes of a direction: one whole largest record.
MIDSTREAM_SCAN: Final = 5 + MIDSTREAM_MAX_RECORD
#: Bytes of a connection whose TCP start was not captured held while deciding whether it is
#: TLS (records that chain); past them it is taken as not TLS.
MIDSTREAM_HOLD: Final = 4 * MIDSTREAM_SCAN


#: Which traffic secrets open which direction: its own label first, then the other one (for a
#: connection whose client the TCP layer guessed wrong).
LABELS: Final = {
    "c2s": ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"),
    "s2c": ("SERVER_TRAFFIC_SECRET_0", "CLIENT_TRAFFIC_SECRET_0"),
}
OTHER_LABEL: Final = {own: other for own, other in LABELS.values()}
#: The handshake secrets tried on a direction's first record (a capture cut inside the TLS 1.3
#: handshake), in the same order as :data:`LABELS`.
HANDSHAKE_LABELS: Final = {
    "c2s": ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET"),
    "s2c": ("SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_HANDSHAKE_TRAFFIC_SECRET"),
}
#: The application secret that follows a handshake secret, and back.
APP_OF: Final = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET": "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET": "SERVER_TRAFFIC_SECRET_0",
}
HANDSHAKE_OF: Final = {app: hs for hs, app in APP_OF.items()}
_FAST: Final = {32: (SUITES[0x1301],), 48: (SUITES[0x1302],)}
_SLOW: Final = {32: (SUITES[0x1303],), 48: ()}

#: A TLS 1.2 key block: client and server write keys, client and server IVs.
KeyBlock = tuple[bytes, bytes, bytes, bytes]

#: find_boundary: more bytes are needed to decide; no boundary in the window.
NEED, NOT_FOUND = -2, -1


def _header_ok(buf: bytes, p: int) -> bool:
    return (
        20 <= buf[p] <= 24
        and buf[p + 1] == 3
        and buf[p + 2] == 3
        and ((buf[p + 3] << 8) | buf[p + 4]) <= MIDSTREAM_MAX_RECORD
    )


def _chains(buf: bytes, o: int, final: bool) -> bool | int:
    """Whether TLS record headers chain from ``o`` over the whole of ``buf``; an int: not known
    until ``buf`` is that long.  Two headers, or one at offset 0 (the capture cut between
    records), or one whose record ends exactly where a finished direction ends."""
    n = len(buf)
    p, count = o, 0
    while p + 5 <= n:
        if not _header_ok(buf, p):
            return False
        count += 1
        p += 5 + ((buf[p + 3] << 8) | buf[p + 4])
    if count >= 2 or (count == 1 and o == 0):
        return True
    if final:
        return count == 1 and p == n
    return p + 5  # the next header decides


def find_boundary(buf: bytes, final: bool) -> int:
    """The first offset below :data:`MIDSTREAM_SCAN` from which TLS record headers (content type
    20-24, version 0x0303, length at most :data:`MIDSTREAM_MAX_RECORD`) chain to the end of
    ``buf``; :data:`NEED` when more bytes could decide, :data:`NOT_FOUND` when none can.

    ``final``: no more bytes will come.  A false boundary costs only a failed trial: the AEAD,
    not this, is the proof.
    """
    return find_boundary_need(buf, final)[0]


def find_boundary_need(buf: bytes, final: bool) -> tuple[int, int]:
    """:func:`find_boundary`, and with :data:`NEED` the length ``buf`` must reach before asking
    again makes sense (so that a record arriving in many small pieces is not rescanned for each:
    the scan's cost stays linear)."""
    limit = min(len(buf), MIDSTREAM_SCAN)
    start = 1
    while True:
        at = buf.find(b"\x03\x03", start, limit + 2)  # the version bytes of a header at o
        if at == -1:
            break
        o, start = at - 1, at + 1
        if 20 <= buf[o] <= 24:
            chained = _chains(buf, o, final)
            if chained is True:
                return o, 0
            if chained is not False:
                return NEED, chained  # an earlier boundary wins: wait for the bytes that decide it
    if final or len(buf) >= MIDSTREAM_SCAN:
        return NOT_FOUND, 0
    # A header may start in the last bytes seen; asked again only after a quarter more bytes,
    # so that bytes arriving one by one cost a bounded number of scans.
    return NEED, len(buf) + max(5, len(buf) // 4)


class Match:
    """What opened a record: which key log entry, suite, generation and sequence number."""

    __slots__ = ("client_random", "generation", "handshake", "keys", "label", "seq", "suite")

    def __init__(
        self, client_random: bytes, label: str, suite: Suite, generation: int, keys: Keys13
    ) -> None:
        self.client_random = client_random
        self.label = label
        self.suite = suite
        self.generation = generation
        self.keys = keys  # its ``seq`` is the matched record's
        self.seq = keys.seq
        self.handshake = label in APP_OF  # a handshake secret: application data comes later

    def __repr__(self) -> str:  # never the secret
        return (
            f"<Match {self.label} {self.client_random.hex()} {self.suite.name} "
            f"generation {self.generation} seq {self.seq}>"
        )


class Search:
    """The trial decryption of one direction: candidates, budget, and what was tried."""

    __slots__ = (
        "candidates",
        "first",
        "hint",
        "labels",
        "records",
        "skipped",
        "slow_left",
        "tls12",
        "trials",
    )

    def __init__(
        self,
        keylog: KeyLog,
        labels: tuple[str, ...],
        only: bytes | None = None,
        first_labels: tuple[str, ...] = (),
    ) -> None:
        """``only``: the client random the other direction matched (then only its secrets).
        ``first_labels``: tried on the first record only, generation 0 only (the handshake
        secrets: encrypted handshake records come first in a direction, if at all)."""
        self.labels = labels
        self.tls12 = bool(keylog.entries("CLIENT_RANDOM"))
        self.hint = ""  # about TLS 1.2, from the first record
        self.skipped = 0  # secrets beyond MIDSTREAM_MAX_CANDIDATES
        self.candidates = self._candidates(keylog, labels, only)
        self.first = self._candidates(keylog, first_labels, only)
        self.records = 0  # records tried
        self.trials = 0  # (secret, suite, generation, record) combinations tried
        self.slow_left = MIDSTREAM_SLOW_BYTES

    def _candidates(
        self, keylog: KeyLog, labels: tuple[str, ...], only: bytes | None
    ) -> list[tuple[str, bytes, bytes]]:
        out: list[tuple[str, bytes, bytes]] = []
        for label in labels:
            if only is not None:
                secret = keylog.get(label, only)
                if secret is not None:
                    out.append((label, only, secret))
                continue
            entries = keylog.entries(label)
            self.skipped += max(0, len(entries) - MIDSTREAM_MAX_CANDIDATES)
            out.extend((label, cr, s) for cr, s in entries[:MIDSTREAM_MAX_CANDIDATES])
        return out

    def try_record(self, header: bytes, body: memoryview | bytes) -> Match | None:
        """The match that opens this record (a whole TLS 1.3 application data record), if any."""
        self.records += 1
        body = bytes(body)
        if self.records == 1:
            self.hint = tls12_hint(body, self.tls12)
        if len(body) < 17:  # a content type byte and a tag at least
            return None
        match = self._search(header, body, self.candidates, MIDSTREAM_KEY_UPDATES)
        if match is None and self.records == 1 and self.first:
            match = self._search(header, body, self.first, 0)
        return match

    def _search(
        self,
        header: bytes,
        body: bytes,
        candidates: list[tuple[str, bytes, bytes]],
        updates: int,
    ) -> Match | None:
        generations = [(label, cr, [s]) for label, cr, s in candidates]
        slow: list[tuple[str, bytes, Suite, int, bytes]] = []
        for g in range(updates + 1):
            for label, cr, secrets in generations:
                if g == len(secrets):
                    last = secrets[-1]
                    size = len(last)
                    secrets.append(hkdf_expand_label(_hash(last), last, b"traffic upd", b"", size))
                secret = secrets[g]
                for suite in _FAST.get(len(secret), ()):
                    self.trials += 1
                    key, iv = _key_iv(suite, secret)
                    seq = gcm_find_seq(key, iv, header, body)
                    if seq is not None:
                        match = _confirm(cr, label, suite, g, secret, seq, header, body)
                        if match is not None:
                            return match
                slow.extend((label, cr, suite, g, secret) for suite in _SLOW.get(len(secret), ()))
        for label, cr, suite, g, secret in slow:
            if self.slow_left < len(body) + 256:
                self.slow_left = 0
                break
            self.trials += 1
            key, iv = _key_iv(suite, secret)
            cost = len(body) + 256
            calls = self.slow_left // cost
            seq, used = slow_find_seq(ChaCha20Poly1305(key), iv, header, body, calls)
            self.slow_left -= max(used, 1) * cost
            if seq is not None:
                match = _confirm(cr, label, suite, g, secret, seq, header, body)
                if match is not None:
                    return match
        return None

    def why_not(self) -> str:
        """Why nothing matched, without a secret: what was tried."""
        secrets = len(self.candidates) + len(self.first)
        if not secrets:
            return f"the key logs have no {' or '.join(self.labels)} to try" + self.hint
        text = (
            f"no key log secret opens its first {self.records} application data record(s) "
            f"({secrets} secrets x suites x key update generations 0-{MIDSTREAM_KEY_UPDATES} x "
            f"record sequence numbers 0-{MIDSTREAM_GCM_WINDOW - 1} for AES-GCM, "
            f"0-{MIDSTREAM_SEQ_WINDOW - 1} for ChaCha20-Poly1305 tried)"
        )
        if self.skipped:
            text += f"; {self.skipped} more secrets not tried (limit {MIDSTREAM_MAX_CANDIDATES})"
        if self.slow_left <= 0:
            text += f"; ChaCha20-Poly1305 trials stopped at {MIDSTREAM_SLOW_BYTES} bytes"
        return text + self.hint


class Match12:
    """What opened a TLS 1.2 record: which key log entry, and the direction's keys at the
    matched record's sequence number."""

    __slots__ = ("client_random", "key_block", "keys", "seq", "seq_from")

    def __init__(
        self,
        client_random: bytes,
        key_block: KeyBlock,
        keys: Keys12,
        seq_from: str,
    ) -> None:
        self.client_random = client_random
        self.key_block = key_block
        self.keys = keys
        self.seq = keys.seq
        self.seq_from = seq_from  # how the sequence number was found, for the diagnostic

    def __repr__(self) -> str:  # never a key
        return f"<Match12 {self.client_random.hex()} seq {self.seq}>"


class Search12:
    """The trial decryption of one direction of a TLS 1.2 connection whose ServerHello was
    captured but not its ClientHello: which ``CLIENT_RANDOM`` master secret opens its records."""

    __slots__ = (
        "candidates",
        "records",
        "server_random",
        "server_side",
        "skipped",
        "slow_left",
        "suite",
        "trials",
    )

    def __init__(
        self,
        keylog: KeyLog,
        suite: Suite,
        server_random: bytes,
        server_side: bool,
        only: bytes | None = None,
    ) -> None:
        """``server_side``: the direction sent the ServerHello (server write keys);
        ``only``: the client random the other direction matched."""
        self.suite = suite
        self.server_random = server_random
        self.server_side = server_side
        self.skipped = 0
        if only is not None:
            master = keylog.get("CLIENT_RANDOM", only)
            entries = [] if master is None else [(only, master)]
        else:
            entries = keylog.entries("CLIENT_RANDOM")
            self.skipped = max(0, len(entries) - MIDSTREAM_MAX_CANDIDATES)
            entries = entries[:MIDSTREAM_MAX_CANDIDATES]
        #: (client random, master, key block and keys once derived)
        self.candidates: list[tuple[bytes, bytes, list[tuple[KeyBlock, Keys12]]]] = [
            (cr, master, []) for cr, master in entries
        ]
        self.records = 0
        self.trials = 0
        self.slow_left = MIDSTREAM_SLOW_BYTES

    def _keys(
        self, cr: bytes, master: bytes, cache: list[tuple[KeyBlock, Keys12]]
    ) -> tuple[KeyBlock, Keys12]:
        if not cache:  # derived once per candidate and direction
            block = tls12_key_block(self.suite, master, self.server_random, cr)
            key, iv = (block[1], block[3]) if self.server_side else (block[0], block[2])
            cache.append((block, Keys12(self.suite, key, iv)))
        return cache[0]

    def try_record(
        self, ctype: int, version: int, body: memoryview | bytes, after_ccs: bool
    ) -> Match12 | None:
        """The match that opens this protected record, if any.  ``after_ccs``: the record right
        after the direction's ChangeCipherSpec (sequence number 0)."""
        self.records += 1
        body = bytes(body)
        suite = self.suite
        explicit = suite.aead != "chacha"
        if len(body) < suite.tag_len + (8 if explicit else 0):
            return None
        if after_ccs:
            first: list[tuple[int, str]] = [(0, "the record after its ChangeCipherSpec")]
        elif explicit:
            first = [(int.from_bytes(body[:8]), "its explicit nonce")]
        else:
            first = []
        for seq, how in first:
            for cr, master, cache in self.candidates:
                self.trials += 1
                match = self._try(cr, master, cache, ctype, version, body, seq, how)
                if match is not None:
                    return match
        if after_ccs:
            return None
        cost = len(body) + 256
        for cr, master, cache in self.candidates:
            for seq in range(MIDSTREAM_SEQ_WINDOW):
                if self.slow_left < cost:
                    self.slow_left = 0
                    return None
                self.slow_left -= cost
                self.trials += 1
                match = self._try(cr, master, cache, ctype, version, body, seq, "trial")
                if match is not None:
                    return match
        return None

    def _try(
        self,
        cr: bytes,
        master: bytes,
        cache: list[tuple[KeyBlock, Keys12]],
        ctype: int,
        version: int,
        body: bytes,
        seq: int,
        how: str,
    ) -> Match12 | None:
        """The proof: ``cryptography``'s AEAD opens the record at ``seq`` under the keys."""
        block, keys = self._keys(cr, master, cache)
        keys.seq = seq
        try:
            keys.open(ctype, version, memoryview(body))
        except InvalidTag:
            return None
        keys.seq = seq  # the record is opened again, by the record layer
        cache.clear()  # the match owns these keys now
        return Match12(cr, block, keys, how)

    def why_not(self) -> str:
        """Why nothing matched, without a secret: what was tried."""
        if not self.candidates:
            return (
                "its ServerHello was captured (TLS 1.2), but the key logs have no CLIENT_RANDOM "
                "master secret to try"
            )
        text = (
            f"its ServerHello was captured (TLS 1.2, {self.suite.name}), but no key log "
            f"CLIENT_RANDOM master secret opens its first {self.records} protected record(s) "
            f"({len(self.candidates)} secrets tried, at sequence number 0 after a "
            "ChangeCipherSpec, else at its explicit nonce and 0-"
            f"{MIDSTREAM_SEQ_WINDOW - 1})"
        )
        if self.skipped:
            text += f"; {self.skipped} more secrets not tried (limit {MIDSTREAM_MAX_CANDIDATES})"
        if self.slow_left <= 0:
            text += f"; trials stopped at {MIDSTREAM_SLOW_BYTES} bytes"
        return text


def tls12_hint(body: bytes, tls12_keys: bool) -> str:
    """What to add to a failed search about TLS 1.2, whose connections this cannot decrypt."""
    why = (
        "TLS 1.2 cannot be decrypted when its ServerHello was not captured: its keys need the "
        "ServerHello's random, and the key log gives only the client random and master secret"
    )
    if len(body) >= 24 and int.from_bytes(bytes(body[:8])) < 1 << 32:
        return f"; its records look like TLS 1.2 (an explicit nonce that counts records): {why}"
    if tls12_keys:
        return f"; if it is TLS 1.2: {why}"
    return ""


def _hash(secret: bytes) -> type[hashes.SHA256] | type[hashes.SHA384]:
    return hashes.SHA384 if len(secret) == 48 else hashes.SHA256


def _key_iv(suite: Suite, secret: bytes) -> tuple[bytes, bytes]:
    key = hkdf_expand_label(suite.hash, secret, b"key", b"", suite.key_len)
    return key, hkdf_expand_label(suite.hash, secret, b"iv", b"", 12)


def _confirm(
    cr: bytes, label: str, suite: Suite, g: int, secret: bytes, seq: int, header: bytes, body: bytes
) -> Match | None:
    """The proof: ``cryptography``'s AEAD opens the record under the match's keys."""
    keys = Keys13(suite, secret)
    keys.seq = seq
    try:
        keys.aead.decrypt((keys.iv ^ seq).to_bytes(12), body, header)
    except InvalidTag:
        return None
    return Match(cr, label, suite, g, keys)


_W = MIDSTREAM_SEQ_WINDOW


def gcm_find_seq(key: bytes, iv: bytes, header: bytes, body: bytes) -> int | None:
    """The one sequence number below :data:`MIDSTREAM_GCM_WINDOW` at which ``body`` can
    authenticate under ``key`` and the TLS 1.3 ``iv`` (nonce = iv XOR seq), or None.  Not the
    proof: :func:`_confirm` is.

    A fast path instead of one ``AESGCM.decrypt`` per sequence number: a GCM tag is
    ``GHASH_H(aad, ciphertext) XOR E_K(J0)`` with ``J0 = nonce || 0x00000001`` (NIST SP 800-38D
    7.1), and only ``E_K(J0)`` depends on the nonce.  The GHASH part comes from the library --
    ``AESGCM.encrypt``, under the nonce of sequence number 0, of the plaintext that gives this very
    ciphertext, minus that nonce's ``E_K(J0)`` -- so ``E_K(J0)`` of the record's own nonce is
    known, and one AES block decryption gives its J0 and so its sequence number.  Three library
    calls, whatever the window.  tests/test_tls_midstream.py checks with hypothesis that it
    agrees with trying every number.
    """
    if len(body) < 16:
        return None
    ct, tag = body[:-16], body[-16:]
    aes = algorithms.AES(key)
    encryptor = Cipher(aes, modes.ECB()).encryptor()
    ek0 = encryptor.update(iv + b"\x00\x00\x00\x01") + encryptor.finalize()
    aead = AESGCM(key)
    n = len(ct)
    keystream = aead.encrypt(iv, bytes(n), None)[:n]
    plain = (int.from_bytes(ct) ^ int.from_bytes(keystream)).to_bytes(n) if n else b""
    tag0 = aead.encrypt(iv, plain, header)[-16:]
    ek = (int.from_bytes(tag0) ^ int.from_bytes(ek0) ^ int.from_bytes(tag)).to_bytes(16)
    decryptor = Cipher(aes, modes.ECB()).decryptor()
    j0 = decryptor.update(ek) + decryptor.finalize()
    if j0[12:] != b"\x00\x00\x00\x01":
        return None
    seq = int.from_bytes(j0[:12]) ^ int.from_bytes(iv)
    return seq if seq < MIDSTREAM_GCM_WINDOW else None


def slow_find_seq(
    aead: ChaCha20Poly1305 | AESGCM, iv: bytes, header: bytes, body: bytes, budget: int
) -> tuple[int | None, int]:
    """The sequence number in 0 .. W-1 whose nonce opens ``body``, trying each in turn (at most
    ``budget`` calls); returns it (or None) and the number of calls made."""
    ivn = int.from_bytes(iv)
    calls = 0
    for seq in range(min(_W, budget)):
        calls += 1
        try:
            aead.decrypt((ivn ^ seq).to_bytes(12), body, header)
        except InvalidTag:
            continue
        return seq, calls
    return None, calls
