"""Prometheus metrics. Labels carry service ids, status codes and resource types: never PHI.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by gunicorn.conf.py so every worker's
samples are summed at ``/metrics``.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

HTTP_REQUEST_SECONDS = Histogram(
    "wardround_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint kind, CDS service and status code.",
    ["endpoint", "service", "status"],
    buckets=LATENCY_BUCKETS,
)
AUTH_FAILURES = Counter(
    "wardround_auth_failures_total", "Refused CDS Hooks JWTs, by reason code.", ["reason"]
)
AUDIT_WRITE_SECONDS = Histogram(
    "wardround_audit_write_seconds",
    "Time of one group-commit transaction (audit rows or the jti replay store).",
    ["writer"],
    buckets=LATENCY_BUCKETS,
)
AUDIT_BATCH_SIZE = Histogram(
    "wardround_audit_batch_size",
    "Items committed per group-commit transaction.",
    ["writer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
AUDIT_QUEUE_DEPTH = Gauge(
    "wardround_audit_queue_depth",
    "Writes waiting for their group commit (the in-memory journal).",
    ["writer"],
    multiprocess_mode="livesum",
)
AUDIT_UNAVAILABLE = Counter(
    "wardround_audit_unavailable_total", "Requests answered 503 because the audit log failed."
)
FHIR_FETCH_SECONDS = Histogram(
    "wardround_fhir_fetch_seconds",
    "Time to fetch FHIR data from the EHR's server, by resource type.",
    ["resource_type"],
    buckets=LATENCY_BUCKETS,
)
FHIR_FETCH_ERRORS = Counter(
    "wardround_fhir_fetch_errors_total",
    "Failed FHIR fetches, by resource type and reason.",
    ["resource_type", "reason"],
)
MODEL_SECONDS = Histogram(
    "wardround_model_inference_seconds",
    "Time a CDS service's handler (its models and rules) took, by service.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
