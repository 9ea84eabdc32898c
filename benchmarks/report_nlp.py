"""`make bench-nlp`: report NLP speed and memory (the shipped model, the real transformer).

  * per report — a 150-word chest X-ray report (written for this benchmark, 15 sentences),
    read through ``ReportReader.read`` one at a time: *cold* (the embedding cache cleared
    before every call, so every sentence goes through the encoder) and *cached* (the same
    report again: only rules, cache look-ups and the heads). Median and p99.
  * batched — the IU reports (shared data; at most ``--reports``) read 64 per call, cold
    cache, then the same again warm: reports per second.
  * memory — resident set size of the process before loading the model and after
    loading it (tokenizer, weights, heads) and after the batched run (cache filled).
Writes the figures into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import machine, percentile, when, write_block  # noqa: E402
from tests.support.live_server import rss_kib  # noqa: E402

MARK_START, MARK_END = "<!-- nlp-bench:start -->", "<!-- nlp-bench:end -->"
REPORT_150_WORDS = (
    "EXAMINATION: Chest, two views.\n"
    "INDICATION: Cough and shortness of breath for two weeks.\n"
    "COMPARISON: Radiograph from six months earlier.\n"
    "FINDINGS: The cardiomediastinal silhouette is mildly enlarged, similar to the prior study. "
    "There is a small right apical pneumothorax measuring about 1 cm from the apex. "
    "Streaky opacity at the left base most likely represents subsegmental atelectasis. "
    "No focal consolidation is seen. There is no pleural effusion. "
    "A 7 mm nodule projects over the right mid lung, not clearly seen before. "
    "Pulmonary vasculature is within normal limits. No acute osseous abnormality; "
    "degenerative changes of the thoracic spine. A right internal jugular central venous "
    "catheter terminates in the lower superior vena cava. The trachea is midline and the "
    "hila are unremarkable. Soft tissues of the chest wall are normal.\n"
    "IMPRESSION: 1. Small right apical pneumothorax. "
    "2. New 7 mm right mid lung nodule; follow-up CT suggested. "
    "3. Mild cardiomegaly and left basilar atelectasis."
)


def rss_mib() -> float:
    return rss_kib(os.getpid()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200, help="calls per single-report figure")
    parser.add_argument("--reports", type=int, default=1500, help="IU reports for the batch run")
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (a server worker: 1)"
    )
    args = parser.parse_args()

    before = rss_mib()
    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from models import registry
    from models.nlp import MODEL_ID
    from models.nlp.iu_reports import load_reports

    reader = registry.get(MODEL_ID)
    load_s = time.perf_counter() - started
    loaded = rss_mib()
    words = len(REPORT_150_WORDS.split())
    reader.read([REPORT_150_WORDS])  # first call: lazy initialisation, not measured

    def timed(clear: bool) -> tuple[list[float], list[float]]:
        wall, cpu = [], []
        for _ in range(args.runs):
            if clear:
                reader.encoder.cache.clear()
            w0, c0 = time.perf_counter(), time.process_time()
            reader.read([REPORT_150_WORDS])
            wall.append((time.perf_counter() - w0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        return wall, cpu

    cold, cold_cpu = timed(clear=True)
    cached, cached_cpu = timed(clear=False)

    texts = [r.text for r in load_reports()][: args.reports]
    reader.encoder.cache.clear()
    batched, batched_cpu = {}, {}
    for label in ("cold", "warm"):
        w0, c0 = time.perf_counter(), time.process_time()
        for first in range(0, len(texts), 64):
            reader.read(texts[first : first + 64])
        batched[label] = len(texts) / (time.perf_counter() - w0)
        batched_cpu[label] = len(texts) / (time.process_time() - c0)
    load = Path("/proc/loadavg").read_text().split()[:3]
    after = rss_mib()
    sentences = len(reader.encoder.cache)

    now = when()
    options = [f"--runs {args.runs}"] * (args.runs != 200) + [f"--threads {args.threads}"] * (
        args.threads != 1
    )
    command = "make bench-nlp" + (f" ({' '.join(options)})" if options else "")
    block = f"""{MARK_START}
## Report NLP (`make bench-nlp`)

{now}, {machine()} (shared), torch
{torch.__version__} on CPU with {torch.get_num_threads()} intra-op thread(s); model `{MODEL_ID}`
(variant `{reader.variant}`), encoder all-MiniLM-L6-v2 (6 layers, 384-d), one sentence per
encoder unit, batches of 32 units. Command: `{command}` (`benchmarks/report_nlp.py`).

| measure | wall clock | CPU time of the process |
| --- | --- | --- |
| one {words}-word report, cold (embedding cache cleared each call; {args.runs} calls) | median {statistics.median(cold):.1f} ms, p99 {percentile(cold, 0.99):.1f} ms | median {statistics.median(cold_cpu):.1f} ms, p99 {percentile(cold_cpu, 0.99):.1f} ms |
| the same report, cached (seen before; {args.runs} calls) | median {statistics.median(cached):.2f} ms, p99 {percentile(cached, 0.99):.2f} ms | median {statistics.median(cached_cpu):.2f} ms, p99 {percentile(cached_cpu, 0.99):.2f} ms |
| batched, {len(texts)} IU reports, 64 per call, cold cache | {batched["cold"]:.0f} reports/s | {batched_cpu["cold"]:.0f} reports per CPU-second |
| batched, the same reports again (cached) | {batched["warm"]:.0f} reports/s | {batched_cpu["warm"]:.0f} reports per CPU-second |
| model load (import torch + transformers, tokenizer, weights, artifact check) | {load_s:.1f} s | |
| RSS: before loading / loaded / after the batch run ({sentences} sentences cached) | {before:.0f} / {loaded:.0f} / {after:.0f} MiB | |

The machine is shared with other engineers' jobs (load average at the end of the run:
{" ".join(load)} on 2 cores), so wall-clock figures include waiting for a core; the CPU
time column is what the work itself costs.

Reading it: a report costs one encoder pass per new sentence (the cold row); everything
else — sections, sentences, ConText rules, the heads — is under a millisecond, which is
the cached row. Batches run faster than one at a time because units of similar length
share a forward pass and because radiology reports repeat sentences ("No pneumothorax."):
the cold batch row already profits from sentences seen earlier in the same run. The
loaded model adds about {loaded - before:.0f} MiB to a process (torch, the 90 MB weights);
each gunicorn worker that serves `report-findings` holds its own copy, and the cache adds
at most {20_000 * 384 * 4 / 2**20:.0f} MiB (20,000 sentences). One intra-op thread per
worker is the setting to run with (`OMP_NUM_THREADS=1`): on this shared 2-core machine,
two torch threads competing with other processes were several times *slower* per sentence
(OpenMP threads waiting on each other), and gunicorn's workers already use the cores.
{MARK_END}"""
    write_block(args.benchmarks, MARK_START, MARK_END, block)
    print(block)


if __name__ == "__main__":
    main()
