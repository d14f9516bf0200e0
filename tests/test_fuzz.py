"""The short fuzzing run of ``make test`` (bench/fuzz/): at least 10,000 mutated inputs over every
entry point, fixed seed, 0 crashes, 0 hangs; and every input that once failed, replayed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fuzz.mutate import seeds
from bench.fuzz.run import REGRESSIONS, fuzz
from bench.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]


def test_short_fuzz_run_finds_no_crash_or_hang() -> None:
    """In a process of its own: its peak RSS is the run's, not the test suite's so far."""
    code = (
        "import json; from bench.fuzz.run import fuzz; "
        "print(json.dumps(fuzz(12_000, seed=13, save=False).summary()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["inputs"] == 12_000, result
    assert not result["crashes"] and not result["hangs"], result
    assert set(result["per_target"]) == set(TARGETS)  # every entry point was reached
    assert result["seconds"] < 120, result
    # the run's own peak (VmHWM): ~60 MB measured; ru_maxrss said 476 MB on CI, the parent's
    assert result["peak_rss_mb"] < 400, result


def test_peak_rss_is_the_runs_own() -> None:
    """Started from a process that holds 500 MB, the run's peak RSS is still its own."""
    code = (
        "import subprocess, sys; big = bytearray(500 * 2**20); "
        "big[::4096] = b'x' * len(big[::4096]); "
        "print(subprocess.run([sys.executable, '-c', 'from bench.fuzz.run import peak_rss_mb; "
        "print(peak_rss_mb())'], capture_output=True, text=True, check=True).stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 300, done.stdout


def test_a_raising_target_is_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself can fail: a target that raises is reported, not swallowed."""

    originals = seeds()["hpack"]

    def broken(data: bytes) -> None:
        if data not in originals:  # the unmutated seeds pass (the baseline runs them)
            raise IndexError("planted")

    monkeypatch.setitem(TARGETS, "hpack", broken)
    result = fuzz(200, seed=1, targets=["hpack"], save=False)
    assert result.crashes and "IndexError: planted" in result.crashes[0]


@pytest.mark.parametrize(
    "path", sorted(REGRESSIONS.glob("*.bin")) or [None], ids=lambda p: p.name if p else "none"
)
def test_fuzz_regressions(path: Path | None) -> None:
    """Inputs that once crashed or hung (named ``<target>-<sha1>.bin``) stay fixed."""
    if path is None:
        return  # no failure was ever found; the directory's README says how it fills
    target = path.name.rsplit("-", 1)[0]
    TARGETS[target](path.read_bytes())
