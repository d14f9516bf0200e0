"""Seeded mutation fuzzing of h2ws's entry points: crashes, hangs, peak RSS.

    .venv/bin/python -m bench.fuzz.run --inputs 1000000 --seed 1 [--targets h2,hpack]

Deterministic for a seed: the same inputs in the same order, so a run can be repeated.  The
short run of ``make test`` (tests/test_fuzz.py) calls :func:`fuzz` with a fixed seed; the
coverage-guided run is bench/fuzz/atheris_fuzz.py (same targets).

- crash: an exception escaping a target (every decoding problem must be a diagnostic row);
- hang: an input taking more than ``HANG_FACTOR`` times the target's unmutated time (median of
  its seeds), and at least ``HANG_FLOOR`` seconds (below that, a factor of ten is timer and
  garbage-collector noise), in CPU time and the best of three runs; an input still running
  after ``TIMEOUT`` seconds is stopped (SIGALRM) and counted as a hang;
- every such input is written to tests/data/fuzz-regressions/ (``<target>-<sha1>.bin``), where
  tests/test_fuzz.py replays it forever after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import signal
import statistics
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .mutate import mutate_bytes, mutate_capture, seeds, tcp_payloads
from .targets import TARGETS

REGRESSIONS = Path(__file__).resolve().parents[2] / "tests" / "data" / "fuzz-regressions"
HANG_FACTOR = 10.0
HANG_FLOOR = 0.05
TIMEOUT = 10
#: how often each target is picked: the whole-pipeline targets cost more per input
WEIGHTS = {
    "hpack": 3,
    "h2": 4,
    "http1": 3,
    "tls_sniff": 1,
    "websocket": 3,
    "capture": 2,
    "capture_tls": 1,
    "flowfile": 1,
}


#: Inputs are timed in this process's CPU time, not wall-clock time: on the shared machine (load
#: 8 on 2 CPUs) a wall-clock timing of 60-130 ms was the scheduler's doing for inputs that take
#: 0.4-6 ms (tests/data/fuzz-regressions/README.md).  The SIGALRM timeout is wall-clock.
_clock = time.process_time


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


@dataclass
class Result:
    inputs: int = 0
    per_target: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    slowest_ratio: float = 0.0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "inputs": self.inputs,
            "per_target": dict(self.per_target),
            "crashes": len(self.crashes),
            "hangs": len(self.hangs),
            "slowest_vs_unmutated": round(self.slowest_ratio, 1),
            "seconds": round(self.seconds, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "failures": self.crashes + self.hangs,
        }


def _save(target: str, data: bytes, save: bool) -> str:
    name = f"{target}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
    if save:
        REGRESSIONS.mkdir(parents=True, exist_ok=True)
        (REGRESSIONS / name).write_bytes(data)
    return name


def _baseline(target: str, inputs: list[bytes]) -> float:
    times = []
    for data in inputs * 3:
        start = _clock()
        TARGETS[target](data)
        times.append(_clock() - start)
    return statistics.median(times)


def _rerun(target: str, data: bytes) -> float:
    """The best of two more runs of an input that looked slow (CPU time, see :data:`_clock`)."""
    best = float("inf")
    for _ in range(2):
        t0 = _clock()
        TARGETS[target](data)
        best = min(best, _clock() - t0)
    return best


def fuzz(
    inputs: int,
    seed: int,
    targets: list[str] | None = None,
    save: bool = True,
    progress: bool = False,
) -> Result:
    names = targets or list(TARGETS)
    corpus = seeds()
    #: the TCP payload regions of every capture seed, for the structure-aware mutation
    regions = {(t, k): list(tcp_payloads(s)) for t in names for k, s in enumerate(corpus[t])}
    result = Result()
    for t in names:
        result.baseline[t] = _baseline(t, corpus[t])
    rng = random.Random(seed)
    weights = [WEIGHTS[t] for t in names]
    everything = [s for t in names for s in corpus[t]]
    old = signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    try:
        for i in range(inputs):
            target = rng.choices(names, weights)[0]
            k = rng.randrange(len(corpus[target]))
            base = corpus[target][k]
            if target.startswith("capture") and rng.random() < 0.7:
                cap_regions = regions[target, k]
                data = mutate_capture(base, rng, cap_regions) if cap_regions else base
            else:
                data = mutate_bytes(base, rng, everything)
            t0 = _clock()
            signal.alarm(TIMEOUT)
            try:
                TARGETS[target](data)
            except _Timeout:
                result.hangs.append(_save(target, data, save) + f" (> {TIMEOUT} s)")
                continue
            except Exception:
                name = _save(target, data, save)
                last = traceback.format_exc().strip().splitlines()[-1]
                result.crashes.append(f"{name}: {last}")
                continue
            finally:
                signal.alarm(0)
            took = _clock() - t0
            if took > HANG_FLOOR and took > HANG_FACTOR * result.baseline[target]:
                took = min(took, _rerun(target, data))  # not the scheduler's doing?
            ratio = took / max(result.baseline[target], 1e-6)
            if took > HANG_FLOOR:
                result.slowest_ratio = max(result.slowest_ratio, ratio)
                if ratio > HANG_FACTOR:
                    result.hangs.append(_save(target, data, save) + f" ({took:.3f} s)")
            result.inputs += 1
            result.per_target[target] += 1
            if progress and (i + 1) % 50_000 == 0:
                rss = peak_rss_mb()
                print(
                    f"{i + 1} inputs, {time.perf_counter() - start:.0f} s, crashes "
                    f"{len(result.crashes)}, hangs {len(result.hangs)}, peak RSS {rss:.0f} MB",
                    flush=True,
                )
    finally:
        signal.signal(signal.SIGALRM, old)
    result.seconds = time.perf_counter() - start
    result.peak_rss_mb = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's peak RSS (MB): ``VmHWM`` of ``/proc/self/status`` where there is one.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux keeps that value across ``execve``, so a
    run started from a big process (``tests/test_fuzz.py`` under pytest, ~450 MB by then)
    reported its parent's peak (476 MB on CI, while the run itself peaks at ~60 MB).
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--targets", default="", help="comma-separated; default all")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t] or None
    result = fuzz(args.inputs, args.seed, targets, progress=True)
    print(json.dumps(result.summary(), indent=1))
    return 1 if result.crashes or result.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
