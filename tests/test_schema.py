"""mridomain.data.schema: IAP definitions and the normalization of raw header values.

Expected labels are written by hand from DBC's category map (FIELD.md section 3) and the DICOM
standard, not produced by the code under test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from mridomain.data.schema import (
    DEFAULT_IAPS,
    IAP_NAMES,
    IAPSpec,
    field_strength_bins,
    format_number,
    is_missing,
    load_iap_config,
    make_iaps,
    normalize_iaps,
    required_keywords,
)
from mridomain.errors import SchemaMismatchError
from mridomain.io import read_header_fields

PAPER_TABLE_1 = (
    "manufacturer", "scanner_model", "scan_options", "field_strength", "patient_position",
    "contrast_agent", "acquisition_matrix", "slice_thickness", "flip_angle", "fov", "tr", "te",
)


def _iap(fields: dict, name: str, iaps=DEFAULT_IAPS):
    return normalize_iaps(fields, iaps)[name]


def test_default_iaps_are_table_1() -> None:
    assert IAP_NAMES == PAPER_TABLE_1
    assert tuple(s.name for s in DEFAULT_IAPS) == PAPER_TABLE_1
    kinds = {s.name: s.kind for s in DEFAULT_IAPS}
    assert {n for n, k in kinds.items() if k == "continuous"} == {"tr", "te"}
    assert all(isinstance(s, IAPSpec) for s in DEFAULT_IAPS)
    units = {s.name: s.unit for s in DEFAULT_IAPS}
    assert units["tr"] == units["te"] == "ms" and units["fov"] == "mm"
    assert "ReconstructionDiameter" in required_keywords() and "EchoTime" in required_keywords()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("GE MEDICAL SYSTEMS", "GE"),
        ("GE Healthcare", "GE"),
        ("SIEMENS", "SIEMENS"),
        ("Siemens Healthineers", "SIEMENS"),
        ("Philips Medical Systems", "PHILIPS"),
        ("Philips Healthcare", "PHILIPS"),
        ("TOSHIBA_MEC", "TOSHIBA"),
        ("Canon Medical Systems", "CANON"),
        ("  MPTronic   software ", "MPTRONIC SOFTWARE"),
        ("", None),
        (None, None),
    ],
)
def test_manufacturer(raw, expected) -> None:
    assert _iap({"Manufacturer": raw}, "manufacturer") == expected


def test_scanner_model_and_position() -> None:
    fields = {"ManufacturerModelName": " Signa HDxt ", "PatientPosition": "ffp "}
    assert _iap(fields, "scanner_model") == "Signa HDxt"
    assert _iap(fields, "patient_position") == "FFP"
    assert _iap({}, "scanner_model") is None


def test_scan_options() -> None:
    assert _iap({"ScanOptions": ["FAST_GEMS", "SAT_GEMS", "PFP", "FS"]}, "scan_options") == "FAST_GEMS\\SAT_GEMS\\PFP\\FS"
    assert _iap({"ScanOptions": ["PFP", "FS"]}, "scan_options") == "PFP\\FS"  # header order kept
    assert _iap({"ScanOptions": np.array(["FS"])}, "scan_options") == "FS"  # parquet round trip
    assert _iap({"ScanOptions": "SAT_GEMS\\FS"}, "scan_options") == "SAT_GEMS\\FS"
    assert _iap({"ScanOptions": []}, "scan_options") == "NONE"
    assert _iap({}, "scan_options") is None


def test_field_strength_kept_and_binned() -> None:
    binned = make_iaps(field_strength_binning=True)
    cases = [  # raw, as read, binned
        (1.4939999580383, "1.494", "1.5"),
        (1.5, "1.5", "1.5"),
        (2.8936, "2.8936", "3"),
        (3.0, "3", "3"),
        ("1.500000", "1.5", "1.5"),
        (15000, "1.5", "1.5"),  # gauss in old headers: 1 T = 10 000 G
    ]
    for raw, kept, snapped in cases:
        fields = {"MagneticFieldStrength": raw}
        assert _iap(fields, "field_strength") == kept
        assert _iap(fields, "field_strength", binned) == snapped
    assert field_strength_bins(1.494) == 1.5 and field_strength_bins(2.8936) == 3.0
    assert field_strength_bins(2.0) == 2.0  # no nominal strength within 6 %: unchanged
    custom = make_iaps(lambda t: round(t))
    assert _iap({"MagneticFieldStrength": 1.494}, "field_strength", custom) == "1"
    assert _iap({}, "field_strength") is None


def test_contrast_agent_dbc_categories() -> None:
    assert _iap({"ContrastBolusAgent": " Gadavist "}, "contrast_agent") == "GADAVIST"
    assert _iap({"ContrastBolusAgent": "MultiHance"}, "contrast_agent") == "MULTIHANCE"
    assert _iap({"ContrastBolusAgent": ""}, "contrast_agent") == "not stated"
    assert _iap({"ContrastBolusAgent": None}, "contrast_agent") == "absent"
    assert _iap({}, "contrast_agent") == "absent"


@pytest.mark.parametrize(
    "matrix, expected",
    [
        ([0, 448, 448, 0], "448 X 448"),   # [freq rows, freq cols, phase rows, phase cols]
        ([512, 0, 0, 358], "512 X 358"),
        ([0, 384, 360, 0], "384 X 360"),
        ([256, 0, 0, 134], "256 X 134"),
        (np.array([0, 320, 320, 0]), "320 X 320"),
        ([0, 0, 0, 0], None),
        ([448, 448], None),
        (None, None),
    ],
)
def test_acquisition_matrix(matrix, expected) -> None:
    assert _iap({"AcquisitionMatrix": matrix}, "acquisition_matrix") == expected


def test_numbers_compact() -> None:
    assert _iap({"SliceThickness": 1.1}, "slice_thickness") == "1.1"
    assert _iap({"SliceThickness": "2.000"}, "slice_thickness") == "2"
    assert _iap({"SliceThickness": 1.04}, "slice_thickness") == "1.04"
    assert _iap({"FlipAngle": 10.0}, "flip_angle") == "10"
    assert _iap({"FlipAngle": "12"}, "flip_angle") == "12"
    assert format_number(0.8000) == "0.8" and format_number(11.88) == "11.88" and format_number(-0.0) == "0"
    assert format_number(123456.0) == "123456"


def test_fov() -> None:
    assert _iap({"ReconstructionDiameter": 340.0, "PixelSpacing": [0.5, 0.5], "Columns": 512}, "fov") == "340"
    assert _iap({"ReconstructionDiameter": 359.6}, "fov") == "360"
    # No ReconstructionDiameter (Siemens): width = PixelSpacing[1] (column spacing) x Columns.
    assert _iap({"PixelSpacing": [0.9, 0.7], "Columns": 512, "Rows": 400}, "fov") == "358"  # 358.4
    assert _iap({"PixelSpacing": [0.5, 0.68359375], "Columns": 512}, "fov") == "350"  # exactly 350
    assert _iap({"PixelSpacing": [0.5], "Columns": 512}, "fov") is None
    assert _iap({}, "fov") is None


def test_tr_te_floats() -> None:
    out = normalize_iaps({"RepetitionTime": "5.963", "EchoTime": 2.537})
    assert out["tr"] == pytest.approx(5.963) and isinstance(out["tr"], float)
    assert out["te"] == pytest.approx(2.537)
    assert normalize_iaps({"RepetitionTime": float("nan")})["tr"] is None


def test_normalize_iaps_never_raises_on_junk() -> None:
    junk = {"Manufacturer": 12, "ScanOptions": 5, "MagneticFieldStrength": "abc", "AcquisitionMatrix": ["a", "b", "c", "d"],
            "SliceThickness": [], "FlipAngle": {}, "PixelSpacing": "x", "Columns": "y", "RepetitionTime": "?"}
    out = normalize_iaps(junk)
    assert set(out) == set(IAP_NAMES)
    assert out["field_strength"] is None and out["acquisition_matrix"] is None and out["tr"] is None


# ----------------------------------------------------------------------------- real files
def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available locally")
    return path


def test_real_vendor_files() -> None:
    siemens = normalize_iaps(read_header_fields(_testfile("MR-SIEMENS-DICOM-WithOverlays.dcm")))
    # Avanto, 1.494 T, [256, 0, 0, 134], SAT2\FS, 484 columns x 0.72314049586777 mm = 350.0 mm
    assert siemens == {
        "manufacturer": "SIEMENS", "scanner_model": "Avanto", "scan_options": "SAT2\\FS",
        "field_strength": "1.494", "patient_position": "HFS", "contrast_agent": "11 ML OMNISCAN",
        "acquisition_matrix": "256 X 134", "slice_thickness": "4", "flip_angle": "10", "fov": "350",
        "tr": pytest.approx(5.53), "te": pytest.approx(2.81),
    }
    toshiba = normalize_iaps(read_header_fields(_testfile("MR_small.dcm")))
    assert toshiba["manufacturer"] == "TOSHIBA"
    assert toshiba["contrast_agent"] == "not stated"  # tag present, empty
    assert toshiba["fov"] == "20"  # 64 x 0.3125 mm
    assert toshiba["slice_thickness"] == "0.8"
    philips = normalize_iaps(read_header_fields(_testfile("MR2_UNCI.dcm")))
    assert philips["manufacturer"] == "PHILIPS"
    assert philips["contrast_agent"] == "absent"  # tag missing
    assert philips["field_strength"] == "1.5"
    assert philips["fov"] == "200"  # 1024 x 0.195313 mm = 200.0
    assert philips["tr"] == 350.0 and philips["te"] == 27.0


# ----------------------------------------------------------------------------- config
def test_load_config_subset_extra_and_bins(tmp_path: Path) -> None:
    path = tmp_path / "iaps.yaml"
    path.write_text(
        "iaps: [manufacturer, field_strength, tr]\n"
        "field_strength_bins: true\n"
        "extra:\n"
        "  - {name: sequence, keyword: SeriesDescription, kind: categorical}\n"
        "  - {name: bandwidth, keyword: PixelBandwidth, kind: continuous, unit: Hz}\n"
    )
    iaps = load_iap_config(path)
    assert [s.name for s in iaps] == ["manufacturer", "field_strength", "tr", "sequence", "bandwidth"]
    assert [s.kind for s in iaps][-2:] == ["categorical", "continuous"]
    assert iaps[-1].unit == "Hz" and iaps[-1].keywords == ("PixelBandwidth",)
    fields = {"Manufacturer": "SIEMENS", "MagneticFieldStrength": 1.494, "RepetitionTime": 4.42,
              "SeriesDescription": " ax dyn pre ", "PixelBandwidth": "390"}
    assert normalize_iaps(fields, iaps) == {
        "manufacturer": "SIEMENS", "field_strength": "1.5", "tr": 4.42, "sequence": "ax dyn pre", "bandwidth": 390.0,
    }
    assert "SeriesDescription" in required_keywords(iaps)


def test_load_config_defaults_to_all(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("extra: []\n")
    assert tuple(s.name for s in load_iap_config(path)) == PAPER_TABLE_1


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("iaps: [manufacturer, vendor]\n", "unknown IAP name(s) ['vendor']"),
        ("extra:\n  - {name: seq, keyword: NotAKeyword}\n", "'NotAKeyword' is not a DICOM keyword"),
        ("extra:\n  - {name: seq, keyword: SeriesDescription, kind: ordinal}\n", "field 'extra.0.kind'"),
        ("iaps: [tr]\nextra:\n  - {name: tr, keyword: RepetitionTime}\n", "appears twice"),
        ("iap: [tr]\n", "field 'iap': unknown field"),
        ("extra: {name: seq}\n", "field 'extra'"),
        ("- tr\n", "expected a mapping of fields"),
        ("iaps: [tr\n", "not valid YAML"),
    ],
)
def test_load_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SchemaMismatchError) as err:
        load_iap_config(path)
    message = str(err.value)
    assert str(path) in message and fragment in message and "\n" not in message


@pytest.mark.parametrize("value, expected", [
    (None, True), (float("nan"), True), (np.float32("nan"), True), (pd.NA, True), (pd.NaT, True),
    ("", False), ("not stated", False), (0, False), (0.0, False), ([], False),
    (["FS"], False), (np.array(["FS"]), False),
])
def test_is_missing(value, expected) -> None:
    # An empty string is a stated value ("not stated" contrast agent), not a missing one.
    assert is_missing(value) is expected
