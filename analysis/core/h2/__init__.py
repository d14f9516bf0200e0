"""HTTP/2 decoding for a passive observer (RFC 9113, RFC 7541, RFC 8441), sans-IO.

The modules, one job each, bottom up:

* :mod:`.framing` -- frames from each direction's bytes (RFC 9113 §4.1, §3.4 preface), their
  ``frames`` rows, and the fast path that replaces hyperframe for plain DATA and WINDOW_UPDATE;
* :mod:`.header_blocks` -- HPACK (RFC 7541) per direction;
* :mod:`.rfc8441` -- extended CONNECT classification and its rules (RFC 8441 §3-§5);
* :mod:`.streams` -- stream lifecycle (RFC 9113 §5.1) and the WebSocket on a stream;
* :mod:`.connection` -- :class:`H2Decoder`, tying them together.
"""

from h2ws.analysis.core.h2.connection import H2Decoder
from h2ws.analysis.core.h2.framing import (
    FRAME_TYPE_NAMES,
    PREFACE,
    error_code_name,
    frame_type_name,
    setting_name,
)

__all__ = [
    "FRAME_TYPE_NAMES",
    "PREFACE",
    "H2Decoder",
    "error_code_name",
    "frame_type_name",
    "setting_name",
]
