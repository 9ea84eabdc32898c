"""Subcommand groups of the ``cds`` command, one module each (registered in ``cds.cli``)."""
