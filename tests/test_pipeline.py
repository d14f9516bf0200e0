"""The pipeline's promise: a decoder that raises loses its own connection only.

Real input: an h2c capture of four connections made by the benchmark's generator (python-hyper
h2 peers, RFC 8441 WebSockets).  The decoder of one connection is made to raise part way
through; every other connection must give exactly the rows it gives without the fault, and the
failed one its connection row, marked, with one ``decoder_failed`` diagnostic.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from h2ws.analysis.core.decoder import ConnectionDecoder
from h2ws.analysis.core.options import DecodeOptions
from h2ws.analysis.records import ConnectionRecord, DiagnosticRecord, Record
from h2ws.analysis.sources.capture import capture_events
from h2ws.analysis.sources.pipeline import Pipeline

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import make_capture  # noqa: E402


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = make_capture.Params(messages=400, connections=4, streams=2, seed=5)
    path = tmp_path_factory.mktemp("pipeline") / "four.pcap"
    make_capture.generate(params, path)
    return path


def by_connection(records: list[Record]) -> dict[str | None, Counter[str]]:
    out: dict[str | None, Counter[str]] = {}
    for r in records:
        conn_id = r.conn_id
        text = json.dumps(
            r._asdict() if isinstance(r, tuple) else r.__class__.__name__ + repr(r),
            default=lambda v: v.hex() if isinstance(v, bytes) else str(v),
        )
        out.setdefault(conn_id, Counter())[text] += 1
    return out


@pytest.mark.parametrize("when", ["feed", "close"])
def test_a_raising_decoder_loses_its_own_connection_only(
    capture: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    events = list(capture_events(capture, Counter()))
    clean = by_connection(list(Pipeline(DecodeOptions()).run(events)))
    conn_ids = sorted(c for c in clean if c is not None)
    assert len(conn_ids) == 4
    victim = conn_ids[1]

    original = getattr(ConnectionDecoder, when)
    calls = Counter[str]()

    def faulty(self: ConnectionDecoder, *args: object, **kwargs: object) -> list[Record]:
        conn_id = self.record.conn_id
        calls[conn_id] += 1
        if conn_id == victim and calls[conn_id] >= 3 if when == "feed" else conn_id == victim:
            raise RuntimeError("injected fault")
        return original(self, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(ConnectionDecoder, when, faulty)
    records = list(Pipeline(DecodeOptions()).run(events))  # never raises
    faulted = by_connection(records)

    for conn_id in conn_ids:
        if conn_id != victim:
            assert faulted[conn_id] == clean[conn_id], conn_id  # every row, unchanged
    mine = [r for r in records if r.conn_id == victim]
    diags = [r for r in mine if isinstance(r, DiagnosticRecord) and r.code == "decoder_failed"]
    assert len(diags) == 1 and "injected fault" in diags[0].message
    (row,) = [r for r in mine if isinstance(r, ConnectionRecord)]
    assert row.end_cause == "error" and row.error and "injected fault" in row.error
    others = by_connection([r for r in mine if r is not row and r not in diags])[victim]
    assert not others - clean[victim]  # what it gave before the fault is what it gives anyway
    if when == "feed":
        assert sum(clean[victim].values()) > len(mine)  # the rest of it was not decoded
