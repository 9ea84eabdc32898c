"""Ship the project's own Python packages to a cluster's executors.

Spark runs Python functions (UDFs, ``mapInPandas``) in executor processes, which import
them by module name. On a cluster those processes cannot see the driver's source tree,
so the packages the jobs use are zipped (sources and package data, no caches) and added
with ``SparkContext.addPyFile``; Spark puts the zip first on the executors' ``sys.path``.
Third-party packages (fhir.resources, numpy, …) are the cluster's to install.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

#: The packages whose code runs on executors.
SHIPPED_PACKAGES = ("fhir_adapters", "models", "population")
_SKIPPED_DIRS = frozenset({"__pycache__"})


def package_zip(names: tuple[str, ...], folder: Path) -> Path:
    """A zip of the packages ``names`` (as imported now) in ``folder``."""
    target = folder / "wardround-packages.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            module = importlib.import_module(name)
            if module.__file__ is None:
                raise ValueError(f"{name} is not a regular package (no __init__.py)")
            root = Path(module.__file__).parent
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root.parent)
                if path.is_file() and not _SKIPPED_DIRS.intersection(relative.parts):
                    archive.write(path, relative.as_posix())
    return target


def ship_project_code(session: SparkSession) -> Path:
    """Zip :data:`SHIPPED_PACKAGES` and add the zip to ``session``'s executors."""
    folder = Path(tempfile.mkdtemp(prefix="wardround-spark-code-"))
    atexit.register(shutil.rmtree, folder, True)
    archive = package_zip(SHIPPED_PACKAGES, folder)
    session.sparkContext.addPyFile(str(archive))
    return archive
