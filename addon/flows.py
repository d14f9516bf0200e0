"""The streams of relayed connections as read-only mitmproxy flows (observe mode).

The relay hands mitmproxy a TCP flow only, so without this the console, mitmweb, ``-w`` and
every other addon's hooks would see neither the requests nor the WebSockets inside it.  For each
HTTP/2 stream the decoder core finds, :class:`FlowMirror` builds an ``HTTPFlow`` and yields the
hooks mitmproxy's own layers would trigger, in the same order:

- an ordinary request: ``requestheaders`` (when its headers are seen), ``request`` (when the
  response starts, or the stream ends), ``responseheaders``, ``response`` (when the stream
  ended with END_STREAM both ways), or ``error`` (reset, connection closed, no response);
- an RFC 8441 WebSocket: ``requestheaders``, ``request``, ``responseheaders``, ``response``,
  ``websocket_start``, ``websocket_message`` per data message, ``websocket_end`` (``error``
  for a stream that ended before its response).

The decoder keeps no HTTP bodies: a request or response that had body bytes has content
``None`` (mitmproxy's "content missing"; the tables have the byte counts), one without has
``b""``; ``flow.metadata["h2ws"]["bodies_kept"]`` is False on such flows.  Only HTTP/2 is
relayed (HTTP/1.1 goes through mitmproxy's own layers as ordinary flows), so only streams with
a stream id are mirrored.

The flows are read-only: ``live`` is false, and :mod:`.readonly` undoes what an addon changes
in a hook, with one warning per flow and hook (the bytes went through already); an injected
message is refused by the relay layer (``layers.py``).  ``flow.metadata["h2ws"]`` says
``mirror`` with the connection and stream ids, so that h2ws never records them a second time,
and ``raw_kept`` (``h2ws_keep_raw``): without the raw chunks ``h2ws extract`` reads a saved
file's mirror flows instead of their connection's bytes.  WebSocket messages carry
the payload the decoder kept (``h2ws_flow_payload``), and a long-lived flow keeps only its latest
``h2ws_flow_bytes`` of payload (``messages_dropped`` in the metadata counts the others): the
tables, not the flows, are the complete record.  :class:`HookQueue` triggers the hooks without
holding the relay.

Hooks are triggered by a fast path, :func:`trigger_event`, that replaces mitmproxy's
``AddonManager.trigger_event`` dispatch (a fifth of a busy relay's time); it walks the same
addons in the same order with the same arguments and error handling, and
``tests/test_addon_units.py::test_trigger_event_calls_what_mitmproxy_calls`` holds both equal.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from mitmproxy import exceptions, http, tcp
from mitmproxy import flow as mflow
from mitmproxy.hooks import Hook, UpdateHook
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.websocket import (
    WebsocketEndHook,
    WebsocketMessageHook,
    WebsocketStartHook,
)
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import CloseReason, Opcode

from h2ws.addon import readonly
from h2ws.addon.intercept import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from h2ws.analysis.records import MessageRecord, Record, StreamRecord
from h2ws.analysis.sources.mitmmodel import METADATA_KEY

logger = logging.getLogger(__name__)

#: the close codes for an ending without a close frame (wsproto's: 1005 and 1006)
_NO_STATUS = CloseReason.NO_STATUS_RCVD
_ABNORMAL = CloseReason.ABNORMAL_CLOSURE
_OPCODES = {"text": Opcode.TEXT, "binary": Opcode.BINARY}


def _headers(header_json: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """Regular headers from a row's JSON header list (pseudo-headers are the request line)."""
    if not header_json:
        return ()
    pairs = json.loads(header_json)
    return tuple(
        (str(n).encode("utf-8", "surrogateescape"), str(v).encode("utf-8", "surrogateescape"))
        for n, v in pairs
        if not str(n).startswith(":")
    )


#: mitmproxy logs an addon's failing hook under this name; so do we, for the same failures.
_addon_logger = logging.getLogger("mitmproxy.addonmanager")


