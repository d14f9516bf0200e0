"""mitmproxy flow files as a source: every row a flow file gives.

A mitmproxy flow file (``mitmdump -w flows.mitm``) holds two kinds of flows that matter here:

- **TCP flows** of the connections the h2ws addon relayed byte for byte (observe mode).  With
  ``h2ws_keep_raw=true`` their ``messages`` are the raw chunks, both directions, with mitmproxy's
  receive timestamps: they become chunk events and go through the same decoder core as a capture.
- **HTTP flows** that mitmproxy handled itself (its HTTP/1.1 and HTTP/2 layers, its WebSocket
  relay — the HTTP/1.1 WebSocket baseline).  Their bytes are gone; what is left is mitmproxy's
  model of them.  :class:`~h2ws.analysis.sources.mitmflows.HttpFlowRecorder` turns that model
  into rows of the same tables.  The live addon calls the very same class from its hooks, so
  that a flow file and the live run that wrote it give the same tables.

One job: read the file (:func:`flow_records`, :func:`flow_events`); what is read from
mitmproxy's objects is :mod:`.mitmmodel`'s, the HTTP rows :mod:`.mitmflows`'.

mitmproxy is an optional dependency (``pip install h2ws[live]``): it is imported only when a flow
file is read.  The decoder core never imports this module.

Diagnostic codes (layer ``capture`` unless said otherwise):

- ``not_a_flow_file`` (error): the file cannot be read as mitmproxy flows (or mitmproxy is not
  installed); ``flow_file_truncated`` (warning): it ends inside a flow; ``flow_unreadable``
  (error): one flow that mitmproxy cannot load (or whose model is damaged) was skipped, the
  flows after it were read.
- ``flowfile_no_raw`` (warning): a relayed connection was saved without its raw chunks
  (``h2ws_keep_raw=false``); it cannot be decoded again from the file.
- ``connection_error`` (tcp, warning): mitmproxy reported an error on the connection.
- ``hooks_recorded`` (http1, info): the connection was relayed by mitmproxy's own HTTP layer,
  so its rows come from mitmproxy's model: WebSocket fragments, ``wire_length``, ``compressed``,
  ping/pong and the answering close frame are not observed, byte counts are payload bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h2ws.analysis.core.chunks import (
    ChunkEvent,
)
from h2ws.analysis.core.diagnostics import diagnostic
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import (
    ConnectionRecord,
    DiagnosticRecord,
    Record,
)
from h2ws.analysis.sources.mitmflows import HttpFlowRecorder
from h2ws.analysis.sources.mitmmodel import h2ws_meta, is_mirror, tcp_flow_events
from h2ws.analysis.sources.pipeline import Pipeline

if TYPE_CHECKING:
    from collections import Counter

    from mitmproxy import http

_TNETSTRING_HEAD = re.compile(rb"^(\d{1,12}):")


def is_flow_file(path: str | Path) -> bool:
    """True when ``path`` starts like a mitmproxy flow file (a tnetstring dictionary).

    Decided from the first bytes, without mitmproxy: a pcap or pcapng file never starts with
    ``<digits>:``, and the first flow of a flow file is a dictionary (its payload ends in ``}``).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            match = _TNETSTRING_HEAD.match(head)
            if not match:
                return False
            f.seek(match.end() + int(match.group(1)))
            return f.read(1) == b"}"
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------ flow files


def _read_flows(path: Path) -> Iterator[Any]:
    """Flows of the file, in file order; problems become one diagnostic, never an exception.

    This is the loop of mitmproxy's ``FlowReader.stream`` (mitmproxy/io/io.py) written out with
    its parts (``tnetstring.load``, ``compat.migrate_flow``, ``Flow.from_state``) so that one
    damaged flow -- mitmproxy's state loading raises ``KeyError``, ``AssertionError``, ... on a
    mutated file -- is one ``flow_unreadable`` diagnostic and the flows after it are still read.
    A file whose framing (tnetstring) breaks stops there: nothing after it can be found again.
    HAR files (``{``) go through ``FlowReader.stream`` itself.
    """
    try:
        from mitmproxy import flow, io
        from mitmproxy.io import compat, tnetstring
    except ImportError:
        yield diagnostic(
            None,
            "capture",
            "error",
            "not_a_flow_file",
            "reading mitmproxy flow files needs mitmproxy (h2ws[live])",
        )
        return
    try:
        with open(path, "rb") as f:
            head = f.peek(4) if hasattr(f, "peek") else b""
            if head.startswith((b"{", b"\xef\xbb\xbf{")):
                try:
                    yield from io.FlowReader(f).stream()
                except Exception as exc:  # a damaged file is a diagnostic
                    yield diagnostic(
                        None, "capture", "error", "not_a_flow_file", f"{path.name}: {exc!r}"
                    )
                return
            index = 0
            while True:
                try:
                    loaded = tnetstring.load(f)
                except (ValueError, TypeError, IndexError, RecursionError) as exc:
                    if str(exc) == "not a tnetstring: empty file":
                        return  # the end of the file, between flows
                    truncated = index > 0 and f.read(1) == b""
                    yield diagnostic(
                        None,
                        "capture",
                        "warning" if truncated else "error",
                        "flow_file_truncated" if truncated else "not_a_flow_file",
                        f"{path.name}: after flow {index}: {exc}",
                    )
                    return
                index += 1
                try:
                    if not isinstance(loaded, dict):
                        raise ValueError(f"not a flow: {type(loaded).__name__}")
                    one = flow.Flow.from_state(compat.migrate_flow(loaded))
                except Exception as exc:  # mitmproxy raises anything here
                    yield diagnostic(
                        None,
                        "capture",
                        "error",
                        "flow_unreadable",
                        f"{path.name}: flow {index} skipped: {type(exc).__name__}: {exc}"[:500],
                    )
                    continue
                yield one
    except OSError as exc:
        yield diagnostic(None, "capture", "error", "not_a_flow_file", f"{path.name}: {exc}")


