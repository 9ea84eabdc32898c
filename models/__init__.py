"""Model families: pure functions from typed patient data to findings.

A model package never imports ``cds``, Flask or SQLAlchemy (import-linter enforces it).
"""
