"""mridomain.io against real vendor files shipped with pydicom / pydicom-data and hand-built data.

Expected header values come from the files themselves, read independently with plain
``pydicom.dcmread`` (or written by the test), never from the code under test.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mridomain.errors import EmptyInputError, ImageReadError
from mridomain.io import (
    ImageData,
    header_fields_from_dataset,
    iter_candidate_files,
    read_dicom_series,
    read_header_fields,
    read_image,
)


def _testfile(name: str) -> str:
    """Path of a pydicom / pydicom-data test file, never downloading (pydicom-data is a test dependency)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} not available locally: install the test extra (pydicom-data)"
    return path


# ----------------------------------------------------------------------------- real vendor headers
VENDOR_FILES = {
    # file: (Manufacturer, ManufacturerModelName) as stored in the file
    "MR_small.dcm": ("TOSHIBA_MEC", "MRT50H1"),
    "MR-SIEMENS-DICOM-WithOverlays.dcm": ("SIEMENS", "Avanto"),
    "MR2_UNCI.dcm": ("Philips", "T5"),
}


@pytest.mark.parametrize("name", sorted(VENDOR_FILES))
def test_vendor_header_values_match_pydicom(name: str) -> None:
    path = _testfile(name)
    ref = pydicom.dcmread(path)
    fields = read_header_fields(path)
    manufacturer, model = VENDOR_FILES[name]
    assert fields["Manufacturer"] == manufacturer == ref.Manufacturer
    assert fields["ManufacturerModelName"] == model
    for kw in ("RepetitionTime", "EchoTime", "FlipAngle", "SliceThickness"):
        assert fields[kw] == pytest.approx(float(ref.data_element(kw).value))
        assert isinstance(fields[kw], float)
    for kw in ("Rows", "Columns"):
        assert fields[kw] == int(ref.data_element(kw).value)
    assert fields["PixelSpacing"] == pytest.approx([float(v) for v in ref.PixelSpacing])
    assert fields["ImagePositionPatient"] == pytest.approx([float(v) for v in ref.ImagePositionPatient])
    for kw in ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "PatientID", "Modality"):
        assert fields[kw] == str(ref.data_element(kw).value)
    assert fields["PatientPosition"] == ref.PatientPosition
    if "MagneticFieldStrength" in ref:
        assert fields["MagneticFieldStrength"] == pytest.approx(float(ref.MagneticFieldStrength))
    assert isinstance(fields["ScanOptions"], list)


