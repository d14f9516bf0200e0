"""``ConnectionDecoder``: the one entry point of the sans-IO core.

It learns what a connection speaks from its first bytes — never from its port — and routes every
chunk to the HTTP/2 or HTTP/1.1 decoder, switching from HTTP/1.1 to HTTP/2 on ``Upgrade: h2c``.
RFC sections: the client connection preface (RFC 9113 §3.4), ALPN ``h2`` / ``http/1.1`` (RFC
9113 §3.2), the ``Upgrade: h2c`` switch (RFC 7540 §3.2).
When the connection ends it emits its ``connections`` row.
"""

from __future__ import annotations

import re

from communityid import CommunityID, FlowTuple

from h2ws.analysis.core.chunks import ConnectionInfo, TlsInfo
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.h2 import PREFACE, H2Decoder
from h2ws.analysis.core.h2 import resync as h2_resync
from h2ws.analysis.core.h2.resync import Chain, ChainSearch, role_evidence
from h2ws.analysis.core.http1 import Http1Decoder
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.core.websocket import WebSocketStream
from h2ws.analysis.core.websocket import resync as ws_resync
from h2ws.analysis.records import (
    DIRECTIONS,
    ConnectionRecord,
    Direction,
    Record,
    StreamRecord,
)

#: An HTTP/1.x request line starts with a method token and a space (RFC 9112 §3).
_HTTP1_REQUEST = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32} ")
#: ... and a whole request line, when the connection's start was not captured: there the first
#: bytes may be anything (the rest of a WebSocket frame), and a token and a space are no proof.
_HTTP1_REQUEST_LINE = re.compile(
    rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32} [\x21-\x7e]{1,8192} HTTP/1\.[01]\r\n"
)
_TLS_RECORD = re.compile(rb"^[\x14-\x17]\x03[\x00-\x04]")
#: How many bytes we wait for before deciding that a connection speaks nothing we know: 96 KiB,
#: so that HTTP/2 caught in its middle while a peer sends full 16 KiB frames (an upload, a
#: large WebSocket message) is recognised -- its first whole frame starts up to
#: ``SEARCH_WINDOW`` bytes in, and ``MIN_FRAMES`` full frames follow (about 80 KiB).
_SNIFF_LIMIT = 96 * 1024
assert _SNIFF_LIMIT > h2_resync.SEARCH_WINDOW + h2_resync.MIN_FRAMES * (
    h2_resync.MAX_FRAME_SIZE + h2_resync.FRAME_HEADER_LEN
)

_COMMUNITY_ID = CommunityID()


#: Sources whose connections are two TCP connections joined by a proxy (mitmproxy).
PROXIED_SOURCES = frozenset({"live", "flowfile"})


def community_id(info: ConnectionInfo) -> str | None:
    """Community ID v1 (seed 0) of a TCP connection, so rows join with Zeek, Suricata, etc.

    A Community ID names one TCP connection by its 5-tuple.  A proxied connection is two: the
    client leg (client <-> proxy) and the upstream leg (proxy <-> server); hashing the client
    with the upstream server would name neither.  Its ID is the client leg's, the connection
    the row's ``conn_id``, ``tls`` and byte counts describe (``tls`` is the client's TLS, and
    an upstream leg may be shared or re-opened).  None when an address of that leg is unknown.
    """
    if info.source in PROXIED_SOURCES:
        peer_addr, peer_port = info.proxy_addr, info.proxy_port
    else:
        peer_addr, peer_port = info.server_addr, info.server_port
    if not (info.client_addr and peer_addr and info.client_port and peer_port):
        return None
    try:
        tpl = FlowTuple.make_tcp(info.client_addr, peer_addr, info.client_port, peer_port)
        return str(_COMMUNITY_ID.calc(tpl))
    except Exception:
        return None


