"""Population jobs on Apache Spark: bulk FHIR in, record rows (and, later, scores) out.

Pure with respect to the service: never imports ``cds``, Flask or SQLAlchemy (an
import-linter contract keeps it so); ``cds/commands/population.py`` is the CLI that runs
these jobs and records each run in the audit log. Importing this package does not import
pyspark: only the modules that need it do.
"""
