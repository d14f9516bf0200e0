"""The ``h2ws_max_*`` header limits on mitmproxy's own HTTP/2 connections (all of them in
intercept mode; in observe mode those mitmproxy still terminates itself).

Why: in intercept mode mitmproxy terminates HTTP/2 on both legs with hyper-h2, which decodes
HPACK with ``hpack.Decoder``.  That decoder copies the rest of the block for every literal
field, so its cost is quadratic: one 8 MiB HEADERS+CONTINUATION block (the largest h2 4.x
gathers: 64 CONTINUATIONs of mitmproxy's 128 KiB frames) costs ~1.9 s of CPU in the proxy's one
event loop -- every other client waits -- before h2's 64 KiB header list limit stops it.

:func:`bound` changes one ``h2.connection.H2Connection`` before its first byte:

- gathering a block (:class:`BoundedFrameBuffer`): h2's ``FrameBuffer`` with the block size
  (``h2ws_max_header_block_bytes``) and CONTINUATION count (``h2ws_max_continuations``, in
  place of h2's fixed 64) checked per frame, so a block that never ends costs at most the
  limit;
- decoding a block (:class:`BoundedDecoder`): ``hpack.Decoder``'s interface as h2 uses it, over
  the core's linear decoder :mod:`h2ws.analysis.core.h2.hpack_fast` (the same one that decodes
  the tables), with the header list limit (``h2ws_max_header_list_bytes``, also advertised as
  SETTINGS_MAX_HEADER_LIST_SIZE, h2's default being 64 KiB) and the table size limit: what this
  side advertised in SETTINGS_HEADER_TABLE_SIZE (h2 keeps 4096), capped by
  ``h2ws_max_hpack_table_bytes`` (RFC 7541 §4.2: a size update above it is a decoding error).

The limits are the same numbers as the core's, so the tables decoded from the same bytes show
the same block as a diagnostic row (``h2_header_block_too_large``, ``h2_too_many_continuations``,
``h2_header_list_too_large``, ``h2_hpack_table_size``).

Over a limit the connection ends with GOAWAY and one log line (mitmproxy's "HTTP/2 protocol
error: ..." naming the option); other connections are not affected.  A block that is not
gathered or not decoded leaves the HPACK state of the connection unknown, so RFC 9113 §4.3 and
§10.5.1 allow no stream-only answer: block size and CONTINUATION count give COMPRESSION_ERROR;
decoding errors keep h2's own mapping (PROTOCOL_ERROR, and ENHANCE_YOUR_CALM for a header list
over the limit, h2's ``DenialOfServiceError``).

Not kept from ``hpack.Decoder``: which fields the peer sent never-indexed
(``NeverIndexedHeaderTuple``); mitmproxy's request and response models do not keep it either.

The same frame buffer also takes one cost off every DATA frame (a fast path, not a limit):
hyper-h2's ``H2Connection._receive_frame`` builds ``repr(frame)`` for a trace log line before
the logger can decline it, and hyperframe's repr of a DATA frame copies the whole body and
hex-encodes all of it to show its first 10 bytes -- about 5 % of intercept mode's CPU at 16 KiB
messages, 8 % at 64 KiB (py-spy, bench_live).  The buffer hands h2 DATA frames as
:class:`QuickReprDataFrame`, whose repr is the same string from those 10 bytes;
``tests/test_intercept_h2limits.py`` checks that both reprs agree on any frame.
"""

from __future__ import annotations

import binascii
from typing import Any

import h2.connection
import h2.errors
import h2.exceptions
import h2.frame_buffer
from hpack import HeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PushPromiseFrame,
)

from h2ws.analysis.core.h2 import hpack_fast
from h2ws.analysis.core.options import HeaderLimits

#: hpack's and h2's starting values (RFC 9113 §6.5.2: 4096 until SETTINGS say otherwise).
DEFAULT_TABLE_SIZE = 4096
DEFAULT_MAX_HEADER_LIST_SIZE = 2**16


class HeaderBlockLimitError(h2.exceptions.ProtocolError):
    """A header block over ``h2ws_max_header_block_bytes`` or ``h2ws_max_continuations``:
    it is not gathered, the connection's HPACK state is lost (RFC 9113 §4.3)."""

    error_code = h2.errors.ErrorCodes.COMPRESSION_ERROR


#: hyperframe's repr shows this many bytes of a frame's body (``_raw_data_repr``: 20 hex digits)
_REPR_BYTES = 10


class QuickReprDataFrame(DataFrame):
    """hyperframe's ``DataFrame`` with the same ``repr`` at a cost that does not grow with the
    frame: ``Frame._body_repr`` serializes the body (a copy) and hex-encodes all of it, then
    keeps the first 20 hex digits; this encodes only the bytes it keeps.  Named ``DataFrame``
    because hyperframe's repr starts with the class name; h2 dispatches it like a DATA frame
    (``bound`` adds it to the connection's dispatch table)."""

    def _body_repr(self) -> str:
        padding = self.serialize_padding_data()
        data = self.data
        size = len(padding) + len(data) + self.pad_length
        if not size:
            return "None"
        head = padding + bytes(data[:_REPR_BYTES]) + b"\0" * min(self.pad_length, _REPR_BYTES)
        digits = binascii.hexlify(head[:_REPR_BYTES]).decode("ascii")
        return f"<hex:{digits}...>" if size > _REPR_BYTES else f"<hex:{digits}>"


