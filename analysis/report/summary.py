"""``h2ws summary``: the tables of an output directory as a few readable text tables."""

from __future__ import annotations

import os

import pandas as pd

from h2ws.analysis.sinks.export import read_table


def _section(title: str, frame: pd.DataFrame) -> str:
    body = "(none)" if frame.empty else frame.to_string(index=False)
    return f"{title}\n{'-' * len(title)}\n{body}\n"


def summarise(out_dir: str | os.PathLike[str]) -> str:
    conns = read_table(out_dir, "connections").to_pandas()
    streams = read_table(out_dir, "streams").to_pandas()
    messages = read_table(out_dir, "messages").to_pandas()
    diags = read_table(out_dir, "diagnostics").to_pandas()

    parts = []
    if not conns.empty:
        shown = conns[
            [
                "conn_id",
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
        ].copy()
        shown["duration_s"] = (conns["ts_end"] - conns["ts_start"]).dt.total_seconds().round(3)
        parts.append(_section(f"connections ({len(conns)})", shown))
    else:
        parts.append(_section("connections (0)", conns))

    if not streams.empty:
        by_kind = (
            streams.assign(
                over=streams["stream_id"].notna().map({True: "HTTP/2", False: "HTTP/1.1"}),
                accepted=streams["ws_accepted"].astype("boolean"),
            )
            .groupby(["over", "kind"], dropna=False)
            .agg(
                streams=("kind", "size"),
                connections=("conn_id", "nunique"),
                bytes_c2s=("bytes_c2s", "sum"),
                bytes_s2c=("bytes_s2c", "sum"),
            )
            .reset_index()
        )
        parts.append(_section("streams by kind", by_kind))
        ws = streams[streams["kind"] == "websocket"]
        if not ws.empty:
            parts.append(
                _section(
                    "websocket streams",
                    ws[
                        [
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
                    ],
                )
            )
    else:
        parts.append(_section("streams by kind", streams))

    if not messages.empty:
        by_opcode = (
            messages.groupby(["direction", "opcode"])
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
        by_code["example"] = by_code["example"].str.slice(0, 80)
        parts.append(_section("diagnostics", by_code))
    else:
        parts.append(_section("diagnostics", diags))
    return "\n".join(parts)
