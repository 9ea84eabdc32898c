"""fhir_adapters.imaging against a real Orthanc + DICOMweb plugin holding real DICOM objects.

The objects (tests/support/dicom_fixtures.py) are PneumoniaMNIST chest X-rays (CC BY 4.0)
wrapped as DX/CR instances whose UIDs are those of the Synthea ImagingStudy resources
(Apache-2.0). Tests marked ``dicomweb`` use the session's Orthanc; the decoding tests need
no server.
"""

from __future__ import annotations

import base64
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from fhir_adapters.imaging import (
    DicomImage,
    DicomRejected,
    ImagingLimits,
    ImagingResult,
    ImagingStudyRef,
    decode_binary,
    decode_dicom,
    parse_imaging_study,
    retrieve_study_images,
)
from fhir_adapters.parsing import ResourceInvalid, parse_resource
from tests.support.dicom_fixtures import (
    NARROW_WINDOW,
    FixtureInstance,
    FixtureStudy,
    Patient,
    dicom_bytes,
    pillow_compressed,
    xray_dataset,
)
from tests.support.dicomweb_server import DicomWebServer

dicomweb = pytest.mark.dicomweb


@pytest.fixture
def orthanc(dicomweb_server: DicomWebServer) -> Iterator[requests.Session]:
    with dicomweb_server.session() as session:
        yield session


def _retrieve(
    server: DicomWebServer,
    session: requests.Session | None,
    study: ImagingStudyRef,
    limits: ImagingLimits | None = None,
    modalities: tuple[str, ...] = ("DX", "CR"),
) -> ImagingResult:
    return retrieve_study_images(
        study,
        server.base_url,
        session=session,
        limits=limits or ImagingLimits(),
        modalities=modalities,
    )


def _ref(study: FixtureStudy) -> ImagingStudyRef:
    return parse_imaging_study(study.imaging_study)


# --------------------------------------------------------------------------- ImagingStudy
@dicomweb
def test_parses_a_synthea_imaging_study(dicomweb_server: DicomWebServer) -> None:
    fixture = next(iter(dicomweb_server.fixtures.synthea.values()))
    model = parse_resource(fixture.imaging_study, "ImagingStudy")
    ref = parse_imaging_study(model)
    assert ref == parse_imaging_study(fixture.imaging_study)  # JSON or R4B model alike
    assert ref.study_uid == fixture.study_uid
    assert not ref.study_uid.startswith("urn:")
    assert ref.patient_reference == f"Patient/{fixture.patient_id}"
    assert ref.started is not None
    assert ref.resource_id == fixture.imaging_study["id"]
    (series,) = ref.series
    raw = fixture.imaging_study["series"][0]
    assert series.uid == raw["uid"]
    assert series.modality in ("DX", "CR")
    assert series.body_site_code == raw["bodySite"]["code"]
    assert series.body_site_display == raw["bodySite"]["display"]
    assert series.instance_uids == tuple(i["uid"] for i in raw["instance"])
    assert series.instances[0].sop_class == raw["instance"][0]["sopClass"]["code"]


def test_imaging_study_without_study_uid_or_series() -> None:
    ref = parse_imaging_study(
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": "Patient/p1"},
            "endpoint": [{"reference": "Endpoint/pacs"}],
            "series": [
                {
                    "uid": "1.2.3",
                    "modality": {"code": "CR"},
                    "endpoint": [{"reference": "Endpoint/pacs"}, {"reference": "Endpoint/b"}],
                }
            ],
        }
    )
    assert ref.study_uid is None
    assert ref.series[0].instances == ()
    assert ref.endpoint_references == ("Endpoint/pacs", "Endpoint/b")
    result = retrieve_study_images(ref, "http://127.0.0.1:9/dicom-web")
    assert result.images == () and result.skipped == ()
    with pytest.raises(ResourceInvalid):
        parse_imaging_study({"resourceType": "Patient"})


