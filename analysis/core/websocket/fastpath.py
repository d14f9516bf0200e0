"""The fast path of WebSocket framing (RFC 6455 §5.2-5.3): it replaces wsproto's parsing on the
hot path.

One job: cut one direction's bytes at frame boundaries, decode plainly valid single-frame text
and binary messages here (header, length, unmasking), and hand every other frame -- control
frames, fragments, headers split over feeds, anything wsproto may reject -- to wsproto's
``FrameProtocol`` exactly up to its end.  Profiling showed wsproto's per-frame machinery costing
three quarters of the decoding time on streams of small messages, the common case.

The frames read here go through the same :class:`~.inbound.Inbound` code (size cap, RFC 7692
inflate, UTF-8, hash, payload policy) as on the wsproto path, so both paths give the same
records and diagnostics: ``tests/test_websocket.py`` runs every rule on both paths
(``BOTH_PATHS``), and its hypothesis tests ``test_mutated_streams_never_raise_and_both_paths_agree``
and ``test_frames_over_feeds_fast_path_equals_wsproto`` feed the same streams, cut anywhere,
through both and compare the records.  ``MessageDecoder(fast_path=False)``
turns it off.
"""

from __future__ import annotations

from hashlib import sha256
from typing import TYPE_CHECKING

import numpy as _np

from h2ws.analysis.core.websocket.inbound import _BAD_UTF8, _BINARY, _TEXT, _utf8_decode
from h2ws.analysis.records import DiagnosticRecord, MessageRecord, make_message

if TYPE_CHECKING:
    from h2ws.analysis.core.websocket.messages import MessageDecoder

_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]
#: From this payload size on, numpy unmasks (see _unmask).
_NUMPY_UNMASK = 2048
_from_bytes = int.from_bytes


#: 2 + 8-byte length + 4-byte masking key
_MAX_HEADER = 14


def _frame_size(head: bytes) -> int | None:
    """Bytes of the frame starting ``head`` (header included), None until the length is there."""
    n = len(head)
    if n < 2:
        return None
    b1 = head[1]
    length = b1 & 0x7F
    size = 6 if b1 & 0x80 else 2
    if length == 126:
        if n < 4:
            return None
        return size + 2 + ((head[2] << 8) | head[3])
    if length == 127:
        if n < 10:
            return None
        return size + 8 + int.from_bytes(head[2:10], "big")
    return size + length


