"""What tshark (4.0) decodes in a capture, as plain Python values, to cross-check h2ws with.

PDML (``tshark -T pdml``) is read rather than ``-T fields``: one TCP segment can carry several
HTTP/2 frames or WebSocket frames, and only the XML keeps every frame's fields together and in
order (with ``-T fields`` the values of each field are merely comma-joined per packet, and fields
that some frames lack, e.g. the data of an empty DATA frame, shift the columns).
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def available() -> bool:
    return shutil.which("tshark") is not None


def _pdml(capture: Path, args: list[str], timeout: float = 60.0) -> Iterator[ET.Element]:
    """Every ``<packet>`` of ``tshark -T pdml`` (streamed; each element cleared after use)."""
    cmd = ["tshark", "-n", "-r", str(capture), *args, "-T", "pdml"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        for _, elem in ET.iterparse(proc.stdout, events=("end",)):
            if elem.tag == "packet":
                yield elem
                elem.clear()
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")


def _fields(elem: ET.Element, name: str) -> list[ET.Element]:
    return [f for f in elem.iter("field") if f.get("name") == name]


def _first(elem: ET.Element, name: str) -> ET.Element | None:
    for f in elem.iter("field"):
        if f.get("name") == name:
            return f
    return None


def _show(elem: ET.Element, name: str) -> str | None:
    f = _first(elem, name)
    return None if f is None else f.get("show")


def _bytes(f: ET.Element | None) -> bytes:
    return b"" if f is None else bytes.fromhex(f.get("value") or "")


def _tcp(packet: ET.Element) -> tuple[int, int, int]:
    """(tcp.stream, srcport, dstport) of a packet."""
    for proto in packet.iter("proto"):
        if proto.get("name") == "tcp":
            return (
                int(_show(proto, "tcp.stream") or -1),
                int(_show(proto, "tcp.srcport") or 0),
                int(_show(proto, "tcp.dstport") or 0),
            )
    return -1, 0, 0


# ----------------------------------------------------------------------------------- HTTP/2


@dataclass
class H2Frame:
    frame_number: int
    tcp_stream: int
    client_port: int
    direction: str  # c2s | s2c
    type: int
    flags: int
    stream_id: int
    length: int
    data: bytes | None = None  # DATA frames: the payload (padding excluded)
    headers: list[tuple[str, str]] = field(default_factory=list)  # HEADERS: decoded fields
    settings: dict[int, int] = field(default_factory=dict)  # SETTINGS: id -> value
    error_code: int | None = None  # RST_STREAM / GOAWAY


def _data_frame_payload(stream: ET.Element, frame: H2Frame, number: int) -> bytes:
    """The bytes of one DATA frame.  tshark reassembles HTTP bodies and then shows the WHOLE body
    as ``http2.data.data`` of the frame that carries END_STREAM (even an empty one), so the
    frame's own bytes are taken from the body fragment list in that case."""
    size = frame.length
    if frame.flags & 0x8:  # PADDED
        size -= 1 + int(_show(stream, "http2.pad_length") or 0)
    if size <= 0:
        return b""
    data = _bytes(_first(stream, "http2.data.data"))
    if len(data) == size:
        return data
    for fragment in _fields(stream, "http2.body.fragment"):
        if fragment.get("show") == str(number) and int(fragment.get("size") or -1) == size:
            return _bytes(fragment)
    raise ValueError(f"frame {number}: DATA of {size} bytes, tshark shows {len(data)}")


#: How tshark must be told to decode a server port, by transport (the clients' log "transport").
DECODE_AS = {"h2c": "http2", "h2c-upgrade": "http", "h2": None, "http/1.1": "http"}


def h2_frames(capture: Path, server_port: int, transport: str = "h2c") -> list[H2Frame]:
    """Every HTTP/2 frame tshark decodes on ``server_port``.  ``transport``: ``h2c`` (prior
    knowledge: the port is decoded as http2 by force), ``h2c-upgrade`` (decoded as HTTP/1.1,
    which follows the ``Upgrade: h2c``), ``h2`` (TLS, found by heuristics; keys from a pcapng
    Decryption Secrets Block or ``-o tls.keylog_file``)."""
    frames: list[H2Frame] = []
    decode_as = DECODE_AS[transport]
    args = ["-d", f"tcp.port=={server_port},{decode_as}"] if decode_as else []
    args += ["-Y", "http2"]
    for packet in _pdml(capture, args):
        number = int(_show(packet, "num") or 0)
        tcp_stream, src, dst = _tcp(packet)
        direction = "s2c" if src == server_port else "c2s"
        client_port = dst if src == server_port else src
        for proto in packet.iter("proto"):
            if proto.get("name") != "http2":
                continue
            for stream in _fields(proto, "http2.stream"):
                ftype = _show(stream, "http2.type")
                if ftype is None:  # the connection preface ("Magic")
                    continue
                frame = H2Frame(
                    frame_number=number,
                    tcp_stream=tcp_stream,
                    client_port=client_port,
                    direction=direction,
                    type=int(ftype),
                    flags=int(_show(stream, "http2.flags") or "0", 16),
                    stream_id=int(_show(stream, "http2.streamid") or 0),
                    length=int(_show(stream, "http2.length") or 0),
                )
                if frame.type == 0:
                    frame.data = _data_frame_payload(stream, frame, number)
                elif frame.type == 1:
                    for header in _fields(stream, "http2.header"):
                        name = _show(header, "http2.header.name")
                        value = _show(header, "http2.header.value")
                        if name is not None:
                            frame.headers.append((name, value or ""))
                elif frame.type == 4:
                    for setting in _fields(stream, "http2.settings"):
                        ident = _show(setting, "http2.settings.id")
                        values = [c for c in setting.iter("field") if c is not setting]
                        if ident is not None and len(values) >= 2:
                            frame.settings[int(ident)] = int(values[1].get("show") or 0)
                elif frame.type in (3, 7):
                    code = _show(stream, "http2.rst_stream.error") or _show(
                        stream, "http2.goaway.error"
                    )
                    frame.error_code = int(code) if code is not None else None
                frames.append(frame)
    return frames


