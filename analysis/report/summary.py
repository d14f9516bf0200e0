"""``h2ws summary``: the tables of an output directory as a few readable text tables.

Only the columns shown are read (never ``payload``), so a summary of a large capture's tables
costs what its small columns cost.  Ids and counts print as integers, a missing value as ``-``.
"""

from __future__ import annotations

import os

import pandas as pd

from h2ws.analysis.sinks.reader import read_table

CONNECTION_COLUMNS = [
    "conn_id",
    "leg",
    "http_version",
    "server_addr",
    "server_port",
    "streams",
    "websockets",
    "enable_connect_protocol",
    "bytes_c2s",
    "bytes_s2c",
    "end_cause",
]
WEBSOCKET_COLUMNS = [
    "conn_id",
    "stream_id",
    "exchange",
    "authority",
    "path",
    "status",
    "ws_extensions",
    "messages_c2s",
    "messages_s2c",
    "close_cause",
    "stream_end",
]
#: what ``streams by kind`` calls each ``connections.http_version``
VERSION_NAMES = {"h2": "HTTP/2", "h2c": "h2c", "http/1.1": "HTTP/1.1"}
#: Longest diagnostic example shown; longer ones end at a word boundary with "…".
EXAMPLE_CHARS = 80


def _read(out_dir: str | os.PathLike[str], table: str, columns: list[str]) -> pd.DataFrame:
    # Arrow integers with nulls become pandas' nullable Int64 (1, <NA>), never floats (1.0, NaN).
    frame: pd.DataFrame = read_table(out_dir, table, columns).to_pandas(types_mapper=_nullable)
    return frame


def _nullable(arrow_type: object) -> object:
    import pyarrow as pa

    if isinstance(arrow_type, pa.DataType) and pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return None


def shorten(text: str, limit: int = EXAMPLE_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, "…" marking the cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def _section(title: str, frame: pd.DataFrame) -> str:
    if frame.empty:
        return f"{title}\n{'-' * len(title)}\n(none)\n"
    shown = frame.astype(object).where(frame.notna(), "-")  # <NA> and NaN alike
    body = shown.to_string(index=False)
    return f"{title}\n{'-' * len(title)}\n{body}\n"


def _over(streams: pd.DataFrame, conns: pd.DataFrame) -> pd.Series:
    """Each stream's HTTP version, named after its connection's row (HTTP/2 over TLS, h2c,
    HTTP/1.1; a stream recorded from mitmproxy's hooks has no stream id even on HTTP/2); a
    stream without a connection row: HTTP/2 when it has a stream id, else HTTP/1.1."""
    versions = conns.drop_duplicates("conn_id").set_index("conn_id")["http_version"]
    named = streams["conn_id"].map(versions).map(lambda v: VERSION_NAMES.get(v, v))
    fallback = streams["stream_id"].notna().map({True: "HTTP/2", False: "HTTP/1.1"})
    return named.where(named.notna(), fallback)


def _leg(streams: pd.DataFrame, conns: pd.DataFrame) -> pd.Series:
    """Intercept mode's ``client`` or ``server`` leg of each stream's connection; ``-`` for
    a capture or observe mode (one row per connection)."""
    legs = conns.drop_duplicates("conn_id").set_index("conn_id")["leg"]
    return streams["conn_id"].map(legs).fillna("-")


def _start(captured: pd.Series) -> pd.Series:
    """``captured`` where the capture holds the connection's start, ``midstream`` where it
    does not (:doc:`schema`, "Captures that start late"), ``-`` when the row does not say."""
    named = captured.astype("boolean").map({True: "captured", False: "midstream"})
    return named.astype(object).where(captured.notna(), "-")


def _inferred(conn_ids: pd.Series, streams: pd.DataFrame) -> pd.Series:
    """Per connection, its streams whose kind was inferred from their bytes (``inferred``)."""
    if streams.empty:
        return pd.Series(0, index=conn_ids.index, dtype="Int64")
    counts = streams[streams["inferred"].astype("boolean").fillna(False)].groupby("conn_id").size()
    return conn_ids.map(counts).fillna(0).astype("Int64")


def summarise(out_dir: str | os.PathLike[str]) -> str:
    conns = _read(
        out_dir, "connections", [*CONNECTION_COLUMNS, "ts_start", "ts_end", "start_captured"]
    )
    streams = _read(
        out_dir,
        "streams",
        sorted({*WEBSOCKET_COLUMNS, "kind", "bytes_c2s", "bytes_s2c", "inferred"}),
    )
    messages = _read(out_dir, "messages", ["direction", "opcode", "length", "compressed"])
    diags = _read(out_dir, "diagnostics", ["layer", "severity", "code", "message"])

    parts = []
    if not conns.empty:
        shown = conns[CONNECTION_COLUMNS].copy()
        shown["duration_s"] = (conns["ts_end"] - conns["ts_start"]).dt.total_seconds().round(3)
        shown["start"] = _start(conns["start_captured"])
        shown["inferred"] = _inferred(conns["conn_id"], streams)
        parts.append(_section(f"connections ({len(conns)})", shown))
    else:
        parts.append(_section("connections (0)", conns))

    if not streams.empty:
        by_kind = (
            streams.assign(over=_over(streams, conns), leg=_leg(streams, conns))
            .groupby(["leg", "over", "kind"], dropna=False)
            .agg(
                streams=("kind", "size"),
                inferred=("inferred", "sum"),
                connections=("conn_id", "nunique"),
                bytes_c2s=("bytes_c2s", "sum"),
                bytes_s2c=("bytes_s2c", "sum"),
            )
            .reset_index()
        )
        parts.append(_section("streams by kind", by_kind))
        ws = streams[streams["kind"] == "websocket"]
        if not ws.empty:
            parts.append(_section("websocket streams", ws[WEBSOCKET_COLUMNS]))
    else:
        parts.append(_section("streams by kind", streams))

    if not messages.empty:
        by_opcode = (
            messages.assign(compressed=messages["compressed"].astype("boolean"))
            .groupby(["direction", "opcode"])
            .agg(
                messages=("opcode", "size"),
                bytes=("length", "sum"),
                compressed=("compressed", "sum"),
            )
            .reset_index()
        )
        parts.append(_section("messages by opcode", by_opcode))
    else:
        parts.append(_section("messages by opcode", messages))

    if not diags.empty:
        by_code = (
            diags.groupby(["layer", "severity", "code"])
            .agg(count=("code", "size"), example=("message", "first"))
            .reset_index()
        )
        by_code["example"] = by_code["example"].map(shorten)
        parts.append(_section("diagnostics", by_code))
    else:
        parts.append(_section("diagnostics", diags))
    return "\n".join(parts)
