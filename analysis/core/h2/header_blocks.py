"""Header blocks of one direction (RFC 7541 HPACK, RFC 9113 §4.3): bytes to a header list.

One job: decode the header blocks of one direction, keeping that direction's dynamic table
(each direction has its own, RFC 7541 §2.3), within explicit limits
(:class:`~h2ws.analysis.core.options.HeaderLimits`, documented in ``docs/schema.md``).
Gathering a block's HEADERS/PUSH_PROMISE and CONTINUATION fragments is the connection's job
(:mod:`.connection`), bounded by :class:`PendingBlock` (block size, CONTINUATION count).

Decoding is :mod:`.hpack_fast`, a linear-time replacement of ``hpack.Decoder`` (whose cost is
quadratic in the number of literals); a test checks that both agree on valid and random input.

When the table's state is lost -- a block was skipped (over a limit) or did not decode -- the
direction goes on: later blocks that use only the static table, literals and entries added
since are decoded exactly; a block that refers to an entry of unknown contents raises
:class:`UnknownIndexError` (the headers are never guessed); a size update to 0 makes the table
known again (:attr:`HeaderBlockDecoder.reliable`).
"""

from __future__ import annotations

from h2ws.analysis.core.h2 import hpack_fast
from h2ws.analysis.core.headers import HeaderList, decode_headers
from h2ws.analysis.core.options import HeaderLimits

#: RFC 9113 §6.5.2: SETTINGS_HEADER_TABLE_SIZE is 4096 until the peer says otherwise.
DEFAULT_TABLE_SIZE = 4096


class HeaderBlockError(Exception):
    """A header block that was not decoded: ``code`` is the diagnostic code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UnknownIndexError(HeaderBlockError):
    """The block refers to dynamic-table entries whose contents are unknown (the table's state
    was lost earlier).  ``fields`` is what is known, ``None`` where unknown: a caller that
    wants placeholders makes them from it; the core shows no headers for the block."""

    def __init__(self, exc: hpack_fast.UnknownDynamicIndex) -> None:
        super().__init__("h2_hpack_unknown_index", str(exc))
        self.fields = exc.fields
        self.indices = exc.indices


class HeaderBlockDecoder:
    """The HPACK decoder of one direction.

    ``known=False`` starts with a table of unknown contents (a connection seen from its
    middle).  :meth:`allow_table_size` takes the decoding peer's SETTINGS_HEADER_TABLE_SIZE.
    ``placeholders=True`` (with ``known=False``): a reference to an entry from before the
    capture decodes as ``<unknown>`` (:data:`.hpack_fast.PLACEHOLDER`) instead of failing the
    block; :attr:`unknown_fields` and :attr:`unknown_blocks` count them.

    Why the indices stay exact: the table is newest first, so the entries added since the
    capture started are the first ones, at their exact indices; everything behind them is
    unknown, never guessed.  The table size the encoder uses is unknown, so the table is held
    at ``max_table_bytes`` (at least any real size): an entry the encoder evicted may still
    be held here, but the encoder never refers to it.  A size update seen (RFC 7541 §6.3)
    sets the size, and once the known entries fill it nothing older can remain: the table is
    fully known again.
    """

    __slots__ = ("_allowed", "limits", "placeholders", "table", "unknown_blocks", "unknown_fields")

    def __init__(
        self,
        limits: HeaderLimits | None = None,
        *,
        known: bool = True,
        placeholders: bool = False,
    ) -> None:
        self.placeholders = placeholders
        self.unknown_fields = 0
        self.unknown_blocks = 0
        self.limits = limits if limits is not None else HeaderLimits()
        self._allowed = min(DEFAULT_TABLE_SIZE, self.limits.max_table_bytes)
        if not known:
            self._allowed = self.limits.max_table_bytes
        self.table = hpack_fast.DynamicTable(self._allowed, unknown=not known)

    @property
    def reliable(self) -> bool:
        """Whether every entry of the table is known (no state was lost, or it was rebuilt)."""
        table = self.table
        return not table.unknown_tail and all(
            n is not None and v is not None for n, v in table.entries
        )

    def allow_table_size(self, value: int) -> None:
        """The decoding peer advertised SETTINGS_HEADER_TABLE_SIZE ``value``.

        An observer cannot tell exactly when the encoder saw the setting acknowledged, so the
        largest value advertised so far is allowed (capped by ``max_table_bytes``).
        """
        self._allowed = max(self._allowed, min(value, self.limits.max_table_bytes))

    def forget(self) -> None:
        """A block of this direction was skipped: the table's contents are now unknown."""
        self.table.forget()

    def decode(self, block: bytes | bytearray | memoryview) -> HeaderList:
        """The header list of a complete block; :class:`HeaderBlockError` when it fails."""
        unknown: list[int] | None = [] if self.placeholders else None
        try:
            raw = hpack_fast.decode_block(
                self.table,
                block,
                max_table_size=self._allowed,
                max_list_size=self.limits.max_list_bytes,
                placeholders=unknown,
            )
        except hpack_fast.UnknownDynamicIndex as exc:
            raise UnknownIndexError(exc) from None
        except hpack_fast.HeaderListTooLarge as exc:
            raise HeaderBlockError("h2_header_list_too_large", str(exc)) from None
        except hpack_fast.HpackTableSizeError as exc:
            raise HeaderBlockError("h2_hpack_table_size", str(exc)) from None
        except hpack_fast.HpackDecodingError as exc:
            raise HeaderBlockError("h2_hpack_error", str(exc)) from None
        if unknown:
            self.unknown_fields += len(unknown)
            self.unknown_blocks += 1
        return decode_headers(raw)


class PendingBlock:
    """A header block still waiting for its END_HEADERS (RFC 9113 §4.3), bounded.

    Fragments are held only while the block is within ``max_block_bytes`` and
    ``max_continuations``; past either, they are dropped and ``skipped`` names the limit
    (the diagnostic code and its message), so an endless block costs no memory.
    """

    __slots__ = ("continuations", "fragments", "frame", "size", "skipped", "stream_id")

    def __init__(self, stream_id: int, frame: object, fragment: bytes) -> None:
        self.stream_id = stream_id
        #: the HEADERS or PUSH_PROMISE frame that opened the block (its flags, promised id)
        self.frame = frame
        self.fragments: list[bytes] = [fragment]
        self.size = len(fragment)
        self.continuations = 0
        self.skipped: tuple[str, str] | None = None

    def add(self, fragment: bytes, limits: HeaderLimits) -> None:
        """One CONTINUATION fragment."""
        self.continuations += 1
        self.size += len(fragment)
        if self.skipped is not None:
            return
        if self.continuations > limits.max_continuations:
            self._skip(
                "h2_too_many_continuations",
                f"header block has more than {limits.max_continuations} CONTINUATION frames",
            )
        elif self.size > limits.max_block_bytes:
            self._skip(
                "h2_header_block_too_large",
                f"header block exceeds {limits.max_block_bytes} bytes",
            )
        else:
            self.fragments.append(fragment)

    def check_first(self, limits: HeaderLimits) -> None:
        """The opening frame alone may already be over the block size limit."""
        if self.size > limits.max_block_bytes:
            self._skip(
                "h2_header_block_too_large", f"header block exceeds {limits.max_block_bytes} bytes"
            )

    def _skip(self, code: str, message: str) -> None:
        self.skipped = (code, message)
        self.fragments = []

    def block(self) -> bytes:
        return b"".join(self.fragments)