# --------------------------------------------------------------------------- retrieval
def _assert_matches_source(
    image: DicomImage, instance: FixtureInstance, source: np.ndarray
) -> None:
    assert image.study_uid == instance.study_uid
    assert image.series_uid == instance.series_uid
    assert image.sop_instance_uid == instance.sop_instance_uid
    assert image.sop_class_uid == instance.sop_class_uid
    assert image.modality == instance.modality
    assert image.patient_id == instance.patient_id
    assert image.body_part_examined == instance.body_part
    assert image.view_position == instance.view_position
    assert image.photometric_interpretation == "MONOCHROME2"
    assert (image.rows, image.columns, image.bits_stored) == (28, 28, 8)
    assert image.pixels.dtype == np.float32
    assert not image.pixels.flags.writeable
    # 8 bits, rescale 1/0, DX window 128/256: the LUTs leave every value as it was.
    np.testing.assert_array_equal(image.pixels, source.astype(np.float32))


@dicomweb
def test_retrieves_synthea_studies_pixel_exact(
    dicomweb_server: DicomWebServer, orthanc: requests.Session, source_images: np.ndarray
) -> None:
    fixtures = dicomweb_server.fixtures
    # Several patients, both modalities: the first 12 studies and every CR study.
    studies = list(fixtures.synthea.values())
    chosen = studies[:12] + [s for s in studies[12:] if s.instances[0].modality == "CR"]
    assert {s.instances[0].modality for s in chosen} == {"DX", "CR"}
    assert len({s.patient_id for s in chosen}) >= 5
    for fixture in chosen:
        result = _retrieve(dicomweb_server, orthanc, _ref(fixture))
        assert result.skipped == ()
        assert len(result.images) == len(fixture.instances)
        for image, instance in zip(result.images, fixture.instances, strict=True):
            _assert_matches_source(image, instance, source_images[instance.source_index])
            expected_view = "PA" if instance.modality == "DX" else "AP"
            assert image.view_position == expected_view
            assert image.voi_transform == ("window" if instance.modality == "DX" else "none")


@dicomweb
def test_every_loaded_xray_is_on_the_server(
    dicomweb_server: DicomWebServer, orthanc: requests.Session
) -> None:
    fixtures = dicomweb_server.fixtures
    xrays = [i for s in fixtures.synthea.values() for i in s.instances]
    assert len(xrays) >= 60 and {i.modality for i in xrays} == {"DX", "CR"}
    assert len({i.patient_id for i in xrays}) >= 40
    answer = orthanc.get(f"{dicomweb_server.orthanc_url}/statistics", timeout=10).json()
    assert answer["CountInstances"] == sum(1 for _ in fixtures.instances())


@dicomweb
def test_monochrome1_is_inverted_to_monochrome2_sense(
    dicomweb_server: DicomWebServer, orthanc: requests.Session, source_images: np.ndarray
) -> None:
    variants = dicomweb_server.fixtures.variants
    result = _retrieve(dicomweb_server, orthanc, _ref(variants))
    assert result.skipped == ()
    image = result.images[[i.name for i in variants.instances].index("monochrome1")]
    assert image.photometric_interpretation == "MONOCHROME1"
    assert image.inverted
    # stored 255 - v, MONOCHROME1: inverted back within 0..255 → v.
    source = source_images[variants.instance("monochrome1").source_index]
    np.testing.assert_array_equal(image.pixels, source.astype(np.float32))