def test_siemens_documented_values() -> None:
    # Values printed in the file (pydicom's MR-SIEMENS-DICOM-WithOverlays, a Siemens Avanto).
    fields = read_header_fields(_testfile("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert fields["MagneticFieldStrength"] == pytest.approx(1.494, abs=1e-6)
    assert fields["AcquisitionMatrix"] == [256, 0, 0, 134]
    assert fields["ScanOptions"] == ["SAT2", "FS"]
    assert fields["RepetitionTime"] == pytest.approx(5.53)
    assert fields["EchoTime"] == pytest.approx(2.81)
    assert fields["ContrastBolusAgent"] == "11 ml Omniscan"


def test_contrast_agent_absent_vs_empty() -> None:
    # MR_small carries an empty ContrastBolusAgent; the Philips MR2 file has none at all.
    toshiba = read_header_fields(_testfile("MR_small.dcm"))
    philips = read_header_fields(_testfile("MR2_UNCI.dcm"))
    assert "ContrastBolusAgent" in pydicom.dcmread(_testfile("MR_small.dcm"))
    assert toshiba["ContrastBolusAgent"] == ""
    assert "ContrastBolusAgent" not in pydicom.dcmread(_testfile("MR2_UNCI.dcm"))
    assert philips["ContrastBolusAgent"] is None
    assert toshiba["ScanOptions"] == []
    assert philips["ScanOptions"] == ["FC"]


def test_extra_keywords_and_open_dataset() -> None:
    path = _testfile("MR-SIEMENS-DICOM-WithOverlays.dcm")
    fields = read_header_fields(path, extra=("SeriesNumber", "InPlanePhaseEncodingDirection"))
    ref = pydicom.dcmread(path, stop_before_pixels=True)
    assert fields["SeriesNumber"] == int(ref.SeriesNumber)
    assert fields["InPlanePhaseEncodingDirection"] == ref.InPlanePhaseEncodingDirection
    assert header_fields_from_dataset(ref) == read_header_fields(path)


def test_file_without_dcm_suffix(tmp_path: Path) -> None:
    target = tmp_path / "IM000017"
    shutil.copy(_testfile("MR_small.dcm"), target)
    assert read_header_fields(target)["Manufacturer"] == "TOSHIBA_MEC"
    image = read_image(target)
    assert image.pixels.shape == (1, 64, 64)
    assert image.meta["source_format"] == "dicom"


# ----------------------------------------------------------------------------- real pixels
def test_philips_rescale_applied() -> None:
    path = _testfile("MR2_UNCI.dcm")
    ref = pydicom.dcmread(path)
    slope, intercept = float(ref.RescaleSlope), float(ref.RescaleIntercept)
    assert slope != 1.0  # the point of this file: a real non-trivial rescale
    image = read_image(path)
    assert isinstance(image, ImageData)
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (1, int(ref.Rows), int(ref.Columns))
    expected = ref.pixel_array.astype(np.float64) * slope + intercept
    np.testing.assert_allclose(image.pixels[0], expected, rtol=1e-6, atol=1e-3)
    assert image.spacing[1:] == pytest.approx((0.195313, 0.195313))
    assert image.files == [Path(path)]


@pytest.mark.parametrize(
    "twin",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm", "MR_small_implicit.dcm"],
)
def test_compressed_twins_decode_to_same_pixels(twin: str) -> None:
    ref = read_image(_testfile("MR_small.dcm")).pixels
    other = read_image(_testfile(twin)).pixels
    assert ref.shape == other.shape == (1, 64, 64)
    np.testing.assert_array_equal(ref, other)
    # and against the raw stored values (no rescale in this file)
    raw = pydicom.dcmread(_testfile("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(ref[0], raw.astype(np.float32))


def test_philips_jpeg2000_lossless_twin() -> None:
    a = read_image(_testfile("MR2_UNCR.dcm")).pixels
    b = read_image(_testfile("MR2_J2KR.dcm")).pixels
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("twin", ["emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"])
def test_enhanced_mr_multiframe(twin: str) -> None:
    path = _testfile("emri_small.dcm")
    ref = pydicom.dcmread(path)
    image = read_image(path)
    assert int(ref.NumberOfFrames) == 10
    assert image.pixels.shape == (10, 64, 64)
    np.testing.assert_array_equal(image.pixels, ref.pixel_array.astype(np.float32))
    np.testing.assert_array_equal(read_image(_testfile(twin)).pixels, image.pixels)
    fields = read_header_fields(path)
    assert fields["NumberOfFrames"] == 10
    assert fields["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    assert fields["MagneticFieldStrength"] == 3.0
    # (0018,9058) MRAcquisitionFrequencyEncodingSteps = 256, (0018,9231) phase steps = 256,
    # no in-plane direction given: PS3.3 legacy layout [freq rows, 0, 0, phase cols].
    assert ref.MRAcquisitionFrequencyEncodingSteps == 256
    assert fields["AcquisitionMatrix"] == [256, 0, 0, 256]


# ----------------------------------------------------------------------------- hand-built DICOM
def _dataset(pixels: np.ndarray, **attrs) -> Dataset:
    """A minimal valid MR image dataset around uint16 ``pixels`` (H, W) or (F, H, W)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = attrs.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.4")
    meta.MediaStorageSOPInstanceUID = attrs.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID", "1.2.3.4")
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", "1.2.3.4.5")
    ds.PatientID = "P1"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_inverted_after_rescale(tmp_path: Path) -> None:
    stored = np.array([[0, 1, 2], [3, 4, 10]], dtype=np.uint16)
    ds = _dataset(stored, PhotometricInterpretation="MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1)
    image = read_image(_save(ds, tmp_path / "m1.dcm"))
    # rescaled: 2*v - 1 = [[-1, 1, 3], [5, 7, 19]]; inverted inside [min, max] = [-1, 19]: 18 - x
    expected = np.array([[[19, 17, 15], [13, 11, -1]]], dtype=np.float32)
    np.testing.assert_array_equal(image.pixels, expected)


def test_enhanced_mr_functional_groups(tmp_path: Path) -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    ds = _dataset(frames, SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1", Manufacturer="GE MEDICAL SYSTEMS")
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [0.7, 0.8]
    measures.SliceThickness = 1.1
    timing = Dataset()
    timing.RepetitionTime = 5.96
    timing.FlipAngle = 10
    echo = Dataset()
    echo.EffectiveEchoTime = 2.54
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    shared.MREchoSequence = Sequence([echo])
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i in range(3):
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 10.0 + 1.5 * i]
        rescale = Dataset()
        rescale.RescaleSlope = i + 1
        rescale.RescaleIntercept = 10 * i
        item.PlanePositionSequence = Sequence([pos])
        item.PixelValueTransformationSequence = Sequence([rescale])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    path = _save(ds, tmp_path / "enhanced")

    fields = read_header_fields(path)
    assert fields["RepetitionTime"] == pytest.approx(5.96)
    assert fields["FlipAngle"] == pytest.approx(10)
    assert fields["EchoTime"] == pytest.approx(2.54)
    assert fields["SliceThickness"] == pytest.approx(1.1)
    assert fields["PixelSpacing"] == pytest.approx([0.7, 0.8])
    assert fields["ImagePositionPatient"] == pytest.approx([0, 0, 10])
    assert fields["ImageOrientationPatient"] == pytest.approx([1, 0, 0, 0, 1, 0])

    image = read_image(path)
    assert image.pixels.shape == (3, 4, 5)
    for i in range(3):  # per-frame slope i+1, intercept 10 i
        np.testing.assert_allclose(image.pixels[i], frames[i] * (i + 1) + 10 * i)
    assert image.spacing == pytest.approx((1.5, 0.7, 0.8))


def _write_series(folder: Path, z_positions, orientation, instance_numbers=None, uid="1.2.3.4.5", names=None):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, z in enumerate(z_positions):
        pixels = np.full((4, 6), 100 + i, dtype=np.uint16)  # pixel value encodes slice identity
        attrs = dict(SeriesInstanceUID=uid, PixelSpacing=[0.5, 0.6], SliceThickness=3.0)
        if orientation is not None:
            attrs["ImageOrientationPatient"] = orientation
            attrs["ImagePositionPatient"] = z
        if instance_numbers is not None:
            attrs["InstanceNumber"] = instance_numbers[i]
        name = names[i] if names else f"slice_{i}.dcm"
        paths.append(_save(_dataset(pixels, **attrs), folder / name))
    return paths


def test_series_sorted_along_slice_normal(tmp_path: Path) -> None:
    # Coronal stack: rows along +x, columns along -z, so normal = x cross -z = +y.
    orientation = [1, 0, 0, 0, 0, -1]
    ys = [17.5, 10.0, 20.0, 12.5, 15.0]  # written shuffled
    positions = [[3.0, y, -7.0] for y in ys]
    # Instance numbers deliberately disagree with the geometry, file names too.
    _write_series(tmp_path / "s", positions, orientation, instance_numbers=[1, 2, 3, 4, 5],
                  names=["e.dcm", "d.dcm", "c.dcm", "b.dcm", "a.dcm"])
    (tmp_path / "s" / "README.txt").write_text("not an image")
    image = read_dicom_series(tmp_path / "s")
    order = np.argsort(ys)  # ascending y: slices 1, 3, 4, 0, 2
    assert image.pixels.shape == (5, 4, 6)
    np.testing.assert_array_equal(image.pixels[:, 0, 0], 100 + order)
    assert [p.name for p in image.files] == [["e", "d", "c", "b", "a"][i] + ".dcm" for i in order]
    assert image.spacing == pytest.approx((2.5, 0.5, 0.6))
    assert image.meta["skipped"][0][0].endswith("README.txt")
    assert read_image(tmp_path / "s").pixels.shape == (5, 4, 6)


def test_series_falls_back_to_instance_number(tmp_path: Path) -> None:
    _write_series(tmp_path / "s", [None] * 4, None, instance_numbers=[3, 1, 4, 2])
    image = read_dicom_series(tmp_path / "s")
    # slice i has value 100+i and InstanceNumber [3,1,4,2][i]: by instance -> slices 1, 3, 0, 2
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [101, 103, 100, 102])


def test_folder_with_two_series(tmp_path: Path) -> None:
    orientation = [1, 0, 0, 0, 1, 0]
    _write_series(tmp_path / "mix", [[0, 0, z] for z in (0, 1, 2)], orientation, uid="1.2.3.1",
                  names=["a1", "a2", "a3"])
    _write_series(tmp_path / "mix", [[0, 0, z] for z in (0, 2)], orientation, uid="1.2.3.2",
                  names=["b1", "b2"])
    with pytest.raises(ImageReadError, match="2 series") as err:
        read_image(tmp_path / "mix")
    assert "series_uid" in str(err.value) and "\n" not in str(err.value)
    image = read_image(tmp_path / "mix", series_uid="1.2.3.2")
    assert image.pixels.shape == (2, 4, 6)
    assert image.spacing[0] == pytest.approx(2.0)


# ----------------------------------------------------------------------------- bad input
def _assert_one_line(err: pytest.ExceptionInfo, path: Path, fragment: str) -> None:
    message = str(err.value)
    assert str(path) in message
    assert fragment in message
    assert "\n" not in message


def test_text_file_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("Patient said hello.\n" * 20)
    for reader in (read_header_fields, read_image):
        with pytest.raises(ImageReadError) as err:
            reader(path)
        _assert_one_line(err, path, "not a DICOM file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    for reader in (read_header_fields, read_image):
        with pytest.raises(ImageReadError) as err:
            reader(path)
        _assert_one_line(err, path, "empty file")


@pytest.mark.parametrize("cut", [200, 700, 5000])
def test_truncated_dicom(tmp_path: Path, cut: int) -> None:
    data = Path(_testfile("MR_small.dcm")).read_bytes()
    path = tmp_path / f"cut{cut}.dcm"
    path.write_bytes(data[:cut])  # inside the file meta, inside the header, inside the pixels
    for reader in (read_header_fields, read_image):
        with pytest.raises(ImageReadError) as err:
            reader(path)
        _assert_one_line(err, path, "truncated file")


def test_pydicom_truncated_file() -> None:
    path = Path(_testfile("MR_truncated.dcm"))
    with pytest.raises(ImageReadError) as err:
        read_header_fields(path)
    _assert_one_line(err, path, "truncated file")


def test_corrupt_dicom(tmp_path: Path) -> None:
    data = Path(_testfile("MR_small.dcm")).read_bytes()
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(data[:132] + np.random.default_rng(0).bytes(3000))  # preamble then noise
    for reader in (read_header_fields, read_image):
        with pytest.raises(ImageReadError) as err:
            reader(path)
        _assert_one_line(err, path, "corrupt DICOM header")


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(EmptyInputError) as err:
        read_image(folder)
    _assert_one_line(err, folder, "empty folder")


def test_no_pixel_data(tmp_path: Path) -> None:
    ds = _dataset(np.zeros((2, 2), dtype=np.uint16))
    del ds.PixelData
    del ds.Rows
    del ds.Columns
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    path = _save(ds, tmp_path / "report.dcm")
    with pytest.raises(ImageReadError) as err:
        read_header_fields(path)
    _assert_one_line(err, path, "no pixel data")


# ----------------------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path: Path, suffix: str) -> None:
    import nibabel as nib  # a dependency: a missing one must fail, not skip
    i, j, k = np.meshgrid(np.arange(4), np.arange(3), np.arange(2), indexing="ij")
    data = (100 * k + 10 * j + i).astype(np.float32)  # value tells its voxel index
    affine = np.diag([0.5, 0.6, 2.0, 1.0])
    path = tmp_path / f"vol{suffix}"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    image = read_image(path)
    assert image.pixels.shape == (2, 3, 4)  # (S = k, H = j, W = i)
    assert image.pixels[1, 2, 3] == 100 * 1 + 10 * 2 + 3
    assert image.pixels[0, 1, 0] == 10
    assert image.spacing == pytest.approx((2.0, 0.6, 0.5))
    assert image.meta["source_format"] == "nifti"


# ----------------------------------------------------------------------------- PNG / JPEG / TIFF
def test_png_grey_and_rgb(tmp_path: Path) -> None:
    from PIL import Image

    grey = np.array([[0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.pixels.shape == (1, 2, 3)
    np.testing.assert_array_equal(image.pixels[0], grey.astype(np.float32))
    assert image.meta["source_format"] == "png"

    grey16 = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png").pixels[0], grey16.astype(np.float32))

    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (100, 100, 100)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png").pixels
    # ITU-R BT.601 luma: 0.299 R + 0.587 G + 0.114 B
    np.testing.assert_allclose(out[0, 0], [0.299 * 255, 0.587 * 255, 100.0], rtol=1e-5)


def test_jpeg_and_multipage_tiff(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((8, 9), 77, dtype=np.uint8)).save(tmp_path / "a.jpg")
    image = read_image(tmp_path / "a.jpg")
    assert image.pixels.shape == (1, 8, 9)
    assert abs(float(image.pixels.mean()) - 77) < 2  # lossy, flat image
    pages = [Image.fromarray(np.full((5, 6), v, dtype=np.uint8)) for v in (1, 2, 3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    stack = read_image(tmp_path / "stack.tif")
    assert stack.pixels.shape == (3, 5, 6)
    np.testing.assert_array_equal(stack.pixels[:, 0, 0], [1, 2, 3])


def test_bad_png(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    _assert_one_line(err, path, "not a readable PNG image")


# ----------------------------------------------------------------------------- file walking
def test_iter_candidate_files_skips_hidden_and_is_sorted(tmp_path: Path) -> None:
    for rel in ["b/2.dcm", "b/1.dcm", "a/x", ".hidden/y", "a/.z", "c.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_candidate_files(tmp_path)]
    assert found == ["a/x", "b/1.dcm", "b/2.dcm", "c.txt"]
