"""Where the sample captures the tests read are: ``tests/data/captures/`` in the repository.

They are copies of the team's real-peer captures (Node.js, hypercorn, Firefox, Chromium on
loopback; ``README.md`` there says what each holds), kept with the project so that the tests
never depend on anything beside the checkout.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_CAPTURES = Path(__file__).resolve().parent / "data" / "captures"
