"""The TLS record state machine (RFC 8446 §5, RFC 5246 §6.2): :class:`TlsLayer`.

One job: a sans-IO filter over chunk events that turns each TLS connection's records into
plaintext chunks, using :mod:`.keylog`, :mod:`.schedule` and :mod:`.handshake`.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag

from h2ws.analysis.core.chunks import ChunkEvent, Closed, Data, Gap, Opened, TlsInfo, Wire
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.records import DiagnosticRecord, Direction
from h2ws.analysis.sources.tls.handshake import (
    ALERT,
    ALERTS,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    CLIENT_HELLO,
    ENCRYPTED_EXTENSIONS,
    END_OF_EARLY_DATA,
    FINISHED,
    HANDSHAKE,
    HEARTBEAT,
    HRR_RANDOM,
    KEY_UPDATE,
    MAX_HANDSHAKE,
    MAX_RECORD,
    SERVER_HELLO,
    VERSIONS,
    Hello,
    Malformed,
    parse_client_hello,
    parse_encrypted_extensions,
    parse_server_hello,
)
from h2ws.analysis.sources.tls.keylog import KeyLog
from h2ws.analysis.sources.tls.midstream import (
    APP_OF,
    HANDSHAKE_LABELS,
    HANDSHAKE_OF,
    LABELS,
    MIDSTREAM_HANDSHAKE_RECORDS,
    MIDSTREAM_HOLD,
    MIDSTREAM_SCAN,
    MIDSTREAM_TRIAL_RECORDS,
    NEED,
    NOT_FOUND,
    OTHER_LABEL,
    Search,
    Search12,
    find_boundary_need,
)
from h2ws.analysis.sources.tls.schedule import (
    SUITES,
    Keys12,
    Keys13,
    Suite,
    suite_name,
    tls12_key_block,
)

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
        "ccs_next",
        "dead",
        "direction",
        "early_skipped",
        "gap",
        "gap_ts",
        "have",
        "held",
        "held_bytes",
        "hs",
        "hs_keys",
        "hs_label",
        "hs_records",
        "keys",
        "mid",
        "mid_failed",
        "mid_hello",
        "need",
        "parts",
        "phase",
        "protected",
        "search",
        "search12",
        "skipped",
        "synced",
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
        self.keys: Keys13 | Keys12 | None = None
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
        #: The handshake was not captured: keys are found by trial (:mod:`.midstream`).
        self.mid = False
        self.synced = False  # the first record boundary is known
        self.skipped = 0  # bytes before it
        self.search: Search | None = None
        self.mid_failed: str | None = None  # why no key was found (said once)
        #: A cleartext ServerHello or ChangeCipherSpec (TLS 1.3 sends it for middleboxes, right
        #: after the ServerHello or before the client's Finished) was seen before any key:
        #: encrypted handshake records may come next.
        self.mid_hello = False
        #: TLS 1.3 cut inside the handshake: the handshake secret found by trial, whose
        #: records are skipped until one does not open (then the application secret is tried).
        self.hs_keys: Keys13 | None = None
        self.hs_label = ""
        self.hs_records = 0
        #: TLS 1.2 whose ServerHello was captured: its trial, and whether the next record is
        #: the first after its ChangeCipherSpec (sequence number 0).
        self.search12: Search12 | None = None
        self.ccs_next = False


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
        "held_len",
        "info_sent",
        "key_block",
        "mid",
        "mid12_server",
        "mid_label",
        "missing",
        "s2c",
        "scan_at",
        "server_random",
        "sni",
        "state",
        "suite",
        "suite_code",
        "tcp_mid",
        "version",
    )

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.state = _UNDECIDED
        self.held: list[ChunkEvent] = []  # events while undecided
        self.c2s = _Dir("c2s")
        self.s2c = _Dir("s2c")
        self.client_hello: Hello | None = None
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
        #: The TCP layer did not see the connection start (its ``midstream_start``): the first
        #: bytes may be inside a TLS record.
        self.tcp_mid = False
        self.mid = False  # the TLS handshake was not captured
        self.mid_label: str | None = None  # the label that opened the first direction found
        #: TLS 1.2 without its ClientHello, but with its ServerHello: the direction that sent
        #: it (the server), then keys are tried from the CLIENT_RANDOM entries (:class:`Search12`).
        self.mid12_server: Direction | None = None
        self.scan_at = 0  # held bytes at which a TLS record boundary is looked for again
        self.held_len = 0  # bytes of the Data events in ``held``

    @property
    def tls13(self) -> bool:
        return self.version == 0x0304

    def dir(self, direction: Direction) -> _Dir:
        return self.c2s if direction == "c2s" else self.s2c

    def peer(self, d: _Dir) -> _Dir:
        return self.s2c if d is self.c2s else self.c2s


class _Pass:
    """One pass of :meth:`TlsLayer._records` over a direction's buffered records: what every
    record of it shares (the parameter object of ``_record`` and ``_early_record``)."""

    __slots__ = ("conn", "d", "out", "plain", "ts")

    def __init__(
        self, conn: _Conn, d: _Dir, ts: float, plain: Plain, out: list[ChunkEvent]
    ) -> None:
        self.conn = conn
        self.d = d
        self.ts = ts
        self.plain = plain
        self.out = out


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
        """Holds a connection's events until its first bytes tell whether it is TLS."""
        if type(event) is DiagnosticRecord:
            if event.code == "midstream_start" and event.conn_id == conn.conn_id:
                conn.tcp_mid = True
            out.append(event)
            return
        if type(event) is Closed:
            if self._decide(conn, out, final=True):
                self._feed(conn, event, out)
                return
            self._conns.pop(conn.conn_id, None)
            out.extend(conn.held)
            conn.held = []
            out.append(event)
            return
        conn.held.append(event)
        if type(event) is Data:
            conn.held_len += len(event.data)
            self._decide(conn, out, final=False)

    def _decide(self, conn: _Conn, out: list[ChunkEvent], final: bool) -> bool:
        """TLS or not, from the first three bytes of the first direction -- or, when the TCP
        layer missed the connection's start, from TLS record headers that chain in the first
        bytes of either direction (bounded: :data:`MIDSTREAM_HOLD`).  True: TLS, and the held
        events were fed.  Undecided and not ``final``: still holding."""
        first = next((e for e in conn.held if type(e) is Data), None)
        if first is None:
            return False
        head = b""
        for e in conn.held:
            if type(e) is Data and e.direction == first.direction:
                head += e.data[: 3 - len(head)]
                if len(head) == 3:
                    break
        if len(head) < 3 and not final and not conn.tcp_mid:
            return False
        mid = False
        if len(head) < 3 or not (head[1] == 3 and head[2] <= 4 and 20 <= head[0] <= 24):
            verdict = self._scan_held(conn, final) if conn.tcp_mid else False
            if verdict is None:
                return False  # more bytes decide
            if not verdict:
                self._conns.pop(conn.conn_id, None)  # not TLS: untouched from now on
                out.extend(conn.held)
                conn.held = []
                return False
            mid = True
        elif first.direction != "c2s" or head[0] != HANDSHAKE:
            mid = True
        held, conn.held = conn.held, []
        conn.state = _TLS
        if mid:
            self._enter_midstream(conn)
        for e in held:
            self._feed(conn, e, out)
        return True

    def _scan_held(self, conn: _Conn, final: bool) -> bool | None:
        """Whether TLS records chain in the held bytes of a direction; None: not known yet."""
        if not final and conn.held_len < conn.scan_at:
            return None  # nothing that could decide has arrived
        bufs = [
            b"".join(e.data for e in conn.held if type(e) is Data and e.direction == direction)
            for direction in ("c2s", "s2c")
        ]
        total = len(bufs[0]) + len(bufs[1])
        more = []
        found = False
        for buf in bufs:
            if buf:
                at, need = find_boundary_need(buf, final)
                found |= at >= 0
                if at == NEED:
                    more.append(need - len(buf))
        if found:
            return True
        if more and total <= MIDSTREAM_HOLD:
            conn.scan_at = total + min(more)
            return None
        return False

    def _enter_midstream(self, conn: _Conn) -> None:
        """The handshake was not captured: each direction looks for its first record boundary
        and then for the key log secret that opens its records (:mod:`.midstream`)."""
        conn.mid = True
        for d in (conn.c2s, conn.s2c):
            d.mid = True
            d.synced = False
            d.phase = _APP
            d.protected = True
            d.keys = None
            d.hs = bytearray()

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
        if d.mid and not d.synced and not self._sync(conn, d, ts, out, final=False):
            return
        buf = d.parts[0] if len(d.parts) == 1 else b"".join(d.parts)
        view = memoryview(buf)
        n = len(buf)
        pos = 0
        plain: Plain = []
        at = _Pass(conn, d, ts, plain, out)
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
                    if type(keys) is Keys13:
                        pt = keys.open(buf[pos : pos + 5], view[pos + 5 : end])
                        if pt and pt[-1] == APPLICATION_DATA:
                            plain.append(memoryview(pt)[:-1])
                        else:
                            self._inner(conn, d, pt, ts, plain, out)
                    else:
                        assert isinstance(keys, Keys12)
                        version = (buf[pos + 1] << 8) | buf[pos + 2]
                        plain.append(keys.open(ctype, version, view[pos + 5 : end]))
                    pos = end
                    if d.dead or conn.state != _TLS:
                        break
                    continue
                except (InvalidTag, ValueError):
                    pass  # the general path below reports it
            if keys is None and d.mid:
                if conn.mid12_server is not None:
                    if self._mid12_trial(conn, d, ctype, buf, view[pos + 5 : end], ts, out, pos):
                        continue  # the same record again, now with keys
                elif ctype == APPLICATION_DATA and self._mid_trial(
                    conn, d, buf[pos : pos + 5], view[pos + 5 : end], ts, out
                ):
                    continue
                if ctype == CHANGE_CIPHER_SPEC or (
                    ctype == HANDSHAKE and end > pos + 5 and buf[pos + 5] == SERVER_HELLO
                ):
                    d.mid_hello = True  # cut inside the handshake: handshake records follow
                    payload = view[pos + 5 : end]
                    size = int.from_bytes(payload[1:4]) if len(payload) >= 4 else len(payload)
                    if ctype == HANDSHAKE and 4 + size <= len(payload):  # whole in its record
                        self._mid_server_hello(conn, d, bytes(payload[4 : 4 + size]), ts, out)
                pos = end  # before a key is found: counted, not decoded
                if d.dead or conn.state != _TLS:
                    break
                continue
            if not self._record(at, ctype, buf, view, pos, end):
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

    # -- the handshake was not captured ------------------------------------------------------

    def _sync(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent], final: bool) -> bool:
        """Finds ``d``'s first record boundary; the bytes before it are counted, not decoded.
        False: not yet (more bytes decide), or never (then the direction is given up)."""
        buf = b"".join(d.parts)
        at, need = find_boundary_need(buf, final)
        if at == NEED:
            d.parts = [buf]
            d.need = need
            return False
        if at == NOT_FOUND:
            self._mid_fail(
                conn, d, ts, out, f"no TLS record boundary in its first {MIDSTREAM_SCAN} bytes"
            )
            return False
        d.synced = True
        d.skipped = at
        rest = buf[at:]
        d.parts = [rest] if rest else []
        d.have = len(rest)
        d.need = 5
        return True

    def _mid_trial(
        self,
        conn: _Conn,
        d: _Dir,
        header: bytes,
        body: memoryview,
        ts: float,
        out: list[ChunkEvent],
    ) -> bool:
        """Tries the key log's secrets on one application data record of ``d``; True when one
        opened it (``d.keys`` set at its sequence number)."""
        if d.hs_keys is not None:
            try:
                d.hs_keys.open(header, body)  # one more encrypted handshake record: skipped
                d.hs_records += 1
                return False
            except InvalidTag:
                d.hs_keys = None  # the handshake is over: the application secret from here
        search = d.search
        if search is None:
            if conn.client_random is not None and conn.mid_label is not None:
                # The other direction was found: only the peer secrets of the same connection.
                label = OTHER_LABEL[conn.mid_label]
                first = () if d.hs_label else (HANDSHAKE_OF[label],)
                search = Search(self.keylog, (label,), conn.client_random, first)
            else:
                search = Search(
                    self.keylog, LABELS[d.direction], None, HANDSHAKE_LABELS[d.direction]
                )
            d.search = search
        match = search.try_record(header, body)
        if match is None:
            limit = MIDSTREAM_TRIAL_RECORDS
            if d.mid_hello:
                limit += MIDSTREAM_HANDSHAKE_RECORDS
            if search.records >= limit:
                self._mid_fail(conn, d, ts, out, search.why_not())
            return False
        d.search = None
        if conn.client_random is None:
            conn.client_random = match.client_random
            conn.mid_label = APP_OF.get(match.label, match.label)
            conn.version = 0x0304
            conn.suite = match.suite
            conn.suite_code = match.suite.code
        if match.handshake:
            # A cut inside the handshake: its handshake records are skipped (this one first),
            # then the application secret of the same client random, with a fresh budget.
            d.hs_keys = match.keys
            d.hs_label = match.label
            d.hs_records = 0
            d.search = Search(self.keylog, (APP_OF[match.label],), match.client_random)
            d.search.trials = search.trials
            return True
        d.keys = match.keys
        conn.decrypted = True
        self._send_info(conn, ts, out)
        message = (
            f"{d.direction}: TLS handshake not captured; the {match.label} of client random "
            f"{match.client_random.hex()} ({match.suite.name}) found by trial decryption after "
            f"{search.trials} trials; decrypted from record sequence number {match.seq} of key "
            f"update generation {match.generation} on"
        )
        if d.hs_label:
            message += (
                f"; before it, {d.hs_records} encrypted handshake record(s) opened with the "
                f"{d.hs_label} (the capture starts inside the handshake), not decoded"
            )
        if d.skipped:
            message += f"; {d.skipped} bytes before the first record boundary not decoded"
        if match.label != LABELS[d.direction][0]:
            message += "; that label is the other side's: the TCP layer took the wrong client"
        return self._mid_decrypted(conn, d, ts, out, message)

    def _mid_decrypted(
        self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent], message: str
    ) -> bool:
        """A direction found its keys without the handshake (TLS 1.3 or 1.2): its info row,
        and the other direction's failure is said now, since this one decrypts."""
        out.append(
            diagnostic(conn.conn_id, "tls", "info", "tls_midstream_decrypted", message, ts=ts)
        )
        peer = conn.peer(d)
        if peer.mid_failed is not None:
            self._mid_report(conn, peer, ts, out)
        return True

    def _mid_server_hello(
        self, conn: _Conn, d: _Dir, body: bytes, ts: float, out: list[ChunkEvent]
    ) -> None:
        """A cleartext ServerHello (its body) without its ClientHello: if it is TLS 1.2, its
        random and suite make the key log's master secrets usable (:class:`Search12`).  One
        that is not whole in its first record is not looked at (nothing is held for it)."""
        if conn.client_random is not None or conn.server_random is not None:
            return
        try:
            sh = parse_server_hello(body)
        except Malformed:
            return
        if sh.version != 0x0303:
            return  # TLS 1.3: the traffic secrets are tried (no server random needed)
        suite = SUITES.get(sh.cipher)
        conn.version = sh.version
        conn.suite_code = sh.cipher
        if sh.alpn:
            conn.alpn = sh.alpn[0]
        if suite is None or suite.aead is None or suite.tls13:
            what = f"cipher suite {suite_name(sh.cipher)}"
            self._give_up(
                conn, ts, out, "warning", "tls_unsupported_cipher", f"{what} is not decrypted"
            )
            return
        conn.suite = suite
        conn.server_random = sh.random
        conn.mid12_server = d.direction

    def _mid12_trial(
        self,
        conn: _Conn,
        d: _Dir,
        ctype: int,
        buf: bytes,
        body: memoryview,
        ts: float,
        out: list[ChunkEvent],
        pos: int,
    ) -> bool:
        """One record of a TLS 1.2 direction whose ServerHello was seen: True when a
        ``CLIENT_RANDOM`` master secret opened it (``d.keys`` set at its sequence number)."""
        if ctype == CHANGE_CIPHER_SPEC:
            d.ccs_next = True
            return False
        after_ccs, d.ccs_next = d.ccs_next, False
        if not after_ccs and ctype != APPLICATION_DATA:
            return False  # cleartext handshake before this direction's ChangeCipherSpec
        suite, server_random = conn.suite, conn.server_random
        assert suite is not None and server_random is not None
        search = d.search12
        if search is None:
            server_side = d.direction == conn.mid12_server
            search = Search12(self.keylog, suite, server_random, server_side, conn.client_random)
            d.search12 = search
        version = (buf[pos + 1] << 8) | buf[pos + 2]
        match = search.try_record(ctype, version, body, after_ccs)
        if match is None:
            if search.records >= MIDSTREAM_TRIAL_RECORDS:
                self._mid_fail(conn, d, ts, out, search.why_not())
            return False
        d.search12 = None
        d.keys = match.keys
        d.protected = True
        if conn.client_random is None:
            conn.client_random = match.client_random
            conn.key_block = match.key_block
        conn.decrypted = True
        self._send_info(conn, ts, out)
        message = (
            f"{d.direction}: TLS 1.2 handshake captured from its ServerHello on, not its "
            f"ClientHello; the CLIENT_RANDOM master secret of client random "
            f"{match.client_random.hex()} ({suite.name}) found by trial decryption after "
            f"{search.trials} trials; decrypted from record sequence number {match.seq} "
            f"({match.seq_from}) on"
        )
        if d.skipped:
            message += f"; {d.skipped} bytes before the first record boundary not decoded"
        if conn.mid12_server == "c2s":
            message += "; the ServerHello came from the side the TCP layer took for the client"
        return self._mid_decrypted(conn, d, ts, out, message)

    def _mid_fail(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent], why: str) -> None:
        """No key opens ``d``: it is counted only; said now if the other direction decrypts,
        else once both are settled."""
        d.mid_failed = why
        d.dead = True
        d.keys = None
        d.search = None
        d.search12 = None
        self._drop(d)
        peer = conn.peer(d)
        if conn.decrypted:
            self._mid_report(conn, d, ts, out)
        elif peer.dead:
            self._mid_give_up(conn, ts, out)

    def _mid_report(self, conn: _Conn, d: _Dir, ts: float, out: list[ChunkEvent]) -> None:
        message = (
            f"{d.direction}: the capture starts after the TLS handshake; {d.mid_failed}; that "
            "direction is not decrypted"
        )
        out.append(diagnostic(conn.conn_id, "tls", "warning", "tls_midstream", message, ts=ts))
        out.append(Gap(conn.conn_id, d.direction, ts, None))

    def _mid_give_up(self, conn: _Conn, ts: float | None, out: list[ChunkEvent]) -> None:
        reasons = "; ".join(f"{d.direction}: {self._mid_why(d)}" for d in (conn.c2s, conn.s2c))
        self._give_up(
            conn,
            ts,
            out,
            "warning",
            "tls_midstream",
            f"the capture starts after the TLS handshake; encrypted bytes only counted ({reasons})",
        )

    def _mid_why(self, d: _Dir) -> str:
        if d.mid_failed is not None:
            return d.mid_failed
        if d.search is not None:  # fewer records than MIDSTREAM_TRIAL_RECORDS, none opened
            return d.search.why_not()
        if d.search12 is not None:
            return d.search12.why_not()
        return "no whole application data record captured"

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
        self, at: _Pass, ctype: int, buf: bytes, view: memoryview, pos: int, end: int
    ) -> bool:
        """Handles the record of ``buf[pos:end]``; False when it must wait (for keys, or for
        the peer's hello)."""
        conn, d, ts, plain, out = at.conn, at.d, at.ts, at.plain, at.out
        if ctype == CHANGE_CIPHER_SPEC:
            if conn.server_random is not None and not conn.tls13:
                d.protected = True  # TLS 1.2: this direction's next records use new keys
                d.keys = None
            return True  # TLS 1.3 sends it only for middleboxes
        if not (d.protected and (ctype == APPLICATION_DATA or not conn.tls13)):
            if ctype == APPLICATION_DATA:
                if d.phase == _EARLY:
                    return self._early_record(at, buf, view, pos, end)
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
            if type(keys) is Keys13:
                pt = keys.open(buf[pos : pos + 5], view[pos + 5 : end])
            else:
                assert isinstance(keys, Keys12)
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
        if type(keys) is Keys13:
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

    def _early_record(self, at: _Pass, buf: bytes, view: memoryview, pos: int, end: int) -> bool:
        """A client record after a ClientHello that offered 0-RTT.  Whether it is early data
        the server read or ignored is known only from the server's EncryptedExtensions, so it
        waits for them; ignored early data is skipped until a record opens with the handshake
        key (RFC 8446 4.2.10: what the server does too)."""
        conn, d, ts, plain, out = at.conn, at.d, at.ts, at.plain, at.out
        if conn.early_accepted is None:
            d.waiting = _WAIT_PEER
            return False
        keys = d.keys
        if keys is None:
            keys = self._load_keys(conn, d)
            if keys is None:
                d.waiting = _WAIT_KEYS
                return False
        assert isinstance(keys, Keys13)
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
            except Malformed as exc:
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
            if not conn.mid:  # a handshake, but not from its ClientHello on
                self._enter_midstream(conn)
                d.synced = True
                if mtype == SERVER_HELLO:  # from the side the TCP layer took for the client
                    d.mid_hello = True
                    self._mid_server_hello(conn, d, body, ts, out)
        elif mtype == SERVER_HELLO and d.direction == "s2c":
            self._server_hello(conn, parse_server_hello(body), ts, out)
        elif not conn.tls13:
            return
        elif mtype == FINISHED and d.phase == _HANDSHAKE:
            d.phase = _APP  # RFC 8446 7.1: application traffic secrets from here on
            d.keys = None
        elif mtype == KEY_UPDATE and d.phase == _APP and type(d.keys) is Keys13:
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

    def _server_hello(self, conn: _Conn, sh: Hello, ts: float, out: list[ChunkEvent]) -> None:
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

    def _load_keys(self, conn: _Conn, d: _Dir) -> Keys13 | Keys12 | None:
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
            d.keys = Keys13(suite, secret)
            return d.keys
        if conn.key_block is None:
            master = self.keylog.get("CLIENT_RANDOM", cr)
            if master is None or conn.server_random is None:
                conn.missing.add("CLIENT_RANDOM")
                return None
            conn.key_block = tls12_key_block(suite, master, conn.server_random, cr)
        ckey, skey, civ, siv = conn.key_block
        if d.direction == "c2s":
            d.keys = Keys12(suite, ckey, civ)
        else:
            d.keys = Keys12(suite, skey, siv)
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
        if d.mid and d.keys is None:
            # Before a key is found nothing depends on what was lost: look for the next
            # record boundary after the gap (what was held is counted, not decoded).
            self._drop(d)
            d.synced = False
            d.need = 5
            d.hs_keys = None  # its sequence number is lost with the bytes
            d.ccs_next = False
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
        if conn.state == _UNDECIDED and not self._decide(conn, out, final=True):
            out.extend(conn.held)
            conn.held = []
            return
        if conn.state != _TLS:
            return
        if conn.mid:
            for d in (conn.c2s, conn.s2c):
                if (
                    not d.dead
                    and not d.synced
                    and d.have
                    and conn.state == _TLS
                    and self._sync(conn, d, ts or self._last_ts, out, final=True)
                ):
                    self._records(conn, d, ts or self._last_ts, out)
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
        if conn.mid and not conn.decrypted:
            self._mid_give_up(conn, ts, out)
        elif conn.server_random is None and not conn.mid:
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
