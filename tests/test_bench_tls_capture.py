"""The TLS benchmark's captures are right: small ones made by ``bench/make_capture.py --tls``
decrypt, in h2ws and in tshark, to exactly what the generator recorded, and so does the
tshark-based extractor ``bench/bench_tls.py`` measures h2ws against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .requires import needs_tools

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_extract  # noqa: E402
import bench_tls  # noqa: E402
import make_capture  # noqa: E402
import tshark_ws_extract  # noqa: E402


@pytest.fixture(scope="module", params=make_capture.TLS_VERSIONS)
def capture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    params = make_capture.Params(messages=1500, connections=2, streams=3, port=443, seed=7)
    path = tmp_path_factory.mktemp("tls") / f"tls{request.param}.pcap"
    return path, make_capture.generate(params, path, request.param)


def test_key_schedule_rfc8448() -> None:
    """RFC 8448 section 3: the server's handshake write key and IV."""
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    key = make_capture.hkdf_expand_label(secret, b"key", b"", 16)
    assert key.hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert make_capture.hkdf_expand_label(secret, b"iv", b"", 12).hex() == (
        "5d313eb2671276ee13000b30"
    )


def test_sidecar_and_keylog(capture: tuple[Path, dict[str, Any]]) -> None:
    path, sidecar = capture
    tls = sidecar["tls"]
    lines = make_capture.keylog_path(path).read_text().splitlines()
    assert len(lines) == tls["keylog_lines"] == (8 if tls["version"] == "TLS 1.3" else 2)
    assert tls["handshake_messages"] == 16 and tls["alerts"] == 4
    assert sidecar["messages"]["data"] >= 1500


def test_h2ws_decrypts_everything(capture: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, sidecar = capture
    cmd = [sys.executable, "-m", "h2ws.analysis.cli", "extract", str(path),
           "--keylog", str(make_capture.keylog_path(path)), "-o", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert bench_extract.check_tables(tmp_path, sidecar, frames=True) == []


@needs_tools("tshark")
def test_tshark_decrypts_everything(capture: tuple[Path, dict[str, Any]]) -> None:
    path, sidecar = capture
    assert make_capture.verify_with_tshark(path, sidecar) == []


@needs_tools("tshark")
def test_tshark_extractor_counts(capture: tuple[Path, dict[str, Any]]) -> None:
    path, sidecar = capture
    out = subprocess.run(
        [sys.executable, str(BENCH / "tshark_ws_extract.py"), str(path),
         "--keylog", str(make_capture.keylog_path(path))],
        check=True, capture_output=True, timeout=120, text=True,
    ).stdout  # fmt: skip
    assert bench_tls.check_counts(json.loads(out), sidecar) == []


@needs_tools("tshark")
def test_wrong_keys_are_caught(capture: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """A key log with one secret changed: every check fails (a wrong answer is no result)."""
    path, sidecar = capture
    lines = make_capture.keylog_path(path).read_text().splitlines()
    label, random, secret = lines[-1].split()
    lines[-1] = f"{label} {random} {'0' if secret[0] != '0' else '1'}{secret[1:]}"
    bad = tmp_path / path.name
    bad.symlink_to(path)
    keys = make_capture.keylog_path(bad)
    keys.write_text("\n".join(lines) + "\n")
    assert make_capture.verify_with_tshark(bad, sidecar) != []
    result = subprocess.run(
        [sys.executable, str(BENCH / "tshark_ws_extract.py"), str(bad), "--keylog", str(keys)],
        check=True, capture_output=True, timeout=120, text=True,
    ).stdout  # fmt: skip
    assert bench_tls.check_counts(json.loads(result), sidecar) != []
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "h2ws.analysis.cli", "extract", str(bad), "--keylog", str(keys),
           "-o", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert bench_extract.check_tables(out, sidecar, frames=True) != []


def test_unmasking_and_reassembly() -> None:
    """The extractor's minimal RFC 6455 parse: masked, fragmented, split anywhere."""
    from wsproto.frame_protocol import FrameProtocol

    client = FrameProtocol(True, [])
    wire = bytes(client.send_data("hello ", False)) + bytes(client.ping(b"p"))
    wire += bytes(client.send_data("world", True)) + bytes(client.send_data(b"x" * 70_000))
    counts = tshark_ws_extract.Counts()
    ws = tshark_ws_extract.WsDirection("c2s")
    for i in range(0, len(wire), 7):
        ws.feed(wire[i : i + 7], counts)
    assert counts.messages["c2s"] == {"text": 1, "ping": 1, "binary": 1}
    assert counts.frames["c2s"] == 4
    assert counts.payload_bytes["c2s"] == len("hello world") + 1 + 70_000