# ------------------------------------------------------------------------- WebSocket (HTTP/1.1)

OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


@dataclass
class WsFrame:
    """One WebSocket frame and the payload fields tshark shows with it.

    tshark 4.0 puts some of a frame's fields in the protocols that follow its ``websocket``
    protocol in the packet (``fake-field-wrapper``, ``data``, ``data-text-lines``): binary
    payloads as ``data.data``, the middle fragments as ``websocket.payload.continue``; on the
    last frame of a fragmented message it lists every fragment's unmasked bytes
    (``websocket.fragment``) and shows the reassembled message as text / data.  It inflates
    unfragmented permessage-deflate messages, not fragmented ones."""

    frame_number: int
    tcp_stream: int
    client_port: int
    direction: str
    fin: bool
    opcode: str
    compressed: bool  # RSV1 (permessage-deflate) on this frame
    masked: bool
    payload_length: int  # on the wire
    text: bytes | None = None  # websocket.payload.text (the reassembled message on a last frame)
    data: bytes | None = None  # data.data (binary; reassembled on a last frame)
    control: bytes | None = None  # ping / pong payload, or close code + reason
    fragments: list[bytes] | None = None  # websocket.fragment: every fragment, unmasked


def _take_ws_fields(elem: ET.Element, frame: WsFrame) -> None:
    for f in elem.iter("field"):
        name = f.get("name")
        if name == "websocket.payload.text" and frame.text is None:
            frame.text = _bytes(f)
        elif name == "data.data" and frame.data is None:
            frame.data = _bytes(f)
        elif name in ("websocket.payload.ping", "websocket.payload.pong"):
            frame.control = _bytes(f)
        elif name in ("websocket.payload.close.status_code", "websocket.payload.close.reason"):
            frame.control = (frame.control or b"") + _bytes(f)
        elif name == "websocket.fragment":
            frame.fragments = [*(frame.fragments or []), _bytes(f)]


def ws_frames(capture: Path, server_port: int) -> list[WsFrame]:
    """Every WebSocket frame tshark decodes after an HTTP/1.1 Upgrade on ``server_port``."""
    out: list[WsFrame] = []
    args = ["-d", f"tcp.port=={server_port},http", "-Y", "websocket"]
    for packet in _pdml(capture, args):
        number = int(_show(packet, "num") or 0)
        tcp_stream, src, dst = _tcp(packet)
        direction = "s2c" if src == server_port else "c2s"
        client_port = dst if src == server_port else src
        current: WsFrame | None = None
        for proto in packet.findall("proto"):
            if proto.get("name") == "websocket":
                length = int(_show(proto, "websocket.payload_length") or 0)
                for ext in ("websocket.payload_length_ext_16", "websocket.payload_length_ext_64"):
                    if _show(proto, ext) is not None:
                        length = int(_show(proto, ext) or 0)
                current = WsFrame(
                    frame_number=number,
                    tcp_stream=tcp_stream,
                    client_port=client_port,
                    direction=direction,
                    fin=_show(proto, "websocket.fin") == "1",
                    opcode=OPCODES.get(int(_show(proto, "websocket.opcode") or -1), "unknown"),
                    compressed=_show(proto, "websocket.pmc") == "1",
                    masked=_show(proto, "websocket.mask") == "1",
                    payload_length=length,
                )
                out.append(current)
            if current is not None:
                _take_ws_fields(proto, current)
    return out


@dataclass
class WsMessage:
    client_port: int
    direction: str
    opcode: str
    payload: bytes | None  # None: tshark does not show it (see ws_messages)
    fragments: int
    compressed: bool


def ws_messages(frames: list[WsFrame]) -> list[WsMessage]:
    """Frames reassembled into messages per TCP connection (client port) and direction, in
    completion order (control frames inside a fragmented message come first).  ``payload`` is
    None where tshark cannot be trusted or shows nothing: compare those by opcode only."""
    started: dict[tuple[int, str], list[WsFrame]] = {}
    out: list[WsMessage] = []
    for f in frames:
        key = (f.client_port, f.direction)
        if f.opcode in ("close", "ping", "pong"):
            payload = f.control or b""
            out.append(WsMessage(f.client_port, f.direction, f.opcode, payload, 1, False))
            continue
        if f.opcode != "continuation":
            started[key] = []
        parts = started.setdefault(key, [])
        parts.append(f)
        if not f.fin:
            continue
        del started[key]
        first = parts[0]
        message: bytes | None
        if first.compressed and (len(parts) > 1 or f.direction == "c2s"):
            # tshark 4.0 does not inflate fragmented messages, and inflates some masked
            # (client -> server) ones wrongly (right length, wrong bytes after a while).
            message = None
        elif len(parts) == 1:
            message = f.text if first.opcode == "text" else f.data
            if message is None and f.payload_length == 0:
                message = b""
            # else None: tshark 4.0 sometimes shows no data for the last binary frames of a
            # segment that holds many frames.
        elif f.fragments is not None:
            message = b"".join(f.fragments)
        else:  # fragments of 0 bytes only: tshark lists none
            message = b""
        out.append(
            WsMessage(
                f.client_port, f.direction, first.opcode, message, len(parts), first.compressed
            )
        )
    return out
