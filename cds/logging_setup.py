"""Structured JSON logs. Log lines carry ids and codes, never names, dates or free text."""

from __future__ import annotations

import logging
import sys
import warnings

import pydicom.config
from pythonjsonlogger.json import JsonFormatter

_CONFIGURED = False


def _silence_libraries_that_quote_data() -> None:
    """pydicom's warnings about odd element values quote the values (patient names, ids):
    read without validation warnings, and keep its logger to errors (which name no values)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")


def configure_logging(level: str) -> None:
    global _CONFIGURED
    root = logging.getLogger()
    root.setLevel(level)
    _silence_libraries_that_quote_data()
    if _CONFIGURED:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    )
    root.addHandler(handler)
    _CONFIGURED = True
