"""Header lists as they go into the tables: decoded, redacted, serialised once.

Both HTTP/2 (HPACK) and HTTP/1.1 (h11) hand us ``(name, value)`` byte pairs; this module is the
one place that decides how they are shown, so that privacy rules cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

#: Headers whose values identify a user; replaced by a marker that keeps only the length.
REDACTED_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})

HeaderList = list[tuple[str, str]]

# A credential header quoted inside some text: its name, the separator, then the value up to
# the end of the line -- a real CR/LF, an escaped one (``\\r`` in a bytes repr) or a quote.
_QUOTED_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie)(\s*[:=]\s*)"
    r"(?:[^\r\n'\"\\]|\\(?![rn]))+"
)
# An authentication scheme and its credentials (RFC 9110 §11), wherever they appear.
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic|digest|negotiate)\s+[A-Za-z0-9._~+/=-]{4,}")


def redact_text(text: str) -> str:
    """``text`` with every credential it quotes replaced by ``<redacted>``.

    For text h2ws did not write itself -- a library's error message (h11 quotes a malformed
    header line: ``illegal header line: ... 'Authorization : Bearer ...'``), a GOAWAY's debug
    data, an exception repr -- which lands in ``diagnostics.message``, the ``error`` columns
    and on stderr.  Applied whatever ``--no-redact`` says: that option is about header columns.
    """
    if not text:
        return text
    text = _QUOTED_HEADER.sub(r"\1\2<redacted>", text)
    return _SCHEME_TOKEN.sub(r"\1 <redacted>", text)


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
