"""Header blocks of one direction (RFC 7541 HPACK, RFC 9113 §4.3): bytes to a header list.

One job: decode the header blocks of one direction with hpack, keeping that direction's dynamic
table (each direction has its own, RFC 7541 §2.3).  Gathering a block's HEADERS/PUSH_PROMISE and
CONTINUATION fragments is the connection's job (:mod:`.connection`); a block that does not decode
ends the direction's decoding, since every later block depends on the lost table state.
"""

from __future__ import annotations

import re

import hpack

from h2ws.analysis.core.headers import HeaderList, decode_headers

_ADDRESS = re.compile(r" from <memory at 0x[0-9a-f]+>")


class HeaderBlockError(Exception):
    """A header block that hpack could not decode; the text names no memory address."""


def _without_addresses(message: str) -> str:
    """hpack names the buffer it failed on by its memory address, which tells a reader nothing
    and makes two decodes of the same bytes differ."""
    return _ADDRESS.sub("", message)


class HeaderBlockDecoder:
    """The HPACK decoder of one direction, its limits lifted to an observer's."""

    __slots__ = ("_hpack",)

    def __init__(self) -> None:
        # An observer must accept whatever the real decoder accepted: lift hpack's own limits.
        decoder = hpack.Decoder(max_header_list_size=2**31)
        decoder.max_allowed_table_size = 2**31
        self._hpack = decoder

    def decode(self, block: bytes) -> HeaderList:
        """The header list of a complete block; :class:`HeaderBlockError` when it fails."""
        try:
            raw = self._hpack.decode(block, raw=True)
        except (hpack.HPACKError, ValueError, IndexError) as exc:
            raise HeaderBlockError(_without_addresses(str(exc))) from None
        return decode_headers(raw)
