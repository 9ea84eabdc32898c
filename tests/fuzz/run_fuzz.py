"""``make fuzz``: a long schemathesis run against a real gunicorn server.

    .venv/bin/python tests/fuzz/run_fuzz.py [--cases 2400] [--workers 2]

Starts the server (SQLite audit log in a temporary folder), fuzzes every operation of its
own ``/openapi.json`` until at least ``--cases`` generated cases have run, prints the cases
and responses per operation and the totals, and exits 1 on any failure: a 5xx, a status,
content type, header or body that the document does not describe, a 503 while the
database is healthy, or an error line in the server's log.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # fuzz_harness imports tests.*
from fuzz_harness import Totals, fuzz, live_server, load_schema, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", type=int, default=2400, help="generated cases, at least")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--max-rounds", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="wardround-fuzz-") as tmp,
        live_server(Path(tmp), workers=args.workers) as server,
    ):
        schema = load_schema(server)
        print(
            f"fuzzing {server.base_url} ({args.workers} gunicorn workers), "
            f"python {platform.python_version()}; seeded cards: {len(server.cards)}",
            flush=True,
        )
        totals = Totals()
        for round_no in range(1, args.max_rounds + 1):
            remaining = args.cases - totals.cases
            if remaining <= 0:
                break
            print(f"round {round_no}: {remaining} cases to go", flush=True)
            totals.merge(fuzz(server, schema, plan(schema, remaining), progress=_progress))
        log_errors = server.error_lines()
    elapsed = time.perf_counter() - started

    print("\nresponses by operation, generation mode and status:")
    for (label, mode, status), count in sorted(totals.outcomes.items()):
        print(f"  {label:48} {mode:9} {status}  {count:6}")
    for failure in totals.failures[:20]:
        print("\n---- failure\n" + failure)
    for line in log_errors[:20]:
        print("server log: " + line)
    failures = len(totals.failures) + len(log_errors)
    print(
        f"\nTOTAL cases: {totals.cases}, failures: {failures} "
        f"({len(log_errors)} server error log lines), answers with cards: {totals.with_cards}, "
        f"{totals.cases / elapsed:.1f} cases/s, {elapsed:.1f} s wall"
    )
    return 1 if failures else 0


def _progress(line: str) -> None:
    print("  " + line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
