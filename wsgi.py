"""WSGI entry point: ``gunicorn wsgi:app``."""

from cds import create_app

app = create_app()
