"""``h2ws extract --jobs N``: the same rows as one process, whatever N and the output format.

Real inputs: a capture of 5 TLS connections made by the benchmark's generator (python-hyper h2
peers, real TLS 1.3 records), the team's browser captures with their key logs, a truncated copy
(capture-level diagnostics must not repeat once per process), and a mitmproxy flow file beside a
capture in one call.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import io as mio

from h2ws.analysis.cli import main
from h2ws.analysis.core.chunks import ConnectionInfo, Data, Opened
from h2ws.analysis.records import TABLES, DiagnosticRecord
from h2ws.analysis.sinks.reader import read_table
from h2ws.analysis.sources.capture import Share, _ShareFilter

from .paths import SHARED_CAPTURES
from .test_addon_units import relayed_flow, ws_connection

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import make_capture  # noqa: E402


@pytest.fixture(scope="module")
def tls_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    params = make_capture.Params(messages=1200, connections=5, streams=2, port=443, seed=11)
    path = tmp_path_factory.mktemp("jobs") / "five.pcap"
    make_capture.generate(params, path, "1.3")
    return path, make_capture.keylog_path(path)


def rows(out: Path) -> dict[str, Counter[str]]:
    """Every table as a multiset of rows: the order of rows is not part of the contract."""
    out_rows: dict[str, Counter[str]] = {}
    for table in TABLES:
        values = read_table(out, table).to_pylist()
        out_rows[table] = Counter(json.dumps(r, sort_keys=True, default=str) for r in values)
    return out_rows


def extract(inputs: list[Path], out: Path, *args: str) -> dict[str, Counter[str]]:
    assert main(["extract", *map(str, inputs), "-o", str(out), *args]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "work files left behind"
    return rows(out)


def test_shares_split_connections_round_robin() -> None:
    shares = [Share(i, 3) for i in range(3)]
    owners = [[s.index for s in shares if s.owns(f"x.pcap:{n}")] for n in range(7)]
    assert owners == [[0], [1], [2], [0], [1], [2], [0]]
    assert Share().owns("a:b:5")  # one share owns everything; ids may contain colons


def test_share_filter_keeps_capture_level_diagnostics_in_share_zero() -> None:
    capture_diag = DiagnosticRecord(conn_id=None, code="truncated_file", layer="capture")
    zero, one = _ShareFilter(Share(0, 2)), _ShareFilter(Share(1, 2))
    assert zero(capture_diag) and not one(capture_diag)
    opened = Opened(ConnectionInfo("c:1"), 1.0)
    assert one(opened) and not zero(opened)
    data = Data("c:1", "c2s", 1.0, b"x")
    assert one(data) and not zero(data)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_parallel_rows_equal_one_process(
    tls_capture: tuple[Path, Path], tmp_path: Path, fmt: str
) -> None:
    capture, keys = tls_capture
    common = ["--keylog", str(keys), "--format", fmt, "--payload", "full"]
    one = extract([capture], tmp_path / "one", "-j", "1", *common)
    assert sum(one["connections"].values()) == 5 and sum(one["messages"].values()) > 1000
    for jobs in ("2", "3", "8"):  # 8: more shares than connections
        assert extract([capture], tmp_path / jobs, "-j", jobs, *common) == one, jobs


@pytest.mark.parametrize("name", ["ff153_hypercorn_pmd", "chr_h1_fallback_newconn"])
def test_parallel_browser_captures(name: str, tmp_path: Path) -> None:
    capture = SHARED_CAPTURES / f"{name}.pcapng"
    keys = ["--keylog", str(SHARED_CAPTURES / f"{name}.keys")]
    one = extract([capture], tmp_path / "one", "-j", "1", *keys)
    assert extract([capture], tmp_path / "three", "-j", "3", *keys) == one


def test_capture_level_diagnostics_once(
    tls_capture: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture, keys = tls_capture
    cut = tmp_path / "cut.pcap"
    data = capture.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])  # mid-packet
    one = extract([cut], tmp_path / "one", "-j", "1", "--keylog", str(keys))
    first = capsys.readouterr()
    three = extract([cut], tmp_path / "three", "-j", "3", "--keylog", str(keys))
    second = capsys.readouterr()
    assert three == one
    codes = [json.loads(r)["code"] for r in one["diagnostics"].elements()]
    assert codes.count("truncated_file") == 1
    assert second.err.count("truncated_file") == first.err.count("truncated_file") == 1
    assert first.out.split(" in ")[0] == second.out.split(" in ")[0]  # same counts printed


def test_flow_file_and_capture_in_one_call(tls_capture: tuple[Path, Path], tmp_path: Path) -> None:
    capture, keys = tls_capture
    flows = tmp_path / "flows.mitm"
    with flows.open("wb") as f:
        writer = mio.FlowWriter(f)
        for _ in range(2):
            writer.add(relayed_flow(ws_connection([b"one", b"two"])))
    inputs = [flows, capture]
    one = extract(inputs, tmp_path / "one", "-j", "1", "--keylog", str(keys))
    two = extract(inputs, tmp_path / "two", "-j", "2", "--keylog", str(keys))
    assert two == one
    sources = Counter(json.loads(r)["source"] for r in one["connections"].elements())
    assert sources == {"flowfile": 2, "pcap": 5}


def test_default_is_parallel_only_for_big_inputs(
    tls_capture: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from h2ws.analysis import cli
    from h2ws.analysis.sources import jobs

    calls: list[Any] = []
    real = jobs.extract_parallel

    def spy(*args: Any) -> Any:
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(cli, "extract_parallel", spy)
    monkeypatch.setattr(cli, "default_jobs", lambda: 2)
    capture, keys = tls_capture
    extract([capture], tmp_path / "small", "--keylog", str(keys))
    assert calls == []  # far below PARALLEL_FROM_BYTES
    monkeypatch.setattr(cli, "PARALLEL_FROM_BYTES", capture.stat().st_size)
    extract([capture], tmp_path / "big", "--keylog", str(keys))
    assert calls == [2]
    shutil.rmtree(tmp_path / "big")


def _die(task: object) -> None:
    """A worker that dies as one killed for lack of memory would."""
    os._exit(9)


def test_a_dying_worker_is_one_clear_error(
    tls_capture: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from h2ws.analysis.sources import jobs

    monkeypatch.setattr(jobs, "_run_task", _die)
    capture, keys = tls_capture
    out = tmp_path / "out"
    assert main(["extract", str(capture), "-o", str(out), "-j", "2", "--keylog", str(keys)]) == 1
    err = capsys.readouterr().err
    assert "a decoding process died" in err and "Traceback" not in err
    assert list(out.iterdir()) == []  # no half-merged tables, no work files


def test_jobs_must_be_a_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit) as exc:
            main(["extract", "x.pcap", "-o", str(tmp_path), "-j", bad])
        assert exc.value.code == 2
        assert "--jobs takes a number of processes" in capsys.readouterr().err
