"""Where the team's shared sample captures are: ``shared/`` beside the project's checkout."""

from __future__ import annotations

from pathlib import Path

_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "captures"
SHARED_CAPTURES = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/captures")
