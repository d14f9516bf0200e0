"""Knobs of the decoder core, shared by every source so that all of them decode alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from h2ws.analysis.records import PayloadPolicy


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """The limits of header block decoding; the defaults are far above real traffic (browsers
    send at most tens of KiB of headers) and bound one block to milliseconds."""

    #: Largest header block (HEADERS/PUSH_PROMISE + CONTINUATION payloads, before HPACK).
    max_block_bytes: int = 256 * 2**10
    #: Most CONTINUATION frames in one header block.
    max_continuations: int = 256
    #: Largest decoded header list (name + value + 32 per field, RFC 9113 §6.5.2).
    max_list_bytes: int = 256 * 2**10
    #: Cap on the HPACK dynamic table size a peer may allow (its SETTINGS_HEADER_TABLE_SIZE
    #: is honoured up to this).
    max_table_bytes: int = 2**20


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    payload: PayloadPolicy = field(default_factory=PayloadPolicy)
    #: Largest WebSocket message (after inflate) that is decoded; a bigger one ends that
    #: direction of the stream with a diagnostic, which is what bounds a decompression bomb.
    max_message_bytes: int = 64 * 2**20
    #: One row per HTTP/2 frame.  Costly on huge captures and not needed for message analysis.
    frames: bool = True
    #: Replace cookie / authorization header values by their length.
    redact: bool = True
    #: Client bytes that a WebSocket may send before the server's response (RFC 8441 clients
    #: should wait; some don't) are held back this far, then dropped with a diagnostic.
    max_early_data: int = 1 * 2**20
    #: Limits of HTTP/2 header blocks and HPACK (docs/schema.md, "Limits").
    headers: HeaderLimits = field(default_factory=HeaderLimits)
