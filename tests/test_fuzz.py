"""The short fuzzing run of ``make test`` (bench/fuzz/): at least 10,000 mutated inputs over every
entry point, fixed seed, 0 crashes, 0 hangs; and every input that once failed, replayed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fuzz.mutate import seeds
from bench.fuzz.run import REGRESSIONS, fuzz
from bench.fuzz.targets import TARGETS


def test_short_fuzz_run_finds_no_crash_or_hang() -> None:
    result = fuzz(12_000, seed=13, save=False)
    assert result.inputs == 12_000, result.summary()
    assert not result.crashes and not result.hangs, result.summary()
    assert set(result.per_target) == set(TARGETS)  # every entry point was reached
    assert result.seconds < 120, result.summary()
    assert result.peak_rss_mb < 400, result.summary()


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