def connection_record(info: ConnectionInfo, *, tls: bool = False) -> ConnectionRecord:
    """The ``connections`` row as far as the endpoints tell; decoders fill in the rest."""
    return ConnectionRecord(
        conn_id=info.conn_id,
        community_id=community_id(info),
        source=info.source,
        capture=info.capture,
        client_addr=info.client_addr,
        client_port=info.client_port,
        server_addr=info.server_addr,
        server_port=info.server_port,
        tls=tls,
        leg=info.leg,
    )


class ConnectionDecoder:
    """Both byte streams of one connection in, records out.  No I/O, no clock."""

    def __init__(
        self, info: ConnectionInfo, options: DecodeOptions | None = None, *, tls: bool = False
    ) -> None:
        self.info = info
        self.options = options or DecodeOptions()
        self.record = connection_record(info, tls=tls)
        self.record.start_captured = not info.midstream
        #: the TCP layer's client guess was wrong (told by the HTTP/2 frames): labels swapped
        self._swapped = False
        self._chains = {"c2s": ChainSearch(), "s2c": ChainSearch()}
        self._not_h2 = False  # mid-connection: the frames do not chain as HTTP/2
        self._ws_tried_at = 0  # held bytes when raw WebSocket framing was last tried
        self._ws_scan_budget = ws_resync.ScanBudget()
        #: a raw RFC 6455 connection recognised mid-connection (HTTP/1.1 after its Upgrade)
        self._raw_ws: WebSocketStream | None = None
        self._h2: H2Decoder | None = None
        self._http1: Http1Decoder | None = None
        self._sniff: dict[str, bytearray] = {"c2s": bytearray(), "s2c": bytearray()}
        #: Chunks held while sniffing, in arrival order: replayed once the protocol is known.
        self._held: list[tuple[Direction, bytes, float]] = []
        self._protocol: str | None = None  # h2 | http1 | tls | unknown
        #: exchanges, websockets, error of the HTTP/1.1 part (kept across an h2c upgrade)
        self._http1_counts: tuple[int, int, str | None] = (0, 0, None)
        self._closed = False
        #: True once a TLS layer reports wire bytes itself (``feed`` then gets plaintext).
        self._wire_counted = False
        self._out: list[Record] = []

    @property
    def protocol(self) -> str | None:
        return self._protocol

    def open_streams(self) -> list[StreamRecord]:
        """The rows of the HTTP/2 streams still open on this connection (none before HTTP/2
        is recognised, nor on HTTP/1.1), updated in place as decoding goes on; see
        :meth:`H2Decoder.open_streams`.  A live view, such as the addon's mirrored WebSocket
        flows, needs a stream before its row is emitted at the stream's end.
        """
        return self._h2.open_streams() if self._h2 is not None else []

    def set_tls(self, info: TlsInfo) -> list[Record]:
        """A TLS layer below us took the handshake: from now on ``feed`` gets plaintext."""
        rec = self.record
        rec.tls = True
        rec.tls_version = info.version
        rec.tls_cipher = info.cipher
        rec.sni = info.sni
        rec.alpn = info.alpn
        self._wire_counted = True
        if rec.ts_start is None:
            rec.ts_start = info.ts
        if info.alpn == "h2":
            rec.http_version = "h2"
        elif info.alpn == "http/1.1":
            rec.http_version = "http/1.1"
        if not info.decrypted:
            self._protocol = "tls"
            self._forget_sniffed()
        elif info.alpn == "h2" and self._protocol is None:
            # ALPN settles it: no need to wait for the client preface (the server's SETTINGS
            # may come first, and a spare browser connection may never send anything).
            self._start_h2()
        return self._take()

    def count_wire(self, direction: Direction, length: int, ts: float) -> None:
        if self._swapped:
            direction = _OTHER[direction]
        rec = self.record
        if rec.ts_start is None:
            rec.ts_start = ts
        rec.ts_end = ts
        if direction == "c2s":
            rec.bytes_c2s += length
        else:
            rec.bytes_s2c += length

    def feed(self, direction: Direction, data: bytes, ts: float) -> list[Record]:
        if not self._wire_counted:
            self.count_wire(direction, len(data), ts)
        if self._swapped:
            direction = _OTHER[direction]
        if self._protocol is None:
            self._sniff[direction] += data
            self._held.append((direction, data, ts))
            self._try_sniff(ts)
            return self._take()
        self._route(direction, data, ts)
        return self._take()

    def gap(self, direction: Direction, ts: float, length: int | None) -> list[Record]:
        if self._swapped:
            direction = _OTHER[direction]
        rec = self.record
        rec.error = rec.error or f"bytes missing from the {direction} stream"
        if self._protocol is None:
            self._protocol = "unknown"
            self._out.append(
                diagnostic(
                    self.info.conn_id,
                    "tcp",
                    "error",
                    "gap_before_sniff",
                    "bytes were lost before the protocol could be recognised",
                    ts=ts,
                )
            )
        elif self._h2 is not None:
            self._out.extend(self._h2.gap(direction, ts, length))
        elif self._http1 is not None:
            self._out.extend(self._http1.gap(direction, ts, length))
        return self._take()

    def close(self, ts: float | None, cause: str) -> list[Record]:
        if self._closed:
            return []
        self._closed = True
        rec = self.record
        if ts is not None:
            rec.ts_end = max(rec.ts_end or ts, ts)
        if self._protocol is None and self.info.midstream:
            self._try_midstream(ts, final=True)
        if self._protocol is None and (self._sniff["c2s"] or self._sniff["s2c"]):
            self._decide_unknown(ts)
        if self._raw_ws is not None:
            row = self._raw_ws.record
            _, cut = self._raw_ws.finish(ts, self._out)
            row.stream_end = "incomplete" if cause == "capture_ended" else "connection_closed"
            row.close_cause = "incomplete" if cut else row.close_cause or row.stream_end
            row.ts_close = ts
            rec.streams += 1
            rec.websockets += 1
            self._out.append(row)
        if self._http1 is not None:
            self._out.extend(self._http1.close(ts, cause))
        if self._h2 is not None:
            self._out.extend(self._h2.close(ts, cause))
        self._fill_connection_record(cause)
        self._out.append(rec)
        return self._take()

    # ------------------------------------------------------------------ sniffing

    def _try_sniff(self, ts: float) -> None:
        c2s = bytes(self._sniff["c2s"])
        if self.info.midstream and not (
            c2s
            and (
                c2s.startswith(PREFACE[: len(c2s)])
                or _HTTP1_REQUEST_LINE.match(c2s)
                or _TLS_RECORD.match(c2s)
            )
        ):
            self._try_midstream(ts, final=False)
            return
        if c2s:
            n = min(len(c2s), len(PREFACE))
            if c2s[:n] == PREFACE[:n]:
                if n == len(PREFACE):
                    self._start_h2()
                return
            if _TLS_RECORD.match(c2s):
                self._protocol = "tls"
                self.record.tls = True
                self._out.append(
                    diagnostic(
                        self.info.conn_id,
                        "tls",
                        "warning",
                        "tls_no_keys",
                        "encrypted connection and no TLS keys for it; only counted",
                        ts=ts,
                    )
                )
                self._forget_sniffed()
                return
            if _HTTP1_REQUEST.match(c2s):
                self._start_http1()
                return
            if len(c2s) >= 33 or not _could_be_http1(c2s):
                self._decide_unknown(ts)
                return
        elif len(self._sniff["s2c"]) > _SNIFF_LIMIT:
            self._decide_unknown(ts)

    def _try_midstream(self, ts: float | None, *, final: bool) -> None:
        """The start was not captured: HTTP/2 from its frame structure (:mod:`.h2.resync`).

        HTTP/2 when no direction with bytes fails to chain, at least one chains, and the two
        hold :data:`~.h2.resync.MIN_FRAMES` frames together; unknown when a direction cannot
        chain or the sniff limit is reached; otherwise wait for more bytes.
        """
        over = max(len(b) for b in self._sniff.values()) > _SNIFF_LIMIT
        found: dict[str, Chain] = {}
        for d in ("c2s", "s2c"):
            buf = self._sniff[d]
            if not buf or self._not_h2:
                continue
            result = self._chains[d].search(buf, final=final or over)
            if result is False:
                self._not_h2 = True
            elif result is None:
                return
            else:
                assert isinstance(result, Chain)
                found[d] = result
        if not self._not_h2:
            if found and not (final and sum(c.complete for c in found.values()) < 2):
                self._start_midstream_h2(found, ts)
            return
        held = sum(len(b) for b in self._sniff.values())
        if final or over or held - self._ws_tried_at >= _WS_RETRY:
            self._ws_tried_at = held
            if self._try_raw_ws(ts, final=final or over):
                return
        if final or over:
            self._decide_unknown(ts)

    def _try_raw_ws(self, ts: float | None, *, final: bool = False) -> bool:
        """A raw RFC 6455 frame stream both ways (:mod:`.websocket.resync`, carrier ``tcp``):
        an HTTP/1.1 WebSocket caught after its Upgrade.  The masked side is the client."""
        for swap in (False, True):
            client, server = ("s2c", "c2s") if swap else ("c2s", "s2c")
            cbuf, sbuf = self._sniff[client], self._sniff[server]
            budget = self._ws_scan_budget
            if budget.spent:
                return False
            chains = {
                "c2s": ws_resync.find_ws_chain(cbuf, True, self._starts(client), budget)
                if cbuf
                else None,
                "s2c": ws_resync.find_ws_chain(sbuf, False, self._starts(server), budget)
                if sbuf
                else None,
            }
            if budget.spent:
                self._out_budget_spent(ts)
                return False
            if not ws_resync.judge(
                chains["c2s"], chains["s2c"], bool(cbuf), bool(sbuf), carrier="tcp", final=final
            ):
                continue
            if swap:
                self._swap()
            self._start_raw_ws(chains, ts)
            return True
        return False

    def _starts(self, direction: str) -> list[int]:
        """Where each held chunk of ``direction`` starts in its sniff buffer: a sender writes
        a message at a time, so these are the likely frame boundaries beyond the search
        window (a frame longer than the window cut by the capture)."""
        out, pos = [], 0
        for d, data, _ in self._held:
            if d == direction:
                out.append(pos)
                pos += len(data)
        return out

    def _start_raw_ws(self, chains: dict[str, ws_resync.WsChain | None], ts: float | None) -> None:
        rec = self.record
        self._protocol = "websocket"
        rec.http_version = "http/1.1"
        row = StreamRecord(
            conn_id=self.info.conn_id,
            exchange=0,
            kind="websocket",
            ts_open=ts,
            inferred=True,
            request_headers=None,
        )
        self._raw_ws = WebSocketStream(row, self.options, inferred=True)
        self._out.append(
            diagnostic(
                self.info.conn_id,
                "ws",
                "warning",
                "ws_midstream",
                f"WebSocket recognised from its frames (handshake not captured); client"
                f" {rec.client_addr}:{rec.client_port} (its frames are masked)",
                ts=ts,
            )
        )
        held = self._held
        self._forget_sniffed()
        for d in DIRECTIONS:
            chain = chains[d]
            mine = [(data, t) for direction, data, t in held if direction == d]
            if chain is None:
                continue
            if chain.lost_lead:
                self._out.append(
                    diagnostic(
                        self.info.conn_id,
                        "ws",
                        "warning",
                        "ws_midstream_message",
                        f"{d}: a message begun before the capture is not decoded; messages"
                        f" decoded from its first WebSocket frame boundary (byte {chain.start})",
                        ts=ts,
                    )
                )
            for piece, piece_ts in ws_resync.pieces(mine, chain.ranges()):
                self._route(d, piece, piece_ts)

    def _start_midstream_h2(self, found: dict[str, Chain], ts: float | None) -> None:
        """Decide who is the client from the frames, swap if TCP guessed wrong, start."""
        votes = {"c2s": 0, "s2c": 0}  # for "this label is the client's side"
        reasons: list[str] = []
        for d, chain in found.items():
            client, server, why = role_evidence(self._sniff[d], chain.frames)
            votes[d] += client
            votes[_OTHER[d]] += server
            reasons += why
        rec = self.record
        if votes["s2c"] > votes["c2s"]:
            how = "swapped the TCP layer's guess"
            self._swap()
            found = {_OTHER[d]: c for d, c in found.items()}
        elif votes["c2s"] > votes["s2c"]:
            how = "confirmed the TCP layer's guess"
        else:
            how = "no evidence in the frames: the TCP layer's guess (ports) kept"
        shown = ", ".join(sorted(set(reasons))) or "nothing"
        starts = ", ".join(f"{d} from byte {c.start}" for d, c in sorted(found.items()))
        self._out.append(
            diagnostic(
                self.info.conn_id,
                "h2",
                "warning",
                "h2_midstream",
                f"HTTP/2 recognised without its preface ({starts}); client"
                f" {rec.client_addr}:{rec.client_port}, {how} (evidence: {shown})",
                ts=ts,
            )
        )
        self._protocol = "h2"
        rec.http_version = "h2" if rec.tls else "h2c"
        self._h2 = H2Decoder(self.info.conn_id, self.options, expect_preface=False, midstream=True)
        skip = {d: c.start for d, c in found.items()}
        held = self._held
        self._forget_sniffed()
        for direction, data, chunk_ts in held:
            left = skip.get(direction, 0)
            if left:
                cut = min(left, len(data))
                skip[direction] = left - cut
                data = data[cut:]
            if data:
                self._route(direction, data, chunk_ts)

    def _swap(self) -> None:
        """The other side is the client: swap the row's ends, its counts and the held bytes."""
        self._swapped = True
        rec = self.record
        rec.client_addr, rec.server_addr = rec.server_addr, rec.client_addr
        rec.client_port, rec.server_port = rec.server_port, rec.client_port
        rec.bytes_c2s, rec.bytes_s2c = rec.bytes_s2c, rec.bytes_c2s
        self._sniff = {"c2s": self._sniff["s2c"], "s2c": self._sniff["c2s"]}
        self._held = [(_OTHER[d], data, ts) for d, data, ts in self._held]

    def _out_budget_spent(self, ts: float | None) -> None:
        self._out.append(
            diagnostic(
                self.info.conn_id,
                "ws",
                "warning",
                "ws_resync_budget",
                f"the WebSocket boundary search read {ws_resync.SCAN_BUDGET} frame headers on"
                " this connection without telling whether it is a WebSocket: not tried again",
                ts=ts,
            )
        )

    def _decide_unknown(self, ts: float | None) -> None:
        self._protocol = "unknown"
        head = bytes(self._sniff["c2s"][:16] or self._sniff["s2c"][:16])
        self._out.append(
            diagnostic(
                self.info.conn_id,
                "tcp",
                "info",
                "unknown_protocol",
                f"not HTTP/1.x, HTTP/2 or TLS (first bytes {head.hex()}); only counted",
                ts=ts,
            )
        )
        self._forget_sniffed()

    def _forget_sniffed(self) -> None:
        self._sniff = {"c2s": bytearray(), "s2c": bytearray()}
        self._held = []

    def _replay_sniffed(self) -> None:
        held = self._held
        self._forget_sniffed()
        for direction, data, ts in held:
            self._route(direction, data, ts)

    def _start_h2(self) -> None:
        self._protocol = "h2"
        self.record.http_version = "h2" if self.record.tls else "h2c"
        self._h2 = H2Decoder(self.info.conn_id, self.options)
        self._replay_sniffed()

    def _start_http1(self) -> None:
        self._protocol = "http1"
        self.record.http_version = "http/1.1"
        self._http1 = Http1Decoder(self.info.conn_id, self.options)
        self._replay_sniffed()

    # ------------------------------------------------------------------ routing

    def _route(self, direction: Direction, data: bytes, ts: float) -> None:
        if self._raw_ws is not None:
            row = self._raw_ws.record
            if direction == "c2s":
                row.bytes_c2s += len(data)
            else:
                row.bytes_s2c += len(data)
            self._raw_ws.feed(direction, data, ts, self._out)
        elif self._h2 is not None:
            self._out.extend(self._h2.feed(direction, data, ts))
        elif self._http1 is not None:
            self._out.extend(self._http1.feed(direction, data, ts))
            upgrade = self._http1.upgrade
            if upgrade is not None and upgrade.protocol == "h2c":
                self._switch_to_h2c(ts)

    def _switch_to_h2c(self, ts: float) -> None:
        """RFC 7540 §3.2: after the 101 both sides speak HTTP/2; the request is stream 1."""
        assert self._http1 is not None and self._http1.upgrade is not None
        http1 = self._http1
        upgrade = http1.upgrade
        assert upgrade is not None
        self._out.extend(http1.close(ts, "switched_protocols"))
        self._http1_counts = (http1.exchanges - 1, http1.websocket_count, http1.error)
        self._http1 = None
        self.record.http_version = "h2c"
        self.record.h2c_upgrade = True
        self._h2 = H2Decoder(self.info.conn_id, self.options)
        host = next((v for n, v in upgrade.request_headers if n == "host"), None)
        request = [(":method", upgrade.method), (":scheme", "http"), (":path", upgrade.target)]
        if host is not None:
            request.append((":authority", host))
        request += [(n, v) for n, v in upgrade.request_headers if n not in _HOP_BY_HOP]
        self._out.extend(self._h2.start_after_upgrade(request, upgrade.ts))
        if upgrade.s2c:
            self._out.extend(self._h2.feed("s2c", upgrade.s2c, ts))
        if upgrade.c2s:
            self._out.extend(self._h2.feed("c2s", upgrade.c2s, ts))

    # ------------------------------------------------------------------ output

    def _fill_connection_record(self, cause: str) -> None:
        rec = self.record
        rec.end_cause = cause
        if self._http1 is not None:
            self._http1_counts = (
                self._http1.exchanges,
                self._http1.websocket_count,
                self._http1.error,
            )
        exchanges, websockets, error = self._http1_counts
        rec.streams += exchanges
        rec.websockets += websockets
        rec.error = rec.error or error
        h2 = self._h2
        if h2 is not None:
            rec.streams += h2.stream_count
            rec.websockets += h2.websocket_count
            rec.enable_connect_protocol = bool(h2.enable_connect_protocol)
            if h2.midstream and h2.enable_connect_protocol is None:
                rec.enable_connect_protocol = None  # its SETTINGS may be before the capture
            rec.ts_enable_connect_protocol = h2.ts_enable_connect_protocol
            rec.settings_c2s = h2.settings_json("c2s")
            rec.settings_s2c = h2.settings_json("s2c")
            rec.goaway_code = h2.goaway_code
            rec.goaway_last_stream_id = h2.goaway_last_stream_id
            rec.error = rec.error or h2.error

    def _take(self) -> list[Record]:
        out, self._out = self._out, []
        return out


_OTHER: dict[str, Direction] = {"c2s": "s2c", "s2c": "c2s"}
#: Held bytes between two tries of raw WebSocket framing (each try scans a window).
_WS_RETRY = 4096


def _could_be_http1(data: bytes) -> bool:
    """A prefix that may still grow into a request line (method token not yet complete)."""
    return bool(re.match(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$", data))


#: HTTP/1.1 connection-specific headers that have no place in an HTTP/2 request (RFC 9113 §8.2.2).
_HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "http2-settings",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
    }
)
