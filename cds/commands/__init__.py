"""``cds`` subcommand groups, one module each (registered in cds/cli.py)."""
