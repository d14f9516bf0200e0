"""Coverage-guided fuzzing of the same targets with atheris (``pip install -e '.[fuzz]'``).

    .venv/bin/python bench/fuzz/atheris_fuzz.py h2 -atheris_runs=1000000 -rss_limit_mb=400

The first argument names the target (bench/fuzz/targets.py); the rest go to libFuzzer.  The
seeds of bench/fuzz/mutate.py are written to a corpus directory first, so the run starts from
valid input.  A crash is saved by libFuzzer (``crash-*``): copy it into
tests/data/fuzz-regressions/ as ``<target>-<name>.bin``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from bench.fuzz.mutate import seeds
    from bench.fuzz.targets import TARGETS


def main() -> None:
    target = sys.argv.pop(1)
    corpus = Path(tempfile.mkdtemp(prefix=f"h2ws-atheris-{target}-"))
    for i, data in enumerate(seeds()[target]):
        (corpus / f"seed{i}").write_bytes(data)
    atheris.Setup([sys.argv[0], str(corpus), *sys.argv[1:]], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
