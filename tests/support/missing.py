"""What a test does when something it needs is not on this machine (a server binary, the
shared data, PostgreSQL): it skips, saying what is missing; under CI (``CI`` set), where
everything must be there, it fails instead."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from models.shared_data import shared_data


def unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (required under CI)")
    pytest.skip(message)


def shared_file(relative: str | Path) -> Path:
    """A file or folder of the shared data (``WARDROUND_SHARED_DATA``), or skip/fail."""
    path = shared_data() / relative
    if not path.exists():
        unavailable(f"shared data missing: {path}")
    return path
