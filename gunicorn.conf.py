"""gunicorn settings for `make serve` (override with GUNICORN_CMD_ARGS or the environment)."""

import os

bind = f"127.0.0.1:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 10
keepalive = 75  # EHRs keep a small pool of keep-alive connections
# Bound what a hostile client can send before Flask sees the request.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
accesslog = None  # the app writes its own structured, PHI-free request log
