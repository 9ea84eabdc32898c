"""Real DICOM objects for the imaging tests: PneumoniaMNIST chest X-rays in Synthea's studies.

Data (read from the shared data folder at test time, never copied into the repository):

* PneumoniaMNIST (MedMNIST v2, Yang et al., Scientific Data 2023; images from Kermany et al.,
  Cell 2018, paediatric chest X-rays): ``pneumoniamnist/pneumoniamnist_28_dev.npz``,
  28x28 uint8, label 1 = pneumonia. Licence: CC BY 4.0.
* Synthea FHIR R4 patient bundles (github.com/smart-on-fhir/generated-sample-data, R4/SYNTHEA):
  ``synthea-r4/*.json.gz``, whose ``ImagingStudy`` resources name study/series/instance UIDs
  but carry no pixels. Licence: Apache-2.0.

What is built (pydicom, explicit VR little endian unless said otherwise, valid file meta):

* :func:`synthea_xray_instances`: one object per instance of every DX and CR series of the
  Synthea ImagingStudies (DX → Digital X-Ray Image Storage - For Presentation, CR → Computed
  Radiography Image Storage, whatever SOP class Synthea wrote), UIDs and PatientID from the
  bundle, the k-th instance (bundles in file-name order) holding ``train_images[k]``.
  Synthea reuses the series and instance UIDs of some studies in a later study of the same
  patient (12 of the 89 X-ray series); a UID names one object, so those later studies are
  left out (``DicomFixtureSet.reused_uid_studies``).
  MONOCHROME2, 8 bits, rescale 1/0; DX carries the window 128/256, which maps 0..255 onto
  itself exactly, so the decoded pixels equal the source image.
* :func:`variant_study`: the same images stored differently (MONOCHROME1, a narrow window,
  16-bit with a rescale), in a study of their own.
* :func:`compressed_study`: the same images in compressed transfer syntaxes the adapter
  decodes (JPEG 2000 lossless and RLE lossless, decoded pixel-exact; JPEG baseline, lossy).
* :func:`bad_study`: objects Orthanc stores but no model can read (no pixel data, truncated
  pixel data, a corrupt JPEG frame, a JPEG 2000 decompression bomb, JPEG 2000 Part 2
  without a decoder, absurd dimensions, multi-frame, RGB, deflated), and
  :func:`unstorable_objects`: bytes no server accepts (a cut-off file, not DICOM at all).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from fhir_adapters.imaging import CR_IMAGE, DEFLATED_REASON, DX_FOR_PRESENTATION
from fhir_adapters.synthea import load_bundle, resources_by_type

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
NPZ = Path("pneumoniamnist") / "pneumoniamnist_28_dev.npz"
SOURCE_SPLIT = "train_images"
SOP_CLASS = {"DX": DX_FOR_PRESENTATION, "CR": CR_IMAGE}
VIEW_POSITION = {"DX": "PA", "CR": "AP"}
#: SNOMED CT body structures Synthea uses for X-rays → DICOM Body Part Examined.
BODY_PART = {
    "51185008": "CHEST",
    "51299004": "CLAVICLE",
    "40983000": "ARM",
    "8205005": "WRIST",
    "72696002": "KNEE",
    "12921003": "PELVIS",
    "344001": "ANKLE",
}
#: DX window mapping 0..255 onto itself exactly (LINEAR: c - 0.5 = 127.5, w - 1 = 255).
IDENTITY_WINDOW = (128.0, 256.0)
#: The narrow window of the "window" variant.
NARROW_WINDOW = (100.0, 80.0)
#: The 16-bit variant stores 4 * value + 1000 in 12 bits; slope/intercept give value back.
RESCALE_STORED = (4, 1000)
RESCALE = (0.25, -250.0)
UID_ENTROPY = "wardround-test-fixtures"


def fixture_uid(*parts: str) -> str:
    """A deterministic 2.25 UID for objects Synthea does not name."""
    return str(generate_uid(prefix=None, entropy_srcs=[UID_ENTROPY, *parts]))


@dataclass(frozen=True)
class Patient:
    id: str
    name: str
    sex: str
    birth_date: date | None

    @classmethod
    def from_fhir(cls, resource: Mapping[str, Any]) -> Patient:
        names = resource.get("name") or [{}]
        family = names[0].get("family", "")
        given = " ".join(names[0].get("given", []))
        birth = resource.get("birthDate")
        return cls(
            id=resource["id"],
            name=f"{family}^{given}",
            sex={"male": "M", "female": "F"}.get(resource.get("gender", ""), "O"),
            birth_date=date.fromisoformat(birth) if birth else None,
        )


@dataclass(frozen=True)
class FixtureInstance:
    """One DICOM object written to ``path``. ``source_index`` indexes ``train_images``."""

    name: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    path: Path
    body_part: str = ""
    view_position: str = ""
    source_index: int | None = None
    label: int | None = None
    #: For a bad object: what ``DicomRejected.reason`` starts with.
    expected_reason: str | None = None

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class FixtureStudy:
    patient_id: str
    #: The FHIR R4 ImagingStudy JSON naming these instances (Synthea's own, or built here).
    imaging_study: dict[str, Any]
    instances: tuple[FixtureInstance, ...]

    @property
    def study_uid(self) -> str:
        return self.instances[0].study_uid

    def instance(self, name: str) -> FixtureInstance:
        return next(i for i in self.instances if i.name == name)


@dataclass(frozen=True)
class DicomFixtureSet:
    #: Study UID → the Synthea study (its DX and CR series only).
    synthea: Mapping[str, FixtureStudy]
    variants: FixtureStudy
    bad: FixtureStudy
    compressed: FixtureStudy
    #: Name → bytes that no DICOM server stores (only for decode_dicom).
    unstorable: Mapping[str, bytes] = field(default_factory=dict)
    #: Synthea study UIDs left out because they reuse an earlier study's UIDs.
    reused_uid_studies: tuple[str, ...] = ()

    def studies(self) -> Iterator[FixtureStudy]:
        yield from self.synthea.values()
        yield self.variants
        yield self.bad
        yield self.compressed

    def instances(self) -> Iterator[FixtureInstance]:
        for study in self.studies():
            yield from study.instances

    def by_patient(self) -> dict[str, list[FixtureStudy]]:
        grouped: dict[str, list[FixtureStudy]] = {}
        for study in self.synthea.values():
            grouped.setdefault(study.patient_id, []).append(study)
        return grouped


# --------------------------------------------------------------------------- source data
def load_source_images(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """PneumoniaMNIST ``train_images`` (N, 28, 28) uint8 and ``train_labels`` (N,)."""
    with np.load(shared_data / NPZ) as npz:
        return npz[SOURCE_SPLIT], npz["train_labels"].reshape(-1)


def synthea_xray_studies(
    shared_data: Path,
) -> Iterator[tuple[Patient, dict[str, Any]]]:
    """(patient, ImagingStudy JSON) for each Synthea study with a DX or CR series."""
    bundles = sorted((shared_data / "synthea-r4").glob("*.gz"))
    for path in bundles:
        if path.name.startswith("hospital"):
            continue
        with gzip.open(path, "rb") as raw:  # most bundles hold no ImagingStudy: skip the parse
            if b'"ImagingStudy"' not in raw.read():
                continue
        bundle = load_bundle(path)
        raw = [e.get("resource", {}) for e in bundle.get("entry", [])]
        if not any(
            r.get("resourceType") == "ImagingStudy"
            and any(s["modality"]["code"] in SOP_CLASS for s in r.get("series", []))
            for r in raw
        ):
            continue
        resources = resources_by_type(bundle)
        patient = Patient.from_fhir(resources["Patient"][0])
        for study in resources.get("ImagingStudy", []):
            if any(s["modality"]["code"] in SOP_CLASS for s in study.get("series", [])):
                yield patient, study


def study_uid_of(imaging_study: Mapping[str, Any]) -> str:
    for identifier in imaging_study.get("identifier", []):
        if str(identifier.get("value", "")).startswith("urn:oid:"):
            return str(identifier["value"])[8:]
    raise ValueError("ImagingStudy without a urn:oid: identifier")


# --------------------------------------------------------------------------- DICOM objects
def _age(birth: date | None, when: datetime) -> str:
    if birth is None:
        return ""
    years = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))
    return f"{max(years, 0):03d}Y"


def xray_dataset(
    *,
    patient: Patient,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    modality: str,
    pixels: np.ndarray,
    started: datetime,
    body_site: Mapping[str, str] | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    sop_class: str | None = None,
) -> Dataset:
    """A DX (For Presentation) or CR object, MONOCHROME2, explicit VR little endian."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class or SOP_CLASS[modality]
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # Patient, study, series, equipment
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth_date, started)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.ContentDate = started.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = started.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "Wardround test fixtures (PneumoniaMNIST pixels)"
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"  # the Kermany images were JPEGs, then downscaled
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    # Anatomy and view
    site = body_site or {"code": "51185008", "display": "Thoracic structure"}
    ds.BodyPartExamined = BODY_PART.get(site.get("code", ""), "CHEST")
    region = Dataset()
    region.CodeValue = site.get("code", "51185008")
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = site.get("display", "Thoracic structure")
    ds.AnatomicRegionSequence = [region]
    ds.ViewPosition = VIEW_POSITION.get(modality, "PA")
    ds.ImageLaterality = "U"
    ds.ImagerPixelSpacing = [10.0, 10.0]  # 28 pixels across a ~28 cm chest
    # Image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.PresentationLUTShape = "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
        ds.WindowCenter, ds.WindowWidth = IDENTITY_WINDOW
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    _file_meta(ds, ExplicitVRLittleEndian)
    return ds


