"""Archive index: hand-made archive with known header values and every kind of bad file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mridomain.data import build_index, load_index, print_index_summary
from dicom_factory import GE_HEADERS, write_mr_dicom
from mridomain.errors import EmptyInputError

SIEMENS = {
    "Manufacturer": "SIEMENS", "ManufacturerModelName": "Avanto", "ScanOptions": ["PFP", "FS"],
    "MagneticFieldStrength": 1.5, "PatientPosition": "FFP", "ContrastBolusAgent": "",
    "AcquisitionMatrix": [320, 0, 0, 320], "SliceThickness": 2, "FlipAngle": 10,
    "ReconstructionDiameter": None, "RepetitionTime": 4.42, "EchoTime": 1.3,
    "SeriesDescription": "t1_fl3d_fs_pre",
}


def _write_series(root: Path, pid: str, uid: str, headers: dict, n: int, *, flip: list | None = None,
                  positions: bool = True, spacing: float = 0.7, size: int = 32) -> list[Path]:
    """n slices; instance numbers run opposite to position and file names are scrambled, so the
    only right order is the spatial one."""
    paths = []
    for i in range(n):
        h = dict(headers)
        if flip is not None:
            h["FlipAngle"] = flip[i]
        name = f"{(7 * i + 3) % 11:02d}.dcm"
        paths.append(write_mr_dicom(root / pid / uid / name, np.full((size, size), 10 + i),
                                    patient_id=pid, study_uid=f"1.2.826.0.1.{pid[-1]}",
                                    series_uid=uid, instance=n - i,
                                    position=(-40.0 + 2.5 * i) if positions else None,
                                    headers=h, pixel_spacing=spacing))
    return paths


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("archive")
    ge = _write_series(root, "P1", "1.2.826.0.1.1.1", GE_HEADERS, 4)
    # Siemens omits ReconstructionDiameter: FOV = 10.625 mm x 32 columns = 340 mm.
    sie = _write_series(root, "P1", "1.2.826.0.1.1.2", SIEMENS, 3, spacing=10.625)
    # Slices disagree on the flip angle (2 x 12, 1 x 10); the contrast tag is absent; no positions.
    p2 = _write_series(root, "P2", "1.2.826.0.1.2.1", {**GE_HEADERS, "ContrastBolusAgent": None},
                       3, flip=[12, 10, 12], positions=False)
    good = ge[0].read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / "notes.dcm").write_text("this is a text file, not DICOM\n")
    (bad / "truncated.dcm").write_bytes(good[:-200])  # cut inside the pixel data
    (bad / "cut_header.dcm").write_bytes(good[:300])  # cut just after the file meta
    (bad / "corrupt.dcm").write_bytes(good[:132] + b"\xff" * 400)  # preamble + DICM, then garbage
    (root / "empty" / "nested" / "deeper").mkdir(parents=True)
    # A DICOM object that is not an image (no Rows/Columns, no pixels).
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.9.9"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = FileDataset(str(bad / "report.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    sr.SOPClassUID, sr.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    sr.PatientID, sr.SeriesInstanceUID, sr.Modality = "P1", "1.2.826.0.1.9", "SR"
    sr.save_as(bad / "report.dcm", enforce_file_format=True)
    assert pydicom.dcmread(bad / "report.dcm").Modality == "SR"
    return {"root": root, "ge": ge, "siemens": sie, "p2": p2, "bad": bad}


@pytest.fixture(scope="module")
def result(archive):
    return build_index(archive["root"], workers=1, progress=False)


def test_one_row_per_series_sorted(result):
    t = result.table
    assert list(t["series_uid"]) == ["1.2.826.0.1.1.1", "1.2.826.0.1.1.2", "1.2.826.0.1.2.1"]
    assert list(t["patient_id"]) == ["P1", "P1", "P2"]
    assert list(t["n_slices"]) == [4, 3, 3]
    assert result.n_patients == 2 and result.n_series == 3
    for col in ("study_uid", "series_description", "files", "raw_Manufacturer", "raw_AcquisitionMatrix"):
        assert col in t.columns


def test_files_in_spatial_order(result, archive):
    t = result.table.set_index("series_uid")
    # Written in increasing position; instance numbers decrease, names are scrambled.
    assert t.at["1.2.826.0.1.1.1", "files"] == [str(p) for p in archive["ge"]]
    # No positions at all: InstanceNumber order (written n..1, so reversed).
    assert t.at["1.2.826.0.1.2.1", "files"] == [str(p) for p in reversed(archive["p2"])]


def test_normalized_values_by_hand(result):
    t = result.table.set_index("series_uid")
    ge, sie, p2 = (t.loc[u] for u in ("1.2.826.0.1.1.1", "1.2.826.0.1.1.2", "1.2.826.0.1.2.1"))
    assert ge["manufacturer"] == "GE" and sie["manufacturer"] == "SIEMENS"
    assert ge["scanner_model"] == "SIGNA HDx" and sie["scanner_model"] == "Avanto"
    assert ge["scan_options"] == "FAST_GEMS\\SAT_GEMS\\PFP\\FS" and sie["scan_options"] == "PFP\\FS"
    assert ge["field_strength"] == "1.5"
    assert ge["patient_position"] == "FFP"
    assert ge["contrast_agent"] == "GADAVIST"
    assert sie["contrast_agent"] == "not stated"  # tag present, empty
    assert p2["contrast_agent"] == "absent"  # tag missing
    assert ge["acquisition_matrix"] == "448 X 448" and sie["acquisition_matrix"] == "320 X 320"
    assert ge["slice_thickness"] == "1.1" and sie["slice_thickness"] == "2"
    assert ge["flip_angle"] == "10"
    assert ge["fov"] == "340"  # ReconstructionDiameter
    assert sie["fov"] == "340"  # 10.625 mm x 32 columns
    assert ge["tr"] == pytest.approx(5.17) and ge["te"] == pytest.approx(2.37)
    assert sie["tr"] == pytest.approx(4.42) and sie["te"] == pytest.approx(1.3)
    assert ge["raw_Manufacturer"] == "GE MEDICAL SYSTEMS"
    assert list(ge["raw_AcquisitionMatrix"]) == [0, 448, 448, 0]


def test_disagreeing_slices_take_mode_and_warn(result):
    t = result.table.set_index("series_uid")
    assert t.at["1.2.826.0.1.2.1", "flip_angle"] == "12"
    w = result.warnings
    assert len(w) == 1
    assert w.iloc[0]["series_uid"] == "1.2.826.0.1.2.1" and w.iloc[0]["iap"] == "flip_angle"
    assert w.iloc[0]["chosen"] == "12"


def test_bad_files_skipped_with_reasons(result, archive):
    s = result.skipped.set_index("path")["reason"]
    bad = archive["bad"]
    assert set(s.index) == {str(bad / n) for n in
                            ("notes.dcm", "truncated.dcm", "cut_header.dcm", "corrupt.dcm", "report.dcm")}
    assert "not a DICOM file" in s[str(bad / "notes.dcm")]
    assert "truncated" in s[str(bad / "truncated.dcm")]
    assert "truncated file" in s[str(bad / "cut_header.dcm")]
    # garbage after a valid preamble: which words depend on where parsing gives up
    assert any(w in s[str(bad / "corrupt.dcm")] for w in ("corrupt", "truncated", "not an image"))
    assert "not an image" in s[str(bad / "report.dcm")]
    assert all("\n" not in r for r in s)
    assert result.n_files == 10 + 5


def test_deterministic_and_parallel_equal(archive, result):
    again = build_index(archive["root"], workers=2, progress=False)
    pd.testing.assert_frame_equal(again.table, result.table)
    pd.testing.assert_frame_equal(again.skipped, result.skipped)


def test_parquet_roundtrip_and_reports(archive, tmp_path, capsys):
    out = tmp_path / "index.parquet"
    res = build_index(archive["root"], out=out, workers=1, progress=False)
    back = load_index(out)
    assert list(back["files"]) == list(res.table["files"])
    assert list(back["manufacturer"]) == list(res.table["manufacturer"])
    assert back["tr"].tolist() == pytest.approx(res.table["tr"].tolist())
    report = pd.read_csv(tmp_path / "index.skipped.csv")
    assert list(report.columns) == ["path", "reason"] and len(report) == 5
    assert (tmp_path / "index.warnings.csv").exists()
    print_index_summary(res, out)
    text = capsys.readouterr().out
    assert "3 series" in text and "2 patients" in text and "skipped 5" in text


def test_extra_keywords_become_raw_columns(archive):
    res = build_index(archive["root"] / "P1", workers=1, progress=False, extra=("SeriesNumber",))
    assert list(res.table["raw_SeriesNumber"]) == [1, 1]


def test_empty_folder_raises(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(EmptyInputError, match="no files"):
        build_index(tmp_path, progress=False)


def test_nothing_readable_raises(archive):
    with pytest.raises(EmptyInputError) as err:
        build_index(archive["bad"], workers=1, progress=False)
    assert "\n" not in str(err.value) and str(archive["bad"]) in str(err.value)


def test_missing_archive_raises(tmp_path):
    with pytest.raises(EmptyInputError, match="no such"):
        build_index(tmp_path / "nope", progress=False)


# ---- the fast header reader must agree with mridomain.io ---------------------------------------


def _vendor_files() -> list[Path]:
    """pydicom's bundled MR files and pydicom-data's (Philips, Siemens, enhanced), local only."""
    import pydicom

    here = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(here.glob("MR*.dcm"))
    import data_store  # pydicom-data, a test dependency

    files += sorted((Path(data_store.__file__).parent / "data").glob("MR*.dcm"))
    files += sorted((Path(data_store.__file__).parent / "data").glob("emri_small*.dcm"))
    return files


def test_fast_reader_matches_io_reader(archive):
    from mridomain.data import index as ix
    from mridomain.data._fastheader import Fallback, read_fields_fast
    from mridomain.io import HEADER_KEYWORDS, read_header_fields
    from mridomain.errors import MridomainError

    ix.configure_reader(ix.BASE_KEYWORDS, ())
    files = _vendor_files() + list(archive["ge"]) + list(archive["siemens"]) + list(archive["p2"])
    n_fast = 0
    for f in files:
        try:
            fast, reason = read_fields_fast(str(f), ix._WANTED)
        except Fallback:
            continue  # left to pydicom: nothing to compare
        if fast is not None:  # the pixel-length and image checks the indexer applies
            _, fast, reason = ix._check_fields(str(f), fast)
        try:
            ref = read_header_fields(f)
        except MridomainError:
            assert fast is None, f"{f.name}: io refuses it, the fast reader gave fields"
            continue
        if fast is None:
            # truncated pixel data etc.: io must refuse it as well
            pytest.fail(f"{f.name}: fast reader refused ({reason}) a file io reads")
        n_fast += 1
        for kw in HEADER_KEYWORDS:
            a, b = fast.get(kw), ref.get(kw)
            if isinstance(b, float) or isinstance(a, float):
                assert a == pytest.approx(b), (f.name, kw, a, b)
            else:
                assert a == b, (f.name, kw, a, b)
    # the real vendor files in explicit / implicit little endian take the fast path
    assert n_fast >= len(files) // 2


def test_vendor_files_true_values(tmp_path):
    """pydicom's Toshiba MR_small (explicit and implicit VR) indexed with its true header values."""
    import shutil

    import pydicom

    here = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"):
        shutil.copy(here / name, tmp_path / name)
    res = build_index(tmp_path, workers=1, progress=False)
    ref = pydicom.dcmread(here / "MR_small.dcm")
    assert len(res.table) == 1 and res.table.at[0, "n_slices"] == 1  # same SOP instance: deduplicated
    assert len(res.skipped) == 2 and res.skipped["reason"].str.contains("duplicate").all()
    row = res.table.iloc[0]
    assert row["manufacturer"] == "TOSHIBA"  # "TOSHIBA_MEC"
    assert row["raw_Manufacturer"] == ref.Manufacturer
    assert row["tr"] == pytest.approx(float(ref.RepetitionTime))
    assert row["te"] == pytest.approx(float(ref.EchoTime))
    assert row["flip_angle"] == f"{float(ref.FlipAngle):g}"
    assert row["patient_id"] == ref.PatientID


def test_iter_files_is_the_io_walk_as_strings(tmp_path):
    from mridomain.data import iter_files
    from mridomain.io import iter_candidate_files

    for rel in ("b/2.dcm", "b/10.dcm", "a/x.dcm", ".hidden/y.dcm", "a/.z.dcm", "top.dcm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = list(iter_files(tmp_path))
    assert found == [str(p) for p in iter_candidate_files(tmp_path)]
    # name order folder by folder, hidden entries skipped
    assert [Path(f).relative_to(tmp_path).as_posix() for f in found] == ["a/x.dcm", "b/10.dcm", "b/2.dcm", "top.dcm"]
