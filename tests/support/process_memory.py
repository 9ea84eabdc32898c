"""Peak memory of the current process, for memory-bound tests and benchmarks."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB (``VmHWM``: unlike ``ru_maxrss``, it is not
    inherited from the parent across fork and exec, so a child started by a big test
    process measures only itself)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