def _file_meta(ds: Dataset, syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationVersionName = "WARDROUND_TEST"
    ds.file_meta = meta


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _started(imaging_study: Mapping[str, Any]) -> datetime:
    value = imaging_study.get("started")
    return datetime.fromisoformat(value) if value else datetime(2020, 1, 1, 12, 0, 0)


def _write(folder: Path, name: str, ds: Dataset) -> Path:
    path = folder / f"{name}.dcm"
    path.write_bytes(dicom_bytes(ds))
    return path


@dataclass(frozen=True)
class SyntheaXrays:
    studies: dict[str, FixtureStudy]
    patients: dict[str, Patient]
    #: Studies left out: Synthea reused their series and instance UIDs in an earlier study
    #: of the same patient, and a DICOM UID names one object only.
    reused_uid_studies: tuple[str, ...]


def synthea_xray_instances(
    shared_data: Path, folder: Path, images: np.ndarray, labels: np.ndarray
) -> SyntheaXrays:
    """Every DX and CR instance of the Synthea studies, written under ``folder``."""
    studies: dict[str, FixtureStudy] = {}
    patients: dict[str, Patient] = {}
    reused: list[str] = []
    seen: set[str] = set()
    k = 0
    for patient, imaging_study in synthea_xray_studies(shared_data):
        patients[patient.id] = patient
        study_uid = study_uid_of(imaging_study)
        instances: list[FixtureInstance] = []
        for series in imaging_study["series"]:
            modality = series["modality"]["code"]
            if modality not in SOP_CLASS:
                continue
            for item in series["instance"]:
                if series["uid"] in seen or item["uid"] in seen:
                    continue
                seen.update((series["uid"], item["uid"]))
                ds = xray_dataset(
                    patient=patient,
                    study_uid=study_uid,
                    series_uid=series["uid"],
                    sop_uid=item["uid"],
                    modality=modality,
                    pixels=images[k],
                    started=_started(imaging_study),
                    body_site=series.get("bodySite"),
                    series_number=series.get("number", 1),
                    instance_number=item.get("number", 1),
                )
                instances.append(
                    FixtureInstance(
                        name=f"synthea-{k}",
                        patient_id=patient.id,
                        study_uid=study_uid,
                        series_uid=series["uid"],
                        sop_instance_uid=item["uid"],
                        sop_class_uid=str(ds.SOPClassUID),
                        modality=modality,
                        path=_write(folder, item["uid"], ds),
                        body_part=str(ds.BodyPartExamined),
                        view_position=str(ds.ViewPosition),
                        source_index=k,
                        label=int(labels[k]),
                    )
                )
                k += 1
        if instances:
            studies[study_uid] = FixtureStudy(patient.id, imaging_study, tuple(instances))
        else:
            reused.append(study_uid)
    return SyntheaXrays(studies, patients, tuple(reused))


# --------------------------------------------------------------------------- built studies
def wado_rs_endpoint(endpoint_id: str, address: str) -> dict[str, Any]:
    """An active FHIR ``Endpoint`` for a DICOMweb (WADO-RS) service at ``address``: what an
    ImagingStudy's ``endpoint`` names for the adapters to retrieve its instances from."""
    return {
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def imaging_study_json(
    name: str, patient_id: str, study_uid: str, series: list[tuple[str, str, str, str]]
) -> dict[str, Any]:
    """A FHIR R4 ImagingStudy like Synthea's; ``series``: (uid, modality, instance uid, SOP)."""
    return {
        "resourceType": "ImagingStudy",
        "id": name,
        "identifier": [
            {"use": "official", "system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}
        ],
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id}"},
        "started": "2020-01-01T12:00:00+00:00",
        "numberOfSeries": len(series),
        "numberOfInstances": len(series),
        "series": [
            {
                "uid": uid,
                "number": n,
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": m},
                "numberOfInstances": 1,
                "bodySite": {"system": "http://snomed.info/sct", "code": "51185008"},
                "instance": [{"uid": sop, "sopClass": {"code": sop_class}, "number": 1}],
            }
            for n, (uid, m, sop, sop_class) in enumerate(series, start=1)
        ],
    }


def _built_study(
    study_name: str,
    patient: Patient,
    folder: Path,
    objects: list[tuple[str, Dataset, dict[str, Any]]],
) -> FixtureStudy:
    """Put each (name, dataset, FixtureInstance extras) in a series of one new study."""
    study_uid = fixture_uid(study_name)
    instances = []
    for n, (name, ds, extra) in enumerate(objects, start=1):
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = fixture_uid(study_name, name, "series")
        ds.SOPInstanceUID = fixture_uid(study_name, name, "instance")
        ds.SeriesNumber = n
        if hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        instances.append(
            FixtureInstance(
                name=name,
                patient_id=patient.id,
                study_uid=study_uid,
                series_uid=str(ds.SeriesInstanceUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                modality=str(ds.Modality),
                path=_write(folder, f"{study_name}-{name}", ds),
                body_part=str(ds.get("BodyPartExamined", "")),
                view_position=str(ds.get("ViewPosition", "")),
                **extra,
            )
        )
    series = [(i.series_uid, i.modality, i.sop_instance_uid, i.sop_class_uid) for i in instances]
    return FixtureStudy(
        patient.id,
        imaging_study_json(study_name, patient.id, study_uid, series),
        tuple(instances),
    )


def _base(patient: Patient, pixels: np.ndarray, modality: str = "DX") -> Dataset:
    return xray_dataset(
        patient=patient,
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        sop_uid="1.2.3.1.1",
        modality=modality,
        pixels=pixels,
        started=datetime(2020, 1, 1, 12, 0, 0),
    )


def variant_study(patient: Patient, folder: Path, images: np.ndarray, first: int) -> FixtureStudy:
    """``train_images[first .. first+2]`` stored as MONOCHROME1, narrow window, 16-bit rescale."""
    mono1 = _base(patient, 255 - images[first])
    mono1.PhotometricInterpretation = "MONOCHROME1"
    mono1.PresentationLUTShape = "INVERSE"
    del mono1.WindowCenter, mono1.WindowWidth

    window = _base(patient, images[first + 1])
    window.WindowCenter, window.WindowWidth = NARROW_WINDOW

    rescaled = _base(patient, images[first + 2])
    factor, offset = RESCALE_STORED
    stored = images[first + 2].astype(np.uint16) * factor + offset
    rescaled.BitsAllocated, rescaled.BitsStored, rescaled.HighBit = 16, 12, 11
    rescaled.RescaleSlope, rescaled.RescaleIntercept = RESCALE
    del rescaled.WindowCenter, rescaled.WindowWidth
    rescaled.PixelData = stored.astype("<u2").tobytes()

    return _built_study(
        "variants",
        patient,
        folder,
        [
            ("monochrome1", mono1, {"source_index": first}),
            ("window", window, {"source_index": first + 1}),
            ("rescale16", rescaled, {"source_index": first + 2}),
        ],
    )


def _no_pixel_data(patient: Patient) -> Dataset:
    """A Basic Text SR: a real, valid object without PixelData."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientName, ds.PatientID, ds.PatientSex = patient.name, patient.id, patient.sex
    ds.PatientBirthDate = ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20200101", "120000", "1"
    ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.Modality = "SR"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20200101", "120000"
    ds.ValueType = "CONTAINER"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "18748-4", "LN"
    concept.CodeMeaning = "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = [concept]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    finding = Dataset()
    finding.CodeValue, finding.CodingSchemeDesignator = "121071", "DCM"
    finding.CodeMeaning = "Finding"
    text.ConceptNameCodeSequence = [finding]
    text.TextValue = "No acute cardiopulmonary abnormality."
    ds.ContentSequence = [text]
    _file_meta(ds, ExplicitVRLittleEndian)
    return ds


def _segment(jpeg: bytes | bytearray, marker: int) -> int:
    """Offset of the first ``0xFF marker`` segment, walking a JPEG codestream from SOI."""
    at = 2
    while jpeg[at + 1] != marker:
        at += 2 + int.from_bytes(jpeg[at + 2 : at + 4], "big")
    return at


def bad_study(patient: Patient, folder: Path, images: np.ndarray, first: int) -> FixtureStudy:
    """Objects a PACS stores but no model reads; each FixtureInstance names its reason."""
    truncated = _base(patient, images[first])
    truncated.PixelData = truncated.PixelData[:100]

    # A real JPEG baseline frame with a corrupt Huffman table (255 codes of length 1): the
    # frame header (28 x 28) is intact, and every decoder refuses the table.
    corrupt = pillow_compressed(
        _base(patient, images[first]), images[first], JPEGBaseline8Bit, format="JPEG"
    )
    frame = bytearray(next(generate_frames(corrupt.PixelData, number_of_frames=1)))
    frame[_segment(frame, 0xC4) + 5] = 0xFF  # after marker, length and Tc/Th: L1
    corrupt.PixelData = encapsulate([bytes(frame)])

    # JPEG 2000 Part 2 (multi-component): no decoder for it in pydicom's plugins.
    j2k_part2 = _base(patient, images[first])
    j2k_part2.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(96) + b"\xff\xd9"])
    j2k_part2["PixelData"].VR = "OB"
    j2k_part2.file_meta.TransferSyntaxUID = JPEG2000MCLossless

    # Decompression bomb: a real 28 x 28 JPEG 2000 codestream whose SIZ claims 60,000 x
    # 60,000 pixels (the header says 28 x 28): decoders would allocate gigabytes.
    bomb = pillow_compressed(
        _base(patient, images[first]),
        images[first],
        JPEG2000Lossless,
        format="JPEG2000",
        no_jp2=True,
        irreversible=False,
        num_resolutions=2,
    )
    codestream = bytearray(next(generate_frames(bomb.PixelData, number_of_frames=1)))
    codestream[8:16] = (60_000).to_bytes(4, "big") * 2  # Xsiz, Ysiz
    bomb.PixelData = encapsulate([bytes(codestream)])

    huge = _base(patient, images[first])
    huge.Rows = huge.Columns = 65535
    huge.PixelData = bytes(64)

    frames = _base(patient, images[first])
    frames.NumberOfFrames = 2
    frames.FrameIncrementPointer = 0x00181063  # Frame Time
    frames.FrameTime = 100.0
    frames.PixelData = np.stack([images[first], images[first + 1]]).tobytes()

    rgb = _base(patient, images[first])
    rgb.SOPClassUID = SECONDARY_CAPTURE
    rgb.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    rgb.Modality = "DX"
    rgb.PhotometricInterpretation = "RGB"
    rgb.SamplesPerPixel = 3
    rgb.PlanarConfiguration = 0
    rgb.PixelData = np.repeat(images[first][..., None], 3, axis=2).tobytes()

    deflated = _base(patient, images[first])
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    def bad(reason: str) -> dict[str, Any]:
        return {"expected_reason": reason}

    return _built_study(
        "bad",
        patient,
        folder,
        [
            ("no_pixel_data", _no_pixel_data(patient), bad("no pixel data")),
            ("truncated_pixels", truncated, bad("pixel data truncated")),
            ("corrupt_jpeg", corrupt, bad("undecodable")),
            (
                "jpeg2000_bomb",
                bomb,
                bad("compressed frame is 60000x60000, not the declared 28x28"),
            ),
            (
                "jpeg2000_part2",
                j2k_part2,
                bad(f"unsupported transfer syntax {JPEG2000MCLossless} (no decoder installed)"),
            ),
            ("huge_dimensions", huge, bad("image too large")),
            ("multi_frame", frames, bad("multi-frame image")),
            ("rgb", rgb, bad("unsupported photometric interpretation RGB")),
            ("deflated", deflated, bad(DEFLATED_REASON)),
        ],
    )


def pillow_compressed(ds: Dataset, pixels: np.ndarray, syntax: str, **save: Any) -> Dataset:
    """``ds`` with ``pixels`` as one frame Pillow encodes (JPEG or a JPEG 2000 codestream)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, **save)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def compressed_study(
    patient: Patient, folder: Path, images: np.ndarray, first: int
) -> FixtureStudy:
    """``train_images[first .. first+2]`` as JPEG 2000 lossless, RLE lossless, JPEG baseline."""
    j2k = pillow_compressed(
        _base(patient, images[first]),
        images[first],
        JPEG2000Lossless,
        format="JPEG2000",
        no_jp2=True,  # a bare codestream, as DICOM holds it
        irreversible=False,  # lossless 5/3 wavelet
        num_resolutions=2,  # 28 pixels allow one decomposition level
    )
    rle = _base(patient, images[first + 1])
    rle.compress(RLELossless)
    jpeg = pillow_compressed(
        _base(patient, images[first + 2]),
        images[first + 2],
        JPEGBaseline8Bit,
        format="JPEG",
        quality=90,
    )
    jpeg.LossyImageCompression = "01"
    jpeg.LossyImageCompressionMethod = "ISO_10918_1"
    return _built_study(
        "compressed",
        patient,
        folder,
        [
            ("jpeg2000_lossless", j2k, {"source_index": first}),
            ("rle_lossless", rle, {"source_index": first + 1}),
            ("jpeg_baseline", jpeg, {"source_index": first + 2}),
        ],
    )


def unstorable_objects(good: bytes) -> dict[str, bytes]:
    """Bytes no DICOM server stores, for :func:`decode_dicom` only."""
    return {
        "empty": b"",
        "not_dicom": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "preamble_only": bytes(128) + b"DICM",
        "cut_in_header": good[:200],
        "cut_in_pixels": good[: len(good) - 300],
    }


def build_fixture_set(shared_data: Path, folder: Path) -> DicomFixtureSet:
    """Write every fixture object under ``folder`` and say what is where."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_source_images(shared_data)
    xrays = synthea_xray_instances(shared_data, folder, images, labels)
    used = sum(len(s.instances) for s in xrays.studies.values())
    first_study = next(iter(xrays.studies.values()))
    patient = xrays.patients[first_study.patient_id]
    good = first_study.instances[0].data
    return DicomFixtureSet(
        synthea=xrays.studies,
        reused_uid_studies=xrays.reused_uid_studies,
        variants=variant_study(patient, folder, images, used),
        bad=bad_study(patient, folder, images, used + 3),
        compressed=compressed_study(patient, folder, images, used + 5),
        unstorable=unstorable_objects(good),
    )
