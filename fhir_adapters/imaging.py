"""DICOM images for the models: ImagingStudy references, DICOMweb retrieval, bounded decoding.

* :func:`parse_imaging_study` reads a FHIR R4 ``ImagingStudy`` (an R4B model or its JSON)
  into an :class:`ImagingStudyRef`: study/series/instance UIDs, modalities, endpoints.
* :func:`retrieve_study_images` fetches the study's instances of the wanted modalities
  (DX and CR by default) one by one over WADO-RS with ``dicomweb_client``, each body read
  by this module under a byte bound and a deadline, and decodes them. A failed instance is
  *skipped* with a reason (never patient data); nothing is raised.
* :func:`decode_dicom` (DICOM Part 10 bytes: a WADO-RS part, or a FHIR ``Binary`` through
  :func:`decode_binary`) and :func:`decode_dataset` turn one object into a
  :class:`DicomImage` or raise :class:`DicomRejected`, and nothing else.

Pixels: stored values → Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence)
→ VOI LUT (the first VOI LUT Sequence item, else the first window) → MONOCHROME1 inverted
into MONOCHROME2 sense (higher = brighter) within the range those LUTs can produce → float32.
Only single-frame, single-sample MONOCHROME1/2 images with 8 or 16 allocated bits are
accepted: a multi-frame object is rejected, not cut to its first frame, because a model
handed frame 0 of a cine or tomosynthesis object would silently read the wrong image.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import requests
import urllib3
from dicomweb_client import DICOMwebClient
from fhir.resources.R4B.binary import Binary
from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from fhir_adapters.parsing import ResourceInvalid, fhir_datetime, parse_resource

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DICOM_CONTENT_TYPE = "application/dicom"
SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")

#: Deflated Explicit VR Little Endian: pydicom inflates it whole, without any bound, so a
#: small object could inflate to gigabytes. Refused wherever its UID shows in the bytes.
DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"
DEFLATED_REASON = "deflated transfer syntax not supported (unbounded inflation)"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_TERM = re.compile(r"[A-Z0-9_ ]{1,16}")
_CHUNK = 65_536


def valid_uid(value: object) -> bool:
    """A DICOM UID: dot-separated numbers without leading zeros, at most 64 characters."""
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


# --------------------------------------------------------------------------- limits, errors
@dataclass(frozen=True)
class ImagingLimits:
    max_instances: int = 16  #: instances fetched per retrieve_study_images call
    max_bytes: int = 32 * 1024 * 1024  #: per instance (HTTP body, Part 10 bytes)
    max_pixels: int = 4096 * 4096  #: rows x columns
    timeout_s: float = 10.0  #: per instance: connect, each read, and the whole body

    def __post_init__(self) -> None:
        if min(self.max_instances, self.max_bytes, self.max_pixels) < 1 or self.timeout_s <= 0:
            raise ValueError("imaging limits must be positive")


DEFAULT_LIMITS = ImagingLimits()


class DicomRejected(ValueError):
    """The object is not a usable image; ``reason`` says why (never any of its content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- FHIR ImagingStudy
@dataclass(frozen=True)
class ImagingInstanceRef:
    uid: str
    sop_class: str | None


@dataclass(frozen=True)
class ImagingSeriesRef:
    uid: str
    #: DICOM modality code (DX, CR, US, ...).
    modality: str | None
    body_site_code: str | None
    body_site_display: str | None
    instances: tuple[ImagingInstanceRef, ...]
    endpoint_references: tuple[str, ...] = ()

    @property
    def instance_uids(self) -> tuple[str, ...]:
        return tuple(i.uid for i in self.instances)


@dataclass(frozen=True)
class ImagingStudyRef:
    #: DICOM Study Instance UID (the ``urn:oid:`` identifier, prefix stripped); None if absent.
    study_uid: str | None
    resource_id: str | None
    #: ``subject.reference``, e.g. ``Patient/123``.
    patient_reference: str | None
    started: datetime | date | None
    series: tuple[ImagingSeriesRef, ...]
    #: The study's Endpoint references, then any series-level ones not already listed.
    endpoint_references: tuple[str, ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.modality for s in self.series if s.modality))


def _references(items: Sequence[Any] | None) -> tuple[str, ...]:
    return tuple(r.reference for r in items or () if getattr(r, "reference", None))


def _study_uid(study: ImagingStudy) -> str | None:
    for identifier in study.identifier or ():
        value = identifier.value or ""
        if value.startswith("urn:oid:") and valid_uid(value[8:]):
            return value[8:]
    return None


