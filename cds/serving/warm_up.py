"""Every registered model loaded in a gunicorn worker before it serves its first request
(``post_worker_init`` in ``gunicorn.conf.py``), so the first clinician does not wait for a
model to load (the report transformer takes a few seconds). ``WARDROUND_WARM_MODELS=false``
leaves loading to first use, as the test harness does to keep its servers quick to start.

A model that cannot be loaded (a broken artifact) is logged with its id and error type and
left to fail its own service's calls, as it would on first use; the worker still starts.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from models import registry

log = logging.getLogger("cds.serving")


def warm_models() -> dict[str, Any]:
    """Load every registered model; returns (and logs) what was loaded, how long it took,
    and torch's intra-op thread count when torch is in the process."""
    started = time.perf_counter()
    loaded, failed = [], []
    for entry in registry.MODEL_ENTRIES:
        try:
            registry.get(entry.id)
        except Exception as exc:  # logged; its service fails on use, as it would lazily
            failed.append(entry.id)
            log.error("model not loaded", extra={"model": entry.id, "error": type(exc).__name__})
        else:
            loaded.append(entry.id)
    torch = sys.modules.get("torch")
    summary = {
        "models": len(loaded),
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 2),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
    }
    log.info("models loaded", extra=summary)
    return summary
