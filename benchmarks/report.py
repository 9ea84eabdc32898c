"""What every benchmark reports the same way: when and on what machine it ran, percentiles
and latency summaries, and its section of BENCHMARKS.md (between its own markers)."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def when() -> str:
    """The time of the run, as the sections print it (``2025-01-31 12:00 UTC``)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> str:
    """``x86_64, 2 cores, Python 3.11.2``: what a section names as its machine."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """p95 for ``fraction`` 0.95: the sorted value nearest to position fraction x (n - 1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(samples_ms: Sequence[float], digits: int | None = 1) -> dict[str, float]:
    """Count, median, p95, p99 and maximum of times in ms (rounded to ``digits``)."""

    def shown(value: float) -> float:
        return value if digits is None else round(value, digits)

    return {
        "n": len(samples_ms),
        "median_ms": shown(statistics.median(samples_ms)),
        "p95_ms": shown(percentile(samples_ms, 0.95)),
        "p99_ms": shown(percentile(samples_ms, 0.99)),
        "max_ms": shown(max(samples_ms)),
    }


def publish(
    path: Path,
    markers: tuple[str, str],
    result: Mapping[str, Any],
    render: Callable[[dict[str, Any]], str],
) -> None:
    """Stamp ``result`` with :func:`when` and :func:`machine`, print it as JSON and write
    ``render(result)`` as the benchmark's section of ``path`` (between ``markers``)."""
    stamped = {"when": when(), "machine": machine(), **result}
    print(json.dumps(stamped, indent=2))
    write_block(path, *markers, render(stamped))


def write_block(path: Path, start: str, end: str, block: str) -> None:
    """Replace the text from ``start`` to ``end`` with ``block`` (which holds both markers),
    or append ``block`` when the markers are not there yet."""
    text = path.read_text()
    if start in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