def parse_imaging_study(resource: ImagingStudy | Mapping[str, Any]) -> ImagingStudyRef:
    """An R4B ``ImagingStudy`` (or its JSON) as an :class:`ImagingStudyRef`.

    JSON that is not a valid ImagingStudy raises :class:`ResourceInvalid`. Series and
    instances without a UID are left out; a study without a ``urn:oid:`` identifier gets
    ``study_uid=None`` (and :func:`retrieve_study_images` skips its instances).
    """
    if isinstance(resource, Mapping):
        resource = parse_resource(dict(resource), "ImagingStudy")
    if not isinstance(resource, ImagingStudy):
        raise ResourceInvalid("expected an ImagingStudy")
    series: list[ImagingSeriesRef] = []
    for item in resource.series or ():
        if not item.uid:
            continue
        body = item.bodySite
        series.append(
            ImagingSeriesRef(
                uid=item.uid,
                modality=item.modality.code if item.modality else None,
                body_site_code=body.code if body else None,
                body_site_display=body.display if body else None,
                instances=tuple(
                    ImagingInstanceRef(i.uid, i.sopClass.code if i.sopClass else None)
                    for i in item.instance or ()
                    if i.uid
                ),
                endpoint_references=_references(item.endpoint),
            )
        )
    endpoints = _references(resource.endpoint)
    for s in series:
        endpoints += tuple(r for r in s.endpoint_references if r not in endpoints)
    return ImagingStudyRef(
        study_uid=_study_uid(resource),
        resource_id=resource.id,
        patient_reference=resource.subject.reference if resource.subject else None,
        started=resource.started,
        series=tuple(series),
        endpoint_references=endpoints,
    )


def xray_studies(
    studies: Sequence[ImagingStudyRef],
    since: datetime | None = None,
    modalities: Sequence[str] = ("DX", "CR"),
) -> list[ImagingStudyRef]:
    """Studies with a series of ``modalities`` holding instances, newest first; with
    ``since`` (aware), only those started at or after it (a study without a start date
    is then left out: it cannot be shown to be recent)."""
    chosen = []
    for study in studies:
        if not any(s.modality in modalities and s.instances for s in study.series):
            continue
        started = fhir_datetime(study.started)
        if since is not None and (started is None or started < since):
            continue
        chosen.append(study)
    return sorted(chosen, key=_newest_first, reverse=True)


def _newest_first(study: ImagingStudyRef) -> tuple[float, str]:
    started = fhir_datetime(study.started)
    return (started.timestamp() if started else float("-inf"), study.resource_id or "")


# --------------------------------------------------------------------------- decoding
@dataclass(frozen=True, eq=False)
class DicomImage:
    """One decoded image, as an imaging model consumes it.

    ``pixels``: float32 (rows, columns), read-only, after the Modality and VOI LUTs, in
    MONOCHROME2 sense (``inverted`` is True when the object was MONOCHROME1).
    ``photometric_interpretation`` is the object's own value.
    """

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    body_part_examined: str
    view_position: str
    laterality: str
    photometric_interpretation: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    rescale_slope: float | None
    rescale_intercept: float | None
    window_center: float | None
    window_width: float | None
    #: Which VOI transform was applied: "none", "window" or "lut".
    voi_transform: str
    inverted: bool
    #: PixelSpacing, else ImagerPixelSpacing (row, column spacing in mm).
    pixel_spacing_mm: tuple[float, float] | None
    #: Patient fields and pixels stay out of repr(), so a logged image carries neither.
    patient_id: str = field(repr=False)
    patient_sex: str = field(repr=False)
    patient_age: str = field(repr=False)
    pixels: np.ndarray = field(repr=False)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str | bytes) and isinstance(value, Sequence):
        value = value[0] if len(value) else ""
    return str(value).strip()


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes) and isinstance(value, Sequence):
        if not len(value):
            return None
        value = value[0]
    return float(value)


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and not isinstance(value, str) and len(value) == 2:
            return float(value[0]), float(value[1])
    return None


def _term(value: str) -> str:
    """A defined term fit for a reason, else a placeholder."""
    return value if _TERM.fullmatch(value) else "(unprintable)"


def _transfer_syntax(ds: Dataset) -> UID:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax:
        raise DicomRejected("no transfer syntax in the file meta information")
    syntax = UID(str(syntax))
    if syntax not in AllTransferSyntaxes:
        shown = syntax if valid_uid(str(syntax)) else "(invalid UID)"
        raise DicomRejected(f"unsupported transfer syntax {shown}")
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise DicomRejected(f"unsupported transfer syntax {syntax} (no decoder installed)")
    return syntax


