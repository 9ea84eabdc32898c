"""`make bench-population`: bulk read + record rows (and, with ``--job score``, + features and
risk scoring) at 600 / 10,000 / 100,000 patients.

Data: the shared Synthea patients as bulk NDJSON (``cds population convert``), grown to each
size by the scale generator (synthetic clones: for throughput only) — the five record
types (Patient, Condition, Observation, MedicationRequest, Encounter), gzip, at most
100,000 resources per file — generated once into ``--data-dir`` and reused.

Paths, each on the same files, each in a fresh process:

* ``python``: one process, ``read_folder`` + ``iter_record_rows`` (every resource parsed
  by ``fhir.resources``, as on the hook path); rows counted, nothing kept;
* ``local[2]``: the records job (``write_record_tables``: one pass, Parquet out);
* ``cluster``: the same job on a standalone master and two workers (one core and 2 GiB
  each) on 127.0.0.1, started from pyspark's launcher (``tests/support/spark_cluster``).

Measured: the job's wall time (Spark's start-up is reported apart), patients and resources
per second, and the peak resident memory of the driver (the Python process and its JVM)
and, on the cluster, of the executors (JVMs and their Python workers), sampled every
0.5 s. Results go into BENCHMARKS.md between the population markers.

``--job score`` (``make bench-population-score``) measures bulk read + features + scoring
with both registered learned risk models on the as-of day 2020-06-30, on the same files:

* ``python``: one process, the hook path per patient: ``read_records`` groups the bulk lines
  by patient (an export over 64 MiB inflated is first spilled to gzip bucket files by a hash
  of the patient id, then one bucket is grouped at a time), then per patient ``context_as_of`` (fhir.resources parsing, the
  PatientContext) and ``LearnedRiskModel.predict`` (eligibility, ``evaluate``, booster,
  factors) for each model;
* ``local[2]`` and ``cluster``: the ``cds population score`` job (records job to Parquet,
  ``feature_frame`` + eligibility, mapInPandas scoring to Parquet, RiskAssessment NDJSON).

Its results go between the population-score markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import write_block  # noqa: E402
from tests.support.live_server import children, rss_kib  # noqa: E402

MARK_START, MARK_END = "<!-- population-bench:start -->", "<!-- population-bench:end -->"
SCORE_START = "<!-- population-score-bench:start -->"
SCORE_END = "<!-- population-score-bench:end -->"
READ_START = "<!-- population-read-bench:start -->"
READ_END = "<!-- population-read-bench:end -->"
SCORE_AS_OF = "2020-06-30"
SCORE_MODELS = ("cvd-event-3y", "acute-care-1y")
RECORD_TYPES = frozenset({"Patient", "Condition", "Observation", "MedicationRequest", "Encounter"})
LINES_PER_FILE = 100_000
SIZES = (600, 10_000, 100_000)
PATHS = ("python", "local[2]", "cluster")


# --------------------------------------------------------------------------- data
def synthea_ndjson(data_dir: Path) -> Path:
    from fhir_adapters.bulk.synthea_ndjson import bundle_files, convert_bundles
    from tests.conftest import SYNTHEA

    folder = data_dir / "synthea"
    if not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        convert_bundles(bundle_files(SYNTHEA), folder / "bulk", types=RECORD_TYPES)
        (folder / "done").write_text("")
    return folder / "bulk"


def population(data_dir: Path, patients: int) -> tuple[Path, dict[str, Any]]:
    """The folder of ``patients`` patients (generated on first use) and its description."""
    from fhir_adapters.bulk.ndjson import scan_folder
    from fhir_adapters.bulk.synthetic_clones import clone_folder

    folder = data_dir / f"patients-{patients}"
    description = folder / "description.json"
    if not description.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        source = scan_folder(synthea_ndjson(data_dir))
        started = time.perf_counter()
        summary = clone_folder(
            source, folder / "bulk", patients, compress=True, max_lines=LINES_PER_FILE
        )
        files = list((folder / "bulk").iterdir())
        description.write_text(
            json.dumps(
                {
                    "patients": summary.patients,
                    "resources": sum(summary.resources.values()),
                    "files": len(files),
                    "gzip_bytes": sum(f.stat().st_size for f in files),
                    "generate_s": round(time.perf_counter() - started, 1),
                }
            )
        )
    return folder / "bulk", json.loads(description.read_text())


# --------------------------------------------------------------------------- memory
class PeakMemory:
    """Samples the resident memory of process trees every 0.5 s; keeps the peaks."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name → callable returning pids
        self.peaks = dict.fromkeys(groups, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pids in self.groups.items():
                total = sum(rss_kib(pid) for pid in pids())
                self.peaks[name] = max(self.peaks[name], total)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children(current))
    return found


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def driver_pids() -> list[int]:
    """This process and its Spark driver JVM (not the cluster daemons it may have started)."""
    me = os.getpid()
    jvms = [pid for pid in children(me) if "SparkSubmit" in _command_line(pid)]
    return [me, *(pid for jvm in jvms for pid in tree(jvm))]


