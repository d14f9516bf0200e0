"""WebSocket decoding (RFC 6455, permessage-deflate RFC 7692), sans-IO, for a passive observer.

The modules, one job each:

* :mod:`.negotiation` -- the permessage-deflate parameters the server accepted (RFC 7692 §5, §7.1);
* :mod:`.messages` -- :class:`MessageDecoder`, one direction's bytes to message records (framing
  by wsproto's ``FrameProtocol``, RFC 6455 §5-§7);
* :mod:`.fastpath` -- the fast path that replaces wsproto's parsing for plain single-frame text
  and binary messages (the tests hold both paths equal);
* :mod:`.inbound` -- what both paths measure per frame, RFC 7692 inflate (bounded), hashing,
  UTF-8 and the payload preview;
* :mod:`.stream` -- a WebSocket on an HTTP/2 or HTTP/1.1 stream: both directions and the
  stream row's message counts and close cause.

The payload policy is :class:`h2ws.analysis.records.PayloadPolicy` (re-exported here).
"""

from h2ws.analysis.core.websocket.messages import MessageDecoder
from h2ws.analysis.core.websocket.negotiation import DeflateParams, negotiated_deflate
from h2ws.analysis.core.websocket.stream import WebSocketStream
from h2ws.analysis.records import PayloadPolicy

__all__ = [
    "DeflateParams",
    "MessageDecoder",
    "PayloadPolicy",
    "WebSocketStream",
    "negotiated_deflate",
]
