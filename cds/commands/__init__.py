"""Subcommands of the ``cds`` CLI that live in their own modules (registered in cds/cli.py)."""