async def trigger_event(chain: Iterable[object], hook: Hook) -> None:
    """``AddonManager.trigger_event(hook)`` over ``chain`` (``master.addons.chain``), cheaper.

    Every mirrored WebSocket message is a hook for every loaded addon, and mitmproxy's own
    dispatch costs two generators and a context manager per addon and hook: profiling a busy
    relay put it at a fifth of the proxy's time, more than decoding.  This walks the same
    addons in the same order (each addon, then its ``addons`` depth first, looked up as the
    walk reaches them, so a script reloaded meanwhile is seen), calls the same hook functions
    with the same arguments, awaits the awaitable ones, skips a module that has the hook's
    name, stops at ``AddonHalt``, and logs any other exception of an addon as mitmproxy does
    ("Addon error") and goes on with the next addon.  A fast path: the test
    ``test_trigger_event_calls_what_mitmproxy_calls`` runs both on the same addons.
    """
    name = hook.name
    args: list[object] | None = None
    for top in chain:
        try:
            stack = [top]
            while stack:
                addon = stack.pop()
                func = getattr(addon, name, None)
                if func:
                    if callable(func):
                        if args is None:
                            args = hook.args()
                        res = func(*args)
                        if res is not None and inspect.isawaitable(res):
                            await res
                    elif not isinstance(func, types.ModuleType):
                        raise exceptions.AddonManagerError(  # type: ignore[no-untyped-call]
                            f"Addon handler {name} ({addon}) not callable"
                        )
                if hasattr(addon, "addons"):
                    stack.extend(reversed(list(addon.addons)))
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception as exc:
            _addon_logger.error(f"Addon error: {exc}", exc_info=True)


@dataclass(slots=True, frozen=True)
class Step:
    """One hook of a mirrored flow, and the change to the flow that comes just before it.

    Changes are applied when the hook is triggered, not when the chunk is decoded: a chunk may
    complete many messages, and each ``websocket_message`` hook must see its own message as
    ``messages[-1]`` (and ``requestheaders`` no response yet), as with mitmproxy's own layer.
    """

    hook: commands.StartHook
    change: Callable[[], None] | None = None
    #: a ``websocket_message`` that may be shed when the hooks fall behind the relay
    droppable: bool = False

    def apply(self) -> commands.StartHook:
        if self.change is not None:
            self.change()
        return self.hook

    def drop(self) -> None:
        flow = self.hook.args()[0]
        meta = flow.metadata.setdefault(METADATA_KEY, {})
        meta["messages_dropped"] = meta.get("messages_dropped", 0) + 1


class HookQueue:
    """Triggers the mirrored flows' hooks off the relay's path: in order per connection, in
    a task of its own, while the relay goes on.

    mitmproxy's own WebSocket layer waits for each ``websocket_message`` hook before it
    forwards the message, because an addon may change or drop it.  Mirrored flows are
    read-only (the bytes went through already), so nothing needs to wait; and on a relayed
    HTTP/2 connection all its WebSockets share one layer, so waiting would stall every stream
    of the connection for each message of any.  When the hooks fall more than ``max_backlog``
    steps behind, message hooks are shed (counted in ``messages_dropped``): the flows are a
    view, the tables are the record.

    mitmproxy follows every hook with an ``update`` hook (another pass over every addon) that
    views such as mitmweb refresh on.  Lifecycle hooks get theirs at once; a message hook only
    marks its flow, and the marked flows get one ``update`` every ``update_interval`` seconds:
    what a screen needs, at a fraction of the cost per message.
    """

    def __init__(
        self,
        trigger: Callable[[Hook], Awaitable[None]],
        max_backlog: int = 2000,
        update_interval: float = 0.1,
    ) -> None:
        #: triggers one hook on every addon (``AddonManager.trigger_event``)
        self.trigger = trigger
        self.max_backlog = max_backlog
        self.update_interval = update_interval
        self.dropped = 0
        self._stale: dict[str, mflow.Flow] = {}
        self._update_due = False
        self._queues: dict[str, deque[Step]] = {}
        self._running: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def put(self, key: str, steps: list[Step]) -> None:
        if not steps:
            return
        queue = self._queues.setdefault(key, deque())
        for step in steps:
            if step.droppable and len(queue) >= self.max_backlog:
                step.drop()
                if not self.dropped:
                    logger.warning(
                        "h2ws: mirrored WebSocket hooks fall behind the relay; message hooks "
                        "are shed (flow metadata messages_dropped; the tables are complete)"
                    )
                self.dropped += 1
                continue
            queue.append(step)
        if key not in self._running:
            # Marked before the task exists: with an eager task factory it may run (and end)
            # inside create_task.
            self._running.add(key)
            task = asyncio.get_running_loop().create_task(self._drain(key, queue))
            if not task.done():
                self._tasks[key] = task

    def _schedule_update(self) -> None:
        if not self._update_due:
            self._update_due = True
            loop = asyncio.get_running_loop()
            loop.call_later(self.update_interval, lambda: loop.create_task(self._update()))

    async def _update(self) -> None:
        self._update_due = False
        flows, self._stale = list(self._stale.values()), {}
        if flows:
            try:
                await self.trigger(UpdateHook(flows))
            except Exception as exc:
                logger.warning(f"h2ws: update hook of mirrored flows: {exc!r}")

    async def wait(self, key: str) -> None:
        """Returns once every hook put for ``key`` so far has run."""
        task = self._tasks.get(key)
        if task is not None:
            await asyncio.shield(task)

    async def _drain(self, key: str, queue: deque[Step]) -> None:
        try:
            while queue:
                step = queue.popleft()
                try:
                    hook = step.apply()
                    flow = hook.args()[0]
                    snapshot = readonly.before(hook.name, flow)
                    try:
                        await self.trigger(hook)
                    finally:
                        readonly.after(snapshot)
                    if step.droppable:
                        self._stale[flow.id] = flow
                        self._schedule_update()
                    else:
                        self._stale.pop(flow.id, None)
                        await self.trigger(UpdateHook([flow]))
                except Exception as exc:  # addons' own errors are logged by mitmproxy
                    logger.warning(f"h2ws: {step.hook.name} hook of a mirrored flow: {exc!r}")
        finally:
            self._running.discard(key)
            self._tasks.pop(key, None)
            if not queue and self._queues.get(key) is queue:
                del self._queues[key]


