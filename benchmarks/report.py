"""Write a benchmark's section into BENCHMARKS.md, between its own start and end markers."""

from __future__ import annotations

from pathlib import Path


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
