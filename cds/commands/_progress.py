"""The long-running commands' progress bars: one look, on standard error (standard output
carries the results), switched off with ``--no-progress``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import click

T = TypeVar("T")

#: ``@progress_option`` on a command gives it ``--progress/--no-progress`` (default: on).
progress_option = click.option(
    "--progress/--no-progress", default=True, help="Progress bar on stderr (default: on)."
)


def progress_bar(
    items: Iterable[T] | None = None,
    *,
    total: int | None = None,
    unit: str,
    desc: str,
    enabled: bool = True,
) -> Any:
    """A tqdm bar over ``items`` (or updated by hand when ``items`` is None)."""
    from tqdm import tqdm

    return tqdm(items, total=total, unit=unit, desc=desc, disable=not enabled, file=sys.stderr)