@dataclass(slots=True)
class _Mirrored:
    flow: http.HTTPFlow
    stream: StreamRecord
    websocket: bool
    requested: bool = False
    responded: bool = False
    started: bool = False
    closed: bool = False
    kept_bytes: int = 0
    #: changes held back until the flow's end hook (the close frame's facts)
    pending: list[Callable[[], None]] = field(default_factory=list)


def _drop_oldest(mirrored: _Mirrored, messages: list[WebSocketMessage], max_bytes: int) -> None:
    """Bounds a long-lived mirrored flow: the oldest messages go (the latest always stays), and
    the flow's metadata counts them, so the console or a flow file shows that some are gone."""
    dropped = 0
    while mirrored.kept_bytes > max_bytes and len(messages) - dropped > 1:
        mirrored.kept_bytes -= len(messages[dropped].content)
        dropped += 1
    del messages[:dropped]
    meta = mirrored.flow.metadata[METADATA_KEY]
    meta["messages_dropped"] = meta.get("messages_dropped", 0) + dropped


def _content(body_bytes: int) -> bytes | None:
    """A body h2ws did not keep: mitmproxy's "content missing" (None), or empty if it was."""
    return b"" if body_bytes == 0 else None


#: the stream kinds mirrored (``connect`` tunnels and pushes are not requests of the client)
_MIRRORED_KINDS = ("http", "websocket")


