"""Record types of every table, their factories, the payload policy, and their Arrow schemas.

This module is the single source of truth for column names and types: the decoder core creates
these records (dataclasses, and named tuples for the two tables with a row per frame and per
message), the exporters turn them into Arrow batches with :func:`arrow_schema`, and
``docs/schema.md`` documents every column.  The core must not import pyarrow, so pyarrow is only
imported inside :func:`arrow_schema`.

The tuple records are made in the hot paths from a tuple of all their fields by their factories
(:data:`make_frame`, :data:`make_message`: NamedTuple's ``_make``, a third of the cost of the
keyword constructor); :class:`PayloadPolicy` is the one place that says what of a message's
payload the ``messages`` table keeps (the decoder, the flow-file reader, the live writer and the
exporter all apply it through its methods).

Timestamps are POSIX seconds (float) in the records and ``timestamp[us, tz=UTC]`` in the tables.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    import pyarrow as pa

Direction = Literal["c2s", "s2c"]
DIRECTIONS: tuple[Direction, Direction] = ("c2s", "s2c")

PayloadMode = Literal["none", "preview", "full"]


@dataclass(frozen=True, slots=True)
class PayloadPolicy:
    """How much of each payload lands in the table; the privacy default is a short preview.

    The rule, in one place: ``full`` keeps the whole payload, ``none`` keeps none (the column is
    null), ``preview`` keeps the first ``preview_bytes``; ``payload_truncated`` says that the
    message was longer than what was kept.  :attr:`keep` is the rule as a number for code that
    collects a payload chunk by chunk (the WebSocket decoder); :meth:`cut` applies it to a whole
    payload, :meth:`trim` and :meth:`trim_columns` to rows that may hold more than the policy
    keeps (the live decoder keeps whole payloads for the mirrored flows).
    """

    mode: PayloadMode = "preview"
    preview_bytes: int = 256

    def __post_init__(self) -> None:
        if self.mode not in ("none", "preview", "full"):
            raise ValueError(f"payload mode must be none, preview or full, not {self.mode!r}")
        if self.preview_bytes < 0:
            raise ValueError("preview_bytes must not be negative")

    @property
    def keep(self) -> int | None:
        """Payload bytes kept per message: None no payload column, -1 all, n a preview."""
        if self.mode == "none":
            return None
        if self.mode == "full":
            return -1
        return self.preview_bytes

    def cut(self, payload: bytes, length: int) -> tuple[bytes | None, bool]:
        """(payload, payload_truncated) of a message of ``length`` bytes whose whole payload is
        ``payload``."""
        keep = self.keep
        if keep is None:
            return None, length > 0
        if keep < 0 or length <= keep:
            return payload, False
        return payload[:keep], True

    def trim(
        self, payload: bytes | None, length: int, truncated: bool
    ) -> tuple[bytes | None, bool]:
        """(payload, payload_truncated) of a row that may keep more than this policy does.

        A payload longer than the preview is cut and marked truncated if the message was
        longer; ``none`` drops the payload (truncated if the message had any byte, as
        :meth:`cut` says); a row without payload stays as it is.
        """
        if self.mode == "full" or payload is None:
            return payload, truncated
        if self.mode == "none":
            return None, length > 0
        n = self.preview_bytes
        if len(payload) > n:
            return payload[:n], length > n
        return payload, truncated

    def trim_columns(
        self, payloads: list[bytes | None], lengths: list[int], truncated: list[bool]
    ) -> tuple[list[bytes | None], list[bool]]:
        """:meth:`trim` on every row of the payload, length and payload_truncated columns (the
        tests hold both equal); a column at a time, so only the preview of each payload is read
        and copied."""
        if self.mode == "full":
            return payloads, truncated
        if self.mode == "none":
            kept: list[bytes | None] = [None] * len(payloads)
            return kept, [
                length > 0 if p is not None else t
                for p, length, t in zip(payloads, lengths, truncated, strict=True)
            ]
        n = self.preview_bytes
        kept = [p[:n] if p is not None and len(p) > n else p for p in payloads]
        return kept, [
            length > n if p is not None and len(p) > n else t
            for p, length, t in zip(payloads, lengths, truncated, strict=True)
        ]


# Column kinds used in field metadata; arrow_schema() maps them to Arrow types.
_STR = "string"
_I64 = "int64"
_BOOL = "bool"
_TS = "timestamp"
_BIN = "binary"


def _col(kind: str, default: Any = None) -> Any:
    return field(default=default, metadata={"kind": kind})


@dataclass(slots=True)
class ConnectionRecord:
    """One TCP connection (or one mitmproxy connection), written when it ends."""

    conn_id: str = _col(_STR, "")
    community_id: str | None = _col(_STR)
    source: str = _col(_STR, "pcap")  # pcap | flowfile | live
    capture: str | None = _col(_STR)
    client_addr: str | None = _col(_STR)
    client_port: int | None = _col(_I64)
    server_addr: str | None = _col(_STR)
    server_port: int | None = _col(_I64)
    tls: bool = _col(_BOOL, False)
    tls_version: str | None = _col(_STR)
    tls_cipher: str | None = _col(_STR)
    sni: str | None = _col(_STR)
    alpn: str | None = _col(_STR)
    http_version: str = _col(_STR, "unknown")  # h2 | h2c | http/1.1 | unknown
    h2c_upgrade: bool = _col(_BOOL, False)
    ts_start: float | None = _col(_TS)
    ts_end: float | None = _col(_TS)
    bytes_c2s: int = _col(_I64, 0)
    bytes_s2c: int = _col(_I64, 0)
    streams: int = _col(_I64, 0)
    websockets: int = _col(_I64, 0)
    enable_connect_protocol: bool | None = _col(_BOOL)
    ts_enable_connect_protocol: float | None = _col(_TS)
    settings_c2s: str | None = _col(_STR)
    settings_s2c: str | None = _col(_STR)
    goaway_code: str | None = _col(_STR)
    goaway_last_stream_id: int | None = _col(_I64)
    end_cause: str | None = _col(_STR)  # fin | rst | capture_ended | goaway | error
    error: str | None = _col(_STR)
    leg: str | None = _col(_STR)  # client | server (live, intercept mode); null otherwise
    #: False when the capture missed the connection's start (recognised mid-connection)
    start_captured: bool = _col(_BOOL, True)


@dataclass(slots=True)
class StreamRecord:
    """One HTTP/2 stream, or one HTTP/1.1 request/response exchange (``stream_id`` null)."""

    conn_id: str = _col(_STR, "")
    stream_id: int | None = _col(_I64)
    exchange: int | None = _col(_I64)
    kind: str = _col(_STR, "http")  # websocket | http | connect | push
    method: str | None = _col(_STR)
    protocol: str | None = _col(_STR)
    scheme: str | None = _col(_STR)
    authority: str | None = _col(_STR)
    path: str | None = _col(_STR)
    status: int | None = _col(_I64)
    ws_accepted: bool | None = _col(_BOOL)
    ws_extensions: str | None = _col(_STR)
    ws_subprotocol: str | None = _col(_STR)
    request_headers: str | None = _col(_STR)
    response_headers: str | None = _col(_STR)
    ts_open: float | None = _col(_TS)
    ts_response: float | None = _col(_TS)
    ts_close: float | None = _col(_TS)
    close_cause: str | None = _col(_STR)
    stream_end: str | None = _col(_STR)
    ws_close_by: str | None = _col(_STR)
    bytes_c2s: int = _col(_I64, 0)
    bytes_s2c: int = _col(_I64, 0)
    messages_c2s: int = _col(_I64, 0)
    messages_s2c: int = _col(_I64, 0)
    error: str | None = _col(_STR)
    #: True when ``kind`` was inferred from the stream's bytes (its request was not captured)
    inferred: bool = _col(_BOOL, False)


class FrameRecord(NamedTuple):
    """One HTTP/2 frame: the multiplexing timeline.

    A tuple, not a dataclass like the other records: there is one per frame, the most numerous
    row, and a tuple is built in a fifth of the time and exported without a lookup per column
    (``export`` transposes the rows at C speed).  It is never changed once made.
    """

    conn_id: str = ""
    index: int = 0  # type: ignore[assignment]  # the column's name; hides tuple.index, unused
    ts: float | None = None
    direction: str = "c2s"
    type: str = ""
    flags: str = ""
    stream_id: int = 0
    length: int = 0
    data_length: int | None = None
    window_increment: int | None = None
    error_code: str | None = None


#: a FrameRecord from a tuple of all its fields, in order (the hot path's constructor)
make_frame = FrameRecord._make

#: column kinds of FrameRecord, in field order
_FRAME_KINDS = (_STR, _I64, _TS, _STR, _STR, _STR, _I64, _I64, _I64, _I64, _STR)


class MessageRecord(NamedTuple):
    """One WebSocket message (data or control), reassembled, unmasked and inflated.

    A tuple, as the frames: one per message, built in the decoder's hot path, and taken apart
    by the exporters without a lookup per column.  Never changed once made: the live writer
    trims payloads to the table's policy in its own copy of the rows, so the mirrored flows
    keep whole messages.
    """

    conn_id: str = ""
    stream_id: int | None = None
    exchange: int | None = None
    direction: str = "c2s"
    index: int = 0  # type: ignore[assignment]  # as FrameRecord.index
    ts_first: float | None = None
    ts_last: float | None = None
    opcode: str = "text"  # text | binary | close | ping | pong
    fragments: int = 1
    wire_length: int = 0
    length: int = 0
    compressed: bool = False
    payload: bytes | None = None
    payload_truncated: bool = False
    sha256: str = ""
    close_code: int | None = None
    close_reason: str | None = None


#: a MessageRecord from a tuple of all its fields, in order (the hot path's constructor)
make_message = MessageRecord._make

#: column kinds of MessageRecord, in field order
_MESSAGE_KINDS = (
    _STR, _I64, _I64, _STR, _I64, _TS, _TS, _STR, _I64, _I64, _I64, _BOOL, _BIN, _BOOL, _STR,
    _I64, _STR,
)  # fmt: skip


@dataclass(slots=True)
class DiagnosticRecord:
    """Something that could not be decoded, or that deserves a note; codes are stable."""

    conn_id: str | None = _col(_STR)
    stream_id: int | None = _col(_I64)
    ts: float | None = _col(_TS)
    layer: str = _col(_STR, "tcp")  # capture | tcp | tls | h2 | http1 | ws | rfc8441
    severity: str = _col(_STR, "error")  # info | warning | error
    code: str = _col(_STR, "")
    message: str = _col(_STR, "")


Record = ConnectionRecord | StreamRecord | FrameRecord | MessageRecord | DiagnosticRecord

#: Table name -> record type, in the order the tables are documented.
TABLES: dict[str, type[Any]] = {
    "connections": ConnectionRecord,
    "streams": StreamRecord,
    "frames": FrameRecord,
    "messages": MessageRecord,
    "diagnostics": DiagnosticRecord,
}
#: column kinds of the tuple records (the dataclasses carry theirs in field metadata)
_TUPLE_KINDS: dict[type[Any], tuple[str, ...]] = {
    FrameRecord: _FRAME_KINDS,
    MessageRecord: _MESSAGE_KINDS,
}


def columns(table: str) -> list[tuple[str, str]]:
    """(name, kind) of every column of ``table``, in order."""
    cls = TABLES[table]
    if cls in _TUPLE_KINDS:
        return list(zip(cls._fields, _TUPLE_KINDS[cls], strict=True))
    return [(f.name, f.metadata["kind"]) for f in dataclasses.fields(cls)]


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of ``table`` (imports pyarrow, so never called by the core)."""
    import pyarrow as pa

    types: dict[str, pa.DataType] = {
        _STR: pa.string(),
        _I64: pa.int64(),
        _BOOL: pa.bool_(),
        _TS: pa.timestamp("us", tz="UTC"),
        _BIN: pa.binary(),
    }
    return pa.schema([pa.field(name, types[kind]) for name, kind in columns(table)])
