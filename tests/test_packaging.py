"""``pip install h2ws`` works end to end: a wheel and an sdist are built (``python -m build``), the
wheel goes into a fresh virtual environment, and the commands of the README run there — outside
the checkout, so nothing can come from the source tree by accident.

First without extras (``h2ws extract`` and ``summary`` work; ``report`` and ``addon-path`` say in
one line which extra to install), then with ``h2ws[report,live]`` (``h2ws report`` writes the
HTML from the notebook shipped in the package, ``mitmdump -s "$(h2ws addon-path)"`` loads the
addon).  pip's cache is reused, so after the first run this takes about a minute; marked
``packaging`` (``pytest -m 'not packaging'`` leaves it out while working; ``make test`` and CI
run it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from .paths import SAMPLE_CAPTURES

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
SAMPLE = SAMPLE_CAPTURES / "h2c_hypercorn_ws.pcap"
#: Every step is bounded; installing from pip's cache takes well under this.
STEP_TIMEOUT = 600


def sh(*cmd: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--outdir", out, REPO, cwd=REPO)
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only ``pip install h2ws-….whl`` (no extras)."""
    root = tmp_path_factory.mktemp("venv")
    sh(sys.executable, "-m", "venv", root / "env", cwd=root)
    (wheel,) = dist.glob("h2ws-*.whl")
    sh(root / "env" / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=root)
    return root / "env" / "bin"


def test_wheel_and_sdist_hold_what_the_commands_need(dist: Path) -> None:
    (wheel,) = dist.glob("h2ws-*.whl")
    (sdist,) = dist.glob("h2ws-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for needed in [
        "h2ws/notebooks/report.ipynb",
        "h2ws/notebooks/07_fallback.ipynb",
        "h2ws/samples/h2c_hypercorn_ws.pcap",
        "h2ws/addon/addon.py",
        "h2ws/analysis/cli.py",
        "h2ws/analysis/metrics/sql/views.sql",
        "h2ws/testkit/live/guard.py",
        "h2ws/testkit/live/node_server.mjs",
        "h2ws/testkit/peers/h2_client.mjs",
    ]:
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "h2ws/tests/"))]
    with tarfile.open(sdist) as archive:
        members = {m.split("/", 1)[1] for m in archive.getnames() if "/" in m}
    for needed in ["pyproject.toml", "README.md", "notebooks/report.ipynb", "samples/README.md"]:
        assert needed in members, needed


def test_installed_without_extras(venv: Path, tmp_path: Path) -> None:
    version = sh(venv / "h2ws", "--version", cwd=tmp_path)
    assert version.stdout.startswith("h2ws 0.")
    out = tmp_path / "out"
    sample = Path(sh(venv / "h2ws", "sample-path", cwd=tmp_path).stdout.strip())
    assert REPO not in sample.parents and sample.read_bytes() == SAMPLE.read_bytes()
    extract = sh(venv / "h2ws", "extract", sample, "-o", out, cwd=tmp_path)
    assert "1 connections" in extract.stdout and "24 messages" in extract.stdout
    summary = sh(venv / "h2ws", "summary", out, cwd=tmp_path)
    assert "h2c_hypercorn_ws.pcap:0" in summary.stdout
    for command, extra in (("report", "report"), ("addon-path", "live"), ("demo", "live")):
        args = {"report": [command, str(out)], "demo": [command, "-o", str(tmp_path / "demo")]}
        args = args.get(command, [command])
        proc = sh(venv / "h2ws", *args, cwd=tmp_path, check=False)
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and f"pip install 'h2ws[{extra}]'" in lines[0], proc.stderr


def test_installed_with_extras(venv: Path, dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("h2ws-*.whl")
    sh(
        venv / "python",
        "-m",
        "pip",
        "install",
        "-q",
        f"h2ws[report,live] @ {wheel.as_uri()}",
        cwd=tmp_path,
    )
    out = tmp_path / "out"
    sh(venv / "h2ws", "extract", SAMPLE, "-o", out, cwd=tmp_path)
    report = sh(venv / "h2ws", "report", out, "-o", tmp_path / "report.html", cwd=tmp_path)
    assert "report written to" in report.stdout
    assert "Traceback" not in report.stderr and "IPKernelApp" not in report.stderr, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert "WebSockets inside HTTP/2" in html and "data:image/png;base64" in html

    addon = Path(sh(venv / "h2ws", "addon-path", cwd=tmp_path).stdout.strip())
    assert addon.is_file() and REPO not in addon.parents
    guard = addon.parents[1] / "testkit" / "live" / "guard.py"  # refuses anything off localhost
    log = tmp_path / "mitmdump.log"
    # `--set h2ws_out` is only accepted once the addon has loaded and registered its options.
    cmd = [str(venv / "mitmdump"), "--listen-host", "127.0.0.1", "-p", "0",
           "--set", f"confdir={tmp_path / 'conf'}", "-s", str(guard), "-s", str(addon),
           "--set", f"h2ws_out={tmp_path / 'live'}"]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            end = time.monotonic() + 60
            while b"listening at" not in log.read_bytes():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < end, log.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text and "error" not in text.lower(), text
    assert str(addon) in text  # mitmdump says which script it loaded


def test_installed_demo(venv: Path, dist: Path, tmp_path: Path) -> None:
    """``pip install 'h2ws[live,report]' && h2ws demo``: the README's pip-user commands."""
    (wheel,) = dist.glob("h2ws-*.whl")
    spec = f"h2ws[live,report] @ {wheel.as_uri()}"
    sh(venv / "python", "-m", "pip", "install", "-q", spec, cwd=tmp_path)
    out = tmp_path / "out" / "demo"
    args = ["--clients", "2", "--websockets", "2", "--gets", "2", "--timeout", "60"]
    demo = sh(venv / "h2ws", "demo", "-o", "out/demo", *args, cwd=tmp_path)
    assert "tables match the clients' logs" in demo.stdout, demo.stdout
    assert "report:  out/demo/report.html" in demo.stdout, demo.stdout
    assert "Traceback" not in demo.stderr, demo.stderr
    for table in ("connections", "streams", "frames", "messages", "diagnostics"):
        assert list((out / "tables" / table).glob("*.parquet")), table
    html = (out / "report.html").read_text()
    assert "2 HTTP/2 connections carried 4 WebSockets" in html
    # the peers came from the installed package, not from this checkout
    log = (out / "run" / "proxy" / "mitmdump.log").read_text()
    assert str(REPO) not in log and "site-packages/h2ws/addon/addon.py" in log
