"""The pcap pipeline, assembled: a capture file (or a flow file) in, records out.

One job: put the sources together -- ``CaptureReader`` (pcap/pcapng) -> ``TcpReassembler`` ->
``TlsLayer`` (with the key logs given and those the capture embeds) -> :class:`Pipeline` (one
``ConnectionDecoder`` per connection) -- for all of a capture's connections or for one
:class:`Share` of them (``h2ws extract --jobs``, :mod:`.jobs`).  Flow files go to
:func:`~h2ws.analysis.sources.flowfile.flow_records`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from h2ws.analysis.core.chunks import ChunkEvent, Opened
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import DiagnosticRecord, Record
from h2ws.analysis.sources.flowfile import flow_records, is_flow_file
from h2ws.analysis.sources.pcap import CaptureReader
from h2ws.analysis.sources.pipeline import Pipeline
from h2ws.analysis.sources.tcp import TcpReassembler
from h2ws.analysis.sources.tls import KeyLog, TlsLayer

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


@dataclass(frozen=True, slots=True)
class Share:
    """The connections one process decodes: the n-th (from 0, in order of first packet) when
    ``n % of == index``.  Capture-level diagnostics belong to share 0."""

    index: int = 0
    of: int = 1

    def owns(self, conn_id: str) -> bool:
        return int(conn_id.rsplit(":", 1)[1]) % self.of == self.index


def capture_events(
    path: Path, stats: Counter[str], keylogs: Sequence[Path] = (), share: Share = Share()
) -> Iterator[ChunkEvent]:
    """CaptureReader -> TcpReassembler -> TlsLayer, for the connections of ``share``.

    The key logs of ``--keylog`` and those the capture embeds (pcapng Decryption Secrets Blocks)
    form one :class:`KeyLog`; an embedded one is learnt before the packets after it are fed.
    """
    keylog = KeyLog()
    for name in keylogs:
        try:
            keylog.add(Path(name).read_bytes())
        except OSError as exc:
            if share.index == 0:
                print(f"h2ws: cannot read key log {name}: {exc.strerror}", file=sys.stderr)
    try:
        with open(path, "rb") as f:
            pcapng = f.read(4) == _PCAPNG_MAGIC
    except OSError:
        pcapng = False
    reader = CaptureReader(path)
    reassembler = TcpReassembler(capture=path.name)
    # Only pcapng files can carry keys of their own, anywhere in the file: wait for them.
    tls = TlsLayer(keylog, wait_for_keys=pcapng)
    mine = _ShareFilter(share)
    blocks = 0
    for item in reader:
        if len(reader.tls_key_log) > blocks:
            for block in reader.tls_key_log[blocks:]:
                keylog.add(block)
            blocks = len(reader.tls_key_log)
        if isinstance(item, DiagnosticRecord):
            if share.index == 0:
                yield item
            continue
        for event in reassembler.feed(item):
            if mine(event):
                yield from tls.feed(event)
    for block in reader.tls_key_log[blocks:]:  # after the last packet: for what is still open
        keylog.add(block)
    for event in reassembler.finish():
        if mine(event):
            yield from tls.feed(event)
    yield from tls.finish()
    if share.index == 0:
        stats["packets"] += reader.packets_read


class _ShareFilter:
    """Whether an event of the reassembler is for this share's connections."""

    def __init__(self, share: Share) -> None:
        self.share = share
        self._owned: dict[str, bool] = {}

    def __call__(self, event: ChunkEvent) -> bool:
        share = self.share
        if share.of == 1:
            return True
        if isinstance(event, Opened):
            mine = self._owned[event.conn.conn_id] = share.owns(event.conn.conn_id)
            return mine
        conn_id = event.conn_id
        if conn_id is None:
            return share.index == 0
        owned = self._owned.get(conn_id)
        return share.owns(conn_id) if owned is None else owned


def decode(
    path: Path,
    options: DecodeOptions,
    stats: Counter[str],
    keylogs: Sequence[Path] = (),
    share: Share = Share(),
) -> Iterable[Record]:
    """Every record of one capture or flow file (of one share of a capture's connections);
    ``stats`` counts packets or flows read."""
    if is_flow_file(path):
        return flow_records(path, options, stats)
    return Pipeline(options).run(capture_events(path, stats, keylogs, share))


__all__ = ["Share", "capture_events", "decode"]
