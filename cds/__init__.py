"""Wardround: a CDS Hooks 2.0 service with a tamper-evident audit log."""

from cds.app import create_app

__all__ = ["create_app"]
