"""Soak test: a steady request rate for a long time, watching memory, latency and errors.

Drives patient-view requests at a fixed rate (open loop: each request has a scheduled
send time, and its latency is counted from that time, so a stalled server cannot hide
behind a waiting client) against the real server, and samples the RSS of the gunicorn
master and workers every second. The run is cut into ten windows; the first 20 % is
warm-up. It passes when, after the warm-up,

* RSS (master + workers) grows by at most ``--rss-growth`` (default 10 %) from the first
  window after warm-up to the last,
* p99 latency of the last two windows exceeds that of the first two after warm-up by at
  most ``--p99-drift`` (default 20 %) — or by at most ``--p99-slack-ms``, for p99s of a
  few milliseconds where the ratio is noise,
* not a single request fails (anything but 200, or no answer), and no worker restarts.
  A request still queued in the client ``--timeout`` s after its send time is counted as
  failed ("Backlog"): the server did not keep up with the offered rate.

Tokens are signed ahead of use by a background thread (never on the request path), each
with its own ``jti`` and a 5-minute lifetime, as an EHR would mint them.

Without ``--url`` it runs its own PostgreSQL cluster and gunicorn (``make soak``);
``tests/reliability/test_soak.py`` calls :func:`run_soak` against the suite's server.

    python -m benchmarks.soak --duration 1800 --capacity 240 --benchmarks BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization

from benchmarks.ehr import trusted_key
from tests.reliability.harness import (
    GunicornServer,
    PgCluster,
    children,
    rss_kib,
    with_hook_instance,
)

SERVICE = "/cds-services/patient-summary"
WINDOWS = 10
DEFAULT_RATE = 300.0
TOKEN_LIFETIME_S = 300
TOKEN_LEAD_S = 10.0


# --------------------------------------------------------------------------- tokens
class TokenSigner:
    """Signs ES384 tokens for one audience ahead of use, on a background thread."""

    def __init__(self, private_pem: bytes, iss: str, kid: str, audience: str, rate: float):
        self._key = serialization.load_pem_private_key(private_pem, password=None)
        self.iss, self.kid, self.audience = iss, kid, audience
        self._batch = max(1, math.ceil(rate))  # one second's worth per batch
        self._ahead = max(self._batch, math.ceil(rate * TOKEN_LEAD_S))
        self._tokens: deque[str] = deque()
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sign(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.iss,
            "sub": "soak-ehr-client",
            "aud": self.audience,
            "iat": now,
            "exp": now + TOKEN_LIFETIME_S,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(
            claims, self._key, algorithm="ES384", headers={"kid": self.kid, "typ": "JWT"}
        )

    def start(self) -> TokenSigner:
        self._tokens.extend(self.sign() for _ in range(self._ahead))
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if len(self._tokens) < self._ahead:
                batch = [self.sign() for _ in range(self._batch)]
                with self._ready:
                    self._tokens.extend(batch)
                    self._ready.notify_all()
            else:
                self._stop.wait(0.2)

    def take(self) -> str:
        with self._ready:
            while not self._tokens:  # the signer fell behind: wait, never sign inline
                self._ready.wait(1.0)
            return self._tokens.popleft()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- the run
@dataclass
class Window:
    index: int
    start_s: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rss_mib: float


@dataclass
class SoakReport:
    duration_s: float
    rate: float
    achieved_rate: float
    requests: int
    errors: dict[str, int]
    windows: list[Window]
    rss_growth: float
    p99_baseline_ms: float
    p99_final_ms: float
    p99_drift: float
    worker_restarts: int
    limits: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def run_soak(
    base_url: str,
    master_pid: int,
    signer_key: tuple[bytes, str, str],
    bodies: list[dict[str, Any]],
    duration: float = 60.0,
    rate: float = DEFAULT_RATE,
    senders: int = 32,
    timeout: float = 10.0,
    rss_growth_limit: float = 0.10,
    p99_drift_limit: float = 0.20,
    p99_slack_ms: float = 5.0,
    progress: bool = False,
) -> SoakReport:
    """Drive ``rate`` requests/s at ``base_url`` for ``duration`` s; judge the run."""
    url = base_url + SERVICE
    private_pem, iss, kid = signer_key
    signer = TokenSigner(private_pem, iss, kid, url, rate).start()
    payloads = [with_hook_instance(b, "{hook_instance}") for b in bodies]
    total = int(duration * rate)
    work: queue.Queue[float | None] = queue.Queue()
    results: list[tuple[float, float, int | str]] = []  # (scheduled, latency s, status)
    lock = threading.Lock()

    def sender(index: int) -> None:
        session = requests.Session()
        n = index
        while True:
            scheduled = work.get()
            if scheduled is None:
                break
            if time.monotonic() - scheduled > timeout:  # an EHR would have given up by now
                with lock:
                    results.append((scheduled, time.monotonic() - scheduled, "Backlog"))
                continue
            body = payloads[n % len(payloads)].replace(
                b"{hook_instance}", str(uuid.uuid4()).encode()
            )
            headers = {
                "Authorization": f"Bearer {signer.take()}",
                "Content-Type": "application/json",
            }
            n += senders
            try:
                response = session.post(url, data=body, headers=headers, timeout=timeout)
                outcome: int | str = response.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                results.append((scheduled, time.monotonic() - scheduled, outcome))
        session.close()

    rss_samples: list[tuple[float, int]] = []
    worker_sets: list[frozenset[int]] = []
    stop_sampling = threading.Event()

    def sampler() -> None:
        while not stop_sampling.is_set():
            pids = children(master_pid)
            total_kib = rss_kib(master_pid) + sum(rss_kib(p) for p in pids)
            rss_samples.append((time.monotonic(), total_kib))
            worker_sets.append(frozenset(pids))
            stop_sampling.wait(1.0)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(senders)]
    for thread in threads:
        thread.start()
    sampling = threading.Thread(target=sampler, daemon=True)
    t0 = time.monotonic()
    sampling.start()
    try:
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            work.put(scheduled)
            if progress and i and i % max(1, int(rate * 60)) == 0:
                print(f"  {i / rate:.0f} s: {i} requests sent", file=sys.stderr, flush=True)
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join(timeout + 30)
        stop_sampling.set()
        sampling.join(5)
        signer.stop()
    elapsed = max(s + latency for s, latency, _ in results) - t0 if results else duration

    window_s = duration / WINDOWS
    windows: list[Window] = []
    for w in range(WINDOWS):
        lo, hi = t0 + w * window_s, t0 + (w + 1) * window_s
        rows = [r for r in results if lo <= r[0] < hi]
        latencies = [r[1] * 1000 for r in rows]
        rss = [kib for t, kib in rss_samples if lo <= t < hi] or [0]
        windows.append(
            Window(
                index=w,
                start_s=round(w * window_s, 1),
                requests=len(rows),
                errors=sum(1 for r in rows if r[2] != 200),
                p50_ms=round(_percentile(latencies, 0.50), 2),
                p99_ms=round(_percentile(latencies, 0.99), 2),
                rss_mib=round(sum(rss) / len(rss) / 1024, 1),
            )
        )
    warm = int(WINDOWS * 0.2)

    def pooled_p99(window_indexes: range) -> float:
        chosen = [windows[i] for i in window_indexes]
        spans = [(t0 + w.index * window_s, t0 + (w.index + 1) * window_s) for w in chosen]
        latencies = [r[1] * 1000 for r in results if any(lo <= r[0] < hi for lo, hi in spans)]
        return _percentile(latencies, 0.99)

    baseline_p99 = pooled_p99(range(warm, warm + 2))
    final_p99 = pooled_p99(range(WINDOWS - 2, WINDOWS))
    drift = final_p99 / baseline_p99 - 1 if baseline_p99 > 0 else float("inf")
    rss_base, rss_final = windows[warm].rss_mib, windows[-1].rss_mib
    growth = rss_final / rss_base - 1 if rss_base > 0 else float("inf")
    errors = Counter(str(r[2]) for r in results if r[2] != 200)
    seen = [s for s in worker_sets if s]
    restarts = len(frozenset().union(*seen) - seen[0]) if seen else 0  # pids not there at start

    report = SoakReport(
        duration_s=duration,
        rate=rate,
        achieved_rate=round(len(results) / elapsed, 1) if elapsed else 0.0,
        requests=len(results),
        errors=dict(errors),
        windows=windows,
        rss_growth=round(growth, 4),
        p99_baseline_ms=round(baseline_p99, 2),
        p99_final_ms=round(final_p99, 2),
        p99_drift=round(drift, 4),
        worker_restarts=restarts,
        limits={
            "rss_growth": rss_growth_limit,
            "p99_drift": p99_drift_limit,
            "p99_slack_ms": p99_slack_ms,
        },
    )
    if errors:
        report.failures.append(f"{sum(errors.values())} failed requests: {dict(errors)}")
    if len(results) < total:
        report.failures.append(f"only {len(results)} of {total} requests completed")
    if growth > rss_growth_limit:
        report.failures.append(f"RSS grew {growth:.1%} (limit {rss_growth_limit:.0%})")
    if drift > p99_drift_limit and final_p99 - baseline_p99 > p99_slack_ms:
        report.failures.append(
            f"p99 drifted {drift:.1%}: {baseline_p99:.1f} -> {final_p99:.1f} ms "
            f"(limit {p99_drift_limit:.0%} or {p99_slack_ms} ms)"
        )
    if restarts:
        report.failures.append(f"{restarts} gunicorn worker(s) restarted")
    return report


# --------------------------------------------------------------------------- self-hosted
def _synthea_bodies(count: int = 8) -> list[dict[str, Any]]:
    from cds.demo import patient_view_request
    from models.shared_data import shared_data

    shared = shared_data()
    bundles = sorted(
        p for p in (shared / "synthea-r4").glob("*.gz") if not p.name.startswith("hospital")
    )
    if not bundles:
        raise SystemExit(f"no Synthea bundles under {shared / 'synthea-r4'}")
    return [patient_view_request(p) for p in bundles[:count]]


def _ec_identity(folder: Path) -> tuple[bytes, str, str, Path]:
    iss, kid = "https://soak-ehr.wardround.example", "soak-es384"
    pem, issuers = trusted_key(folder, iss, kid)
    return pem, iss, kid, issuers


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3])
        if Path("/proc/loadavg").exists()
        else "unknown",
    }


def _markdown(report: SoakReport, command: str, label: str, setup: str) -> str:
    host = machine()
    verdict = "PASS" if report.passed else "FAIL: " + "; ".join(report.failures)
    lines = [
        f"### {host['date']}: {label}",
        "",
        f"* command: `{command}`",
        f"* machine: nproc {host['nproc']}, CPU {host['cpu']}, Python {host['python']}, "
        f"load average at the end {host['load']}",
        f"* setup: {setup}",
        f"* offered {report.rate:g} req/s for {report.duration_s:g} s; achieved "
        f"{report.achieved_rate:g} req/s, {report.requests} requests, "
        f"errors {report.errors or 0}, worker restarts {report.worker_restarts}",
        f"* after warm-up (first 20 %): RSS growth {report.rss_growth:.1%} "
        f"(limit {report.limits['rss_growth']:.0%}); p99 {report.p99_baseline_ms:.1f} -> "
        f"{report.p99_final_ms:.1f} ms, drift {report.p99_drift:.1%} "
        f"(limit {report.limits['p99_drift']:.0%} or +{report.limits['p99_slack_ms']:g} ms)",
        f"* result: **{verdict}**",
        "",
        "| window | from s | requests | errors | p50 ms | p99 ms | RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in report.windows:
        lines.append(
            f"| {w.index}{' (warm-up)' if w.index < WINDOWS * 0.2 else ''} | {w.start_s:g} | "
            f"{w.requests} | {w.errors} | {w.p50_ms:g} | {w.p99_ms:g} | {w.rss_mib:g} |"
        )
    return "\n".join(lines) + "\n"


def append_to_benchmarks(path: Path, entry: str) -> None:
    """Add ``entry`` at the end of the "## Soak" section, creating file or section if absent."""
    heading = "## Soak"
    intro = (
        f"{heading}\n\nResults of `make soak` (`benchmarks/soak.py`), newest last. "
        "Pass criteria after the first 20 % (warm-up): RSS growth <= 10 %, p99 drift "
        "<= 20 %, zero errors.\n\n"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        path.write_text(text.rstrip("\n") + "\n\n" + intro + entry)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = "".join(lines[start:end]).rstrip("\n") + "\n\n" + entry
    rest = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + section + ("\n" + rest if rest else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--rate", type=float, help="requests/s (default: capacity/2, or 300)")
    parser.add_argument("--capacity", type=float, help="measured capacity in requests/s")
    parser.add_argument("--rss-growth", type=float, default=0.10)
    parser.add_argument("--p99-drift", type=float, default=0.20)
    parser.add_argument("--p99-slack-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout, s")
    parser.add_argument("--workers", type=int, default=3, help="WEB_CONCURRENCY")
    parser.add_argument("--label", default="", help="names the run in BENCHMARKS.md")
    parser.add_argument("--benchmarks", type=Path, help="append the results to this file")
    parser.add_argument("--json", type=Path, help="write the full report as JSON")
    args = parser.parse_args(argv)
    rate = args.rate or (args.capacity / 2 if args.capacity else DEFAULT_RATE)

    bodies = _synthea_bodies()
    with tempfile.TemporaryDirectory(prefix="wardround-soak-") as tmp, PgCluster() as pg:
        pem, iss, kid, issuers = _ec_identity(Path(tmp) / "issuers")
        database_url = pg.create_database()
        server = GunicornServer(database_url, issuers, Path(tmp) / "server", workers=args.workers)
        with server:
            print(
                f"soak: {rate:g} req/s for {args.duration:g} s against {server.base_url} "
                f"(workers {server.worker_pids()}, PostgreSQL on port {pg.port})",
                file=sys.stderr,
            )
            report = run_soak(
                server.base_url,
                server.master_pid,
                (pem, iss, kid),
                bodies,
                duration=args.duration,
                rate=rate,
                timeout=args.timeout,
                rss_growth_limit=args.rss_growth,
                p99_drift_limit=args.p99_drift,
                p99_slack_ms=args.p99_slack_ms,
                progress=True,
            )
    command = os.environ.get("SOAK_COMMAND") or shlex.join(
        ["python", "-m", "benchmarks.soak", *(argv if argv is not None else sys.argv[1:])]
    )
    threads = os.environ.get("GUNICORN_THREADS", "16")
    setup = (
        f"own PostgreSQL cluster, gunicorn {args.workers} workers x {threads} threads "
        "(gunicorn.conf.py), patient-summary on 8 Synthea patients, client on the same machine"
    )
    label = args.label or f"{args.duration:g} s run"
    entry = _markdown(report, command, label, setup)
    print(entry)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    if args.benchmarks:
        append_to_benchmarks(args.benchmarks, entry)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