def executor_pids() -> list[int]:
    """Executor JVMs of a standalone cluster and their Python workers."""
    roots = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and "CoarseGrainedExecutorBackend" in _command_line(int(p.name))
    ]
    return [pid for root in roots for pid in tree(root)]


# --------------------------------------------------------------------------- one measurement
def measure_python(folder: Path) -> dict[str, Any]:
    from fhir_adapters.bulk.ndjson import ReadStats, read_folder, scan_folder
    from fhir_adapters.record_rows import RESOURCE_TYPES, iter_record_rows

    me = os.getpid()
    with PeakMemory({"driver": lambda: [me]}) as memory:
        started = time.perf_counter()
        stats = ReadStats()
        resources = read_folder(scan_folder(folder), tuple(sorted(RESOURCE_TYPES)), stats)
        rows = sum(1 for _ in iter_record_rows(resources))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows, "resources": stats.resources, **_peaks(memory)}


def measure_spark(folder: Path, master: str, cluster: Any = None) -> dict[str, Any]:
    from fhir_adapters.bulk.ndjson import digest_files, scan_folder
    from population.records_job import input_files, planned_inputs, write_record_tables
    from population.spark_session import SparkSettings, spark_session

    groups: dict[str, Any] = {"driver": driver_pids}
    if cluster is not None:
        groups["executors"] = executor_pids
    started = time.perf_counter()
    settings = SparkSettings(master=master, driver_memory="2g", executor_memory="2g")
    spark = spark_session(settings)
    startup = time.perf_counter() - started
    out = Path(tempfile.mkdtemp(prefix="bench-population-"))
    try:
        with PeakMemory(groups) as memory:
            started = time.perf_counter()
            bulk = scan_folder(folder)
            inputs = planned_inputs(digest_files(input_files(bulk)))
            hashed = time.perf_counter() - started
            counted, written = write_record_tables(spark, bulk, out / "records", inputs)
            seconds = time.perf_counter() - started
    finally:
        spark.stop()
        shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "startup_s": startup,
        "hash_s": hashed,
        "rows": sum(d.entries for d in written),
        "resources": sum(d.entries for d in counted),
        **_peaks(memory),
    }


def _learned_models() -> list[Any]:
    from models.risk.learned import load

    return [load(m) for m in SCORE_MODELS]


def measure_python_score(folder: Path, stop_after: float | None = None) -> dict[str, Any]:
    """The hook path, one patient after another, the records read by ``read_records``
    (large exports spilled to bucket files by patient, one bucket grouped at a time).
    ``stop_after``: stop after that many seconds (a partial run: the patients done so far)."""
    from datetime import date

    from fhir_adapters.records import read_records
    from models.risk.evidence import as_of_datetime
    from models.risk.learned import NotEligible
    from models.risk.training.dataset import context_as_of

    models = _learned_models()
    at = as_of_datetime(date.fromisoformat(SCORE_AS_OF))
    me = os.getpid()
    with PeakMemory({"driver": lambda: [me]}) as memory:
        started = time.perf_counter()
        read_s: float | None = None
        scored = eligible = patients = resources = 0
        for record in read_records(folder):
            if read_s is None:
                read_s = time.perf_counter() - started
            patients += 1
            resources += sum(
                len(items) for kind, items in record.resources.items() if kind in RECORD_TYPES
            )
            context = context_as_of(record.resources, record.patient_id, at)
            for model in models:
                scored += 1
                try:
                    model.predict(context)
                except NotEligible:
                    continue
                eligible += 1
            if stop_after is not None and time.perf_counter() - started > stop_after:
                break
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "read_s": read_s,
        "patients": patients,
        "resources": resources,
        "rows": scored,
        "eligible": eligible,
        **_peaks(memory),
    }


