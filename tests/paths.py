"""Where the tests' sample captures are: ``tests/data/captures/``, inside the repository.

They are copies of the team's real-peer captures (each with its TLS key log), a few tens of KB,
so that a clone anywhere passes ``make test`` on its own; ``tests/data/captures/README.md`` says
what each holds and how it was made.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_CAPTURES = Path(__file__).resolve().parent / "data" / "captures"
