"""Real-archive quirks and the file defects of issue 14, each from a small hand-made file.

pydicom is the oracle for what a file holds (``dcmread`` + ``pixel_array``); expected values come
from the files as written here or as pydicom reads them, never from the code under test.
"""
from __future__ import annotations

import csv
import gzip
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, generate_uid

from mridomain.data import build_index, load_index, prepare_cache
from mridomain.data.inputs import iter_inputs, read_inputs
from dicom_factory import GE_HEADERS, write_mr_dicom
from mridomain.errors import EmptyInputError, ImageReadError, InvalidArgumentError
from mridomain.files import clean_reason, write_skip_report
from mridomain.io import image_kind, read_header_fields, read_image, volume_labels

PRE = {"size": [16, 16], "normalization": {"method": "max255"}}
PRE_NATIVE_5 = {"size": [4, 5], "normalization": {"method": "max255"}}


def _mr(path: Path, value: int = 100, *, series: str = "1.2.826.0.1.7.1", instance: int = 1,
        position: float | None = 0.0, size: int = 8, **headers) -> Path:
    pixels = np.full((size, size), value) + np.arange(size)[None, :]
    return write_mr_dicom(path, pixels, patient_id="P1", study_uid="1.2.826.0.1.7", series_uid=series,
                          instance=instance, position=position, headers={**GE_HEADERS, **headers})


