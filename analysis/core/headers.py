"""Header lists as they go into the tables: decoded, redacted, serialised once.

Both HTTP/2 (HPACK) and HTTP/1.1 (h11) hand us ``(name, value)`` byte pairs; this module is the
one place that decides how they are shown, so that privacy rules cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

#: Headers whose values identify a user; replaced by a marker that keeps only the length.
REDACTED_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})

HeaderList = list[tuple[str, str]]


def decode_headers(raw: Iterable[tuple[bytes | str, bytes | str]]) -> HeaderList:
    """Lower-cased names and text values; undecodable bytes survive as U+FFFD, never an error."""
    out: HeaderList = []
    for name, value in raw:
        n = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        v = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        out.append((n.lower(), v))
    return out


def first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def joined(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """All values of a list-valued header, comma-joined (RFC 9110 §5.3), or None if absent."""
    values = [v for n, v in headers if n == name]
    return ", ".join(values) if values else None


def to_json(headers: Sequence[tuple[str, str]], redact: bool = True) -> str:
    """JSON list of ``[name, value]`` pairs, with credentials redacted unless asked otherwise."""
    shown = [
        [n, f"<redacted {len(v)} bytes>" if redact and n in REDACTED_HEADERS else v]
        for n, v in headers
    ]
    return json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