#: JPEG start-of-frame markers (ITU T.81 B.1.1.3; 0xF7 is JPEG-LS SOF55), whose segment
#: holds the frame's height and width.
_JPEG_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC)}) | {
    0xCD,
    0xCE,
    0xCF,
    0xF7,
}
_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC then SIZ (ISO 15444-1 A.5.1)
_HEADER_BYTES = 65_536  # markers before the frame header are short; stop looking after this


def _jpeg_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG / JPEG-LS codestream's SOF segment; None if not found."""
    if frame[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= min(len(frame), _HEADER_BYTES):
        if frame[at] != 0xFF:
            return None
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(frame[at + 2 : at + 4], "big")
        if marker in _JPEG_SOF and at + 9 <= len(frame):
            rows = int.from_bytes(frame[at + 5 : at + 7], "big")
            columns = int.from_bytes(frame[at + 7 : at + 9], "big")
            return rows, columns
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        at += 2 + length
    return None


def _j2k_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG 2000 codestream's SIZ segment (also inside a JP2 box)."""
    at = frame.find(_J2K_SIZ, 0, _HEADER_BYTES)
    if at < 0 or at + 24 > len(frame):
        return None
    x, y, x0, y0 = (int.from_bytes(frame[at + o : at + o + 4], "big") for o in (8, 12, 16, 20))
    return y - y0, x - x0


def _check_compressed_size(ds: Dataset, syntax: UID, rows: int, columns: int) -> None:
    """Refuse a compressed frame whose codestream is not Rows x Columns before decoding it.

    The decoders allocate what the codestream declares, so a few kilobytes claiming to be
    28 x 28 in the header but 60,000 x 60,000 in the codestream would take gigabytes.
    """
    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        read = _jpeg_frame_size
    elif syntax in JPEG2000TransferSyntaxes:
        read = _j2k_frame_size
    else:
        return  # RLE: decoded into the Rows x Columns the header declares
    first = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
    size = read(first[:_HEADER_BYTES])
    if size is None:
        raise DicomRejected("compressed frame without a readable size")
    if size != (rows, columns):
        raise DicomRejected(
            f"compressed frame is {size[0]}x{size[1]}, not the declared {rows}x{columns}"
        )


def _voi_transform(ds: Dataset) -> str:
    if ds.get("VOILUTSequence"):
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return "none"


def _modality_changes_values(ds: Dataset) -> bool:
    if ds.get("ModalityLUTSequence"):
        return True
    slope, intercept = _number(ds, "RescaleSlope"), _number(ds, "RescaleIntercept")
    return slope is not None and intercept is not None and (slope, intercept) != (1.0, 0.0)


def _present(values: np.ndarray, ds: Dataset, voi: str) -> np.ndarray:
    if _modality_changes_values(ds):
        values = apply_modality_lut(values, ds)
    if voi != "none":
        values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
    return values


#: Rows per band of the LUT pipeline: its float64 temporaries stay a band's size, not the
#: image's (a 4,096 x 4,096 image would otherwise take several 128 MiB copies at once).
_BAND_ROWS = 256


def _presentation_pixels(stored: np.ndarray, ds: Dataset, voi: str, invert: bool) -> np.ndarray:
    mirror: float | None = None
    if invert:
        # MONOCHROME1: mirror within the range the LUTs give the extreme stored values.
        bits = int(ds.BitsStored)
        low, high = (
            (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if ds.PixelRepresentation
            else (0, 2**bits - 1)
        )
        ends = _present(np.array([low, high], dtype=np.int64), ds, voi).astype(np.float64)
        mirror = float(ends.min() + ends.max())
    pixels = np.empty(stored.shape, dtype=np.float32)
    for top in range(0, stored.shape[0], _BAND_ROWS):
        band = np.asarray(_present(stored[top : top + _BAND_ROWS], ds, voi), dtype=np.float64)
        pixels[top : top + _BAND_ROWS] = band if mirror is None else mirror - band
    if not np.isfinite(pixels.sum(dtype=np.float64)):
        raise DicomRejected("pixel values out of range after the LUTs")
    pixels.flags.writeable = False
    return pixels


def _decode(ds: Dataset, limits: ImagingLimits) -> DicomImage:
    if "PixelData" not in ds:
        raise DicomRejected("no pixel data (not an image)")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise DicomRejected(f"unsupported photometric interpretation {_term(photometric)}")
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise DicomRejected("more than one sample per pixel")
    if int(ds.get("NumberOfFrames") or 1) != 1:
        raise DicomRejected("multi-frame image (only single-frame images are read)")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 1 or columns < 1:
        raise DicomRejected("no image dimensions")
    if rows * columns > limits.max_pixels:
        raise DicomRejected(f"image too large ({rows}x{columns} over {limits.max_pixels} pixels)")
    bits_allocated, bits_stored = int(ds.get("BitsAllocated") or 0), int(ds.get("BitsStored") or 0)
    if bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated:
        raise DicomRejected("unsupported bit depth")
    syntax = _transfer_syntax(ds)
    if not syntax.is_compressed and len(ds.PixelData) < rows * columns * bits_allocated // 8:
        raise DicomRejected("pixel data truncated")
    if syntax.is_compressed:
        _check_compressed_size(ds, syntax, rows, columns)
    stored = ds.pixel_array
    if stored.shape != (rows, columns):
        raise DicomRejected("decoded pixel data does not match rows x columns")
    voi = _voi_transform(ds)
    inverted = photometric == "MONOCHROME1"
    return DicomImage(
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        transfer_syntax_uid=str(syntax),
        modality=_text(ds, "Modality"),
        body_part_examined=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        photometric_interpretation=photometric,
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=int(ds.get("PixelRepresentation") or 0),
        rescale_slope=_number(ds, "RescaleSlope"),
        rescale_intercept=_number(ds, "RescaleIntercept"),
        window_center=_number(ds, "WindowCenter"),
        window_width=_number(ds, "WindowWidth"),
        voi_transform=voi,
        inverted=inverted,
        pixel_spacing_mm=_spacing(ds),
        patient_id=_text(ds, "PatientID"),
        patient_sex=_text(ds, "PatientSex"),
        patient_age=_text(ds, "PatientAge"),
        pixels=_presentation_pixels(stored, ds, voi, inverted),
    )


def decode_dataset(ds: Dataset, limits: ImagingLimits = DEFAULT_LIMITS) -> DicomImage:
    """One parsed DICOM object as a :class:`DicomImage`; anything unusable → DicomRejected."""
    try:
        return _decode(ds, limits)
    except DicomRejected:
        raise
    except Exception as exc:  # pydicom and numpy raise many types on malformed objects
        raise DicomRejected(f"undecodable ({type(exc).__name__})") from None


def decode_dicom(data: bytes, limits: ImagingLimits = DEFAULT_LIMITS) -> DicomImage:
    """DICOM Part 10 bytes (128-byte preamble, ``DICM``, file meta) as a :class:`DicomImage`.

    Raises only :class:`DicomRejected`: over ``max_bytes``, not DICOM, truncated, no pixel
    data, no decoder for its transfer syntax, multi-frame, over ``max_pixels``, or not
    MONOCHROME1/2 (see :func:`decode_dataset`).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DicomRejected("not bytes")
    if len(data) > limits.max_bytes:
        raise DicomRejected(f"object over {limits.max_bytes} bytes")
    if DEFLATED_SYNTAX in data:
        raise DicomRejected(DEFLATED_REASON)
    try:
        ds = dcmread(io.BytesIO(data))
    except Exception as exc:  # InvalidDicomError, EOFError, struct.error, ValueError, ...
        kind = "not DICOM" if isinstance(exc, InvalidDicomError) else "not DICOM or truncated"
        raise DicomRejected(kind) from None
    return decode_dataset(ds, limits)


def dicom_bytes_from_binary(
    binary: Binary | Mapping[str, Any], limits: ImagingLimits = DEFAULT_LIMITS
) -> bytes:
    """The DICOM bytes of a FHIR ``Binary`` (R4B model or JSON) of type application/dicom."""
    if isinstance(binary, Mapping):
        encoded = binary.get("data")
        if isinstance(encoded, str) and len(encoded) * 3 // 4 > limits.max_bytes + 3:
            raise DicomRejected(f"object over {limits.max_bytes} bytes")
        try:
            binary = parse_resource(dict(binary), "Binary")
        except ResourceInvalid:
            raise DicomRejected("not a valid FHIR Binary") from None
    if not isinstance(binary, Binary):
        raise DicomRejected("not a FHIR Binary")
    content_type = (binary.contentType or "").split(";")[0].strip().lower()
    if content_type != DICOM_CONTENT_TYPE:
        raise DicomRejected("Binary is not application/dicom")
    data = binary.data
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise DicomRejected("Binary data is not base64") from None
    if not data:
        raise DicomRejected("Binary has no data")
    return bytes(data)


def decode_binary(
    binary: Binary | Mapping[str, Any], limits: ImagingLimits = DEFAULT_LIMITS
) -> DicomImage:
    """:func:`decode_dicom` of a FHIR ``Binary`` with contentType application/dicom."""
    return decode_dicom(dicom_bytes_from_binary(binary, limits), limits)


# --------------------------------------------------------------------------- DICOMweb
@dataclass(frozen=True)
class SkippedInstance:
    uid: str
    reason: str


@dataclass(frozen=True)
class ImageSkip:
    """An X-ray the loader did not deliver: which study (and instance, if one), and why."""

    study_uid: str | None
    #: The ImagingStudy's FHIR id.
    study_id: str | None
    #: None when the whole study was passed over (no endpoint, caps reached).
    instance_uid: str | None
    reason: str


@dataclass(frozen=True)
class ImagingResult:
    images: tuple[DicomImage, ...] = ()
    skipped: tuple[SkippedInstance, ...] = ()


class _TransferAborted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _body_chunks(raw: Any) -> Iterator[bytes]:
    read1 = getattr(raw, "read1", None)  # urllib3 2: returns after one socket read
    if read1 is None:
        yield from raw.stream(_CHUNK, decode_content=True)
        return
    while chunk := read1(_CHUNK, decode_content=True):
        yield chunk


class _BoundedBody:
    """A response hook that reads the body itself: at most max_bytes, before the deadline.

    ``requests`` runs response hooks before it reads a non-streamed body, so an oversized
    or slow-drip answer is cut off here instead of being buffered whole.
    """

    def __init__(self, limits: ImagingLimits) -> None:
        self.max_bytes = limits.max_bytes
        self.timeout_s = limits.timeout_s
        self.deadline = time.monotonic() + limits.timeout_s

    def start(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def _abort(self, response: requests.Response, reason: str) -> _TransferAborted:
        response.close()
        return _TransferAborted(reason)

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> Any:
        declared = response.headers.get("Content-Length", "")
        too_large = f"response over {self.max_bytes} bytes"
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._abort(response, too_large)
        body = bytearray()
        try:
            for chunk in _body_chunks(response.raw):
                body += chunk
                if len(body) > self.max_bytes:
                    raise self._abort(response, too_large)
                if time.monotonic() > self.deadline:
                    raise self._abort(response, f"timed out after {self.timeout_s:g} s")
        except urllib3.exceptions.ReadTimeoutError:
            raise self._abort(response, f"timed out after {self.timeout_s:g} s") from None
        except (urllib3.exceptions.HTTPError, OSError):
            raise self._abort(response, "connection broken while reading") from None
        if DEFLATED_SYNTAX in body:  # dicomweb_client parses the parts right after this
            raise self._abort(response, DEFLATED_REASON)
        response.raw = io.BytesIO(bytes(body))
        return response


class _BoundedSession(requests.Session):
    """What DICOMwebClient sees: GETs go through the caller's session with our hook first.

    The caller's session is not changed (DICOMwebClient would set headers and hooks on it).
    """

    def __init__(self, base: requests.Session, hook: _BoundedBody) -> None:
        super().__init__()
        self._base, self._hook = base, hook

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("hooks", {"response": [self._hook, *self._base.hooks["response"]]})
        return self._base.get(url, **kwargs)


@dataclass(frozen=True)
class _Failed:
    reason: str
    #: Every later request would fail the same way (bad credentials, server unreachable).
    fatal: bool = False


def _http_failure(exc: requests.HTTPError) -> _Failed:
    status = exc.response.status_code if exc.response is not None else 0
    if status in (401, 403):
        return _Failed(f"not authorised by the DICOMweb server (HTTP {status})", fatal=True)
    if status == 404:
        return _Failed("not found on the DICOMweb server (HTTP 404)")
    return _Failed(f"DICOMweb server answered HTTP {status}")


def _fetch(
    client: DICOMwebClient,
    body: _BoundedBody,
    uids: tuple[str, str, str],
    limits: ImagingLimits,
) -> DicomImage | _Failed:
    if not all(valid_uid(uid) for uid in uids):
        return _Failed("invalid UID in the ImagingStudy")
    body.start()
    try:
        ds = client.retrieve_instance(*uids)
    except _TransferAborted as exc:
        return _Failed(exc.reason)
    except requests.HTTPError as exc:
        return _http_failure(exc)
    except requests.ConnectTimeout:
        return _Failed(f"connecting timed out after {limits.timeout_s:g} s", fatal=True)
    except requests.Timeout:
        return _Failed(f"timed out after {limits.timeout_s:g} s")
    except requests.ConnectionError:
        return _Failed("could not connect to the DICOMweb server", fatal=True)
    except requests.RequestException as exc:
        return _Failed(f"HTTP request failed ({type(exc).__name__})")
    except InvalidDicomError:
        return _Failed("not DICOM")
    except Exception as exc:  # dicomweb_client and pydicom parse the multipart answer
        return _Failed(f"unusable DICOMweb answer ({type(exc).__name__})")
    try:
        returned = tuple(_text(ds, k) for k in ("StudyInstanceUID", "SeriesInstanceUID"))
        if (*returned, _text(ds, "SOPInstanceUID")) != uids:
            return _Failed("the server returned a different instance than requested")
        return decode_dataset(ds, limits)
    except DicomRejected as exc:
        return _Failed(exc.reason)
    except Exception as exc:  # a malformed UID value, read lazily by pydicom
        return _Failed(f"undecodable ({type(exc).__name__})")


def retrieve_study_images(
    study: ImagingStudyRef,
    dicomweb_url: str,
    *,
    session: requests.Session | None = None,
    limits: ImagingLimits = DEFAULT_LIMITS,
    modalities: Sequence[str] = ("DX", "CR"),
) -> ImagingResult:
    """Fetch (WADO-RS) and decode the study's instances of ``modalities``, in FHIR order.

    ``dicomweb_url`` is the DICOMweb root (e.g. ``https://pacs/dicom-web``); ``session``
    carries authentication (it is used, not changed). At most ``limits.max_instances``
    instances are requested; the rest are skipped. One instance's failure (HTTP error,
    timeout, oversized, undecodable) skips it; a 401/403 or an unreachable server skips all
    remaining instances without further requests. Never raises for server or data faults.
    """
    if isinstance(modalities, str):
        modalities = (modalities,)
    wanted = [
        (series.uid, instance.uid)
        for series in study.series
        if series.modality in modalities
        for instance in series.instances
    ]
    if study.study_uid is None:
        reason = "ImagingStudy has no DICOM Study Instance UID"
        return ImagingResult(skipped=tuple(SkippedInstance(uid, reason) for _, uid in wanted))
    base = session if session is not None else requests.Session()
    body = _BoundedBody(limits)
    bounded = _BoundedSession(base, body)
    images: list[DicomImage] = []
    skipped: list[SkippedInstance] = []
    try:
        try:
            client = DICOMwebClient(
                dicomweb_url, session=bounded, timeout=(limits.timeout_s, limits.timeout_s)
            )
        except ValueError:
            reason = "invalid DICOMweb address"
            return ImagingResult(skipped=tuple(SkippedInstance(uid, reason) for _, uid in wanted))
        client.set_http_retry_params(retry=False)  # the caller decides about retries
        stop: str | None = None
        for attempted, (series_uid, uid) in enumerate(wanted):
            if stop is None and attempted >= limits.max_instances:
                stop = f"over max_instances ({limits.max_instances})"
            if stop is not None:
                skipped.append(SkippedInstance(uid, f"not requested: {stop}"))
                continue
            outcome = _fetch(client, body, (study.study_uid, series_uid, uid), limits)
            if isinstance(outcome, DicomImage):
                images.append(outcome)
                continue
            skipped.append(SkippedInstance(uid, outcome.reason))
            if outcome.fatal:
                stop = outcome.reason
    finally:
        bounded.close()  # its own (unused) adapters only
        if session is None:
            base.close()
    return ImagingResult(images=tuple(images), skipped=tuple(skipped))


__all__ = [
    "CR_IMAGE",
    "DEFAULT_LIMITS",
    "DEFLATED_REASON",
    "DICOM_CONTENT_TYPE",
    "DX_FOR_PRESENTATION",
    "DicomImage",
    "DicomRejected",
    "ImageSkip",
    "ImagingInstanceRef",
    "ImagingLimits",
    "ImagingResult",
    "ImagingSeriesRef",
    "ImagingStudyRef",
    "SkippedInstance",
    "decode_binary",
    "decode_dataset",
    "decode_dicom",
    "dicom_bytes_from_binary",
    "parse_imaging_study",
    "retrieve_study_images",
    "valid_uid",
    "xray_studies",
]
