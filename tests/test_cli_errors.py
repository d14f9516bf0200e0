"""Every error of the ``h2ws`` command is one line on stderr with a documented exit code, never a
traceback; several inputs keep their identities apart (``conn_id`` unique per run, stable across
runs).  Each case runs the installed console script, the way a user meets it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from h2ws.analysis import cli
from h2ws.analysis.sources.inputs import DuplicateInput, input_names

from .paths import SAMPLE_CAPTURES

H2WS = Path(sys.executable).parent / "h2ws"
SAMPLE = SAMPLE_CAPTURES / "h2c_hypercorn_ws.pcap"
REPO = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("H2WS_TRACEBACK", None)
    return subprocess.run(
        [str(H2WS), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("h2ws: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_output_naming_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("not a directory")
    proc = run("extract", SAMPLE, "-o", target)
    line = one_line(proc)
    assert proc.returncode == cli.EXIT_USAGE
    assert str(target) in line and "not a directory" in line
    assert target.read_text() == "not a directory"


def test_negative_preview_bytes(tmp_path: Path) -> None:
    proc = run("extract", SAMPLE, "-o", tmp_path / "out", "--preview-bytes", "-5")
    line = one_line(proc)
    assert proc.returncode == cli.EXIT_USAGE
    assert "--preview-bytes" in line and "'-5'" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args", [["--jobs", "x"], ["--max-message-bytes", "0"], ["--format", "xls"]]
)
def test_other_bad_values_are_one_line(tmp_path: Path, args: list[str]) -> None:
    proc = run("extract", SAMPLE, "-o", tmp_path / "out", *args)
    assert args[0] in one_line(proc)
    assert proc.returncode == cli.EXIT_USAGE


def test_summary_into_a_closed_pipe(tmp_path: Path) -> None:
    """``h2ws summary out | head -5``: the reader goes away before h2ws writes (closed at once
    here, so that the write always meets a closed pipe, whatever the output's size)."""
    out = tmp_path / "out"
    assert run("extract", SAMPLE, "-o", out).returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [str(H2WS), "summary", str(out)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == cli.EXIT_OK


def test_several_inputs_two_not_captures(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    first = tmp_path / "notes.txt"
    second = tmp_path / "d" / "empty.pcap"
    first.write_text("hello\n")
    second.write_bytes(b"")
    out = tmp_path / "out"
    proc = run("extract", SAMPLE, first, second, "-o", out, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    capture_lines = [line for line in lines if "not_a_capture" in line]
    assert len(capture_lines) == 2, proc.stderr
    assert capture_lines[0].startswith("h2ws: notes.txt: ")
    assert capture_lines[1].startswith("h2ws: empty.pcap: ")
    assert "Traceback" not in proc.stderr
    assert proc.returncode == cli.EXIT_INPUT
    # the capture that could be read is in the tables, and the rows name their files
    assert pq.read_table(out / "connections.parquet").num_rows == 1
    diags = pq.read_table(out / "diagnostics.parquet").to_pylist()
    messages = sorted(d["message"] for d in diags if d["code"] == "not_a_capture")
    assert [m.split(":")[0] for m in messages] == ["empty.pcap", "notes.txt"]


def test_a_missing_input_is_one_line_naming_it(tmp_path: Path) -> None:
    proc = run("extract", tmp_path / "nowhere.pcap", "-o", tmp_path / "out")
    line = one_line(proc)
    assert line.startswith("h2ws: nowhere.pcap: cannot open")
    assert proc.returncode == cli.EXIT_INPUT


def test_same_file_twice_is_refused(tmp_path: Path) -> None:
    proc = run("extract", SAMPLE, SAMPLE.parent / ".." / "captures" / SAMPLE.name, "-o", tmp_path)
    assert "given twice" in one_line(proc)
    assert proc.returncode == cli.EXIT_USAGE


def test_summary_and_report_of_no_tables(tmp_path: Path) -> None:
    for command in ("summary", "report"):
        proc = run(command, tmp_path / "missing")
        assert "is not a directory of h2ws tables" in one_line(proc)
        assert proc.returncode == cli.EXIT_INPUT


def _without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``h2ws *args`` in a Python where ``module`` cannot be imported (as when its extra is not
    installed: ``None`` in ``sys.modules`` makes ``import`` raise ModuleNotFoundError)."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; "
        "from h2ws.analysis.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_without_its_extra(tmp_path: Path) -> None:
    assert run("extract", SAMPLE, "-o", tmp_path).returncode == 0
    proc = _without("nbclient", "report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    line = one_line(proc)
    assert "pip install 'h2ws[report]'" in line
    assert proc.returncode == cli.EXIT_MISSING


def test_sample_path() -> None:
    proc = run("sample-path")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).read_bytes() == SAMPLE.read_bytes()


def test_addon_path(tmp_path: Path) -> None:
    proc = run("addon-path")
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.name == "addon.py" and path.is_file()
    assert "addons = [H2wsAddon()]" in path.read_text()
    proc = _without("mitmproxy", "addon-path")
    assert "pip install 'h2ws[live]'" in one_line(proc)
    assert proc.returncode == cli.EXIT_MISSING


def test_sample_path_is_the_sample_capture(tmp_path: Path) -> None:
    proc = run("sample-path")
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.read_bytes() == SAMPLE.read_bytes()
    extract = run("extract", path, "-o", tmp_path)
    assert extract.returncode == 0 and "24 messages" in extract.stdout, extract.stdout


def test_addon_file_in_a_python_without_h2ws() -> None:
    """mitmproxy installed elsewhere (pipx, a binary) loading the addon file: one line."""
    code = (
        f"import sys, runpy; sys.modules['h2ws'] = None; runpy.run_path({str(cli.addon_file())!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "pip install 'h2ws[live]'" in one_line(proc)


def test_version_and_help() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("h2ws 0."), proc.stdout
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(subcommands) >= {"extract", "summary", "report", "addon-path", "sample-path"}
    for name, sub in subcommands.items():
        for action in sub._actions:
            assert action.help, f"h2ws {name} {action.option_strings or action.dest} has no help"
    assert "exit codes" in run("extract", "--help").stdout


# -- identity across inputs -------------------------------------------------------------------


def test_same_name_in_two_folders_gets_distinct_conn_ids(tmp_path: Path) -> None:
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        shutil.copyfile(SAMPLE, tmp_path / folder / "cap.pcap")
    ids = []
    for run_no, order in enumerate(
        (["d1/cap.pcap", "d2/cap.pcap"], ["d2/cap.pcap", "d1/cap.pcap"])
    ):
        out = tmp_path / f"out{run_no}"
        proc = run("extract", *order, "-o", out, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        conns = pq.read_table(out / "connections.parquet").to_pylist()
        ids.append(sorted((c["conn_id"], c["capture"]) for c in conns))
        streams = pq.read_table(out / "streams.parquet").to_pylist()
        assert {s["conn_id"] for s in streams} == {"d1/cap.pcap:0", "d2/cap.pcap:0"}
    assert ids[0] == [("d1/cap.pcap:0", "d1/cap.pcap"), ("d2/cap.pcap:0", "d2/cap.pcap")]
    assert ids[1] == ids[0]  # stable: the same inputs, in any order, give the same ids


def test_input_names() -> None:
    names = input_names([Path("/a/x/cap.pcap"), Path("/b/x/cap.pcap"), Path("/a/y.pcap")])
    assert names == ["a/x/cap.pcap", "b/x/cap.pcap", "y.pcap"]
    assert input_names([Path("/a/cap.pcap")]) == ["cap.pcap"]
    with pytest.raises(DuplicateInput):
        input_names([Path("/a/cap.pcap"), Path("/a/../a/cap.pcap")])


def test_jobs_keep_the_names(tmp_path: Path) -> None:
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        shutil.copyfile(SAMPLE, tmp_path / folder / "cap.pcap")
    start = time.monotonic()
    proc = run("extract", "d1/cap.pcap", "d2/cap.pcap", "-j", "2", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 100
    conns = pq.read_table(tmp_path / "out" / "connections.parquet").to_pylist()
    assert sorted(c["conn_id"] for c in conns) == ["d1/cap.pcap:0", "d2/cap.pcap:0"]


def test_unexpected_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_summary", broken)
    monkeypatch.delenv("H2WS_TRACEBACK", raising=False)
    assert cli.main(["summary", str(tmp_path)]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: boom" in err


# -- h2ws summary -----------------------------------------------------------------------------


def _write_tables(out: Path, **frames: list[dict[str, object]]) -> None:
    import pandas as pd

    from h2ws.analysis.metrics.load import _to_arrow
    from h2ws.analysis.records import TABLES, arrow_schema

    out.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        rows = frames.get(table)
        arrow = _to_arrow(table, pd.DataFrame(rows)) if rows else None
        pq.write_table(arrow or arrow_schema(table).empty_table(), out / f"{table}.parquet")


def test_summary_prints_ids_and_counts_as_integers(tmp_path: Path) -> None:
    """HTTP/2 streams (ids) next to HTTP/1.1 exchanges (no id) in one column: pandas would make
    the column float (``5.0``, ``NaN``); the summary prints ``5`` and ``-``."""
    _write_tables(
        tmp_path,
        connections=[
            {"conn_id": "a:0", "http_version": "h2", "server_port": 8443, "streams": 2},
            {"conn_id": "a:1", "http_version": "http/1.1", "server_port": 80, "streams": 1},
        ],
        streams=[
            {"conn_id": "a:0", "stream_id": 5, "kind": "websocket", "status": 200,
             "messages_c2s": 3, "bytes_c2s": 10},
            {"conn_id": "a:0", "stream_id": 7, "kind": "http", "status": 404},
            {"conn_id": "a:1", "stream_id": None, "exchange": 0, "kind": "websocket",
             "status": 101, "messages_c2s": 2},
        ],
    )  # fmt: skip
    proc = run("summary", tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    websockets = text.split("websocket streams", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in websockets.splitlines()[3:]]  # after title, ----, header
    assert [r[:5] for r in rows] == [["a:0", "5", "-", "-", "-"], ["a:1", "-", "0", "-", "-"]]
    for wrong in (".0 ", "NaN", "<NA>", "None"):
        assert wrong not in text, (wrong, text)
    assert "8443" in text and "8443.0" not in text


def test_summary_cuts_diagnostic_examples_at_a_word(tmp_path: Path) -> None:
    message = "the peer sent a frame on stream 17 after its RST_STREAM " + "incomprehensibly " * 8
    assert message[78:80].isalpha()  # a cut at the limit would fall inside a word
    _write_tables(
        tmp_path,
        connections=[{"conn_id": "a:0", "http_version": "h2"}],
        diagnostics=[
            {"conn_id": "a:0", "layer": "h2", "severity": "warning", "code": "late_frame",
             "message": message},
        ],
    )  # fmt: skip
    proc = run("summary", tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "late_frame" in line)
    count, example = line.split("late_frame", 1)[1].strip().split(" ", 1)
    assert count == "1"
    assert example.endswith("…") and len(example) <= 80, example
    shown = example.removesuffix("…")
    assert message.startswith(shown) and message[len(shown)] == " ", example  # a whole word