def _linear_window(x: np.ndarray, center: float, width: float, y_max: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), written out independently of pydicom."""
    x = x.astype(np.float64)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5) * y_max
    out[x <= center - 0.5 - (width - 1) / 2] = 0
    out[x > center - 0.5 + (width - 1) / 2] = y_max
    return out


@dicomweb
def test_voi_window_and_rescale(
    dicomweb_server: DicomWebServer, orthanc: requests.Session, source_images: np.ndarray
) -> None:
    variants = dicomweb_server.fixtures.variants
    result = _retrieve(dicomweb_server, orthanc, _ref(variants))
    images = {i.name: img for i, img in zip(variants.instances, result.images, strict=True)}

    window = images["window"]
    assert window.voi_transform == "window"
    assert (window.window_center, window.window_width) == NARROW_WINDOW
    source = source_images[variants.instance("window").source_index]
    expected = _linear_window(source, *NARROW_WINDOW, y_max=255)
    np.testing.assert_allclose(window.pixels, expected, rtol=0, atol=1e-3)

    rescaled = images["rescale16"]
    assert (rescaled.bits_allocated, rescaled.bits_stored) == (16, 12)
    assert (rescaled.rescale_slope, rescaled.rescale_intercept) == (0.25, -250.0)
    source = source_images[variants.instance("rescale16").source_index]
    np.testing.assert_array_equal(rescaled.pixels, source.astype(np.float32))


@dicomweb
def test_compressed_transfer_syntaxes_are_decoded(
    dicomweb_server: DicomWebServer, orthanc: requests.Session, source_images: np.ndarray
) -> None:
    compressed = dicomweb_server.fixtures.compressed
    result = _retrieve(dicomweb_server, orthanc, _ref(compressed))
    assert result.skipped == ()
    images = {i.name: img for i, img in zip(compressed.instances, result.images, strict=True)}
    for name in ("jpeg2000_lossless", "rle_lossless", "jpeg_baseline"):
        instance = compressed.instance(name)
        image, source = images[name], source_images[instance.source_index].astype(np.float32)
        if name == "jpeg_baseline":  # lossy: close to the source, not equal
            assert 0 < np.abs(image.pixels - source).mean() < 3
        else:
            np.testing.assert_array_equal(image.pixels, source)
    syntaxes = {image.transfer_syntax_uid for image in result.images}
    assert syntaxes == {JPEG2000Lossless, RLELossless, JPEGBaseline8Bit}


@dicomweb
def test_bad_objects_are_skipped_with_their_reason(
    dicomweb_server: DicomWebServer, orthanc: requests.Session
) -> None:
    bad = dicomweb_server.fixtures.bad
    result = _retrieve(dicomweb_server, orthanc, _ref(bad), modalities=("DX", "SR"))
    assert result.images == ()
    reasons = {s.uid: s.reason for s in result.skipped}
    assert set(reasons) == {i.sop_instance_uid for i in bad.instances}
    for instance in bad.instances:
        assert instance.expected_reason is not None
        assert reasons[instance.sop_instance_uid].startswith(instance.expected_reason), (
            instance.name
        )
    # Reasons name no patient data.
    assert not any(bad.patient_id in r for r in reasons.values())


@dicomweb
def test_only_the_requested_modalities_are_fetched(
    dicomweb_server: DicomWebServer, orthanc: requests.Session
) -> None:
    bad = dicomweb_server.fixtures.bad
    result = _retrieve(dicomweb_server, orthanc, _ref(bad))  # DX and CR: the SR is left out
    sr = bad.instance("no_pixel_data").sop_instance_uid
    assert sr not in {s.uid for s in result.skipped}
    assert len(result.skipped) == len(bad.instances) - 1


@dicomweb
def test_wrong_password_skips_without_crashing(dicomweb_server: DicomWebServer) -> None:
    variants = dicomweb_server.fixtures.variants
    with requests.Session() as session:
        session.auth = (dicomweb_server.username, "not-the-password")
        result = _retrieve(dicomweb_server, session, _ref(variants))
    assert result.images == ()
    first, *rest = result.skipped
    assert first.reason == "not authorised by the DICOMweb server (HTTP 401)"
    # The other instances are not even requested once the credentials are refused.
    assert [s.reason for s in rest] == [f"not requested: {first.reason}"] * len(rest)


@dicomweb
def test_no_session_means_no_credentials(dicomweb_server: DicomWebServer) -> None:
    variants = dicomweb_server.fixtures.variants
    result = _retrieve(dicomweb_server, None, _ref(variants))
    assert result.images == ()
    assert result.skipped[0].reason.endswith("(HTTP 401)")


@dicomweb
def test_unknown_study_uid_gives_an_empty_result_with_a_reason(
    dicomweb_server: DicomWebServer, orthanc: requests.Session
) -> None:
    fixture = next(iter(dicomweb_server.fixtures.synthea.values()))
    unknown = dataclasses.replace(_ref(fixture), study_uid="2.25.1234567890")
    result = _retrieve(dicomweb_server, orthanc, unknown)
    assert result.images == ()
    assert [s.reason for s in result.skipped] == [
        "not found on the DICOMweb server (HTTP 404)"
    ] * len(fixture.instances)


@dicomweb
def test_max_instances_is_respected(
    dicomweb_server: DicomWebServer, orthanc: requests.Session
) -> None:
    variants = dicomweb_server.fixtures.variants
    result = _retrieve(
        dicomweb_server, orthanc, _ref(variants), limits=ImagingLimits(max_instances=2)
    )
    assert [i.sop_instance_uid for i in result.images] == [
        i.sop_instance_uid for i in variants.instances[:2]
    ]
    assert [(s.uid, s.reason) for s in result.skipped] == [
        (variants.instances[2].sop_instance_uid, "not requested: over max_instances (2)")
    ]


@dicomweb
def test_max_bytes_and_max_pixels_are_respected(
    dicomweb_server: DicomWebServer, orthanc: requests.Session
) -> None:
    variants = dicomweb_server.fixtures.variants
    small = _retrieve(dicomweb_server, orthanc, _ref(variants), limits=ImagingLimits(max_bytes=600))
    assert small.images == ()
    assert {s.reason for s in small.skipped} == {"response over 600 bytes"}
    few = _retrieve(dicomweb_server, orthanc, _ref(variants), limits=ImagingLimits(max_pixels=700))
    assert few.images == ()
    assert {s.reason for s in few.skipped} == {"image too large (28x28 over 700 pixels)"}


@dicomweb
def test_a_server_that_is_not_there(dicomweb_server: DicomWebServer) -> None:
    variants = dicomweb_server.fixtures.variants
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = retrieve_study_images(_ref(variants), f"http://127.0.0.1:{port}/dicom-web")
    first, *rest = result.skipped
    assert first.reason == "could not connect to the DICOMweb server"
    assert [s.reason for s in rest] == [f"not requested: {first.reason}"] * len(rest)
    bad_url = retrieve_study_images(_ref(variants), "ftp://127.0.0.1/dicom-web")
    assert {s.reason for s in bad_url.skipped} == {"invalid DICOMweb address"}


# --------------------------------------------------------------------------- timeouts
class _StallingHttpServer:
    """FAKE: a TCP listener that answers late or drips its body.

    Orthanc answers promptly, so a hung or slow-drip DICOMweb server cannot be caused
    with it; this fake exists only for that fault. ``drip=False``: it accepts and never
    answers. ``drip=True``: it sends headers with a large Content-Length, then 1 byte
    every 50 ms.
    """

    def __init__(self, drip: bool) -> None:
        self.drip = drip
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/dicom-web"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        clients: list[socket.socket] = []
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            clients.append(conn)
            if self.drip:
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()
        for conn in clients:
            conn.close()

    def _drip(self, conn: socket.socket) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/related; "
            b'type="application/dicom"; boundary=x\r\nContent-Length: 100000\r\n\r\n'
        )
        try:
            conn.sendall(head)
            while not self.stopping.is_set():
                conn.sendall(b"-")
                time.sleep(0.05)
        except OSError:
            return

    def __enter__(self) -> _StallingHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


def _two_instance_study() -> ImagingStudyRef:
    return parse_imaging_study(
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:2.25.1"}],
            "series": [
                {
                    "uid": "2.25.2",
                    "modality": {"code": "DX"},
                    "instance": [
                        {"uid": "2.25.3", "sopClass": {"code": "1.2.840.10008.5.1.4.1.1.1.1"}},
                        {"uid": "2.25.4", "sopClass": {"code": "1.2.840.10008.5.1.4.1.1.1.1"}},
                    ],
                }
            ],
        }
    )


@pytest.mark.parametrize("drip", [False, True], ids=["no-answer", "slow-drip"])
def test_each_request_has_a_deadline(drip: bool) -> None:
    limits = ImagingLimits(timeout_s=0.5)
    with _StallingHttpServer(drip) as server:
        began = time.monotonic()
        result = retrieve_study_images(_two_instance_study(), server.url, limits=limits)
        elapsed = time.monotonic() - began
    assert result.images == ()
    assert [s.reason for s in result.skipped] == ["timed out after 0.5 s"] * 2
    assert elapsed < 4


# --------------------------------------------------------------------------- decoding
def _synthetic_dx(pixels: np.ndarray | None = None) -> bytes:
    """A valid DX object built from a gradient (no shared data needed)."""
    if pixels is None:
        pixels = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    patient = Patient("p1", "Test^Patient", "O", None)
    ds = xray_dataset(
        patient=patient,
        study_uid="2.25.10",
        series_uid="2.25.11",
        sop_uid="2.25.12",
        modality="DX",
        pixels=pixels,
        started=datetime(2020, 1, 1),
    )
    return dicom_bytes(ds)


GOOD = _synthetic_dx()


def test_decode_dicom_reads_a_valid_object() -> None:
    image = decode_dicom(GOOD)
    expected = (np.arange(28 * 28) % 256).astype(np.float32).reshape(28, 28)
    np.testing.assert_array_equal(image.pixels, expected)
    assert "p1" not in repr(image) and "pixels" not in repr(image)


@dicomweb
def test_unstorable_objects_are_rejected(dicomweb_server: DicomWebServer) -> None:
    expected = {
        "empty": ("not DICOM",),
        "not_dicom": ("not DICOM",),
        "preamble_only": ("no pixel data",),
        "cut_in_header": ("not DICOM or truncated", "no pixel data"),
        "cut_in_pixels": ("pixel data truncated",),
    }
    for name, data in dicomweb_server.fixtures.unstorable.items():
        with pytest.raises(DicomRejected) as caught:
            decode_dicom(data)
        assert caught.value.reason.startswith(expected[name]), name


@dicomweb
def test_bad_fixture_bytes_are_rejected_directly(dicomweb_server: DicomWebServer) -> None:
    for instance in dicomweb_server.fixtures.bad.instances:
        with pytest.raises(DicomRejected) as caught:
            decode_dicom(instance.data)
        assert instance.expected_reason is not None
        assert caught.value.reason.startswith(instance.expected_reason)


def _jpeg_object(edit=None) -> bytes:  # type: ignore[no-untyped-def]
    """A 28 x 28 JPEG baseline object; ``edit`` may change its codestream first."""
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    ds = xray_dataset(
        patient=Patient("p", "A^B", "F", None),
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        sop_uid="1.2.3.1.1",
        modality="DX",
        pixels=pixels,
        started=datetime(2020, 1, 1),
    )
    ds = pillow_compressed(ds, pixels, JPEGBaseline8Bit, format="JPEG")
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    if edit is not None:
        edit(frame)
    ds.PixelData = encapsulate([bytes(frame)])
    return dicom_bytes(ds)


def test_a_jpeg_frame_larger_than_declared_is_refused_before_decoding() -> None:
    assert decode_dicom(_jpeg_object()).rows == 28

    def claim_60000(frame: bytearray) -> None:
        at = frame.index(b"\xff\xc0")  # baseline SOF0: length, precision, height, width
        frame[at + 5 : at + 9] = (60_000).to_bytes(2, "big") * 2

    with pytest.raises(DicomRejected, match="compressed frame is 60000x60000, not the declared"):
        decode_dicom(_jpeg_object(claim_60000))

    def no_frame_header(frame: bytearray) -> None:
        frame[2:] = b"\xff\xd9"

    with pytest.raises(DicomRejected, match="compressed frame without a readable size"):
        decode_dicom(_jpeg_object(no_frame_header))


def test_decode_dicom_byte_limit() -> None:
    with pytest.raises(DicomRejected, match="over 100 bytes"):
        decode_dicom(GOOD, ImagingLimits(max_bytes=100))


@dicomweb
def test_dicom_in_a_fhir_binary(dicomweb_server: DicomWebServer, source_images: np.ndarray) -> None:
    instance = next(iter(dicomweb_server.fixtures.synthea.values())).instances[0]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/dicom",
        "data": base64.b64encode(instance.data).decode("ascii"),
    }
    image = decode_binary(binary)
    _assert_matches_source(image, instance, source_images[instance.source_index])
    assert decode_binary(parse_resource(binary, "Binary")).sop_instance_uid == (
        instance.sop_instance_uid
    )
    with pytest.raises(DicomRejected, match="not application/dicom"):
        decode_binary(binary | {"contentType": "image/png"})
    with pytest.raises(DicomRejected, match="over 1000 bytes"):
        decode_binary(binary, ImagingLimits(max_bytes=1000))
    with pytest.raises(DicomRejected):
        decode_binary(binary | {"data": "not base64!"})


def _decode_or_reject(data: bytes) -> None:
    try:
        decode_dicom(data, ImagingLimits(max_pixels=1 << 20))
    except DicomRejected as exc:
        assert exc.reason and isinstance(exc.reason, str)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each bad value
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_dicom_rejected(data: bytes) -> None:
    _decode_or_reject(data)
    _decode_or_reject(bytes(128) + b"DICM" + data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=12
    ),
    st.integers(0, len(GOOD)),
)
def test_corrupted_dicom_never_raises_anything_but_dicom_rejected(
    flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(GOOD)
    for position, value in flips:
        data[position] = value
    _decode_or_reject(bytes(data))
    _decode_or_reject(bytes(data[:cut]))
