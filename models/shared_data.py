"""Where the shared development data lives (Synthea bundles, IU X-ray reports,
PneumoniaMNIST): read by training, the tests, the benchmarks and the demo commands, never
shipped. ``WARDROUND_SHARED_DATA``, else ``../shared/data`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The shared data folder (it may not exist: callers say what is missing)."""
    return Path(os.environ.get("WARDROUND_SHARED_DATA") or REPO.parent / "shared" / "data")
