"""Intercept mode's tables decoded in a process of their own: the proxy only copies bytes.

Why: in intercept mode every WebSocket message crosses two legs, and decoding both for the
tables (HTTP/2 framing, unmasking, a sha256 per message, a row per frame) took 15-30 % of the
proxy's one event loop -- the thread every connection waits for.  Here mitmproxy's process
writes each tapped chunk into a pipe (a header of 18 bytes and the chunk, gathered for
:data:`SEND_DELAY` into one ``os.writev``), and a child Python (``python -m
h2ws.addon.legworker``) runs the same :class:`~h2ws.addon.recorder.LiveDecoders` and
:class:`~h2ws.addon.recorder.TableWriter` as the proxy would, on another CPU.

The proxy never waits for the child:

- the pipe is non-blocking; what it does not take at once waits in the proxy's memory, at most
  :data:`BACKLOG_BYTES`.  Beyond that the chunk is not recorded: the child is told its length
  (a gap, as in a capture that lost packets: the connection's row says ``bytes missing``, and its
  decoder carries on as far as the bytes allow), and the proxy logs one line;
- if the child stops, the proxy logs one line and intercept mode's tables stop; the relay
  does not notice.

The child ends when the pipe does -- at mitmproxy's shutdown, which waits for it to write its
last rows (at most :data:`STOP_SECONDS`), and also when mitmproxy is killed: the rows still in
the pipe are then written too.  It ignores SIGINT, so Ctrl-C in a terminal (which signals the
whole process group; the child has a group of its own as well) ends it through mitmproxy's
shutdown, with the rows complete.

Wire format, parent to child: frames of ``kind`` (1 byte), ``length`` (4 bytes, big-endian) and
``length`` bytes: :data:`CONTROL` frames carry a pickled tuple (options, a connection opened or
closed, a gap; the child trusts its parent), :data:`CHUNK` frames the connection's number, the
direction, the timestamp and the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from itertools import islice
from typing import Any

from h2ws.addon.recorder import LiveDecoders, TableWriter
from h2ws.analysis.core.chunks import ConnectionInfo, TlsInfo
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import Direction, PayloadPolicy, Record

logger = logging.getLogger(__name__)

#: bytes the proxy holds for a child that does not keep up, before chunks become gaps
BACKLOG_BYTES = 64 * 2**20
#: how long mitmproxy's shutdown waits for the child's last rows
STOP_SECONDS = 60.0
#: how long a change of the table options waits to hand the child what the proxy holds
HANDOVER_SECONDS = 5.0
#: the proxy gathers chunks for this long before it writes them: each write wakes the child,
#: and waking it for every event-loop turn cost more CPU than the decoding (on 2 shared CPUs)
SEND_DELAY = 0.02
#: from this many bytes waiting, the proxy writes at once
WRITE_NOW_BYTES = 4 * 2**20

CONTROL = 0
CHUNK = 1
_HEAD = struct.Struct(">BI")
#: kind, length, connection number, flags (bit 0: s2c, bit 1: ``wire``), timestamp
_CHUNK = struct.Struct(">BIIBd")
_CHUNK_FIELDS = _CHUNK.size - _HEAD.size
_DIRECTIONS: tuple[Direction, Direction] = ("c2s", "s2c")
#: os.writev takes at most IOV_MAX (1024 on Linux) buffers at a time
_IOV = 1024
#: the pipe's size, asked for (Linux allows an unprivileged process 1 MiB); the default 64 KiB
#: made large messages a write call (and an event-loop wake-up) per 64 KiB
PIPE_BYTES = 2**20


class LegWorker:
    """The proxy's side: the same calls as :class:`~h2ws.addon.legs.LocalLegs`, sent to the
    child.  Runs on mitmproxy's event loop (``tap`` is called inside its layers)."""

    def __init__(
        self,
        out_dir: str,
        fmt: str,
        options: DecodeOptions,
        payload: PayloadPolicy,
        flush_interval: float,
        *,
        backlog_bytes: int = BACKLOG_BYTES,
    ) -> None:
        self.backlog_bytes = backlog_bytes
        self.failed: str | None = None
        self._refs: dict[str, int] = {}
        self._next_ref = 0
        self._pending: deque[bytes | memoryview] = deque()
        self._pending_bytes = 0
        self._scheduled = False
        self._writer_added = False
        self._warned_backlog = False
        #: set by ``stop``: a write still scheduled must not touch the closed pipe's fd
        self._stopped = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "h2ws.addon.legworker", out_dir, fmt],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C in a terminal is mitmproxy's to handle, not the child's
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        with contextlib.suppress(OSError, AttributeError):  # Linux only; else the default
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._control(("start", options, payload, flush_interval))

    @property
    def pid(self) -> int:
        return self._proc.pid

    # ------------------------------------------------------------------------ the legs' calls

    def open(self, info: ConnectionInfo, tls: TlsInfo | None) -> None:
        ref = self._refs[info.conn_id] = self._next_ref
        self._next_ref += 1
        self._control(("open", ref, info, tls))

    def feed(self, conn_id: str, direction: Direction, data: bytes, ts: float, wire: bool) -> None:
        ref = self._refs.get(conn_id)
        if ref is None or self.failed or self._stopped:
            return
        if self._pending_bytes + len(data) > self.backlog_bytes:
            self._gap(ref, direction, ts, len(data))
            return
        if type(data) is not bytes:  # held until written: never a buffer the proxy reuses
            data = bytes(data)
        self._pending.append(
            _CHUNK.pack(CHUNK, _CHUNK_FIELDS + len(data), ref, (direction == "s2c") | wire << 1, ts)
        )
        self._pending.append(data)
        self._pending_bytes += _CHUNK.size + len(data)
        self._schedule()

    def close(self, conn_id: str, ts: float, cause: str, error: str | None) -> None:
        ref = self._refs.pop(conn_id, None)
        if ref is not None:
            self._control(("close", ref, ts, cause, error))

    def set_options(
        self, options: DecodeOptions, payload: PayloadPolicy, flush_interval: float
    ) -> None:
        """For connections opened from now on (and the payload of rows not yet written)."""
        self._control(("options", options, payload, flush_interval))

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Send what waits, end the pipe, and wait for the child's last rows; all within
        ``timeout`` seconds (0: at most :data:`HANDOVER_SECONDS` to hand the rest over, then
        the child finishes on its own)."""
        deadline = time.monotonic() + (timeout or HANDOVER_SECONDS)
        if self._stopped:
            return
        if self._writer_added:
            self._remove_writer()
        if not self.failed:
            try:
                if not self._write_all(deadline):
                    logger.warning(
                        f"h2ws: the table worker did not take the last {self._pending_bytes} "
                        f"bytes within {timeout or HANDOVER_SECONDS} s; they are not in the tables"
                    )
            except OSError as exc:
                self._fail(exc)
        self._pending.clear()
        self._pending_bytes = 0
        self._stopped = True
        with contextlib.suppress(OSError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        if not timeout:
            return
        try:
            code = self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning(
                f"h2ws: the table worker (pid {self._proc.pid}) is still writing after "
                f"{timeout:.0f} s; it finishes on its own"
            )
            return
        if code and not self.failed:
            logger.warning(f"h2ws: the table worker exited with status {code}")

    # ------------------------------------------------------------------------ sending

    def _control(self, message: tuple[Any, ...]) -> None:
        if self.failed or self._stopped:
            return
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._pending.append(_HEAD.pack(CONTROL, len(body)) + body)
        self._pending_bytes += _HEAD.size + len(body)
        self._schedule()

    def _gap(self, ref: int, direction: Direction, ts: float, length: int) -> None:
        if not self._warned_backlog:
            self._warned_backlog = True
            logger.warning(
                f"h2ws: the table worker is {self._pending_bytes} bytes behind (limit "
                f"{self.backlog_bytes}); chunks are left out of intercept mode's tables until "
                "it catches up (their connections say 'bytes missing')"
            )
        body = pickle.dumps(("gap", ref, direction, ts, length))
        self._pending.append(_HEAD.pack(CONTROL, len(body)) + body)
        self._pending_bytes += _HEAD.size + len(body)

    def _schedule(self) -> None:
        if self._scheduled or self._writer_added:
            return
        if self._pending_bytes >= WRITE_NOW_BYTES:
            self._drain()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop (tests, shutdown): write what fits now
            self._drain()
            return
        self._scheduled = True
        loop.call_later(SEND_DELAY, self._drain)

    def _drain(self) -> None:
        """Write what the pipe takes now; wait for it to be writable for the rest."""
        self._scheduled = False
        if self.failed or self._stopped:
            return
        try:
            done = self._write_some()
        except OSError as exc:
            self._fail(exc)
            return
        if done and self._writer_added:
            self._remove_writer()
        elif not done and not self._writer_added:
            try:
                asyncio.get_running_loop().add_writer(self._fd, self._drain)
                self._writer_added = True
            except RuntimeError:
                pass  # no loop: the next call writes on

    def _write_some(self) -> bool:
        """True when nothing is left to write."""
        pending = self._pending
        while pending:
            # No more buffers than the pipe can take: listing all of a long backlog for every
            # call that writes one pipe's worth cost more than the write.
            batch: list[bytes | memoryview] = []
            size = 0
            for buffer in islice(pending, _IOV):
                batch.append(buffer)
                size += len(buffer)
                if size >= PIPE_BYTES:
                    break
            try:
                written = os.writev(self._fd, batch)
            except BlockingIOError:
                return False
            self._pending_bytes -= written
            while written:
                head = pending[0]
                if len(head) <= written:
                    written -= len(head)
                    pending.popleft()
                else:
                    pending[0] = memoryview(head)[written:]
                    written = 0
        self._warned_backlog = False
        return True

    def _write_all(self, deadline: float) -> bool:
        """Write everything before ``deadline``; False if the child did not take it."""
        while not self._write_some():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([], [self._fd], [], min(left, 1.0))
        return True

    def _remove_writer(self) -> None:
        self._writer_added = False
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_writer(self._fd)

    def _fail(self, exc: OSError) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"
        self._pending.clear()
        self._pending_bytes = 0
        code = self._proc.poll()
        logger.error(
            f"h2ws: the table worker stopped ({self.failed}; exit status {code}); intercept "
            "mode's tables are no longer written, the proxy goes on"
        )


# ---------------------------------------------------------------------------------- the child


class _Child:
    """The child's side: frames in, the tables out."""

    def __init__(self, out_dir: str, fmt: str) -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self.decoders: LiveDecoders | None = None
        self.tables: TableWriter | None = None
        self.conns: dict[int, str] = {}
        self.flush_interval = 2.0
        self._buffer = bytearray()

    def take(self, data: bytes) -> None:
        """Bytes from the pipe: every complete frame in them is handled."""
        buffer = self._buffer
        buffer += data
        pos = 0
        end = len(buffer)
        view = memoryview(buffer)
        try:
            while end - pos >= _HEAD.size:
                kind, length = _HEAD.unpack_from(buffer, pos)
                stop = pos + _HEAD.size + length
                if stop > end:
                    break
                if kind == CHUNK:
                    ref, flags, ts = struct.unpack_from(">IBd", buffer, pos + _HEAD.size)
                    data = bytes(view[pos + _CHUNK.size : stop])
                    self._feed(ref, _DIRECTIONS[flags & 1], data, ts, bool(flags & 2))
                else:
                    self._control(pickle.loads(view[pos + _HEAD.size : stop]))
                pos = stop
        finally:
            view.release()
        del buffer[:pos]

    def _write(self, records: list[Record]) -> None:
        if records and self.tables is not None:
            self.tables.write(records)

    def _feed(self, ref: int, direction: Direction, data: bytes, ts: float, wire: bool) -> None:
        conn_id = self.conns.get(ref)
        if conn_id is not None and self.decoders is not None:
            self._write(self.decoders.feed(conn_id, direction, data, ts, wire))

    def _control(self, message: tuple[Any, ...]) -> None:
        what = message[0]
        if what == "start":
            _, options, payload, self.flush_interval = message
            self.decoders = LiveDecoders(options)
            self.tables = TableWriter(self.out_dir, self.fmt, payload)
            return
        decoders = self.decoders
        assert decoders is not None and self.tables is not None, "no start message"
        if what == "options":
            _, decoders.options, self.tables.payload, self.flush_interval = message
        elif what == "open":
            _, ref, info, tls = message
            self.conns[ref] = info.conn_id
            self._write(decoders.open(info, tls))
        elif what == "close":
            _, ref, ts, cause, error = message
            conn_id = self.conns.pop(ref, None)
            if conn_id is not None:
                self._write(decoders.close(conn_id, ts, cause, error))
        elif what == "gap":
            _, ref, direction, ts, length = message
            conn_id = self.conns.get(ref)
            if conn_id is not None:
                self._write(decoders.gap(conn_id, direction, ts, length))

    def flush(self) -> None:
        if self.tables is not None:
            self.tables.flush()

    def finish(self) -> None:
        if self.decoders is not None:
            self._write(self.decoders.close_all(time.time(), "capture_ended"))
        if self.tables is not None:
            self.tables.close()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ends with the pipe (see the module's doc)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    out_dir, fmt = sys.argv[1:] if argv is None else argv
    child = _Child(out_dir, fmt)
    fd = sys.stdin.fileno()
    next_flush = time.monotonic() + child.flush_interval
    try:
        while True:
            wait = max(0.0, next_flush - time.monotonic())
            if select.select([fd], [], [], wait)[0]:
                data = os.read(fd, 2**20)
                if not data:
                    break
                child.take(data)
            if time.monotonic() >= next_flush:
                child.flush()
                next_flush = time.monotonic() + child.flush_interval
    finally:
        child.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
