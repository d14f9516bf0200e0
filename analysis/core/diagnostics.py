"""The one helper that makes a diagnostic record (the ``diagnostics`` table).

Every layer -- capture reading, TCP reassembly, TLS, the connection decoder, HTTP/2, RFC 8441,
HTTP/1.1, WebSocket -- reports what it could not decode, or what deserves a note, through
:func:`diagnostic`; the codes are stable and documented in ``docs/schema.md``.
"""

from __future__ import annotations

from h2ws.analysis.core.headers import redact_text
from h2ws.analysis.records import DiagnosticRecord


def diagnostic(
    conn_id: str | None,
    layer: str,
    severity: str,
    code: str,
    message: str,
    *,
    ts: float | None = None,
    stream_id: int | None = None,
) -> DiagnosticRecord:
    """A diagnostic row: ``layer`` (capture | tcp | tls | h2 | http1 | ws | rfc8441),
    ``severity`` (info | warning | error), a stable ``code`` and one line of ``message``.

    The message is passed through :func:`~h2ws.analysis.core.headers.redact_text`: it often
    quotes a library's error, which may quote the credential that broke it."""
    return DiagnosticRecord(
        conn_id=conn_id,
        stream_id=stream_id,
        ts=ts,
        layer=layer,
        severity=severity,
        code=code,
        message=redact_text(message),
    )
