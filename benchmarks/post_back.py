"""`make bench-post-back`: RiskAssessments per second posted back to a FHIR server.

The RiskAssessments are those of `make population-score` (every shared Synthea patient
scored on Spark by both learned risk models as of 2020-06-30, in
``instance/population/scores/fhir``). They go to sekmet-fhir over HTTP on 127.0.0.1 (the
test server, every shared bundle loaded, a private copy of its database per batch size) as
FHIR ``transaction`` Bundles of PUTs by id, through the product's own client
(``fhir_adapters.bulk.post_back``). Each batch size is posted twice to its fresh copy: the
first post creates every resource (201), the second updates the same ids (200), which is
what a nightly re-run does. Writes the table into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import publish  # noqa: E402
from fhir_adapters.bulk.post_back import PostSettings, post_back  # noqa: E402
from tests.conftest import SYNTHEA  # noqa: E402
from tests.support.fhir_server import loaded_database, running_copy, sekmet_version  # noqa: E402

MARKERS = ("<!-- post-back-bench:start -->", "<!-- post-back-bench:end -->")
BATCH_SIZES = (10, 100, 500)


def _round(scores: Path, base_url: str, token: str, batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    summary = post_back(scores, base_url, token, PostSettings(batch_size=batch))
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "per_s": round(summary.posted / seconds, 1),
        "bundles": summary.bundles,
        "posted": summary.posted,
        "created": summary.created,
        "updated": summary.updated,
        "failed": summary.failed,
    }


def measure(scores: Path, batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    database = loaded_database(SYNTHEA)
    rows = []
    for batch in batch_sizes:
        with running_copy(database) as server:
            first = _round(scores, server.base_url, server.token, batch)
            again = _round(scores, server.base_url, server.token, batch)
        print(f"batch {batch}: create {first['per_s']}/s, update {again['per_s']}/s", flush=True)
        rows.append({"batch": batch, "create": first, "update": again})
    return {"sekmet": sekmet_version(), "scores": str(scores.relative_to(REPO)), "rows": rows}


def render(result: dict[str, Any]) -> str:
    lines = [
        MARKERS[0],
        "## Population: RiskAssessment post-back (`make bench-post-back`)",
        "",
        f"{result['when']}, {result['machine']}, sekmet-fhir {result['sekmet']} (SQLite) on "
        "the same machine. Command: `make bench-post-back` (`python benchmarks/post_back.py`)."
        f" Input: `{result['scores']}/fhir` from `make population-score` (every shared "
        "Synthea patient, both learned risk models, as of 2020-06-30). Transaction Bundles of "
        "PUTs by id through `fhir_adapters.bulk.post_back`; each batch size on a fresh copy "
        "of the server's database: created first, then the same ids posted again (updated).",
        "",
        "| batch | RiskAssessments | Bundles | create s | created/s | update s | updated/s "
        "| failed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        first, again = row["create"], row["update"]
        lines.append(
            f"| {row['batch']} | {first['posted']:,} | {first['bundles']:,} | "
            f"{first['seconds']:.2f} | {first['per_s']:,.1f} | {again['seconds']:.2f} | "
            f"{again['per_s']:,.1f} | {first['failed'] + again['failed']} |"
        )
    seconds = [row[side]["seconds"] for row in result["rows"] for side in ("create", "update")]
    lines += [
        "",
        "Every round posted every resource (created on the first post, updated on the "
        f"second: PUT by id keeps a re-run idempotent). A round took {min(seconds):.2f} to "
        f"{max(seconds):.2f} s (the shared data hold a few hundred eligible scores), so the "
        "rates are rough.",
        MARKERS[1],
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=Path, default=REPO / "instance/population/scores")
    parser.add_argument("--batch", default=",".join(str(b) for b in BATCH_SIZES))
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    if not (args.scores / "fhir").is_dir():
        sys.exit(f"{args.scores}/fhir not found: run `make population-score` first")
    batches = tuple(int(b) for b in args.batch.split(","))
    result = measure(args.scores.resolve(), batches)
    for row in result["rows"]:
        first, again = row["create"], row["update"]
        if first["failed"] or again["failed"]:
            sys.exit(f"batch {row['batch']}: failures {first['failed']} / {again['failed']}")
        if not first["created"] == again["updated"] == first["posted"] == again["posted"]:
            sys.exit(f"batch {row['batch']}: not every resource created, then updated: {row}")
    publish(args.benchmarks, MARKERS, result, render)


if __name__ == "__main__":
    main()
