"""A fast path for the DATA frames of mitmproxy's own HTTP/2 connections (intercept mode).

Why: in intercept mode every WebSocket message crosses hyper-h2 twice -- received as DATA on
one leg, sent as DATA on the other -- and hyper-h2 spends most of that on generic machinery
that a plain DATA frame on an open stream does not need: a ``DataFrame`` object per frame
(parsed, then serialized again), two state machine transitions, a repr for a trace line the
default logger drops, and half a dozen debug calls.  py-spy (``bench/bench_live.py``, 16 KiB
messages) puts hyper-h2 at about a quarter of intercept mode's CPU time.

:func:`accelerate` turns one of mitmproxy's ``BufferedH2Connection`` objects into an instance
of :func:`fast_class`, whose :class:`FastDataH2Connection` replaces two library calls for the
common case only:

- :meth:`FastDataH2Connection.send_data` replaces ``h2.connection.H2Connection.send_data``
  for DATA that ends no stream, has no padding, is not empty, fits both send windows and the
  peer's frame size, on an open stream of an open connection: the 9-byte frame header and the
  data are appended to the send buffer and both windows shrink, as h2 would do.
- :meth:`FastDataH2Connection.receive_data` replaces ``h2.connection.H2Connection.receive_data``:
  while the next complete frame in the buffer is such a DATA frame (flags 0, not above the
  frame size limit, within both receive windows, on an open stream that has received its
  headers and has no content-length to check, with no header block being gathered), it
  becomes a ``DataReceived`` event directly; any other frame goes through h2's own
  ``FrameBuffer`` and ``_receive_frame``, with h2's error handling (GOAWAY, then the exception).

Everything else -- and everything when mitmproxy's ``proxy_debug`` gives h2 a real logger --
is hyper-h2's own code.  ``BufferedH2Connection`` (windows, buffering, splitting) sits above
and is unchanged: its ``super()`` calls reach the fast path.

``tests/test_intercept_h2fast.py`` runs random operation sequences and random byte streams
through pairs of connections, one with and one without the fast path, and checks that both
agree on every event, every byte sent, every window and every stream and connection state.
Written for h2 4.x (the version mitmproxy 12 pins); :func:`accelerate` leaves a connection as it
is when it is not exactly mitmproxy's ``BufferedH2Connection`` or h2 lacks a detail it relies on.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.stream
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamState
from hyperframe.exceptions import InvalidPaddingError

_FRAME_HEADER = 9
_STREAM_ID_MASK = 0x7FFFFFFF
_OPEN_CONNECTION = (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)
#: the stream states in which h2 lets a DATA frame in (RECV_DATA) and out (SEND_DATA) without
#: changing the state
_RECEIVING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
_SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
_DummyLogger = h2.config.DummyLogger


class FastDataH2Connection(h2.connection.H2Connection):
    """hyper-h2's connection with DATA frames of open streams sent and received directly."""

    def send_data(
        self,
        stream_id: int,
        data: bytes | memoryview,
        end_stream: bool = False,
        pad_length: Any = None,
    ) -> None:
        size = len(data)
        stream = self.streams.get(stream_id)
        if (
            stream is None
            or end_stream
            or pad_length is not None
            or not 0 < size <= self.max_outbound_frame_size
            or size > self.outbound_flow_control_window
            or size > stream.outbound_flow_control_window
            or stream.state_machine.state not in _SENDING
            or self.state_machine.state not in _OPEN_CONNECTION
            or self.config.logger.__class__ is not _DummyLogger
        ):
            super().send_data(stream_id, data, end_stream, pad_length)
            return
        out = self._data_to_send
        out += size.to_bytes(3)  # length; type 0 (DATA) and flags 0 follow
        out += (stream_id & _STREAM_ID_MASK).to_bytes(6)
        out += data
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size

    def receive_data(self, data: Any) -> list[h2.events.Event]:
        if self.config.logger.__class__ is not _DummyLogger:
            return super().receive_data(data)
        buffer = self.incoming_buffer
        buffer.add_data(data)  # outside the try, as in h2: a bad preface is raised as it is
        buffer.max_frame_size = self.max_inbound_frame_size
        connection_window = self._inbound_flow_control_window_manager
        events: list[h2.events.Event] = []
        try:
            while True:
                raw = buffer._data  # re-read after h2's own path: no reliance on how h2 trims it
                stream, size = self._next_plain_data(raw, buffer.max_frame_size)
                if (
                    stream is None
                    or buffer._headers_buffer
                    or size > connection_window.current_window_size
                    or size > stream._inbound_window_manager.current_window_size
                    or self.state_machine.state not in _OPEN_CONNECTION
                ):
                    frame = next(buffer, None)
                    if frame is None:
                        return events
                    events.extend(self._receive_frame(frame))
                    continue
                connection_window.window_consumed(size)
                stream._inbound_window_manager.window_consumed(size)
                stream._actual_content_length += size
                event = h2.events.DataReceived(stream_id=stream.stream_id)
                with memoryview(raw) as view:  # one copy; released before the del
                    event.data = view[_FRAME_HEADER : _FRAME_HEADER + size].tobytes()
                event.flow_controlled_length = size
                events.append(event)
                del raw[: _FRAME_HEADER + size]
        except InvalidPaddingError as e:
            self._terminate_connection(ErrorCodes.PROTOCOL_ERROR)
            msg = "Received frame with invalid padding."
            raise h2.exceptions.ProtocolError(msg) from e
        except h2.exceptions.ProtocolError as e:
            self._terminate_connection(e.error_code)
            raise

    def _next_plain_data(
        self, raw: bytearray, max_frame_size: int
    ) -> tuple[h2.stream.H2Stream | None, int]:
        """The stream and size of the buffer's first frame if it is complete, DATA with flags
        0 and 1..``max_frame_size`` bytes, on a stream h2 would let it in without a check
        that can fail: open for receiving, headers received, no content-length."""
        if len(raw) < _FRAME_HEADER or raw[3] or raw[4]:
            return None, 0
        size = int.from_bytes(raw[0:3])
        if not 0 < size <= max_frame_size or len(raw) < _FRAME_HEADER + size:
            return None, 0
        stream = self.streams.get(int.from_bytes(raw[5:9]) & _STREAM_ID_MASK)
        if (
            stream is None
            or stream.state_machine.state not in _RECEIVING
            or not stream.state_machine.headers_received
            or stream._expected_content_length is not None
        ):
            return None, 0
        return stream, size


