"""The project's packages as a cluster's executors get them: one zip
(``population.code_shipping``), imported from the zip alone.

A package that reads its data files through a filesystem path next to ``__file__`` breaks
there (the path runs through the zip). This was found when the phenotype k-means ran on
the standalone cluster: importing ``models.phenotypes`` reads the risk code sets, and
``models.risk.kb`` opened them as ``Path(__file__).parent / "knowledge" / …``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from population.code_shipping import SHIPPED_PACKAGES, package_zip

#: What executors import and read: the phenotype package (k-means preprocessing), the
#: scoring and feature modules of the population jobs, and the risk knowledge they use.
PROBE = """
import json, sys
import models.phenotypes, models.risk.catalog, population.features, population.scoring
from models.risk import kb
print(json.dumps({
    "kb_file": kb.__file__,
    "version": kb.knowledge_version(),
    "code_sets": len(kb.code_sets()),
    "rules": sorted(kb.rules()),
}))
"""


def _probe(pythonpath: str, cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": pythonpath}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_shipped_zip_imports_and_reads_its_knowledge_alone(tmp_path: Path) -> None:
    archive = package_zip(SHIPPED_PACKAGES, tmp_path)
    from_zip = _probe(str(archive), tmp_path)
    assert ".zip" in str(from_zip["kb_file"])  # really imported from the zip

    repo = Path(__file__).resolve().parents[2]
    from_tree = _probe(str(repo), repo)
    assert ".zip" not in str(from_tree["kb_file"])
    # the same knowledge, down to its digest (which the audit log records per score)
    assert from_zip["version"] == from_tree["version"]
    assert from_zip["code_sets"] == from_tree["code_sets"] and from_zip["code_sets"] > 0
    assert from_zip["rules"] == from_tree["rules"]
