"""DBC adapter: real category map, 3-row-header feature sheet, TCIA layout, mapping, tumor boxes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mridomain.data import build_index
from mridomain.data.dbc import (
    dbc_iap_table,
    dbc_labels_for_index,
    load_category_map,
    parse_category_map,
    read_annotation_boxes,
    read_dbc_features,
    read_path_mapping,
    read_tcia_classic,
    tumor_label,
    tumor_labels,
)
from dicom_factory import write_mr_dicom
from mridomain.errors import SchemaMismatchError

RESOURCE = Path(__file__).resolve().parents[1] / "src/mridomain/data/resources/dbc_clinical_feature_categories.csv"

# Codes per patient, read off the real category row (see the resource file).
CODES = {
    "Breast_MRI_001": {"Manufacturer": 0, "Manufacturer Model Name": 3, "Scan Options": 3,
                       "Field Strength (Tesla)": 1, "Patient Position During MRI": 0,
                       "Contrast Agent": 4, "Acquisition Matrix": 9, "Slice Thickness ": 5,
                       "Flip Angle \n": 2, "FOV Computed (Field of View) in cm ": 11,
                       "TR (Repetition Time)": 5.17, "TE (Echo Time)": 2.37},
    "Breast_MRI_002": {"Manufacturer": 2, "Manufacturer Model Name": 0, "Scan Options": 5,
                       "Field Strength (Tesla)": 0, "Patient Position During MRI": 1,
                       "Contrast Agent": 2, "Acquisition Matrix": 0, "Slice Thickness ": 18,
                       "Flip Angle \n": 3, "FOV Computed (Field of View) in cm ": 0,
                       "TR (Repetition Time)": 4.42, "TE (Echo Time)": 1.3},
    "Breast_MRI_003": {"Manufacturer": 2, "Manufacturer Model Name": 5, "Scan Options": 4,
                       "Field Strength (Tesla)": 3, "Patient Position During MRI": 1,
                       "Contrast Agent": 5, "Acquisition Matrix": 10, "Slice Thickness ": "",
                       "Flip Angle \n": 1, "FOV Computed (Field of View) in cm ": 26,
                       "TR (Repetition Time)": 3.72, "TE (Echo Time)": 1.45},
}


def _write_features(path: Path) -> Path:
    """A Clinical_and_Other_Features sheet in DBC's layout, built on the real header rows."""
    res = pd.read_csv(RESOURCE, header=None, dtype=object, keep_default_na=False, encoding="utf-8-sig")
    names = ["Patient ID"] + list(res.iloc[0])
    maps = [""] + list(res.iloc[1])
    groups = ["Patient Information"] + ["MRI Technical Information"] + [""] * (len(names) - 2)
    rows = [groups, names, maps]
    for pid, codes in CODES.items():
        row = [pid] + [""] * (len(names) - 1)
        for col, code in codes.items():
            row[names.index(col)] = code
        rows.append(row)
    df = pd.DataFrame(rows)
    if path.suffix == ".xlsx":
        df.to_excel(path, header=False, index=False)
    else:
        df.to_csv(path, header=False, index=False)
    return path


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    return _write_features(tmp_path_factory.mktemp("dbc") / "Clinical_and_Other_Features.csv")


def test_shipped_category_map():
    cats = load_category_map()
    assert cats.decode("Manufacturer", 2) == "SIEMENS"
    assert cats.decode("Manufacturer ", "0") == "GE MEDICAL SYSTEMS"
    assert cats.decode("Manufacturer Model Name", 4) == "Signa HDxt"
    assert cats.decode("Scan Options", 3) == "FAST_GEMS\\SAT_GEMS\\PFP\\FS"
    assert cats.decode("Field Strength (Tesla)", 2) == "2.8936"
    assert cats.encode("Contrast Agent", "MMAGNEVIST") == 2  # the typo is a real class
    assert cats.decode("Contrast Agent", 5) == "ContrastBolusAgent Tag Absent"
    assert cats.decode("Acquisition Matrix", 6) == "448 X 251"
    assert cats.decode("Flip Angle", 3) == "12"  # the sheet's name is "Flip Angle \n"
    assert len(cats.maps["fov computed (field of view) in cm"]) == 27  # paper: 27 FOV classes
    assert len(cats.maps["slice thickness"]) == 21  # paper: 21 slice thickness classes
    assert cats.decode("Contrast Agent", None) is None
    with pytest.raises(KeyError):
        cats.encode("Manufacturer", "TOSHIBA")


