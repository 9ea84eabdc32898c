"""`make bench-imaging`: pneumonia-cxr cost per image on one core, and peak memory.

* **decode + preprocess + inference** per image, from DICOM Part 10 bytes in memory
  (``decode_dicom`` → ``classifier.predict``), for three sizes: 28 x 28 8-bit DX (what
  PneumoniaMNIST holds), 2,048 x 2,048 and 4,000 x 4,000 16-bit CR (12 bits stored,
  MONOCHROME1, with a window: a real radiograph's shape);
* **with the DICOMweb fetch**: the same images stored in a local Orthanc (the tests'
  ``OrthancServer``, HTTP Basic auth, 127.0.0.1) and read with the adapters'
  ``retrieve_study_images`` (one WADO-RS instance request, multipart, decode) + predict;
* **peak memory**: each case in a fresh process: resident set after the model is loaded,
  and the peak after reading one image (``ru_maxrss``).

Pinned to one core (``sched_setaffinity``) with ``torch.set_num_threads(1)``. Writes the
figures into BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import dcmread

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import publish, summary  # noqa: E402
from fhir_adapters.imaging import (  # noqa: E402
    ImagingLimits,
    decode_dicom,
    parse_imaging_study,
    retrieve_study_images,
)
from models import registry  # noqa: E402
from models.imaging import MODEL_ID  # noqa: E402
from tests.support.dicom_fixtures import (  # noqa: E402
    Patient,
    dicom_bytes,
    fixture_uid,
    imaging_study_json,
    xray_dataset,
)
from tests.support.dicomweb_server import OrthancServer  # noqa: E402

MARK_START, MARK_END = "<!-- imaging-bench:start -->", "<!-- imaging-bench:end -->"
PATIENT = Patient(id="bench", name="Bench^Imaging", sex="F", birth_date=None)
SIZES = {28: 300, 2048: 30, 4000: 10}  # image side → repetitions
LIMITS = ImagingLimits(max_bytes=40 * 1024 * 1024)


def _dataset(side: int) -> bytes:
    rng = np.random.default_rng(side)
    if side == 28:
        pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
        ds = xray_dataset(
            patient=PATIENT,
            study_uid=fixture_uid("bench", "28"),
            series_uid=fixture_uid("bench", "28", "s"),
            sop_uid=fixture_uid("bench", "28", "i"),
            modality="DX",
            pixels=pixels,
            started=datetime(2024, 1, 1),
        )
        return dicom_bytes(ds)
    ds = xray_dataset(
        patient=PATIENT,
        study_uid=fixture_uid("bench", str(side)),
        series_uid=fixture_uid("bench", str(side), "s"),
        sop_uid=fixture_uid("bench", str(side), "i"),
        modality="CR",
        pixels=np.zeros((2, 2), np.uint8),
        started=datetime(2024, 1, 1),
    )
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (rng.random((side, side)) * 4095).astype("<u2").tobytes()
    return dicom_bytes(ds)


def _study_ref(data: bytes):  # type: ignore[no-untyped-def]
    """The ImagingStudy of the object, from its header (the pixels are not read)."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    uids = (ds.SeriesInstanceUID, ds.Modality, ds.SOPInstanceUID, ds.SOPClassUID)
    study = imaging_study_json("bench", PATIENT.id, ds.StudyInstanceUID, [tuple(map(str, uids))])
    return parse_imaging_study(study)


def _one_core() -> None:
    import torch

    os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)


def timings(objects: dict[int, bytes], orthanc: OrthancServer) -> dict[str, dict]:
    classifier = registry.get(MODEL_ID)
    results: dict[str, dict] = {}
    with orthanc.session() as session:
        for side, data in objects.items():
            ref = _study_ref(data)
            classifier.predict(decode_dicom(data, LIMITS))  # warm-up
            local, fetched = [], []
            for _ in range(SIZES[side]):
                began = time.perf_counter()
                classifier.predict(decode_dicom(data, LIMITS))
                local.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                result = retrieve_study_images(
                    ref, orthanc.dicomweb_url, session=session, limits=LIMITS
                )
                (image,) = result.images
                classifier.predict(image)
                fetched.append((time.perf_counter() - began) * 1000)
            results[str(side)] = {
                "bytes": len(data),
                "local": summary(local, digits=None),
                "dicomweb": summary(fetched, digits=None),
            }
            print(side, json.dumps(results[str(side)]), flush=True)
    return results


PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import requests
from benchmarks.imaging import LIMITS, _one_core, _study_ref
from tests.support.process_memory import peak_rss_mib
from fhir_adapters.imaging import decode_dicom, retrieve_study_images
from models import registry
_one_core()
classifier = registry.get("pneumonia-cxr")
data = Path(sys.argv[2]).read_bytes()
ref = _study_ref(data) if sys.argv[3] != "-" else None
if ref is not None:
    del data
baseline = peak_rss_mib()
if ref is None:
    image = decode_dicom(data, LIMITS)
else:
    session = requests.Session()
    session.auth = (sys.argv[4], sys.argv[5])
    (image,) = retrieve_study_images(ref, sys.argv[3], session=session, limits=LIMITS).images
classifier.predict(image)
peak = peak_rss_mib()
print(json.dumps({"baseline_mib": baseline, "peak_mib": peak}))
"""


def memory(objects: dict[int, bytes], folder: Path, orthanc: OrthancServer) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for side, data in objects.items():
        path = folder / f"{side}.dcm"
        path.write_bytes(data)
        row = {}
        for mode, url in (("local", "-"), ("dicomweb", orthanc.dicomweb_url)):
            run = subprocess.run(
                [sys.executable, "-c", PROBE, str(REPO), str(path), url, orthanc.username,
                 orthanc.password],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            row[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        results[str(side)] = row
        print(side, json.dumps(row), flush=True)
    return results


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def markdown(result: dict) -> str:
    rows = []
    for side, timing in result["timings"].items():
        memory_row = result["memory"][side]
        label = f"{side} x {side}" + (" 8-bit DX" if side == "28" else " 16-bit CR MONOCHROME1")
        for mode, name in (
            ("local", "decode + preprocess + inference"),
            ("dicomweb", "+ DICOMweb fetch"),
        ):
            t, m = timing[mode], memory_row[mode]
            rows.append(
                f"| {label} ({_size(timing['bytes'])}) | {name} | {t['n']} | "
                f"{t['median_ms']:.2f} | {t['p99_ms']:.2f} | {m['peak_mib'] - m['baseline_mib']:.0f} |"
            )
    baseline = result["memory"]["28"]["local"]["baseline_mib"]
    table = "\n".join(rows)
    return f"""{MARK_START}
## Imaging: pneumonia-cxr per image (`make bench-imaging`)

{result["when"]}, {result["machine"]}; one core (`sched_setaffinity`),
`torch.set_num_threads(1)`; load average {result["load"]} at the start (the machine is
shared). Command: `make bench-imaging` (`python benchmarks/imaging.py`). Model
`{result["model"]}`.

| image | path | n | median ms | p99 ms | peak memory above the loaded model, MiB |
| --- | --- | ---: | ---: | ---: | ---: |
{table}

The process with the model loaded (torch, the CNN) holds {baseline:.0f} MiB before the first
image (peak memory: `VmHWM`, each case in a fresh process). "decode + preprocess +
inference" starts from the Part 10 bytes in memory; "+ DICOMweb fetch" is one WADO-RS
instance request to Orthanc 1.10 on 127.0.0.1 (HTTP Basic, multipart answer read under the
adapter's byte bound), then the same: for large images it is dominated by Orthanc's own
answer time (a bare `requests.get` of the same instance takes about as long; profiled).
p99 of 10 or 30 runs is close to the maximum. Inference on the 28 x 28 input is a small share: for large images the
time is DICOM decoding, the VOI/MONOCHROME1 LUT pipeline (run in 256-row bands so its
float64 temporaries stay small) and the anti-aliased resize. Peak memory for a 4,000 x
4,000 image stays bounded (the adapter's `max_pixels` is 4,096 x 4,096; a compressed frame
must match the declared size before it is decoded).
{MARK_END}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    objects = {side: _dataset(side) for side in SIZES}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        orthanc = OrthancServer(folder / "orthanc").start()
        try:
            with orthanc.session() as session:
                for data in objects.values():
                    orthanc.store(session, data)
            _one_core()
            timed = timings(objects, orthanc)
            used = memory(objects, folder, orthanc)
        finally:
            orthanc.stop()
    identity = registry.identity(MODEL_ID)
    result = {
        "load": load,
        "model": f"{identity.id} {identity.version} ({(identity.sha256 or '')[:12]})",
        "timings": timed,
        "memory": used,
    }
    publish(args.benchmarks, (MARK_START, MARK_END), result, markdown)


if __name__ == "__main__":
    main()
