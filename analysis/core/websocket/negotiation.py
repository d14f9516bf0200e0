"""permessage-deflate negotiation (RFC 7692 §5, §7.1): the parameters the server accepted.

One job: read the server's ``sec-websocket-extensions`` response header into
:class:`DeflateParams`, or None when permessage-deflate is not in force.  Inflating is
:mod:`.inbound`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """Negotiated permessage-deflate parameters (RFC 7692 §7.1).

    The window sizes are recorded for reference only: inflating always uses a 2**15 window,
    which decodes data compressed with any smaller window, while a smaller one would reject
    legal input from a peer that ignored the negotiation.
    """

    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    client_max_window_bits: int = 15
    server_max_window_bits: int = 15


def _split_quoted(text: str, sep: str) -> list[str] | None:
    """Split at ``sep`` outside double quotes; None when a quote is left open."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        return None
    parts.append(text[start:])
    return parts


def _window_bits(value: str | None) -> int | None:
    if value is None:  # allowed without a value in an offer; means "the default"
        return 15
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].strip()
    if not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiated_deflate(response_extensions: str | None) -> DeflateParams | None:
    """permessage-deflate as accepted by the server's ``sec-websocket-extensions``, if at all.

    Only the response counts: the client offers, the server decides (RFC 7692 §5).  The first
    ``permessage-deflate`` element is used; other extensions are ignored.  Unknown parameters
    are tolerated because the peers evidently agreed on them, but an element that cannot be
    parsed (open quote, window bits outside 8..15) gives None: guessing parameters would make
    every compressed message fail later with a misleading inflate error instead of the clear
    "RSV1 without permessage-deflate" diagnostic.
    """
    if not response_extensions:
        return None
    elements = _split_quoted(response_extensions, ",")
    if elements is None:
        return None
    for element in elements:
        params = _split_quoted(element, ";")
        if params is None or params[0].strip().lower() != "permessage-deflate":
            continue
        values: dict[str, bool | int] = {}
        for param in params[1:]:
            name, eq, raw = param.partition("=")
            name = name.strip().lower()
            if not name:
                continue  # tolerate "permessage-deflate;" and doubled separators
            if name in ("client_no_context_takeover", "server_no_context_takeover"):
                values[name] = True
            elif name in ("client_max_window_bits", "server_max_window_bits"):
                bits = _window_bits(raw if eq else None)
                if bits is None:
                    return None
                values[name] = bits
        return DeflateParams(
            client_no_context_takeover=bool(values.get("client_no_context_takeover", False)),
            server_no_context_takeover=bool(values.get("server_no_context_takeover", False)),
            client_max_window_bits=int(values.get("client_max_window_bits", 15)),
            server_max_window_bits=int(values.get("server_max_window_bits", 15)),
        )
    return None