def flow_events(path: str | Path) -> Iterator[ChunkEvent]:
    """The relayed connections (TCP flows) of a flow file as chunk events (``source=flowfile``).

    HTTP flows are not chunks; :func:`flow_records` handles both kinds.
    """
    path = Path(path)
    for flow in _read_flows(path):
        if isinstance(flow, DiagnosticRecord):
            yield flow
        elif getattr(flow, "type", None) == "tcp":
            yield from tcp_flow_events(flow, "flowfile", path.name)


def flow_records(
    path: str | Path,
    options: DecodeOptions | None = None,
    stats: Counter[str] | None = None,
) -> Iterator[Record]:
    """Every row a flow file gives: relayed connections through the decoder core, mitmproxy's
    own HTTP flows through :class:`HttpFlowRecorder` (mirrored WebSocket flows skipped).

    ``stats["flows"]`` counts the flows read.
    """
    path = Path(path)
    options = options or DecodeOptions()
    pipeline = Pipeline(options)
    http_rows = HttpFlowRecorder(options, "flowfile", path.name)
    # Relayed connections saved without raw chunks: their streams from the mirror flows.
    mirror_rows = HttpFlowRecorder(options, "flowfile", path.name, mirrors=True)
    tcp_rows: set[str] = set()  # connections the pipeline gave a row
    for flow in _read_flows(path):
        if isinstance(flow, DiagnosticRecord):
            yield flow
            continue
        if stats is not None:
            stats["flows"] += 1
        kind = getattr(flow, "type", None)
        try:
            if kind == "tcp":
                # events first: a flow whose model is damaged fails here, before any row
                events = list(tcp_flow_events(flow, "flowfile", path.name))
            elif kind == "http":
                recorder = mirror_rows if _mirror_without_raw(flow) else http_rows
                rows = list(_replay_http(recorder, flow))
        except Exception as exc:  # one damaged flow, the others go on
            yield diagnostic(
                None,
                "capture",
                "error",
                "flow_unreadable",
                f"{path.name}: a {kind} flow skipped: {type(exc).__name__}: {exc}"[:500],
            )
            continue
        if kind == "tcp":
            if h2ws_meta(flow).get("raw_dropped") and flow.client_conn.id in mirror_rows.open_ids():
                # its mirror flows give the connection's row (with the streams they counted)
                events = [e for e in events if isinstance(e, DiagnosticRecord)]
            else:
                tcp_rows.add(flow.client_conn.id)
            for event in events:
                yield from pipeline.handle(event)
        elif kind == "http":
            yield from rows
    yield from pipeline.finish()
    yield from http_rows.finish(None, "closed")
    yield from (  # a connection saved before its mirror flows has its row already
        r
        for r in mirror_rows.finish(None, "closed")
        if not (isinstance(r, ConnectionRecord | DiagnosticRecord) and r.conn_id in tcp_rows)
    )


def _mirror_without_raw(flow: http.HTTPFlow) -> bool:
    """A mirror flow whose connection's raw chunks were not kept (``h2ws_keep_raw=false``):
    the only record of its stream.  Files from before ``raw_kept`` existed: skipped."""
    return is_mirror(flow) and h2ws_meta(flow).get("raw_kept") is False


def _replay_http(recorder: HttpFlowRecorder, flow: http.HTTPFlow) -> Iterator[Record]:
    """One saved HTTP flow through the recorder, in the order its hooks fired live."""
    yield from recorder.request(flow)
    ws = flow.websocket
    if ws is None:
        if flow.response is not None:
            yield from recorder.response(flow)
        elif flow.error is not None:
            yield from recorder.error(flow)
        return
    messages = ws.messages
    ws.messages = []
    try:
        yield from recorder.websocket_start(flow)
        for message in messages:
            ws.messages.append(message)
            yield from recorder.websocket_message(flow)
        yield from recorder.websocket_end(flow)
    finally:
        ws.messages = messages


__all__ = ["flow_events", "flow_records", "is_flow_file"]
