"""Serving infrastructure (gunicorn worker class)."""