def _unmask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (RFC 6455 §5.3).

    Three ways, by size, as measured: one big-int XOR on small payloads, four byte-table
    translates up to a few KiB, and numpy's XOR of 32-bit words beyond (15x faster at 64 KiB,
    where unmasking was a visible part of decoding large client messages).
    """
    n = len(payload)
    if n <= 512:  # one big-int XOR beats four translates on small payloads
        mask = int.from_bytes((key * ((n >> 2) + 1))[:n], "little")
        return (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little")
    if n < _NUMPY_UNMASK:
        out = bytearray(payload)
        for i in range(4):
            out[i::4] = out[i::4].translate(_XOR_TABLES[key[i]])
        return bytes(out)
    words = n >> 2
    head = (
        _np.frombuffer(payload, "<u4", words) ^ _np.uint32(_from_bytes(key, "little"))
    ).tobytes()
    tail = n & 3
    if not tail:
        return head
    rest = n - tail
    return head + bytes(payload[rest + i] ^ key[i] for i in range(tail))


def split(
    dec: MessageDecoder, data: bytes, ts: float, out: list[MessageRecord | DiagnosticRecord]
) -> None:
    """Cut ``data`` at frame boundaries: plain whole frames here, the rest to wsproto.

    Profiling showed wsproto's per-frame machinery (buffer slicing, named tuples, a
    generator, masker objects) costing three quarters of the time on streams of small
    messages, the common case.  So plainly valid single-frame data messages are decoded by
    :func:`fast_frames`, also when their payload goes on in later feeds (:func:`stream`:
    a message larger than an HTTP/2 DATA frame always does); every other frame -- control
    frames, fragments, headers split over feeds, anything wsproto may reject -- is handed
    to wsproto, exactly up to its end, so that the frame after it can take the fast path
    again.  Frame boundaries only need the length fields, which are read here without
    judging them.
    """
    tap = dec._tap
    n = len(data)
    pos = 0
    while pos < n:
        if dec._rest:
            pos = stream(dec, data, pos, ts, out)
            if dec._proto is None:
                break
            continue
        if dec._owed:
            end = pos + dec._owed if dec._owed < n - pos else n
            dec._owed -= end - pos
            ok = dec._wsproto(data[pos:end], ts, out)
            pos = end
            if not ok:
                break
            continue
        if dec._hdr:  # a header started in an earlier feed and is already in wsproto
            head = dec._hdr + data[pos : pos + _MAX_HEADER]
            size = _frame_size(head)
            if size is None:  # still incomplete, so everything left is header bytes
                dec._hdr = head
                if not dec._wsproto(data[pos:], ts, out):
                    return
                pos = n
            else:
                dec._owed = size - len(dec._hdr)
                dec._hdr = b""
            continue
        # A clean frame boundary: wsproto holds no bytes.
        if not tap.msg_open:
            pos = fast_frames(dec, data, pos, ts, out)
            if pos >= n or dec._proto is None:
                break
        tap.next_ts = ts
        size = _frame_size(data[pos : pos + _MAX_HEADER])
        if size is None:
            dec._hdr = data[pos:]
            dec._wsproto(dec._hdr, ts, out)
            pos = n
        else:
            dec._owed = size
    if dec._close_seen and pos < n:
        out.extend(dec._after_close(n - pos, ts))


def fast_frames(
    dec: MessageDecoder,
    data: bytes,
    pos: int,
    ts: float,
    out: list[MessageRecord | DiagnosticRecord],
) -> int:
    """Decode whole single-frame data messages from ``pos``; return where it stopped.

    A frame qualifies when its header is entirely in ``data`` and it is plainly valid: FIN
    set, text or binary, RSV bits as negotiated, the right mask bit, a minimal length
    (7, 16 or 64 bits, the top bit clear) within ``max_message_bytes``.  Its payload then
    goes through the same extension code (size cap, inflate, UTF-8, hash, preview) as on
    the wsproto path, so both paths give the same records and diagnostics; the tests feed
    the same streams, cut anywhere, through both.  A frame whose payload goes on beyond
    ``data`` is taken on as wsproto would (the message opens when its first payload byte is
    there) and streamed by :func:`stream`.
    """
    tap = dec._tap
    masked = tap.masked_extra != 0
    need = 6 if masked else 2
    deflate = tap.deflate
    cap = tap.max_message_bytes
    cut = tap.policy.cut
    n = len(data)
    while n - pos >= need:
        b0 = data[pos]
        if b0 == 0x81 or b0 == 0x82:
            comp = False
        elif deflate and (b0 == 0xC1 or b0 == 0xC2):
            comp = True
        else:
            break
        b1 = data[pos + 1]
        if (b1 >= 0x80) is not masked:
            break
        length = b1 & 0x7F
        start = pos + 2
        if length == 126:
            if n - pos < need + 2:
                break
            length = (data[start] << 8) | data[start + 1]
            if length < 126:
                break
            start += 2
        elif length == 127:
            if n - pos < need + 8:
                break
            length = _from_bytes(data[start : start + 8], "big")
            if length <= 0xFFFF or length >> 63:
                break
            start += 8
        if length > cap and not comp:
            break
        body = start + 4 if masked else start
        end = body + length
        if end > n:
            if body >= n:  # no payload byte yet: wsproto would not have taken it on
                break
            tap.consumed += body - pos
            tap.open_message(_TEXT if b0 & 1 else _BINARY, comp, ts)
            dec._rest = length
            dec._key = data[start:body]
            dec._key_off = 0
            return stream(dec, data, body, ts, out)
        payload = _unmask(data[body:end], data[start:body]) if masked else data[start:end]
        tap.consumed += end - pos
        pos = end
        if not comp:
            # The whole message is at hand: no incremental state is needed.
            if b0 == 0x81 and not payload.isascii():
                try:
                    _utf8_decode(payload, "strict", True)
                except UnicodeDecodeError:
                    out.append(dec._fail(ts, "ws_invalid_utf8", _BAD_UTF8))
                    return n
            # The factory with every field, in MessageRecord's order: a third of the cost of
            # its constructor on a row per message; the tests compare these rows with the
            # wsproto path's.
            kept, truncated = cut(payload, length)
            out.append(
                make_message(
                    (
                        dec.conn_id,
                        dec.stream_id,
                        dec.exchange,
                        dec.direction,
                        dec._index,
                        ts,
                        ts,
                        "text" if b0 == 0x81 else "binary",
                        1,
                        length,
                        length,
                        False,
                        kept,
                        truncated,
                        sha256(payload).hexdigest(),
                        None,
                        None,
                    )
                )
            )
            dec._index += 1
            continue
        tap.open_message(_TEXT if b0 & 1 else _BINARY, comp, ts)
        tap.m_wire = length
        err = tap.inflate(payload, False)
        if err is None:
            err = tap.end_message()
        if err is not None:
            code, message = tap.error or ("ws_protocol_error", f"extension said {err!r}")
            out.append(dec._fail(ts, code, message))
            return n
        dec._emit(out)
    return pos


def stream(
    dec: MessageDecoder,
    data: bytes,
    pos: int,
    ts: float,
    out: list[MessageRecord | DiagnosticRecord],
) -> int:
    """The next payload bytes, from ``pos``, of the frame :func:`fast_frames` took on;
    return where they end.

    Each feed's part goes through the extension code as wsproto would hand it over
    (unmasked, one chunk per feed), so records, diagnostics and the feed they come in are
    the same as on the wsproto path; on the frame's last byte the message is complete.
    """
    tap = dec._tap
    n = len(data)
    left = dec._rest
    end = pos + left if left < n - pos else n
    size = end - pos
    chunk = data[pos:end]
    key = dec._key
    if key:
        off = dec._key_off
        chunk = _unmask(chunk, key[off:] + key[:off] if off else key)
        dec._key_off = (off + size) & 3
    dec._rest = left - size
    tap.consumed += size
    tap.m_wire += size
    err = tap.inflate(chunk, False) if tap.m_comp else tap.take(chunk)
    if err is None and not dec._rest:
        err = tap.end_message()
        if err is None:
            dec._emit(out)
            return end
    if err is not None:
        dec._rest = 0
        code, message = tap.error or ("ws_protocol_error", f"extension said {err!r}")
        out.append(dec._fail(ts, code, message))
        return n
    return end
