"""A linear-time HPACK decoder (RFC 7541) for a passive observer: a fast path replacing hpack's.

Why not ``hpack.Decoder``: it copies the rest of the block for every literal field
(``memoryview.tobytes()`` in ``_decode_literal``), so a block of *n* literals costs O(n x block)
-- a 1 MiB block of small literals took ~38 s -- and its error texts quote the whole remaining
block (header values, credentials included).  This decoder reads the block once through a
memoryview and copies only the bytes of each string.  It still uses hpack's pieces where they
are not the problem: the static table (``hpack.table.HeaderTable.STATIC_TABLE``) and the
Huffman decoder (``hpack.huffman_table.decode_huffman``).  The entry size (RFC 7541 §4.1: name
+ value + 32) is computed in :class:`DynamicTable` itself, not by hpack's ``table_entry_size``,
because an entry of a partly unknown table may lack its name or value.

Agreement with hpack is tested, not assumed: ``tests/test_hostile_hpack.py`` encodes random
header lists with ``hpack.Encoder`` (random table sizes, Huffman on and off, never-indexed
fields) and decodes them with both, and feeds both arbitrary bytes: on every input where
hpack succeeds, this decoder returns the same headers, and it fails where hpack fails.

What an observer needs beyond hpack:

* A table whose contents may be partly **unknown** -- after a header block that was skipped
  (too large) or failed, or for a connection seen from its middle.  Entries added since are
  known (the table is newest-first, so their indices are exact); anything older is not.  A
  reference to an unknown entry is not guessed: it is recorded and, at the end of the block,
  :class:`UnknownDynamicIndex` is raised with what was decoded (``None`` where unknown).  A
  dynamic table size update to 0 empties the table and makes it fully known again.
* Limits: the decoded header list size (RFC 9113 §6.5.2 accounting: name + value + 32 per
  field) stops collecting fields but still applies the block's table updates, so the table
  stays in step; the table size may not exceed what the decoding peer allows (RFC 7541 §4.2,
  §6.3: a size update above it is a decoding error).
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
STATIC_LEN = len(STATIC_TABLE)
#: hpack's own bound on an integer's continuation bytes (``VARINT_MAX_LENGTH``): longer
#: encodings are decoding errors (RFC 7541 §5.1 allows implementation limits).
MAX_INTEGER_BYTES = 20

#: A field whose name or value is unknown (an entry of a table whose state was lost).
Field = tuple[bytes | None, bytes | None]
#: What placeholder mode (``decode_block(placeholders=[...])``) shows for an unknown name or
#: value: ``<`` is not a token character, so no real header name is ever this.
PLACEHOLDER = b"<unknown>"


class HpackDecodingError(Exception):
    """The block is not valid HPACK; the message never quotes the block's bytes."""


class HpackTableSizeError(HpackDecodingError):
    """A dynamic table size update above what the decoding peer allows (RFC 7541 §6.3)."""


class UnknownDynamicIndex(HpackDecodingError):
    """The block refers to dynamic-table entries whose contents are unknown.

    ``fields`` is the block's header list as far as it is known (``None`` for an unknown name
    or value); ``indices`` the HPACK indices that were unknown.  The block was decoded to its
    end, so the table's known part is up to date.
    """

    def __init__(self, fields: list[Field], indices: list[int]) -> None:
        shown = ", ".join(str(i) for i in indices[:5]) + (", ..." if len(indices) > 5 else "")
        super().__init__(f"reference to unknown dynamic table entries ({shown})")
        self.fields = fields
        self.indices = indices


class HeaderListTooLarge(HpackDecodingError):
    """The decoded header list grew beyond the limit; the table updates were still applied."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(f"decoded header list exceeds {limit} bytes ({size} so far)")
        self.limit = limit
        self.size = size


class DynamicTable:
    """The dynamic table of RFC 7541 §2.3.2, newest entry first, possibly partly unknown.

    ``unknown_tail``: older entries of unknown contents may follow the listed ones.  Entries
    themselves may have an unknown name or value (added by a literal whose name referred to an
    unknown entry); their size counts only the known parts, a lower bound, which keeps the
    memory bound and errs towards keeping entries (never towards inventing them: an index the
    encoder uses is always one of its newest entries, which are ours too).
    """

    __slots__ = ("entries", "max_size", "size", "unknown_tail")

    def __init__(self, max_size: int = 4096, *, unknown: bool = False) -> None:
        self.entries: deque[Field] = deque()
        self.size = 0
        self.max_size = max_size
        self.unknown_tail = unknown

    def lookup(self, index: int) -> Field | None:
        """The entry at HPACK ``index`` (static first); ``None`` when it is unknown."""
        if 0 < index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        i = index - STATIC_LEN - 1
        if 0 <= i < len(self.entries):
            return self.entries[i]
        if i >= 0 and self.unknown_tail:
            return None
        raise HpackDecodingError(f"invalid table index {index}")

    def add(self, name: bytes | None, value: bytes | None) -> None:
        size = (
            32 + (len(name) if name is not None else 0) + (len(value) if value is not None else 0)
        )
        if size > self.max_size:
            # RFC 7541 §4.4: an entry larger than the table empties it (a lower bound that is
            # already too large means the real entry is too).
            self.entries.clear()
            self.size = 0
            self.unknown_tail = False
            return
        self.entries.appendleft((name, value))
        self.size += size
        self._evict()

    def resize(self, max_size: int) -> None:
        self.max_size = max_size
        if max_size == 0:
            self.unknown_tail = False  # an empty table is a known table
        self._evict()

    def forget(self) -> None:
        """The table's state is lost (a block was skipped or failed): nothing in it is known."""
        self.entries.clear()
        self.size = 0
        self.unknown_tail = True

    def _evict(self) -> None:
        entries = self.entries
        while self.size > self.max_size and entries:
            name, value = entries.pop()
            self.size -= 32 + (len(name) if name is not None else 0)
            self.size -= len(value) if value is not None else 0
            self.unknown_tail = False  # the oldest known entry went: all older ones went first
        if self.unknown_tail and self.size + 32 > self.max_size:
            self.unknown_tail = False  # not even an empty entry could still fit behind ours