def _patch(path: Path, out: Path, edit) -> Path:
    """Rewrite a file with pydicom after ``edit(ds)`` (raw elements are written as given)."""
    ds = pydicom.dcmread(path)
    edit(ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def _raw(ds, tag: int, vr: str, value: bytes) -> None:
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _pydicom_decodes(path: Path) -> bool:
    try:
        _ = pydicom.dcmread(path).pixel_array
    except Exception:  # noqa: BLE001 - the oracle: anything pydicom cannot decode
        return False
    return True


def _index(root: Path, **kw):
    return build_index(root, workers=1, progress=False, **kw)


# ---------------------------------------------------------------------------- the defect list
@pytest.mark.parametrize("fast", [True, False])
def test_instance_number_infinity_is_missing_not_fatal(tmp_path, fast):
    good = _mr(tmp_path / "s" / "a.dcm", instance=1, position=0.0)
    bad = _patch(_mr(tmp_path / "tmp.dcm", instance=2, position=2.0), tmp_path / "s" / "b.dcm",
                 lambda ds: _raw(ds, 0x00200013, "IS", b"1e999 "))
    (tmp_path / "tmp.dcm").unlink()
    assert b"1e999" in bad.read_bytes() and _pydicom_decodes(bad)
    assert read_header_fields(bad)["InstanceNumber"] is None
    res = _index(tmp_path / "s", fast_reader=fast)
    assert len(res.skipped) == 0
    assert res.table.at[0, "files"] == [str(good), str(bad)] and res.table.at[0, "n_slices"] == 2
    image = read_image(tmp_path / "s")                      # the series reader sorts it too
    assert image.shape == (2, 8, 8)


def test_duplicate_sop_uid_keeps_the_copy_with_pixel_bookkeeping(tmp_path):
    uid = generate_uid()
    good = write_mr_dicom(tmp_path / "z_good.dcm", np.full((8, 8), 50), patient_id="P1", study_uid="1.2.3",
                          series_uid="1.2.3.4", instance=1, position=0.0, headers=GE_HEADERS, sop_uid=uid)
    # The first copy by name has no BitsAllocated: pydicom cannot decode it.
    broken = _patch(good, tmp_path / "a_broken.dcm", lambda ds: delattr(ds, "BitsAllocated"))
    assert not _pydicom_decodes(broken) and _pydicom_decodes(good)
    res = _index(tmp_path)
    assert res.table.at[0, "files"] == [str(good)]
    assert "Bits Allocated" in res.skipped.set_index("path").at[str(broken), "reason"]
    cache = prepare_cache(res.table, tmp_path / "cache", slices_per_series=None, size=8, progress=False, workers=1)
    assert len(cache) == 1 and len(cache.skipped) == 0


def test_duplicate_sop_uid_prefers_pixels_over_a_header_dump(tmp_path):
    uid = generate_uid()
    good = write_mr_dicom(tmp_path / "z.dcm", np.full((8, 8), 50), patient_id="P1", study_uid="1.2.3",
                          series_uid="1.2.3.4", instance=1, position=0.0, headers=GE_HEADERS, sop_uid=uid)
    _patch(good, tmp_path / "a.dcm", lambda ds: delattr(ds, "PixelData"))
    res = _index(tmp_path)
    assert res.table.at[0, "files"] == [str(good)] and bool(res.table.at[0, "has_pixels"])
    assert "duplicate SOPInstanceUID" in res.skipped.set_index("path").at[str(tmp_path / "a.dcm"), "reason"]


def _deflated(src: Path, out: Path) -> Path:
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


@pytest.mark.parametrize("fast", [True, False])
def test_valid_deflated_file_is_indexed(tmp_path, fast):
    src = _mr(tmp_path / "plain.dcm", value=300)
    dfl = _deflated(src, tmp_path / "d" / "deflated.dcm")
    assert pydicom.dcmread(dfl).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(pydicom.dcmread(dfl).pixel_array, pydicom.dcmread(src).pixel_array)
    res = _index(tmp_path / "d", fast_reader=fast)
    assert len(res.skipped) == 0 and res.table.at[0, "files"] == [str(dfl)]
    np.testing.assert_array_equal(read_image(dfl).pixels, read_image(src).pixels)
    # a deflate stream cut short is refused, with pydicom
    cut = tmp_path / "c" / "cut.dcm"
    cut.parent.mkdir()
    cut.write_bytes(dfl.read_bytes()[:-40])
    assert not _pydicom_decodes(cut)
    with pytest.raises(EmptyInputError):
        _index(tmp_path / "c", fast_reader=fast)


def _ybr_full_422(path: Path, rgb: np.ndarray) -> Path:
    """A native 8-bit YBR_FULL_422 MR file: Y for every pixel, Cb / Cr shared by pixel pairs."""
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.int32)
    rows, cols, _ = ybr.shape
    out = bytearray()
    for r in range(rows):
        for c in range(0, cols, 2):
            y0, y1 = ybr[r, c, 0], ybr[r, c + 1, 0]
            cb = (ybr[r, c, 1] + ybr[r, c + 1, 1]) // 2
            cr = (ybr[r, c, 2] + ybr[r, c + 1, 2]) // 2
            out += bytes([y0, y1, cb, cr])
    src = _mr(path.with_suffix(".tmp"), size=rows)

    def edit(ds):
        ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "YBR_FULL_422", 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(out)

    _patch(src, path, edit)
    src.unlink()
    return path