def measure_python_read(folder: Path) -> dict[str, Any]:
    """``read_records`` alone: every patient's record grouped (spilled to bucket files
    above ``GROUP_BYTES``), nothing scored; the peak memory and the spill on disk."""
    from fhir_adapters.records import bucket_count, ndjson_files, read_records

    me = os.getpid()
    spill_peak = 0
    with (
        tempfile.TemporaryDirectory(prefix="bench-spill-") as spill,
        PeakMemory({"driver": lambda: [me]}) as memory,
    ):
        started = time.perf_counter()
        first_s: float | None = None
        patients = resources = 0
        for record in read_records(folder, spill_dir=Path(spill)):
            if first_s is None:
                first_s = time.perf_counter() - started
                spill_peak = sum(f.stat().st_size for f in Path(spill).rglob("*") if f.is_file())
            patients += 1
            resources += sum(len(items) for items in record.resources.values())
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "read_s": first_s,
        "patients": patients,
        "resources": resources,
        "rows": patients,
        "buckets": bucket_count(ndjson_files(folder)),
        "spill_mib": round(spill_peak / 2**20),
        **_peaks(memory),
    }


def measure_spark_score(folder: Path, master: str, cluster: Any = None) -> dict[str, Any]:
    from datetime import date

    from fhir_adapters.bulk.ndjson import digest_files, scan_folder
    from population.features import parquet_tables
    from population.records_job import input_files, planned_inputs, write_record_tables
    from population.score_job import run_score_job
    from population.spark_session import SparkSettings, spark_session

    models = _learned_models()
    groups: dict[str, Any] = {"driver": driver_pids}
    if cluster is not None:
        groups["executors"] = executor_pids
    started = time.perf_counter()
    spark = spark_session(SparkSettings(master=master, driver_memory="2g", executor_memory="2g"))
    startup = time.perf_counter() - started
    out = Path(tempfile.mkdtemp(prefix="bench-population-score-"))
    try:
        with PeakMemory(groups) as memory:
            started = time.perf_counter()
            bulk = scan_folder(folder)
            inputs = planned_inputs(digest_files(input_files(bulk)))
            counted, _ = write_record_tables(spark, bulk, out / "records", inputs)
            read_s = time.perf_counter() - started
            tables = parquet_tables(spark, out / "records")
            day = date.fromisoformat(SCORE_AS_OF)
            result = run_score_job(spark, tables, models, day, out)
            seconds = time.perf_counter() - started
    finally:
        spark.stop()
        shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "startup_s": startup,
        "read_s": read_s,
        "resources": sum(d.entries for d in counted),
        "rows": result.rows,
        "eligible": result.eligible,
        "risk_assessments": result.resources,
        **_peaks(memory),
    }


def _peaks(memory: PeakMemory) -> dict[str, float]:
    return {f"{name}_mib": round(kib / 1024) for name, kib in memory.peaks.items()}