def _integer(data: memoryview, pos: int, end: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 §5.1: the integer at ``pos`` with an N-bit prefix, and the position after it."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    stop = pos + MAX_INTEGER_BYTES
    while True:
        if pos >= end:
            raise HpackDecodingError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if pos >= stop:
            raise HpackDecodingError("integer representation too long")


def _string(data: memoryview, pos: int, end: int) -> tuple[bytes, int]:
    """RFC 7541 §5.2: a string literal (Huffman-decoded with hpack's decoder when flagged)."""
    if pos >= end:
        raise HpackDecodingError("truncated header block")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, end, 7)
    stop = pos + length
    if stop > end:
        raise HpackDecodingError("truncated header block")
    raw = data[pos:stop]
    if huffman:
        try:
            return decode_huffman(raw), stop
        except HPACKError as exc:
            raise HpackDecodingError(str(exc)) from None
    return raw.tobytes(), stop


def decode_block(
    table: DynamicTable,
    block: bytes | bytearray | memoryview,
    *,
    max_table_size: int,
    max_list_size: int,
    stop_over_list: bool = False,
    placeholders: list[int] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The header list of one complete block, updating ``table``.  One pass, O(len(block)).

    Raises :class:`HpackTableSizeError` for a size update above ``max_table_size`` (the table
    is then forgotten: what the encoder believes it holds is unknown), another
    :class:`HpackDecodingError` for invalid HPACK (table forgotten too, since the rest of the
    block's updates are lost), :class:`HeaderListTooLarge` after the whole block was applied
    when the list exceeds ``max_list_size``, :class:`UnknownDynamicIndex` after the whole block
    was applied when it referred to unknown entries.  With ``stop_over_list``,
    :class:`HeaderListTooLarge` comes as soon as the list is over ``max_list_size`` and the
    table is forgotten: for a caller that ends the connection then (the proxy, which thus
    pays for at most ``max_list_size`` of fields, not for the whole block).

    Placeholder mode (``placeholders`` a list, for a connection seen from its middle): a
    reference to an unknown entry does not raise; its index is appended to ``placeholders``
    and the unknown name or value is :data:`PLACEHOLDER`, so the block's other fields decode.
    """
    data = memoryview(block)
    end = len(data)
    pos = 0
    fields: list[Field] = []
    unknown: list[int] = []
    seen = 0  # fields decoded, kept or not
    list_size = 0
    name: bytes | None
    value: bytes | None
    try:
        while pos < end:
            first = data[pos]
            if first & 0x80:  # §6.1 indexed field
                index, pos = _integer(data, pos, end, 7)
                entry = table.lookup(index)
                if entry is None:
                    entry = (None, None)
                name, value = entry
                if name is None or value is None:
                    unknown.append(index)
            elif first & 0xE0 == 0x20:  # §6.3 dynamic table size update
                if seen:
                    raise HpackDecodingError("table size update after the first header field")
                new_size, pos = _integer(data, pos, end, 5)
                if new_size > max_table_size:
                    raise HpackTableSizeError(
                        f"table size update to {new_size} above the allowed {max_table_size}"
                    )
                table.resize(new_size)
                continue
            else:  # §6.2 literal: with incremental indexing (01), without (0000), never (0001)
                indexing = bool(first & 0x40)
                prefix = 6 if indexing else 4
                if first & ((1 << prefix) - 1):
                    index, pos = _integer(data, pos, end, prefix)
                    entry = table.lookup(index)
                    name = entry[0] if entry is not None else None
                    if name is None:
                        unknown.append(index)
                else:
                    name, pos = _string(data, pos + 1, end)
                value, pos = _string(data, pos, end)
                if indexing:
                    table.add(name, value)
            seen += 1
            list_size += 32 + (len(name) if name else 0) + (len(value) if value else 0)
            if list_size <= max_list_size:
                fields.append((name, value))
            elif stop_over_list:
                raise HeaderListTooLarge(max_list_size, list_size)
            elif fields:
                fields = []  # the list will be dropped: hold none of it
    except HpackDecodingError:
        table.forget()
        raise
    if list_size > max_list_size:
        raise HeaderListTooLarge(max_list_size, list_size)
    if unknown:
        if placeholders is None:
            raise UnknownDynamicIndex(fields, unknown)
        placeholders.extend(unknown)
        return [
            (PLACEHOLDER if n is None else n, PLACEHOLDER if v is None else v) for n, v in fields
        ]
    return fields  # type: ignore[return-value]  # no None in it once ``unknown`` is empty