def test_ybr_full_422_is_not_called_truncated(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    path = _ybr_full_422(tmp_path / "in" / "ybr.dcm", rgb)
    assert len(pydicom.dcmread(path).PixelData) == 8 * 8 * 2   # 4:2:2: two samples per pixel, not three
    ref = pydicom.dcmread(path).pixel_array.astype(np.float32)   # pydicom converts to RGB
    luma = ref[..., 0] * 0.299 + ref[..., 1] * 0.587 + ref[..., 2] * 0.114
    np.testing.assert_allclose(read_image(path).pixels[0], luma, rtol=1e-6)
    skipped: list = []
    inputs = list(iter_inputs([path], PRE, skipped, progress=False))   # what predict reads through
    assert not skipped and len(inputs) == 1
    assert len(_index(tmp_path / "in").skipped) == 0


def _rle(path: Path, frames: int = 1) -> Path:
    ds = pydicom.dcmread(_mr(path.with_suffix(".tmp"), value=200, size=16))
    path.with_suffix(".tmp").unlink()
    if frames > 1:
        stack = np.stack([ds.pixel_array + k for k in range(frames)])
        ds.NumberOfFrames = frames
        ds.PixelData = stack.tobytes()
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def _fragment_offsets(path: Path) -> list[int]:
    """Byte offsets of the encapsulated items of a file (walked by hand)."""
    import struct

    raw = path.read_bytes()
    pos = raw.rindex(b"\xe0\x7f\x10\x00") + 12
    items = []
    while raw[pos:pos + 4] == b"\xfe\xff\x00\xe0":
        items.append(pos)
        pos += 8 + struct.unpack("<I", raw[pos + 4:pos + 8])[0]
    return items


def test_encapsulated_pixel_data_is_checked_at_index_time(tmp_path):
    good = _rle(tmp_path / "ok" / "rle.dcm", frames=3)
    assert _pydicom_decodes(good)
    items = _fragment_offsets(good)
    assert len(items) == 4                                    # offset table + one fragment per frame
    raw = good.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {
        "cut_in_fragment": raw[: items[3] + 20],              # ends inside the last fragment
        "no_delimiter": raw[:-8],                             # sequence delimiter gone
        "item_tag_broken": raw[: items[2]] + b"\x00\x00" + raw[items[2] + 2:],
    }
    for name, data in cases.items():
        (bad / f"{name}.dcm").write_bytes(data)
    # NumberOfFrames beyond the fragments
    _patch(good, bad / "frames_beyond_fragments.dcm", lambda ds: setattr(ds, "NumberOfFrames", 5))
    # pydicom cannot decode these, or (cut files) warns that the data end before their delimiter
    assert not _pydicom_decodes(bad / "frames_beyond_fragments.dcm")
    assert not _pydicom_decodes(bad / "item_tag_broken.dcm")
    for name in ("cut_in_fragment", "no_delimiter"):
        with pytest.warns(UserWarning, match="End of file reached before delimiter"):
            pydicom.dcmread(bad / f"{name}.dcm")
    for fast in (True, False):
        with pytest.raises(EmptyInputError):
            _index(bad, fast_reader=fast)
        res = _index(tmp_path, fast_reader=fast)
        assert res.table["files"].tolist() == [[str(good)]]
        reasons = res.skipped.set_index("path")["reason"]
        assert "fragment" in reasons[str(bad / "frames_beyond_fragments.dcm")]
        assert reasons[str(bad / "cut_in_fragment.dcm")].startswith("truncated file")
        assert reasons[str(bad / "no_delimiter.dcm")].startswith("truncated file")
        assert "corrupt encapsulated pixel data" in reasons[str(bad / "item_tag_broken.dcm")]


def test_huge_number_of_frames_refused_before_any_allocation(tmp_path):
    src = write_mr_dicom(tmp_path / "src.dcm", np.zeros((512, 512)), patient_id="P1", study_uid="1.2.3",
                         series_uid="1.2.3.9", instance=1, position=0.0, headers=GE_HEADERS)
    huge = _patch(src, tmp_path / "a" / "huge.dcm", lambda ds: setattr(ds, "NumberOfFrames", 2**31 - 1))
    assert 520_000 < huge.stat().st_size < 530_000          # the 526 KB file
    assert not _pydicom_decodes(huge)
    for fast in (True, False):
        with pytest.raises(EmptyInputError) as err:
            _index(tmp_path / "a", fast_reader=fast)
        assert "2147483647 frame(s)" in str(err.value)
    with pytest.raises(ImageReadError, match="truncated file"):
        read_image(huge)


def test_skip_reports_round_trip_through_pandas(tmp_path):
    nasty = "SOP class 1.2\r,3 \"quoted\"\n\x00end, " + "x" * 400
    path = write_skip_report([("a,b\r.dcm", nasty), ("c.dcm", "plain")], tmp_path / "s.csv")
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert back["reason"].tolist() == [clean_reason(nasty), "plain"]
    assert back["path"].tolist() == [clean_reason("a,b\r.dcm"), "c.dcm"]
    assert "\r" not in back.at[0, "reason"] and len(back.at[0, "reason"]) == 300
    assert back.at[0, "reason"].startswith("SOP class 1.2\\r,3 \"quoted\"\\n\\x00end")
    # through the index: pixel data without Rows / Columns, under a SOP class of raw bytes with a
    # lone \r (pandas quotes a field for a comma or \n, not for \r: the old report broke there)
    src = _mr(tmp_path / "arch" / "ok.dcm")

    def odd(ds):
        del ds.Rows, ds.Columns
        ds.SOPInstanceUID = generate_uid()
        _raw(ds, 0x00080016, "UI", b"1.2\r34")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                        # pydicom says the UID is invalid: it is
        _patch(src, tmp_path / "arch" / "odd.dcm", odd)
    res = build_index(tmp_path / "arch", out=tmp_path / "i.parquet", workers=1, progress=False)
    assert res.skipped["reason"].tolist() == ["not an image (no Rows/Columns; SOP class 1.2\r34)"]
    back = pd.read_csv(tmp_path / "i.skipped.csv", dtype=str, keep_default_na=False)
    assert back.to_dict("records") == [{"path": str(tmp_path / "arch" / "odd.dcm"),
                                        "reason": "not an image (no Rows/Columns; SOP class 1.2\\r34)"}]
    with open(tmp_path / "i.skipped.csv", newline="") as fh:
        assert [len(r) for r in csv.reader(fh)] == [2, 2]


# ---------------------------------------------------------------------------- real DICOM
def _nibabel_mosaics(folder: Path) -> list[Path]:
    import nibabel

    data = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("siemens_dwi_0", "siemens_dwi_1000"):
        target = folder / f"{name}.dcm"
        with gzip.open(data / f"{name}.dcm.gz") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        out.append(target)
    return out


def test_siemens_mosaic_is_unpacked_into_slices(tmp_path):
    b0, b1000 = _nibabel_mosaics(tmp_path / "dwi")
    ref = pydicom.dcmread(b1000)
    assert "MOSAIC" in ref.ImageType
    mosaic = ref.pixel_array.astype(np.float32)               # 896 x 896: 7 x 7 tiles of 128 x 128
    image = read_image(b1000)
    assert image.shape == (48, 128, 128)                       # 48 slices (nibabel: NumberOfImagesInMosaic)
    for k in (0, 6, 7, 47):                                    # row by row on the 7 x 7 grid
        r, c = divmod(k, 7)
        np.testing.assert_array_equal(image.pixels[k], mosaic[128 * r:128 * (r + 1), 128 * c:128 * (c + 1)])
    res = _index(tmp_path / "dwi")
    assert res.table["n_slices"].tolist() == [48, 48] and res.table["n_volumes"].tolist() == [2, 2]
    assert res.table["volume_key"].tolist() == ["DiffusionBValue=0.0", "DiffusionBValue=1000.0"]
    assert res.table["files"].tolist() == [[str(b0)], [str(b1000)]]
    cache = prepare_cache(res.table, tmp_path / "cache", slices_per_series=4, size=16, progress=False, workers=1)
    assert len(cache) == 8 and set(cache.table["frame"]) <= set(range(48))
    assert cache.table["volume"].tolist() == [0] * 4 + [1] * 4
    inputs = read_inputs([tmp_path / "dwi"], PRE, progress=False)
    assert [len(i.slices) for i in inputs.inputs] == [48, 48]
    assert [i.meta["volume_key"] for i in inputs.inputs] == ["DiffusionBValue=0.0", "DiffusionBValue=1000.0"]


def _series(root: Path, uid: str, n: int, *, per_volume: dict | None = None, volumes: int = 1,
            description: str = "ax t1", pid: str = "P1", **headers) -> list[Path]:
    """``volumes`` volumes of ``n`` slices at the same positions; ``per_volume`` maps a keyword to
    its value per volume."""
    paths = []
    for v in range(volumes):
        extra = {k: vals[v] for k, vals in (per_volume or {}).items()}
        for i in range(n):
            paths.append(write_mr_dicom(root / uid / f"{v}_{i}.dcm", np.full((8, 8), 10 * v + i + 1),
                                        patient_id=pid, study_uid="1.2.826.0.1.8", series_uid=uid,
                                        instance=v * n + i + 1, position=2.0 * i,
                                        headers={**GE_HEADERS, "SeriesDescription": description,
                                                 **headers, **extra}))
    return paths


def test_multi_echo_series_is_split_into_volumes(tmp_path):
    _series(tmp_path, "1.2.826.0.1.8.1", 3, volumes=2,
            per_volume={"EchoNumbers": [1, 2], "EchoTime": [2.0, 9.5]})
    res = _index(tmp_path)
    assert res.table["volume"].tolist() == [0, 1] and res.table["n_slices"].tolist() == [3, 3]
    assert res.table["volume_key"].tolist() == ["EchoNumbers=1", "EchoNumbers=2"]
    assert res.table["te"].tolist() == [2.0, 9.5] and len(res.warnings) == 0
    inputs = read_inputs([tmp_path], PRE, progress=False)
    assert [i.identity["volume"] for i in inputs.inputs] == [0, 1]
    # every volume holds its own echo, in spatial order (pixel value 10 v + i + 1)
    image = read_image(tmp_path / "1.2.826.0.1.8.1")           # a single series still reads whole
    assert image.shape == (6, 8, 8) and image.meta["volume_keys"] == ["EchoNumbers=1", "EchoNumbers=2"]
    np.testing.assert_array_equal(image.pixels[:, 0, 0], [1, 2, 3, 11, 12, 13])


def test_dce_series_split_by_temporal_position_and_fallback_order(tmp_path):
    _series(tmp_path / "a", "1.2.826.0.1.8.2", 2, volumes=3, per_volume={"TemporalPositionIdentifier": [1, 2, 3]})
    res = _index(tmp_path / "a")
    assert res.table["volume_key"].tolist() == [f"TemporalPositionIdentifier={t}" for t in (1, 2, 3)]
    # nothing in the header tells the repeats apart: the k-th image at each position is volume k
    _series(tmp_path / "b", "1.2.826.0.1.8.3", 2, volumes=2)
    res = _index(tmp_path / "b")
    assert res.table["volume_key"].tolist() == ["InstanceNumber order 1", "InstanceNumber order 2"]


def test_volume_labels_by_hand():
    assert volume_labels([0, 1, 2], [{}, {}, {}]) == ([0, 0, 0], "")
    assert volume_labels([0, 0, 1], [{}, {}, {}]) == ([0, 0, 0], "")        # irregular: left alone
    values = [{"DiffusionBValue": b, "AcquisitionNumber": 1} for b in (1000, 0, 1000, 0)]
    assert volume_labels([0, 0, 1, 1], values) == ([1, 0, 1, 0], "DiffusionBValue")
    assert volume_labels([0, 0, None], [{}, {}, {}]) == ([0, 0, 0], "")     # positions unknown


def test_image_kinds_of_real_files():
    from pydicom.data import get_testdata_file

    def fields(name):
        return read_header_fields(get_testdata_file(name, download=False))

    # DERIVED but anatomy (a reformat, a filtered magnitude image): kept
    for name in ("MR_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "MR2_UNCI.dcm", "emri_small.dcm"):
        assert image_kind(fields(name)) is None, name
    assert image_kind(fields("SC_rgb.dcm"))[0] == "secondary capture"
    assert image_kind({"ImageType": ["DERIVED", "SECONDARY", "PROJECTION IMAGE"]})[0] == "derived"
    assert image_kind({"ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]})[0] == "derived"
    assert image_kind({"ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]})[0] == "phase"
    assert image_kind({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})[0] == "localizer"
    assert image_kind({"ImageType": ["ORIGINAL", "PRIMARY", "M"], "SeriesDescription": "3-Plane Loc"})[0] == "localizer"
    assert image_kind({"ImageType": ["ORIGINAL", "PRIMARY", "M"], "SeriesDescription": "ax dyn block"}) is None


def test_phase_localizer_and_derived_skipped_with_reason_unless_kept(tmp_path):
    _series(tmp_path, "1.2.826.0.1.9.1", 2)
    _series(tmp_path, "1.2.826.0.1.9.2", 2, ImageType=["ORIGINAL", "PRIMARY", "P", "ND"])
    _series(tmp_path, "1.2.826.0.1.9.3", 2, description="localizer")
    _series(tmp_path, "1.2.826.0.1.9.4", 2, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])
    res = _index(tmp_path)
    assert res.table["series_uid"].tolist() == ["1.2.826.0.1.9.1"]
    kinds = sorted({r.split(" image")[0] for r in res.skipped["reason"]})
    assert kinds == ["derived", "localizer", "phase"] and len(res.skipped) == 6
    kept = _index(tmp_path, keep_kinds=("phase", "derived"))
    assert kept.table["series_uid"].tolist() == ["1.2.826.0.1.9.1", "1.2.826.0.1.9.2", "1.2.826.0.1.9.4"]
    skipped: list = []
    found = list(iter_inputs([tmp_path], PRE, skipped, progress=False))
    assert [i.identity["series_uid"] for i in found] == ["1.2.826.0.1.9.1"] and len(skipped) == 6
    found = list(iter_inputs([tmp_path], PRE, [], progress=False, keep_kinds=["localizer"]))
    assert [i.identity["series_uid"] for i in found] == ["1.2.826.0.1.9.1", "1.2.826.0.1.9.3"]
    with pytest.raises(InvalidArgumentError, match="keep_kinds"):
        _index(tmp_path, keep_kinds=("mip",))


def test_header_dump_archive_is_indexed_and_prepare_skips_it(tmp_path):
    paths = _series(tmp_path / "dump", "1.2.826.0.1.10.1", 3) + _series(tmp_path / "dump", "1.2.826.0.1.10.2", 2)
    for p in paths:
        _patch(p, p, lambda ds: delattr(ds, "PixelData"))
    for fast in (True, False):
        res = _index(tmp_path / "dump", fast_reader=fast)
        assert res.table["has_pixels"].tolist() == [False, False] and res.table["n_slices"].tolist() == [3, 2]
        assert len(res.skipped) == 0 and res.table.at[0, "manufacturer"] == "GE"
    build_index(tmp_path / "dump", out=tmp_path / "dump.parquet", workers=1, progress=False)
    assert load_index(tmp_path / "dump.parquet")["has_pixels"].tolist() == [False, False]
    with pytest.raises(EmptyInputError, match="2 of 2 series have no pixel data"):
        prepare_cache(tmp_path / "dump.parquet", tmp_path / "c0", size=8, progress=False, workers=1)
    # next to a series with pixels: that one is cached, the dumps are reported
    _series(tmp_path / "dump", "1.2.826.0.1.10.3", 2)
    res = _index(tmp_path / "dump")
    cache = prepare_cache(res.table, tmp_path / "c1", size=8, progress=False, workers=1)
    assert len(cache) == 2 and cache.table["series_uid"].unique().tolist() == ["1.2.826.0.1.10.3"]
    assert cache.skipped["slice_index"].isna().all() and len(cache.skipped) == 2
    assert "no pixel data" in cache.skipped.at[0, "reason"] and "2 series without pixel data" in cache.summary()
    # a cut inside an element is still a truncated file, not a header dump
    cut = tmp_path / "cut" / "x.dcm"
    cut.parent.mkdir()
    cut.write_bytes(paths[0].read_bytes()[:-3])
    for fast in (True, False):
        with pytest.raises(EmptyInputError, match="truncated"):
            _index(tmp_path / "cut", fast_reader=fast)


def test_archive_folder_gives_one_input_per_series(tmp_path):
    _series(tmp_path / "study" / "a", "1.2.826.0.1.11.1", 3, description="ax t1", pid="P1")
    _series(tmp_path / "study" / "b" / "deeper", "1.2.826.0.1.11.2", 2, description="ax t2", pid="P2")
    for i in range(2):   # a third series mixed into the first one's folder
        write_mr_dicom(tmp_path / "study" / "a" / f"z{i}.dcm", np.full((8, 8), 5), patient_id="P1",
                       study_uid="1.2.826.0.1.11", series_uid="1.2.826.0.1.11.3", instance=i + 1,
                       position=float(i), headers=GE_HEADERS)
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    with pytest.raises(ImageReadError, match="3 series"):
        read_image(tmp_path / "study")                         # read_image keeps one-series semantics
    data = read_inputs([tmp_path / "study"], PRE, progress=False)
    ids = [(i.identity["series_uid"], i.identity["patient_id"], len(i.slices)) for i in data.inputs]
    assert ids == [("1.2.826.0.1.11.1", "P1", 3), ("1.2.826.0.1.11.3", "P1", 2), ("1.2.826.0.1.11.2", "P2", 2)]
    assert data.inputs[0].identity["series_description"] == "ax t1"
    assert data.skipped["path"].tolist() == [str(tmp_path / "study" / "notes.txt")]
    assert data.rows.groupby("series_uid").size().to_dict() == {"1.2.826.0.1.11.1": 3, "1.2.826.0.1.11.2": 2,
                                                                "1.2.826.0.1.11.3": 2}


def _enhanced_dce(path: Path, n_positions: int = 3, n_times: int = 2) -> tuple[Path, np.ndarray]:
    """An enhanced MR file of n_times volumes x n_positions slices, frames in time-major order;
    pixel (0, 0) of the frame of time t at position p holds 100 t + 10 p + 1, the rest 1000."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence

    frames = np.full((n_times * n_positions, 4, 5), 1000, dtype=np.uint16)
    for t in range(n_times):
        for p in range(n_positions):
            frames[t * n_positions + p, 0, 0] = 100 * t + 10 * p + 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", "P9", "1.2.826.0.1.12", "1.2.826.0.1.12.1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DYNAMIC", "NONE"]
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 5, len(frames)
    shared, orient, measures = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.7, 0.7]
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for t in range(n_times):
        for p in range(n_positions):
            item, pos, content = Dataset(), Dataset(), Dataset()
            pos.ImagePositionPatient = [0.0, 0.0, 2.0 * p]
            content.TemporalPositionIndex = t + 1
            item.PlanePositionSequence = Sequence([pos])
            item.FrameContentSequence = Sequence([content])
            per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path, frames


def test_enhanced_multi_frame_volumes_are_split(tmp_path):
    path, frames = _enhanced_dce(tmp_path / "dce" / "enhanced.dcm")
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, frames)
    image = read_image(path)                                   # the file read whole, volumes marked
    assert image.shape == (6, 4, 5) and image.meta["FrameVolumes"] == [0, 0, 0, 1, 1, 1]
    assert image.meta["FrameVolumesBy"] == "TemporalPositionIndex" and image.spacing[0] == pytest.approx(2.0)
    for source in (path, tmp_path / "dce"):                     # a file, and a folder holding it
        inputs = read_inputs([source], PRE_NATIVE_5, progress=False).inputs   # no resizing: exact pixels
        assert [i.identity["volume"] for i in inputs] == [0, 1]
        assert [i.meta["volume_key"] for i in inputs] == ["TemporalPositionIndex 1", "TemporalPositionIndex 2"]
        assert all(i.identity["series_uid"] == "1.2.826.0.1.12.1" for i in inputs)
        # volume t holds the frames of time point t, in position order (max255: value / 1000)
        np.testing.assert_allclose(inputs[1].slices[:, 0, 0] * 1000, [101, 111, 121], rtol=1e-3)