def test_parse_category_map_forms():
    assert parse_category_map("FFP=0,HFP=1") == {0: "FFP", 1: "HFP"}
    assert parse_category_map("{0 = no, 1 = yes}") == {0: "no", 1: "yes"}
    assert parse_category_map("(Taking date of diagnosis as day 0)") == {}


def test_read_features_three_header_rows(features):
    table, cats = read_dbc_features(features)
    assert list(table["patient_id"]) == list(CODES)
    assert "Flip Angle" in table.columns and "Slice Thickness" in table.columns
    assert cats.decode("manufacturer", 2) == "SIEMENS"


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_iap_table_decodes_and_normalizes(tmp_path, suffix):
    path = _write_features(tmp_path / f"Clinical_and_Other_Features{suffix}")
    t = dbc_iap_table(path).set_index("patient_id")
    one, two, three = (t.loc[p] for p in CODES)
    assert one["manufacturer"] == "GE" and two["manufacturer"] == "SIEMENS"
    assert one["scanner_model"] == "SIGNA HDx" and two["scanner_model"] == "Avanto"
    assert one["scan_options"] == "FAST_GEMS\\SAT_GEMS\\PFP\\FS" and two["scan_options"] == "PFP\\FS"
    assert one["field_strength"] == "1.5" and two["field_strength"] == "1.494" and three["field_strength"] == "3"
    assert one["patient_position"] == "FFP" and two["patient_position"] == "HFP"
    assert one["contrast_agent"] == "not stated"  # code 4
    assert two["contrast_agent"] == "MMAGNEVIST"  # code 2
    assert three["contrast_agent"] == "absent"  # code 5
    assert one["acquisition_matrix"] == "448 X 448" and two["acquisition_matrix"] == "320 X 320"
    assert one["slice_thickness"] == "1.1" and two["slice_thickness"] == "2"
    assert pd.isna(three["slice_thickness"])  # empty cell
    assert one["flip_angle"] == "10" and two["flip_angle"] == "12" and three["flip_angle"] == "8"
    assert one["fov"] == "340" and two["fov"] == "250" and three["fov"] == "480"  # cm*10 = mm
    assert one["tr"] == pytest.approx(5.17) and two["te"] == pytest.approx(1.3)


def test_not_a_feature_sheet(tmp_path):
    bad = tmp_path / "x.csv"
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(bad, index=False)
    with pytest.raises(SchemaMismatchError, match="Patient ID"):
        read_dbc_features(bad)


