"""``H2wsAddon``: observe mode — relay HTTP/2 untouched, record everything into the h2ws tables.

Hooks are small and delegate: ``layers.relay_layer`` picks mitmproxy's TCP layer for HTTP/2
connections (so SETTINGS, stream ids and interleaving stay the peers' own), ``LiveDecoders``
decodes a copy of every relayed chunk with the same core as captures, ``FlowMirror`` shows
their requests and RFC 8441 WebSockets as read-only flows, ``HttpFlowRecorder`` records what
mitmproxy relays itself (the HTTP/1.1 WebSocket baseline) from its hooks, and ``TableWriter``
writes the tables incrementally.

Nothing the addon does may harm the relay: every hook catches its own failures (they become
diagnostics and log lines), and the relay never waits for more than the hook call itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from mitmproxy import connection, ctx, exceptions, http, tcp
from mitmproxy.addonmanager import Loader
from mitmproxy.hooks import Hook
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers import TCPLayer
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from h2ws.addon import intercept
from h2ws.addon.flows import FlowMirror, HookQueue, Step, trigger_event
from h2ws.addon.layers import (
    ObservedTCPLayer,
    RelayTCPLayer,
    legs_differ,
    relay_kind,
    relay_layer,
)
from h2ws.addon.legs import LegRecorder, LocalLegs
from h2ws.addon.legworker import STOP_SECONDS, LegWorker
from h2ws.addon.recorder import LiveDecoders, TableWriter
from h2ws.analysis.core.options import DecodeOptions, HeaderLimits
from h2ws.analysis.records import Direction, PayloadPolicy, Record
from h2ws.analysis.sinks.writers import FORMATS
from h2ws.analysis.sources.mitmflows import HttpFlowRecorder
from h2ws.analysis.sources.mitmmodel import (
    METADATA_KEY,
    connection_error,
    connection_info,
    end_of,
    is_mirror,
    tls_info,
)

logger = logging.getLogger(__name__)

PAYLOAD_MODES = ("none", "preview", "full")
MODES = ("intercept", "observe")


def _options_error(message: str) -> Exception:
    return exceptions.OptionsError(message)  # type: ignore[no-untyped-call]


def _wider(a: PayloadPolicy, b: PayloadPolicy) -> PayloadPolicy:
    """The policy that keeps at least what each of ``a`` and ``b`` keeps."""
    rank = {"none": 0, "preview": 1, "full": 2}
    if rank[a.mode] != rank[b.mode]:
        return a if rank[a.mode] > rank[b.mode] else b
    return PayloadPolicy(a.mode, max(a.preview_bytes, b.preview_bytes))


def _header_limit_options(limits: HeaderLimits) -> list[tuple[str, int, str]]:
    """The addon options of :class:`HeaderLimits`: name, default, what it bounds."""
    return [
        ("h2ws_max_header_block_bytes", limits.max_block_bytes, "Largest HTTP/2 header block"),
        ("h2ws_max_continuations", limits.max_continuations, "Most CONTINUATIONs in a block"),
        ("h2ws_max_header_list_bytes", limits.max_list_bytes, "Largest decoded header list"),
        ("h2ws_max_hpack_table_bytes", limits.max_table_bytes, "Cap on the HPACK table size"),
    ]


@dataclass(slots=True)
class _Conn:
    """A TCP flow being decoded."""

    conn_id: str
    tls: bool
    live: bool


class H2wsAddon:
    """mitmproxy addon: RFC 8441 relayed untouched and recorded (observe mode)."""

    def __init__(self) -> None:
        self.decoders = LiveDecoders(DecodeOptions())
        self.mirror = FlowMirror()
        self.hooks = HookQueue(self._trigger)
        self.tables: TableWriter | None = None
        self._conns: dict[str, _Conn] = {}  # by TCP flow id
        self._http: dict[bool, HttpFlowRecorder] = {}  # by flow.live
        self._flusher: asyncio.Task[None] | None = None
        self._warned_lazy = False
        # Options read for every chunk, kept here by ``configure``: reading ``ctx.options``
        # deep-copies the value, which profiling showed among the costs of each chunk.
        self._keep_raw = False
        self._flows = True
        self._intercept = True
        self._warned_h2c = False
        self.legs = LegRecorder(LocalLegs(self.decoders, self._emit))
        self._worker: LegWorker | None = None

    # ------------------------------------------------------------------------------ options

    def load(self, loader: Loader) -> None:
        # The communityid library logs 8 INFO lines of its internals per connection, which
        # mitmdump prints at its default verbosity: only its warnings are of interest.
        logging.getLogger("communityid").setLevel(logging.WARNING)
        loader.add_option(
            "h2ws_mode",
            str,
            "intercept",
            "intercept: mitmproxy's own HTTP/2 layer speaks RFC 8441 (requests stay interceptable "
            "flows, RFC 8441 WebSockets live WebSocket flows); observe: HTTP/2 connections are "
            "relayed byte for byte and mirrored into read-only flows.",
            choices=MODES,
        )
        loader.add_option(
            "h2ws_out",
            str | None,  # type: ignore[arg-type]  # mitmproxy's own addons do the same
            None,
            "Directory for the h2ws tables (connections, streams, frames, messages, "
            "diagnostics), written as datasets of part files, at most h2ws_flush_interval "
            "seconds behind. Unset: no tables.",
        )
        loader.add_option(
            "h2ws_format", str, "parquet", "Format of the h2ws tables.", choices=FORMATS
        )
        loader.add_option(
            "h2ws_payload",
            str,
            "preview",
            "How much of each WebSocket payload the messages table keeps (sha256 and length "
            "always): none, a preview of h2ws_preview_bytes, or full.",
            choices=PAYLOAD_MODES,
        )
        loader.add_option(
            "h2ws_preview_bytes", int, 256, "Payload preview length for h2ws_payload=preview."
        )
        loader.add_option(
            "h2ws_relay",
            bool,
            True,
            "Relay HTTP/2 connections byte for byte (observe mode), so RFC 8441 WebSockets "
            "work through mitmproxy. Off: mitmproxy terminates HTTP/2 itself, as without h2ws.",
        )
        loader.add_option(
            "h2ws_flows",
            bool,
            True,
            "Show the RFC 8441 WebSockets of relayed connections as read-only WebSocket flows "
            "(console, mitmweb, -w, other addons' websocket hooks). Never for replayed flows.",
        )
        loader.add_option(
            "h2ws_flow_payload",
            str,
            "full",
            "How much of each message the mirrored WebSocket flows carry.",
            choices=PAYLOAD_MODES,
        )
        loader.add_option(
            "h2ws_flow_bytes",
            int,
            4 * 2**20,
            "Payload bytes a mirrored WebSocket flow keeps; older messages are dropped beyond "
            "it (0: keep all). Keeps memory flat on long-lived WebSockets.",
        )
        loader.add_option(
            "h2ws_keep_raw",
            bool,
            False,
            "Keep the raw chunks of relayed connections in their TCP flows, so that a flow "
            "file (-w) can be analysed again with 'h2ws extract'. Off: chunks are dropped once "
            "decoded, which keeps memory flat on long-lived connections.",
        )
        loader.add_option(
            "h2ws_tcp_hooks",
            bool,
            False,
            "Trigger a tcp_message hook for every chunk of a relayed HTTP/2 connection, as "
            "mitmproxy's TCP layer does. Off: chunks go to h2ws directly, which is much faster "
            "(each hook is a task and two passes over every addon).",
        )
        loader.add_option(
            "h2ws_frames",
            bool,
            True,
            "Write one row per HTTP/2 frame (the frames table); costly on busy proxies.",
        )
        loader.add_option(
            "h2ws_redact",
            bool,
            True,
            "Replace cookie and authorization header values by their length in the tables.",
        )
        loader.add_option(
            "h2ws_max_message_bytes",
            int,
            64 * 2**20,
            "Largest WebSocket message decoded (after inflate); bounds decompression bombs.",
        )
        # HTTP/2 header block limits of h2ws's own decoding (docs/schema.md, "Limits"); over
        # one, a block is skipped with a diagnostic and the connection decodes on.  They are
        # put on mitmproxy's own HTTP/2 connections too (h2limits.py): GOAWAY there.
        limits = HeaderLimits()
        for name, default, what in _header_limit_options(limits):
            loader.add_option(
                name,
                int,
                default,
                f"{what} (h2ws's decoding, and mitmproxy's own HTTP/2 connections, "
                "refused over it; docs/schema.md).",
            )
        loader.add_option(
            "h2ws_fast_data",
            bool,
            True,
            "Send and receive plain DATA frames of open streams on mitmproxy's own HTTP/2 "
            "connections directly, not through hyper-h2's generic frame path (the same bytes "
            "and events; addon/h2fast.py). Off: hyper-h2 for every frame.",
        )
        loader.add_option(
            "h2ws_table_worker",
            bool,
            True,
            "Intercept mode: decode the legs for the tables in a process of their own, so that "
            "the proxy only copies their bytes. Off: decoded in mitmproxy's process.",
        )
        loader.add_option(
            "h2ws_flush_interval",
            int,
            2,
            "Seconds between two writes of the tables (rows are also written at shutdown).",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "h2ws_preview_bytes" in updated and opts.h2ws_preview_bytes < 0:
            raise _options_error("h2ws_preview_bytes must not be negative")
        if "h2ws_flush_interval" in updated and opts.h2ws_flush_interval < 1:
            raise _options_error("h2ws_flush_interval must be at least 1 second")
        if "h2ws_max_message_bytes" in updated and opts.h2ws_max_message_bytes < 1:
            raise _options_error("h2ws_max_message_bytes must be positive")
        for name, _, _ in _header_limit_options(HeaderLimits()):
            if name in updated and getattr(opts, name) < 1:
                raise _options_error(f"{name} must be positive")
        if "h2ws_mode" in updated:
            self._intercept = opts.h2ws_mode == "intercept"
            intercept.STATE.enabled = self._intercept
        if any(name.startswith("h2ws_") for name in updated):
            self.decoders.options = self._decode_options()  # for connections from now on
            # the same limits on mitmproxy's own HTTP/2 connections (both modes)
            intercept.STATE.header_limits = self.decoders.options.headers
            intercept.STATE.fast_data = opts.h2ws_fast_data
            self.mirror.max_bytes = max(0, opts.h2ws_flow_bytes)
            self._keep_raw = opts.h2ws_keep_raw
            self.mirror.raw_kept = opts.h2ws_keep_raw
            self._flows = opts.h2ws_flows
        if "h2ws_out" in updated or "h2ws_format" in updated:
            self._open_tables()
        if updated & {"h2ws_mode", "h2ws_out", "h2ws_format", "h2ws_table_worker"}:
            self._arrange_legs()
        else:
            if self.tables is not None and updated & {"h2ws_payload", "h2ws_preview_bytes"}:
                self.tables.payload = self._table_payload()
            if self._worker is not None and any(n.startswith("h2ws_") for n in updated):
                self._worker.set_options(
                    self._leg_options(), self._table_payload(), opts.h2ws_flush_interval
                )
        if "connection_strategy" in updated and opts.connection_strategy == "lazy":
            logger.warning(
                "h2ws: with connection_strategy=lazy the two TLS legs cannot be made to agree "
                "on HTTP/2, so HTTP/2 over TLS is terminated by mitmproxy (no RFC 8441)"
            )

    def _table_payload(self) -> PayloadPolicy:
        return PayloadPolicy(ctx.options.h2ws_payload, ctx.options.h2ws_preview_bytes)

    def _decode_options(self) -> DecodeOptions:
        opts = ctx.options
        payload = self._table_payload()
        if opts.h2ws_flows:
            payload = _wider(
                payload, PayloadPolicy(opts.h2ws_flow_payload, opts.h2ws_preview_bytes)
            )
        return DecodeOptions(
            payload=payload,
            max_message_bytes=opts.h2ws_max_message_bytes,
            # Frame rows only matter when written: without tables, no row per frame.
            frames=opts.h2ws_frames and bool(opts.h2ws_out),
            redact=opts.h2ws_redact,
            headers=HeaderLimits(
                max_block_bytes=opts.h2ws_max_header_block_bytes,
                max_continuations=opts.h2ws_max_continuations,
                max_list_bytes=opts.h2ws_max_header_list_bytes,
                max_table_bytes=opts.h2ws_max_hpack_table_bytes,
            ),
        )

    def _leg_options(self) -> DecodeOptions:
        """Intercept mode's legs feed no mirrored flows: payloads as the tables keep them."""
        return dataclasses.replace(self.decoders.options, payload=self._table_payload())

    def _arrange_legs(self) -> None:
        """Intercept mode's tables come from the bytes of each leg (``legs.py``), decoded by
        the table worker (``legworker.py``) or, with ``h2ws_table_worker`` off or when it cannot
        start, here."""
        self._stop_worker(wait=False)  # it writes its last rows on its own
        self.legs.close_all()
        self.legs = LegRecorder(LocalLegs(self.decoders, self._emit))
        recording = self._intercept and self.tables is not None
        if recording and ctx.options.h2ws_table_worker:
            opts = ctx.options
            try:
                self._worker = LegWorker(
                    os.path.expanduser(opts.h2ws_out),
                    opts.h2ws_format,
                    self._leg_options(),
                    self._table_payload(),
                    opts.h2ws_flush_interval,
                )
            except OSError as exc:
                logger.warning(f"h2ws: the table worker cannot start ({exc}); decoding here")
            else:
                self.legs = LegRecorder(self._worker)
        intercept.STATE.tap = self.legs.tap if recording else None

    def _stop_worker(self, wait: bool = True) -> None:
        if self._worker is not None:
            self._worker.stop(STOP_SECONDS if wait else 0)
            self._worker = None

    def _open_tables(self) -> None:
        if self.tables is not None:
            self.tables.close()
            self.tables = None
        out = ctx.options.h2ws_out
        if not out:
            return
        try:
            self.tables = TableWriter(
                os.path.expanduser(out), ctx.options.h2ws_format, self._table_payload()
            )
        except OSError as exc:
            raise _options_error(f"h2ws_out: cannot write to {out}: {exc}") from exc

    # ------------------------------------------------------------------------------ lifecycle

    def running(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        where = f"tables in {ctx.options.h2ws_out}" if ctx.options.h2ws_out else "no tables"
        if self._intercept:
            logger.info(f"h2ws: intercept mode (RFC 8441 in mitmproxy's HTTP/2 layer), {where}")
        else:
            mode = "relaying HTTP/2 verbatim" if ctx.options.h2ws_relay else "relay off"
            logger.info(f"h2ws: observe mode, {mode}, {where}")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(ctx.options.h2ws_flush_interval)
            if self.tables is not None:
                self.tables.flush()

    def done(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        now = time.time()
        records = self.decoders.close_all(now, "capture_ended")
        for live, recorder in self._http.items():
            # A replayed file's connections end with the file, as in ``h2ws extract``.
            records += recorder.finish(now if live else None, "capture_ended" if live else "closed")
        self._conns.clear()
        self.legs.close_all()
        intercept.STATE.tap = None
        self._stop_worker()
        self._emit(records)
        if self.tables is not None:
            self.tables.close()

    # ------------------------------------------------------------------------------ relay

    def next_layer(self, nextlayer: NextLayer) -> None:
        if not ctx.options.h2ws_relay or nextlayer.layer is not None:
            return
        try:
            layer = relay_layer(nextlayer, self._relay, h2c_only=self._intercept)
        except Exception as exc:  # a bug here must leave the connection to mitmproxy
            logger.warning(f"h2ws: layer choice failed, left to mitmproxy: {exc!r}")
            return
        if layer is None:
            if legs_differ(nextlayer.context) and not self._warned_lazy:
                self._warned_lazy = True
                logger.warning(
                    "h2ws: an HTTP/2 client could not be relayed (the server leg negotiated "
                    f"{nextlayer.context.server.alpn!r}); mitmproxy terminates such connections"
                )
            return
        nextlayer.layer = layer

    def _relay(self, context: Context) -> TCPLayer:
        """The layer that relays one HTTP/2 connection verbatim."""
        if self._intercept and not self._warned_h2c:
            self._warned_h2c = True
            logger.warning(
                "h2ws: cleartext HTTP/2 with prior knowledge (h2c) is relayed verbatim as in "
                "observe mode: mitmproxy's layers do not take it (no interception on it)"
            )
        layer: TCPLayer
        if ctx.options.h2ws_tcp_hooks:
            layer = RelayTCPLayer(context)
        else:
            layer = ObservedTCPLayer(context, self)
        assert layer.flow is not None
        layer.flow.metadata[METADATA_KEY] = {"relay": relay_kind(context)}
        return layer

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        with self._guard("tcp_start"):
            self._open(flow)

    def _open(self, flow: tcp.TCPFlow) -> _Conn:
        conn = self._conns.get(flow.id)
        if conn is None:
            source = "live" if flow.live else "flowfile"
            capture = None if flow.live else self._replayed_file()
            info = connection_info(flow.client_conn, flow.server_conn, source, capture)
            tls = tls_info(flow.client_conn)
            conn = self._conns[flow.id] = _Conn(info.conn_id, tls is not None, flow.live)
            self._emit(self.decoders.open(info, tls))
        return conn

    @staticmethod
    def _replayed_file() -> str | None:
        rfile = getattr(ctx.options, "rfile", None)
        return os.path.basename(rfile) if rfile else None

    def relayed_chunk(self, flow: tcp.TCPFlow, message: tcp.TCPMessage) -> None:
        """A chunk the relay layer has just sent on (``layers.ObservedTCPLayer``)."""
        if self._keep_raw:
            flow.messages.append(message)
        elif not self._raw_dropped(flow):
            flow.metadata.setdefault(METADATA_KEY, {})["raw_dropped"] = True
        self.hooks.put(flow.id, self._chunk(flow, message))

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        """Chunks of replayed flows (``-r``), and of relays with ``h2ws_tcp_hooks=true``."""
        self.hooks.put(flow.id, self._chunk(flow, flow.messages[-1]))
        if not self._keep_raw and len(flow.messages) > 1:
            # Keep the latest chunk: later addons' tcp_message hooks read messages[-1].
            del flow.messages[:-1]
            flow.metadata.setdefault(METADATA_KEY, {})["raw_dropped"] = True

    def _chunk(self, flow: tcp.TCPFlow, message: tcp.TCPMessage) -> list[Step]:
        with self._guard("tcp_message"):
            conn = self._conns.get(flow.id) or self._open(flow)
            direction: Direction = "c2s" if message.from_client else "s2c"
            records = self.decoders.feed(
                conn.conn_id, direction, message.content, message.timestamp, conn.tls
            )
            steps: list[Step] = []
            if conn.live and self._flows:
                # Before the tables trim the payloads (in place); a failure of the mirror must
                # not cost the tables their rows.
                with self._guard("mirror"):
                    steps = self.mirror.hooks_for(
                        flow, conn.conn_id, self.decoders.open_streams(conn.conn_id), records
                    )
            self._emit(records)
            return steps
        return []

    @staticmethod
    def _raw_dropped(flow: tcp.TCPFlow) -> bool:
        meta = flow.metadata.get(METADATA_KEY)
        return isinstance(meta, dict) and bool(meta.get("raw_dropped"))

    async def tcp_end(self, flow: tcp.TCPFlow) -> None:
        await self._tcp_closed(flow)

    async def tcp_error(self, flow: tcp.TCPFlow) -> None:
        await self._tcp_closed(flow)

    async def _tcp_closed(self, flow: tcp.TCPFlow) -> None:
        hooks_to_run: list[Step] = []
        with self._guard("tcp_end"):
            conn = self._conns.pop(flow.id, None) or self._open(flow)
            self._conns.pop(flow.id, None)
            meta = flow.metadata.setdefault(METADATA_KEY, {})
            if conn.live:
                ts, cause = time.time(), ("error" if flow.error else "closed")
                meta["ts_end"] = ts  # so that the flow file ends the connection alike
            else:
                ts_saved, cause = end_of(flow)
                ts = ts_saved if ts_saved is not None else time.time()
            error = flow.error.msg if flow.error else None
            records: list[Record] = []
            if error:
                records.append(connection_error(conn.conn_id, ts, error))
            records += self.decoders.close(conn.conn_id, ts, cause, error)
            if not self._keep_raw and flow.messages:
                flow.messages.clear()
                meta["raw_dropped"] = True
            if conn.live and self._flows:
                hooks_to_run = self.mirror.hooks_for(flow, conn.conn_id, (), records)
                hooks_to_run += self.mirror.close_connection(conn.conn_id)
            self._emit(records)
        # The mirrored flows end before their connection's tcp_end is over (``-w`` saves them).
        self.hooks.put(flow.id, hooks_to_run)
        await self.hooks.wait(flow.id)

    @staticmethod
    async def _trigger(hook: Hook) -> None:
        """Other addons see the mirrored flows as if mitmproxy's WebSocket layer made them."""
        await trigger_event(ctx.master.addons.chain, hook)

    # ------------------------------------------------------------------------------ HTTP hooks
    # Connections mitmproxy relays itself (HTTP/1.1 WebSockets, or when the legs differ).

    def _hooks_record(self, flow: http.HTTPFlow) -> bool:
        """Intercept mode records live flows from the bytes of their legs, not their hooks;
        without tables nothing is recorded (a hashed record per message, for nobody, cost
        intercept mode about 2 % of its CPU on small messages)."""
        return self.tables is not None and not (flow.live and intercept.STATE.tap is not None)

    def _recorder(self, flow: http.HTTPFlow) -> HttpFlowRecorder:
        live = bool(flow.live)
        recorder = self._http.get(live)
        if recorder is None:
            source, capture = ("live", None) if live else ("flowfile", self._replayed_file())
            recorder = self._http[live] = HttpFlowRecorder(self.decoders.options, source, capture)
        return recorder

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not self._hooks_record(flow):
            return
        with self._guard("requestheaders"):
            self._emit(self._recorder(flow).request(flow))

    def response(self, flow: http.HTTPFlow) -> None:
        if not self._hooks_record(flow):
            return
        with self._guard("response"):
            self._emit(self._recorder(flow).response(flow))

    def error(self, flow: http.HTTPFlow) -> None:
        if not self._hooks_record(flow):
            return
        with self._guard("error"):
            self._emit(self._recorder(flow).error(flow))

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        if not self._hooks_record(flow):
            return
        with self._guard("websocket_start"):
            self._emit(self._recorder(flow).websocket_start(flow))

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if is_mirror(flow) or not self._hooks_record(flow):
            return  # recorded from the bytes already (a relayed message, or a leg's)
        with self._guard("websocket_message"):
            self._emit(self._recorder(flow).websocket_message(flow))

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if not self._hooks_record(flow):
            return
        with self._guard("websocket_end"):
            self._emit(self._recorder(flow).websocket_end(flow))

    def server_disconnected(self, data: ServerConnectionHookData) -> None:
        with self._guard("server_disconnected"):
            self.legs.closed(data.server)

    def client_disconnected(self, client: connection.Client) -> None:
        with self._guard("client_disconnected"):
            self.legs.closed(client)
            recorder = self._http.get(True)
            if recorder is not None:
                ts = client.timestamp_end or time.time()
                self._emit(recorder.connection_closed(client, ts))

    # ------------------------------------------------------------------------------ helpers

    def _emit(self, records: list[Record]) -> None:
        if records and self.tables is not None:
            self.tables.write(records)

    @contextlib.contextmanager
    def _guard(self, where: str) -> Iterator[None]:
        """No exception of ours reaches mitmproxy: the proxy keeps relaying."""
        try:
            yield
        except Exception as exc:
            logger.warning(f"h2ws: {where} failed: {exc!r}", exc_info=True)