def run_one(
    path: str, folder: Path, workdir: Path, job: str = "records", stop_after: float | None = None
) -> dict[str, Any]:
    """One measurement, with the machine's 1-minute load average before and after (the
    machine is shared: other work running beside it slows it down)."""
    before = os.getloadavg()[0]
    python, spark = {
        "records": (measure_python, measure_spark),
        "score": (measure_python_score, measure_spark_score),
        "read": (measure_python_read, None),
    }[job]
    if spark is None and path != "python":
        raise SystemExit(f"--job {job} measures the python path only")
    if path == "python":
        measured = python(folder, stop_after) if stop_after else python(folder)
    elif path == "cluster":
        from tests.support.spark_cluster import StandaloneCluster

        with StandaloneCluster(workdir / "cluster", workers=2, cores=1, memory="2560m") as c:
            measured = spark(folder, c.master_url, cluster=c)
    else:
        measured = spark(folder, path)
    return measured | {"load": [round(before, 1), round(os.getloadavg()[0], 1)]}


# --------------------------------------------------------------------------- the report
@dataclass
class Result:
    size: int
    path: str
    data: dict[str, Any]
    measured: dict[str, Any]

    @property
    def patients_per_s(self) -> float:
        return self.patients / self.measured["seconds"]

    @property
    def patients(self) -> int:
        """Patients done: all of them, or those of a run stopped early."""
        return int(self.measured.get("patients", self.data["patients"]))

    @property
    def stopped(self) -> bool:
        """A run stopped early (``--stop-after``) before every patient was done."""
        return self.patients < self.data["patients"]

    @property
    def resources_per_s(self) -> float:
        return self.measured["resources"] / self.measured["seconds"]