class FlowMirror:
    """The mirrored flows of all relayed connections, by (conn id, stream id)."""

    def __init__(self, max_bytes: int = 0, raw_kept: bool = False) -> None:
        self._flows: dict[tuple[str, int], _Mirrored] = {}
        #: payload bytes a flow keeps; older messages are dropped beyond it (0: keep all)
        self.max_bytes = max_bytes
        #: ``h2ws_keep_raw``: the TCP flows keep their chunks (saved in each flow's metadata)
        self.raw_kept = raw_kept

    def __len__(self) -> int:
        return len(self._flows)

    def hooks_for(
        self,
        tcp_flow: tcp.TCPFlow,
        conn_id: str,
        open_streams: Iterable[StreamRecord],
        records: Iterable[Record],
    ) -> list[Step]:
        """The hooks to trigger, in order, for what one chunk of ``tcp_flow`` revealed.

        ``open_streams``: the connection's streams still open after the chunk; ``records``:
        what decoding the chunk emitted (a stream that opened and closed within one chunk is
        only in there).
        """
        records = list(records)
        out: list[Step] = []
        candidates = [s for s in open_streams if s.kind in _MIRRORED_KINDS]
        candidates += [
            r for r in records if isinstance(r, StreamRecord) and r.kind in _MIRRORED_KINDS
        ]
        for stream in candidates:
            if stream.stream_id is None:
                continue
            key = (conn_id, stream.stream_id)
            mirrored = self._flows.get(key)
            if mirrored is None:
                mirrored = self._flows[key] = self._new_flow(tcp_flow, stream, self.raw_kept)
                out.append(Step(HttpRequestHeadersHook(mirrored.flow)))
                if mirrored.websocket:  # no body: the request is complete with its headers
                    out += self._request(mirrored)
            if not mirrored.responded and stream.status is not None:
                out += self._request(mirrored) + self._respond(mirrored, stream)
        for record in records:
            if isinstance(record, MessageRecord) and record.stream_id is not None:
                mirrored = self._flows.get((conn_id, record.stream_id))
                if mirrored is not None and mirrored.started:
                    out += self._message(mirrored, record, self.max_bytes)
            elif isinstance(record, StreamRecord) and record.stream_id is not None:
                mirrored = self._flows.pop((conn_id, record.stream_id), None)
                if mirrored is not None:
                    out += self._request(mirrored) + self._end(mirrored, record)
        return out

    def close_connection(self, conn_id: str) -> list[Step]:
        """The connection ended without a row for some mirrored stream (decoder failure)."""
        out: list[Step] = []
        for key in [k for k in self._flows if k[0] == conn_id]:
            mirrored = self._flows.pop(key)
            out += self._request(mirrored) + self._end(mirrored, mirrored.stream)
        return out

    # ------------------------------------------------------------------------------ steps

    @staticmethod
    def _new_flow(tcp_flow: tcp.TCPFlow, stream: StreamRecord, raw_kept: bool) -> _Mirrored:
        server = tcp_flow.server_conn
        host, port = (server.address[0], server.address[1]) if server.address else ("", 0)
        ts = stream.ts_open or 0.0
        authority = stream.authority or ""
        websocket = stream.kind == "websocket"
        request = http.Request(
            host=str(host),
            port=int(port),
            method=(stream.method or ("CONNECT" if websocket else "GET")).encode(),
            scheme=(stream.scheme or "https").encode(),
            authority=authority.encode("utf-8", "surrogateescape"),
            path=(stream.path or "/").encode("utf-8", "surrogateescape"),
            http_version=b"HTTP/2.0",
            headers=_headers(stream.request_headers),
            content=b"" if websocket else None,  # as mitmproxy's at requestheaders
            trailers=None,
            timestamp_start=ts,
            timestamp_end=ts if websocket else None,
        )
        flow = readonly.mirror_flow(tcp_flow.client_conn, server)
        flow.request = request
        flow.metadata[METADATA_KEY] = {
            "mirror": True,
            "conn_id": tcp_flow.client_conn.id,
            "stream_id": stream.stream_id,
            "protocol": stream.protocol,
            "tcp_flow": tcp_flow.id,
            "raw_kept": raw_kept,
        }
        if not websocket:
            flow.metadata[METADATA_KEY]["bodies_kept"] = False
        return _Mirrored(flow, stream, websocket)

    @staticmethod
    def _request(mirrored: _Mirrored) -> list[Step]:
        """The ``request`` hook, once: the request body (if any) has gone by when the response
        starts or the stream ends."""
        if mirrored.requested:
            return []
        mirrored.requested = True
        flow, stream = mirrored.flow, mirrored.stream
        if mirrored.websocket:
            return [Step(HttpRequestHook(flow))]
        content = _content(stream.bytes_c2s)
        ts = stream.ts_response or stream.ts_close or stream.ts_open

        def complete() -> None:
            flow.request.data.content = content
            flow.request.timestamp_end = ts

        return [Step(HttpRequestHook(flow), complete)]

    @staticmethod
    def _respond(mirrored: _Mirrored, stream: StreamRecord) -> list[Step]:
        mirrored.responded = True
        flow = mirrored.flow
        ts = stream.ts_response or stream.ts_open or 0.0
        response = http.Response(
            http_version=b"HTTP/2.0",
            status_code=stream.status or 0,
            reason=b"",
            headers=_headers(stream.response_headers),
            content=b"" if mirrored.websocket else None,
            trailers=None,
            timestamp_start=ts,
            timestamp_end=ts if mirrored.websocket else None,
        )

        def set_response() -> None:
            flow.response = response

        steps = [Step(HttpResponseHeadersHook(flow), set_response)]
        if not mirrored.websocket:
            return steps  # ``response`` when the stream ends (``_end``)
        if not stream.ws_accepted:
            return [*steps, Step(HttpResponseHook(flow))]
        mirrored.started = True

        def set_websocket() -> None:
            # As mitmproxy does: before the response hook, so addons see a WebSocket follows.
            flow.websocket = WebSocketData()

        return [*steps, Step(HttpResponseHook(flow), set_websocket), Step(WebsocketStartHook(flow))]

    @staticmethod
    def _message(mirrored: _Mirrored, record: MessageRecord, max_bytes: int) -> list[Step]:
        flow = mirrored.flow
        opcode = _OPCODES.get(record.opcode)
        from_client = record.direction == "c2s"
        if opcode is not None:
            message = WebSocketMessage(opcode, from_client, record.payload or b"", record.ts_last)

            def append() -> None:
                assert flow.websocket is not None
                messages = flow.websocket.messages
                messages.append(message)
                mirrored.kept_bytes += len(message.content)
                if max_bytes and mirrored.kept_bytes > max_bytes and len(messages) > 1:
                    _drop_oldest(mirrored, messages, max_bytes)

            return [Step(WebsocketMessageHook(flow), append, droppable=True)]
        if record.opcode == "close" and not mirrored.closed:
            mirrored.closed = True
            close_code = record.close_code if record.close_code is not None else _NO_STATUS
            close_reason = record.close_reason or ""
            ts = record.ts_last

            def close() -> None:
                assert flow.websocket is not None
                ws = flow.websocket
                ws.closed_by_client = from_client
                ws.close_code = close_code
                ws.close_reason = close_reason
                ws.timestamp_end = ts

            # mitmproxy's model has no message for a close frame: its facts go with the end.
            mirrored.pending.append(close)
        return []  # ping and pong: no messages for control frames in mitmproxy's model

    @staticmethod
    def _end(mirrored: _Mirrored, stream: StreamRecord) -> list[Step]:
        flow = mirrored.flow
        pending = list(mirrored.pending)
        if not mirrored.websocket:
            return FlowMirror._end_request(mirrored, stream)

        def finish() -> None:
            for change in pending:
                change()
            flow.metadata[METADATA_KEY]["stream_end"] = stream.stream_end
            ws = flow.websocket
            if ws is not None and ws.close_code is None:
                # No close frame: the stream was reset or cut short.
                ws.close_code = _ABNORMAL
                ws.close_reason = stream.stream_end or ""
                ws.timestamp_end = stream.ts_close
                flow.error = mflow.Error(
                    f"stream ended without a close frame: {stream.stream_end}",
                    stream.ts_close or time.time(),
                )
            elif ws is None and flow.response is None:
                flow.error = mflow.Error(
                    f"stream ended before the response: {stream.stream_end}",
                    stream.ts_close or time.time(),
                )

        if mirrored.started:
            return [Step(WebsocketEndHook(flow), finish)]
        if not mirrored.responded:
            return [Step(HttpErrorHook(flow), finish)]
        return []

    @staticmethod
    def _end_request(mirrored: _Mirrored, stream: StreamRecord) -> list[Step]:
        """An ordinary request's end: ``response`` when both sides ended the stream, as
        mitmproxy's own layer does, else ``error``."""
        flow = mirrored.flow
        complete = mirrored.responded and stream.stream_end == "end_stream"
        content = _content(stream.bytes_s2c)

        def finish() -> None:
            flow.metadata[METADATA_KEY]["stream_end"] = stream.stream_end
            if flow.response is not None:
                flow.response.data.content = content
                flow.response.timestamp_end = stream.ts_close
            if not complete:
                when = "before the response" if flow.response is None else "mid-response"
                flow.error = mflow.Error(
                    f"stream ended {when}: {stream.stream_end}", stream.ts_close or time.time()
                )

        hook = HttpResponseHook(flow) if complete else HttpErrorHook(flow)
        return [Step(hook, finish)]