#: ``fast_class(base)`` per base class, so each base gets one subclass however many connections
_FAST_CLASSES: dict[type[h2.connection.H2Connection], type[h2.connection.H2Connection]] = {}


def fast_class(base: type[h2.connection.H2Connection]) -> type[h2.connection.H2Connection]:
    """``base`` (mitmproxy's ``BufferedH2Connection``) over :class:`FastDataH2Connection`: the
    method resolution order puts the fast path below ``base``, so ``base``'s ``super()`` calls
    reach it.  Built here rather than named, so this module needs none of mitmproxy's private
    modules (``addon/intercept.py`` passes the class)."""
    cls = _FAST_CLASSES.get(base)
    if cls is None:
        cls = type(
            f"Fast{base.__name__}",
            (base, FastDataH2Connection),
            {"__module__": __name__, "__doc__": f"{base.__name__} with DATA frames fast."},
        )
        _FAST_CLASSES[base] = cls
    return cls


def _supported(conn: h2.connection.H2Connection) -> bool:
    """The h2 internals the fast path reads are there (h2 4.x)."""
    buffer = conn.incoming_buffer
    return (
        isinstance(getattr(buffer, "_data", None), bytearray)
        and hasattr(buffer, "_headers_buffer")
        and hasattr(conn, "_inbound_flow_control_window_manager")
        and isinstance(getattr(conn, "_data_to_send", None), bytearray)
        and hasattr(h2.stream.H2Stream, "_track_content_length")
    )


def accelerate(conn: h2.connection.H2Connection, base: type[h2.connection.H2Connection]) -> bool:
    """Give ``conn`` the fast path if it is exactly a ``base``; True if it has it.  Call before
    its first byte.  A subclass of ``base`` may override what the fast path skips, so it keeps
    hyper-h2's path."""
    if conn.__class__ is not base or not _supported(conn):
        return False
    conn.__class__ = fast_class(base)
    return True