def _when_and_machine() -> tuple[str, str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return when, f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _report(results: list[Result], command: str, note: str | None = None) -> str:
    when, machine = _when_and_machine()
    lines = [
        MARK_START,
        "## Population: bulk read + record rows (`make bench-population`)",
        "",
        f"{when}, {machine}, Spark {_spark_version()}, Java {_java_version()}. Command: "
        f"`{command}`" + (f" ({note})" if note else "") + ". Data: the 299 shared Synthea "
        "patients grown with the scale generator "
        "(synthetic clones, throughput only), the five record types, gzip NDJSON of at most "
        f"{LINES_PER_FILE:,} resources per file. Each row is one fresh process; seconds are "
        "the job alone (reading, building every record row, and for Spark writing Parquet "
        "and hashing the input files); Spark's start-up is the next column. Memory is the "
        "peak resident set, sampled every 0.5 s. The cluster is a master and two one-core "
        "workers (2.5 GiB each, executors 2g) on the same two cores, so it shows the cluster "
        "path's cost, not a scale-out. The machine was shared with other work while this ran "
        "(its 1-minute load average before and after each row is the last column).",
        "",
        "| patients | resources | gzip MB | path | seconds | patients/s | resources/s "
        "| Spark start s | driver peak MiB | executors peak MiB | load before/after |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        m = r.measured
        lines.append(
            f"| {r.data['patients']:,} | {r.data['resources']:,} | "
            f"{r.data['gzip_bytes'] / 1e6:,.0f} | {r.path} | {m['seconds']:,.1f} | "
            f"{r.patients_per_s:,.0f} | {r.resources_per_s:,.0f} | "
            f"{_seconds(m.get('startup_s'))} | {m['driver_mib']:,} | "
            f"{m.get('executors_mib', '-')} | {_load(m)} |"
        )
    lines += ["", _reading(results), MARK_END]
    return "\n".join(lines)


def _score_report(results: list[Result], command: str, note: str | None = None) -> str:
    when, machine = _when_and_machine()
    lines = [
        SCORE_START,
        "## Population: bulk read + features + risk scoring (`make bench-population-score`)",
        "",
        f"{when}, {machine}, Spark {_spark_version()}, Java {_java_version()}. Command: "
        f"`{command}`" + (f" ({note})" if note else "") + ". Same data as above (synthetic "
        f"clones, throughput only). Both learned risk models ({', '.join(SCORE_MODELS)}), "
        f"as of {SCORE_AS_OF}. python: one process, the hook path per patient "
        "(`read_records` groups the bulk lines by patient: an export over 64 MiB inflated "
        "is first spilled to gzip bucket files by a hash of the patient id, then one bucket "
        "is grouped at a time; then `context_as_of` + `LearnedRiskModel.predict` per "
        "model). "
        "local[2] / cluster: the `cds population score` job (record rows to Parquet, "
        "features and eligibility in Spark SQL, mapInPandas scoring to Parquet, "
        "RiskAssessment NDJSON). Seconds are the job alone, Spark's start-up apart; "
        '"read s" is the bulk read (python: until the first patient record, i.e. the '
        "spill to buckets and grouping the first bucket; Spark: the records job). Scored = "
        "patients x models; eligible = scores given.",
        "",
        "| patients | resources | path | seconds | read s | patients/s | scored | eligible "
        "| Spark start s | driver peak MiB | executors peak MiB | load before/after |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        m = r.measured
        lines.append(
            f"| {_patients_cell(r)} | {m['resources']:,} | {r.path} | {m['seconds']:,.1f} | "
            f"{m['read_s']:,.1f} | {r.patients_per_s:,.1f} | {m['rows']:,} | "
            f"{m['eligible']:,} | {_seconds(m.get('startup_s'))} | {m['driver_mib']:,} | "
            f"{m.get('executors_mib', '-')} | {_load(m)} |"
        )
    by = {(r.size, r.path): r for r in results}
    notes = []
    for path in PATHS:
        rates = [(s, by[(s, path)].patients_per_s) for s in SIZES if (s, path) in by]
        if rates:
            notes.append(
                f"{path} "
                + ", ".join(
                    f"{v:,.1f}/s at {s:,}" + (" (stopped early)" if by[(s, path)].stopped else "")
                    for s, v in rates
                )
            )
    text = [
        "Reading it. Patients per second by size: " + "; ".join(notes) + ".",
        _not_run(by),
        "Memory: bulk NDJSON is grouped by resource type, not by patient; the Python path "
        "holds one bucket of patients at a time (the rest waits on disk, gzip), so its "
        "peak follows the bucket size, not the export. Spark's driver only plans and "
        "counts (the drug vocabulary's ATC codes aside); the executors stream. In local "
        "mode the driver's process tree is also the executor (JVM heap capped by "
        "--driver-memory 2g, plus the Python workers); on the cluster the driver is the "
        "driver alone. Peak MiB by size: " + _memory_by_size(by) + ".",
        _eligible_agreement(by),
    ]
    for size in SIZES:
        if (size, "python") in by and (size, "local[2]") in by:
            ratio = by[(size, "local[2]")].patients_per_s / by[(size, "python")].patients_per_s
            text.append(
                f"At {size:,} patients Spark local[2] is {ratio:.1f}x the Python path"
                + (" (its rate so far)." if by[(size, "python")].stopped else ".")
            )
    lines += ["", "\n\n".join(text), SCORE_END]
    return "\n".join(lines)


def _read_report(results: list[Result], command: str, note: str | None = None) -> str:
    when, machine = _when_and_machine()
    lines = [
        READ_START,
        "## Population: the Python path's by-patient reader (`make bench-population-read`)",
        "",
        f"{when}, {machine}. Command: `{command}`" + (f" ({note})" if note else "") + ". "
        "Same data as above (synthetic clones, throughput only). `read_records` alone: every "
        "line parsed and checked, grouped into one record per patient (an export over 64 MiB "
        "inflated spilled first to gzip bucket files by a hash of the patient id, then one "
        "bucket grouped at a time), nothing scored: what the Python scoring path reads "
        'before its per-patient work. "first s" is the time to the first record (the spill); '
        "spill MiB the bucket files on disk at that moment; peak the process's resident set.",
        "",
        "| patients | resources | buckets | seconds | first s | patients/s | spill MiB "
        "| peak MiB | load before/after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        m = r.measured
        lines.append(
            f"| {m['patients']:,} | {m['resources']:,} | {m['buckets']:,} | "
            f"{m['seconds']:,.1f} | {m['read_s']:,.1f} | {r.patients_per_s:,.1f} | "
            f"{m['spill_mib']:,} | {m['driver_mib']:,} | {_load(m)} |"
        )
    lines += [READ_END]
    return "\n".join(lines)


def _memory_by_size(by: dict[tuple[int, str], Result]) -> str:
    def peaks(m: dict[str, Any]) -> str:
        executors = m.get("executors_mib")
        return f"{m['driver_mib']:,}" + (f" + executors {executors:,}" if executors else "")

    return "; ".join(
        f"{path} "
        + ", ".join(f"{peaks(by[(s, path)].measured)} at {s:,}" for s in SIZES if (s, path) in by)
        for path in PATHS
        if any((s, path) in by for s in SIZES)
    )


def _patients_cell(r: Result) -> str:
    if r.stopped:
        return f"{r.data['patients']:,} (stopped after {r.patients:,})"
    return f"{r.data['patients']:,}"


def _eligible_agreement(by: dict[tuple[int, str], Result]) -> str:
    """Whether every complete run gave the same number of eligible scores at each size."""
    differ = []
    for size in SIZES:
        counts = {
            p: by[(size, p)].measured["eligible"]
            for p in PATHS
            if (size, p) in by and not by[(size, p)].stopped
        }
        if len(set(counts.values())) > 1:
            differ.append(f"at {size:,}: " + ", ".join(f"{p} {n:,}" for p, n in counts.items()))
    if differ:
        return "The paths disagree on the eligible scores: " + "; ".join(differ) + "."
    return "At each size every complete run gives the same number of eligible scores."


def _not_run(by: dict[tuple[int, str], Result]) -> str:
    missing = [f"{path} at {size:,}" for size in SIZES for path in PATHS if (size, path) not in by]
    stopped = [r for r in by.values() if r.stopped]
    said = [
        f"{r.path} at {r.size:,} was stopped after {r.measured['seconds']:,.0f} s, "
        f"{r.patients:,} patients scored (the whole run at that rate: about "
        f"{r.size / r.patients_per_s / 3600:,.1f} hours)"
        for r in stopped
    ]
    if missing:
        measured = [s for s in SIZES if (s, "python") in by and not by[(s, "python")].stopped]
        why = ""
        if (100_000, "python") not in by and measured:
            rate = by[(measured[-1], "python")].patients_per_s
            why = (
                f" (the Python path validates every resource with fhir.resources, as the "
                f"hooks do, at {rate:,.1f} patients/s at {measured[-1]:,}: 100,000 would "
                f"take about {100_000 / rate / 3600:,.1f} hours on one core)"
            )
        said.append("not run: " + ", ".join(missing) + why)
    if not said:
        return "Every size ran to the end on every path."
    text = "; ".join(said)
    return text[0].upper() + text[1:] + "."


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _load(measured: dict[str, Any]) -> str:
    load = measured.get("load")
    return f"{load[0]} / {load[1]}" if load else "?"


def _reading(results: list[Result]) -> str:
    by = {(r.size, r.path): r for r in results}
    notes = []
    for path in PATHS:
        rates = [(s, by[(s, path)].patients_per_s) for s in SIZES if (s, path) in by]
        if rates:
            described = ", ".join(f"{rate:,.0f}/s at {size:,}" for size, rate in rates)
            notes.append(f"{path} {described}")
    text = [
        "Reading it. Patients per second by size (a rate that holds or rises with size means "
        "the cost grows linearly, start-up aside): " + "; ".join(notes) + ".",
    ]
    for size in SIZES:
        if (size, "python") in by and (size, "local[2]") in by:
            ratio = by[(size, "local[2]")].patients_per_s / by[(size, "python")].patients_per_s
            text.append(
                f"At {size:,} patients Spark local[2] is {ratio:.1f}x the single Python "
                "process (which validates every resource with fhir.resources, as the hooks "
                "do; Spark reads only the elements the rows need)."
            )
    missing = [(s, p) for s in SIZES for p in PATHS if (s, p) not in by]
    for size, path in missing:
        known = [by[(s, path)] for s in SIZES if (s, path) in by]
        if known:
            rate = known[-1].patients_per_s
            text.append(
                f"Not run: {path} at {size:,} patients (at its measured {rate:,.0f} patients/s "
                f"it would take about {size / rate / 60:,.0f} minutes)."
            )
    driver = [
        f"{by[(s, p)].measured['driver_mib']:,} MiB ({p}, {s:,})"
        for p in PATHS
        for s in SIZES
        if (s, p) in by
    ]
    text.append(
        "Driver memory does not follow the data: the Python path streams (one line at a "
        "time), and Spark's driver only plans and counts while the executors read; its JVM "
        "heap is capped by --driver-memory (2g here), which local mode fills as working "
        "memory. Peaks: " + ", ".join(driver) + "."
    )
    return "\n\n".join(text)


def _spark_version() -> str:
    import pyspark

    return pyspark.__version__


def _java_version() -> str:
    answer = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    first = (answer.stderr or answer.stdout).splitlines()[:1]
    return first[0].split('"')[1] if first and '"' in first[0] else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--data-dir", type=Path, default=REPO / "instance" / "bench-population")
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--results", type=Path, help="JSON lines of earlier runs to include")
    parser.add_argument(
        "--report-only", action="store_true", help="Rewrite BENCHMARKS.md from saved results"
    )
    parser.add_argument("--note", help="How the saved results were made (for the report)")
    parser.add_argument(
        "--job", choices=("records", "score", "read"), default="records", help="What is measured"
    )
    parser.add_argument(
        "--stop-after",
        type=float,
        help="score job, python path: stop after this many seconds (a partial row)",
    )
    parser.add_argument("--one", nargs=2, metavar=("PATH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stop_after and args.job != "score":
        parser.error("--stop-after applies to --job score only")

    if args.one:  # a child process: one measurement, printed as JSON
        path, size = args.one[0], int(args.one[1])
        folder, _ = population(args.data_dir, size)
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(run_one(path, folder, Path(workdir), args.job, args.stop_after)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    paths = args.paths.split(",")
    scoring = args.job == "score"
    default_results = {
        "records": "results.jsonl",
        "score": "results-score.jsonl",
        "read": "results-read.jsonl",
    }[args.job]
    results_file = args.results or args.data_dir / default_results
    results: dict[tuple[int, str], Result] = {}
    if results_file.is_file():
        for line in results_file.read_text().splitlines():
            saved = json.loads(line)
            results[(saved["size"], saved["path"])] = Result(**saved)
    for size in [] if args.report_only else sizes:
        _, data = population(args.data_dir, size)
        for path in paths:
            print(f"{size:,} patients, {path} …", flush=True)
            done = subprocess.run(
                [sys.executable, __file__, "--data-dir", str(args.data_dir), "--job", args.job,
                 *(["--stop-after", str(args.stop_after)] if args.stop_after else []),
                 "--one", path, str(size)],
                capture_output=True, text=True, check=True, cwd=REPO,
            )  # fmt: skip
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            result = Result(size, path, data, measured)
            results[(size, path)] = result
            with results_file.open("a") as handle:
                handle.write(json.dumps(result.__dict__) + "\n")
            print(f"  {measured['seconds']:.1f} s, {result.patients_per_s:,.0f} patients/s")
    ordered = [results[k] for k in sorted(results, key=lambda k: (k[0], PATHS.index(k[1])))]
    target = {
        "records": "make bench-population",
        "score": "make bench-population-score",
        "read": "make bench-population-read",
    }[args.job]
    command = (
        target
        + (f" SIZES={args.sizes}" if args.sizes != ",".join(str(s) for s in SIZES) else "")
        + (f" PATHS={args.paths}" if args.paths != ",".join(PATHS) and args.job != "read" else "")
        + (f" STOP_AFTER={args.stop_after:g}" if args.stop_after else "")
    )
    if scoring:
        write_block(
            args.benchmarks, SCORE_START, SCORE_END, _score_report(ordered, command, args.note)
        )
    elif args.job == "read":
        write_block(
            args.benchmarks, READ_START, READ_END, _read_report(ordered, command, args.note)
        )
    else:
        write_block(args.benchmarks, MARK_START, MARK_END, _report(ordered, command, args.note))


if __name__ == "__main__":
    main()