QuickReprDataFrame.__name__ = QuickReprDataFrame.__qualname__ = "DataFrame"


class BoundedFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, with the block size and CONTINUATION count limits while gathering.

    ``_update_header_buffer`` is h2's (``h2/frame_buffer.py``, h2 4.x) with h2's fixed
    ``CONTINUATION_BACKLOG`` (64) replaced by ``max_continuations`` and a size check per
    fragment; a refused block's fragments are dropped at once.
    """

    def __init__(self, limits: HeaderLimits, server: bool = False) -> None:
        super().__init__(server=server)
        self.limits = limits
        self._block_bytes = 0

    def _check(self, continuations: int) -> None:
        limits = self.limits
        if continuations > limits.max_continuations:
            self._headers_buffer = []
            raise HeaderBlockLimitError(
                f"header block has more than {limits.max_continuations} CONTINUATION frames "
                "(h2ws_max_continuations)"
            )
        if self._block_bytes > limits.max_block_bytes:
            self._headers_buffer = []
            raise HeaderBlockLimitError(
                f"header block exceeds {limits.max_block_bytes} bytes (h2ws_max_header_block_bytes)"
            )

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        pending = self._headers_buffer
        if not pending:
            if f.__class__ is DataFrame:  # every frame passes here: see QuickReprDataFrame
                f.__class__ = QuickReprDataFrame
                return f
            if isinstance(f, HeadersFrame | PushPromiseFrame):
                self._block_bytes = len(f.data)
                self._check(0)
                if "END_HEADERS" not in f.flags:
                    pending.append(f)
                    return None
            return f
        if not (isinstance(f, ContinuationFrame) and f.stream_id == pending[0].stream_id):
            raise h2.exceptions.ProtocolError("Invalid frame during header block.")
        self._block_bytes += len(f.data)
        self._check(len(pending))
        pending.append(f)
        if "END_HEADERS" not in f.flags:
            return None
        first = pending[0]
        first.flags.add("END_HEADERS")
        first.data = b"".join(x.data for x in pending)
        self._headers_buffer = []
        return first


class BoundedDecoder:
    """``hpack.Decoder`` as h2's ``H2Connection`` uses it, decoding with :mod:`hpack_fast`.

    h2 sets ``max_header_list_size`` and ``max_allowed_table_size`` when its own SETTINGS are
    acknowledged and calls ``decode(block, raw=True)``; errors are hpack's exception types, so
    h2 maps them as it maps hpack's.  ``tests/test_intercept_h2limits.py`` checks that this
    decoder and ``hpack.Decoder`` agree on valid and on random blocks.
    """

    def __init__(self, limits: HeaderLimits) -> None:
        self.limits = limits
        self.max_header_list_size: int | None = DEFAULT_MAX_HEADER_LIST_SIZE
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE
        self.table = hpack_fast.DynamicTable(DEFAULT_TABLE_SIZE)

    @property
    def header_table_size(self) -> int:
        return self.table.max_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self.table.resize(value)

    def decode(self, data: bytes | bytearray | memoryview, raw: bool = False) -> list[Any]:
        limits = self.limits
        list_limit = limits.max_list_bytes
        if self.max_header_list_size is not None:
            list_limit = min(list_limit, self.max_header_list_size)
        try:
            fields = hpack_fast.decode_block(
                self.table,
                data,
                max_table_size=min(self.max_allowed_table_size, limits.max_table_bytes),
                max_list_size=list_limit,
                stop_over_list=True,  # h2 ends the connection: the rest is not needed
            )
        except hpack_fast.HeaderListTooLarge as exc:
            raise OversizedHeaderListError(f"{exc} (h2ws_max_header_list_bytes)") from None
        except hpack_fast.HpackTableSizeError as exc:
            raise InvalidTableSizeError(f"{exc} (h2ws_max_hpack_table_bytes)") from None
        except hpack_fast.HpackDecodingError as exc:
            raise HPACKDecodingError(str(exc)) from None
        if raw:
            return [HeaderTuple(n, v) for n, v in fields]
        return [HeaderTuple(n.decode("utf-8"), v.decode("utf-8")) for n, v in fields]


def bound(conn: h2.connection.H2Connection, limits: HeaderLimits) -> None:
    """Put the limits on ``conn``, which must not have received a byte yet."""
    old = conn.incoming_buffer
    buffer = BoundedFrameBuffer(limits, server=not conn.config.client_side)
    buffer.max_frame_size = old.max_frame_size
    conn.incoming_buffer = buffer
    table = conn._frame_dispatch_table
    table[QuickReprDataFrame] = table[DataFrame]
    decoder = BoundedDecoder(limits)
    decoder.max_allowed_table_size = conn.decoder.max_allowed_table_size
    conn.decoder = decoder  # type: ignore[assignment]
    # Advertise the header list limit (h2 would say 64 KiB); set and acknowledged locally,
    # otherwise h2 sends the old value (as mitmproxy's ``BufferedH2Connection`` does).
    conn.local_settings.max_header_list_size = limits.max_list_bytes
    conn.local_settings.acknowledge()
    decoder.max_header_list_size = limits.max_list_bytes
