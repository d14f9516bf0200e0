"""Knobs of the decoder core, shared by every source so that all of them decode alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from h2ws.analysis.records import PayloadPolicy


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