@pytest.fixture(scope="module")
def tcia(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tcia") / "Duke-Breast-Cancer-MRI"
    headers = {"Manufacturer": "SIEMENS", "ManufacturerModelName": "Skyra", "MagneticFieldStrength": 3}
    for p, n in (("Breast_MRI_001", 11), ("Breast_MRI_009", 3)):
        study = f"01-01-1990-NA-MRI BREAST BILATERAL-{p[-3:]}"
        series = "3.000000-ax dyn pre-11111"
        for i in range(1, n + 1):
            write_mr_dicom(root / p / study / series / f"1-{i:02d}.dcm" if i < 10 else
                           root / p / study / series / f"1-{i}.dcm",
                           np.full((8, 8), i), patient_id=p, study_uid=f"1.3.6.{int(p[-3:])}",
                           series_uid=f"1.3.6.{int(p[-3:])}.3", instance=i, position=float(i), headers=headers)
    return root


def test_read_tcia_classic(tcia):
    t = read_tcia_classic(tcia.parent)
    assert list(t["patient_id"]) == ["Breast_MRI_001", "Breast_MRI_009"]
    assert list(t["n_files"]) == [11, 3]
    names = [Path(f).name for f in t.iloc[0]["files"]]
    assert names[:3] == ["1-01.dcm", "1-02.dcm", "1-03.dcm"] and names[-2:] == ["1-10.dcm", "1-11.dcm"]
    assert t.iloc[0]["series"] == "3.000000-ax dyn pre-11111"


def test_read_path_mapping(tcia, tmp_path):
    classic = "Duke-Breast-Cancer-MRI/Breast_MRI_009/01-01-1990-NA-MRI BREAST BILATERAL-009/3.000000-ax dyn pre-11111/1-01.dcm"
    mapping = tmp_path / "Breast-Cancer-MRI-filepath_filename-mapping.csv"
    pd.DataFrame({"original_path_and_filename": ["DICOM_Images/Breast_MRI_009/pre/Breast_MRI_009_pre_001.dcm"],
                  "classic_path": [classic], "descriptive_path": ["x"]}).to_csv(mapping, index=False)
    m = read_path_mapping(mapping, root=tcia.parent)
    assert m.at[0, "patient_id"] == "Breast_MRI_009"
    assert bool(m.at[0, "exists"]) and m.at[0, "original_path"].endswith("_pre_001.dcm")


def test_annotation_boxes_and_labels(tmp_path):
    path = tmp_path / "Annotation_Boxes.csv"
    pd.DataFrame({"Patient ID": ["Breast_MRI_001", "Breast_MRI_002"], "Start Row": [234, 10],
                  "End Row": [271, 20], "Start Column": [308, 5], "End Column": [341, 9],
                  "Start Slice": [10, 1], "End Slice": [14, 2]}).to_csv(path, index=False)
    boxes = read_annotation_boxes(path)
    assert list(boxes.columns) == ["patient_id", "start_row", "end_row", "start_column", "end_column",
                                   "start_slice", "end_slice"]
    assert int(boxes.at[0, "start_row"]) == 234
    # Box slices 10..14: inside -> 1; >= 5 slices away (<= 5 or >= 19) -> 0; between -> NaN.
    expect = {4: 0.0, 5: 0.0, 6: np.nan, 9: np.nan, 10: 1.0, 12: 1.0, 14: 1.0, 15: np.nan,
              18: np.nan, 19: 0.0, 40: 0.0}
    for s, v in expect.items():
        got = tumor_label(s, [(10, 14)])
        assert (np.isnan(got) and np.isnan(v)) or got == v, (s, got, v)
    got = tumor_labels(["Breast_MRI_001", "Breast_MRI_077", "breast_mri_002"], [12, 12, 7], boxes)
    assert got[0] == 1.0 and np.isnan(got[1]) and got[2] == 0.0


def test_labels_for_index_from_spreadsheet(tcia, features):
    index = build_index(tcia, workers=1, progress=False).table
    assert set(index["manufacturer"]) == {"SIEMENS"}  # what the headers say
    out = dbc_labels_for_index(index, features).set_index("patient_id")
    assert out.at["Breast_MRI_001", "manufacturer"] == "GE"  # what the sheet says
    assert out.at["Breast_MRI_001", "header_manufacturer"] == "SIEMENS"
    assert out.at["Breast_MRI_001", "iap_source"] == "dbc"
    assert out.at["Breast_MRI_001", "tr"] == pytest.approx(5.17)
    assert out.at["Breast_MRI_009", "iap_source"] == "missing"
    assert pd.isna(out.at["Breast_MRI_009", "manufacturer"]) and np.isnan(out.at["Breast_MRI_009", "tr"])
