"""Command groups of the ``cds`` CLI that live in their own modules (see ``cds/cli.py``)."""
