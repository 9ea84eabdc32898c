"""gunicorn settings for `make serve` (override with GUNICORN_CMD_ARGS or the environment)."""

import os
import shutil
import tempfile

bind = f"127.0.0.1:{os.environ.get('PORT', '8080')}"
# 3 workers x 16 threads measured best on 2 cores (BENCHMARKS.md, "Tuning"): requests spend
# much of their time waiting on the audit commit, and threads that wait share one commit.
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
timeout = 30
graceful_timeout = 10
keepalive = 75  # EHRs keep a small pool of keep-alive connections
# Bound what a hostile client can send before Flask sees the request.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
accesslog = None  # the app writes its own structured, PHI-free request log

# One torch (OpenMP) intra-op thread per worker unless OMP_NUM_THREADS says otherwise: the
# workers already share the cores, and several torch threads per worker were several times
# slower on a busy 2-core machine (BENCHMARKS.md, "Report NLP"). Set here, in the master,
# so that every worker has it before it imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Prometheus multiprocess mode: each worker writes its samples here; /metrics sums them.
# Set before any worker imports prometheus_client.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wardround-metrics-")
_METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    os.makedirs(_METRICS_DIR, exist_ok=True)
    for name in os.listdir(_METRICS_DIR):  # samples of a previous run are not ours
        os.remove(os.path.join(_METRICS_DIR, name))


def post_worker_init(worker):
    """Load every model before the worker serves (WARDROUND_WARM_MODELS=false: on first use)."""
    settings = getattr(worker.wsgi, "config", {}).get("WARDROUND_SETTINGS")
    if settings is not None and settings.warm_models:
        from cds.serving.warm_up import warm_models

        warm_models()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.path.basename(_METRICS_DIR).startswith("wardround-metrics-"):
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)


# gthread that collects request heads without a thread and enforces a read deadline.
worker_class = "cds.serving.slow_client_worker.SlowClientGuardWorker"
