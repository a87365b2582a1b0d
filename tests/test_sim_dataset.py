"""The written dataset: DICOM validity and headers, DBC sheet codes, boxes, manifest, determinism."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mridomain.data import build_index
from mridomain.data.dbc import dbc_iap_table
from mridomain.errors import SchemaMismatchError
from mridomain.sim.breast import load_preset, simulate

CATEGORY_MAP = Path(__file__).resolve().parents[1] / "src/mridomain/data/resources/dbc_clinical_feature_categories.csv"

TINY = """
name: tiny
scanners:
  - name: ge
    weight: 1
    manufacturer: GE
    model: SIGNA HDx
    field_strength: 1.5
    scan_options: {'FAST_GEMS\\SAT_GEMS\\PFP\\FS': 1}
    patient_position: {FFP: 0.5, HFP: 0.5}
    contrast_agent: {MAGNEVIST: 0.4, not stated: 0.3, absent: 0.3}
    acquisition_matrix: {'48 X 40': 1}
    recon_matrix: 64
    slice_thickness: {2: 1}
    flip_angle: 10
    fov: {340: 1}
    tr: {mean: 5.2, sd: 0.1}
    te: {mean: 2.4, sd: 0.05}
  - name: siemens
    weight: 1
    manufacturer: SIEMENS
    model: Skyra
    field_strength: 3
    scan_options: {'PFP\\SFS': 1}
    patient_position: HFP
    contrast_agent: {GADAVIST: 1}
    acquisition_matrix: {'64 X 56': 1}
    recon_matrix: 64
    slice_thickness: {1.1: 1}
    flip_angle: 10
    fov: {min: 300, max: 360}
    tr: {mean: 3.7, sd: 0.05}
    te: {mean: 1.45, sd: 0.02}
"""


@pytest.fixture(scope="module")
def dbc_sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("dbc")
    return simulate(out, n_patients=3, seed=3, slices=3, preset="dbc", phases=2, workers=1, progress=False)


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def test_layout_and_counts(dbc_sim):
    files = _files(dbc_sim.dicom_root)
    assert len(files) == dbc_sim.n_files == 3 * 3 * 2
    for f in files:
        rel = f.relative_to(dbc_sim.dicom_root).parts
        assert len(rel) == 4 and rel[0].startswith("Breast_MRI_00") and rel[3] in ("1-01.dcm", "1-02.dcm", "1-03.dcm")
    assert len(dbc_sim.manifest) == 6 and set(dbc_sim.manifest["phase"]) == {0, 1}
    assert "Simulated 3 patients" in dbc_sim.summary()


def test_every_file_reads_back_with_the_iap_tags(dbc_sim):
    m = dbc_sim.manifest.set_index("series_uid")
    for f in _files(dbc_sim.dicom_root):
        ds = pydicom.dcmread(f)
        row = m.loc[ds.SeriesInstanceUID]
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.PatientID == row["patient_id"]
        assert {"GE MEDICAL SYSTEMS": "GE", "SIEMENS": "SIEMENS"}[ds.Manufacturer] == row["manufacturer"]
        assert ds.ManufacturerModelName == row["scanner_model"]
        opts = ds.ScanOptions if isinstance(ds.ScanOptions, (list, pydicom.multival.MultiValue)) else [ds.ScanOptions]
        assert "\\".join(opts) == row["scan_options"]
        assert f"{float(ds.MagneticFieldStrength):g}" == row["field_strength"]
        assert ds.PatientPosition == row["patient_position"]
        if row["contrast_agent"] == "absent":
            assert "ContrastBolusAgent" not in ds
        elif row["contrast_agent"] == "not stated":
            assert "ContrastBolusAgent" in ds and not ds.ContrastBolusAgent
        else:
            assert ds.ContrastBolusAgent == row["contrast_agent"]
        am = list(ds.AcquisitionMatrix)
        assert am[0] == 0 and am[3] == 0 and ds.InPlanePhaseEncodingDirection == "ROW"
        assert f"{am[1]} X {am[2]}" == row["acquisition_matrix"]
        assert f"{float(ds.SliceThickness):g}" == row["slice_thickness"]
        assert f"{float(ds.FlipAngle):g}" == row["flip_angle"]
        assert float(ds.PixelSpacing[0]) * ds.Columns == pytest.approx(float(row["fov"]), abs=0.01)
        assert ("ReconstructionDiameter" in ds) == (row["manufacturer"] == "GE")
        assert float(ds.RepetitionTime) == pytest.approx(row["tr"], abs=1e-3)
        assert float(ds.EchoTime) == pytest.approx(row["te"], abs=1e-3)
        px = ds.pixel_array
        assert px.dtype == np.uint16 and px.shape == (ds.Rows, ds.Columns)
        assert px.max() < 2 ** ds.BitsStored and px.max() > 0


def test_slice_geometry_is_consistent(dbc_sim):
    for folder in {f.parent for f in _files(dbc_sim.dicom_root)}:
        dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm"))]
        assert [d.InstanceNumber for d in dss] == [1, 2, 3]
        iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        pos = [float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))) for d in dss]
        assert all(b > a for a, b in zip(pos, pos[1:]))  # written order ascends along the normal
        assert (iop[0] < 0) == (dss[0].PatientPosition == "HFP")  # HFP stored mirrored


def _decode_map() -> dict[str, dict[str, str]]:
    with open(CATEGORY_MAP, encoding="utf-8-sig", newline="") as fh:
        names, codes = list(csv.reader(fh))[:2]
    out = {}
    for n, spec in zip(names, codes):
        if "=" in spec and not spec.startswith(("{", "(")):
            out[n] = {c.strip(): lab.strip() for lab, c in (part.rsplit("=", 1) for part in spec.split(",") if "=" in part)}
    return out


def test_features_sheet_codes_decode_to_manifest_values(dbc_sim):
    with open(dbc_sim.features_csv, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    groups, header, codes, data = rows[0], rows[1], rows[2], rows[3:]
    with open(CATEGORY_MAP, encoding="utf-8-sig", newline="") as fh:
        ref_names, ref_codes = list(csv.reader(fh))[:2]
    assert header == ["Patient ID"] + ref_names and codes == [""] + ref_codes
    assert groups[0] == "Patient Information"
    dec = _decode_map()
    pre = dbc_sim.manifest[dbc_sim.manifest["phase"] == 0].set_index("patient_id")
    col = {n: i for i, n in enumerate(header)}
    agent_names = {"Name of agent not stated(but ContrastBolusAgent tag was present)": "not stated",
                   "ContrastBolusAgent Tag Absent": "absent"}
    for r in data:
        m = pre.loc[r[0]]
        get = lambda name: dec[name][r[col[name]]]  # noqa: E731, B023 (used in this iteration only)
        assert get("Manufacturer") == {"GE": "GE MEDICAL SYSTEMS", "SIEMENS": "SIEMENS"}[m["manufacturer"]]
        assert get("Manufacturer Model Name") == m["scanner_model"]
        assert get("Scan Options") == m["scan_options"]
        assert get("Field Strength (Tesla)") == m["field_strength"]
        assert get("Patient Position During MRI") == m["patient_position"]
        agent = get("Contrast Agent")
        assert agent_names.get(agent, agent) == m["contrast_agent"]
        assert get("Acquisition Matrix") == m["acquisition_matrix"]
        assert get("Slice Thickness ") == m["slice_thickness"]
        assert get("Flip Angle \n") == m["flip_angle"]
        assert get("FOV Computed (Field of View) in cm ") == m["fov"]
        assert float(r[col["TR (Repetition Time)"]]) == pytest.approx(m["tr"])
        assert float(r[col["TE (Echo Time)"]]) == pytest.approx(m["te"])


def test_features_sheet_reads_through_the_dbc_adapter(dbc_sim):
    table = dbc_iap_table(dbc_sim.features_csv)
    pre = dbc_sim.manifest[dbc_sim.manifest["phase"] == 0].set_index("patient_id")
    table = table.set_index(table.columns[0]) if "patient_id" not in table.columns else table.set_index("patient_id")
    for pid, m in pre.iterrows():
        for iap in ("manufacturer", "scanner_model", "scan_options", "field_strength", "patient_position",
                    "contrast_agent", "acquisition_matrix", "slice_thickness", "flip_angle", "fov"):
            assert table.loc[pid, iap] == m[iap], (pid, iap)


def test_header_round_trip_through_the_index(dbc_sim):
    res = build_index(dbc_sim.dicom_root, workers=1, progress=False)
    assert len(res.skipped) == 0
    t = res.table.set_index("series_uid")
    m = dbc_sim.manifest.set_index("series_uid")
    assert set(t.index) == set(m.index)
    for iap in ("manufacturer", "scanner_model", "scan_options", "field_strength", "patient_position",
                "contrast_agent", "acquisition_matrix", "slice_thickness", "flip_angle", "fov"):
        assert (t[iap] == m.loc[t.index, iap]).all(), iap
    for iap in ("tr", "te"):
        np.testing.assert_allclose(t[iap].astype(float), m.loc[t.index, iap].astype(float), atol=1e-3)


def test_annotation_boxes_cover_the_tumour(dbc_sim):
    boxes = pd.read_csv(dbc_sim.annotations_csv)
    assert list(boxes.columns) == ["Patient ID", "Start Row", "End Row", "Start Column", "End Column",
                                   "Start Slice", "End Slice"]
    pre = dbc_sim.manifest[dbc_sim.manifest["phase"] == 0].set_index("patient_id")
    for _, b in boxes.iterrows():
        m = pre.loc[b["Patient ID"]]
        assert m["tumor_present"]
        assert 1 <= b["Start Slice"] <= b["End Slice"] <= 3
        assert 1 <= b["Start Row"] <= b["End Row"] <= m["recon_matrix"]
        assert 1 <= b["Start Column"] <= b["End Column"] <= m["recon_matrix"]
        # box extent in mm is consistent with the lesion diameter (spicules may add length)
        ext = (b["End Row"] - b["Start Row"] + 1) * m["pixel_spacing_mm"]
        assert 0.3 * m["tumor_diameter_mm"] <= ext <= 3.5 * m["tumor_diameter_mm"] + 3


def test_same_seed_gives_identical_files_also_in_parallel(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    runs = [simulate(tmp_path / f"r{k}", n_patients=2, seed=7, slices=2, preset=preset, workers=w,
                     progress=False) for k, w in ((0, 1), (1, 1), (2, 2))]

    def digest(root):
        return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in _files(root)}

    d0, d1, d2 = (digest(r.dicom_root) for r in runs)
    assert len(d0) == 4 and d0 == d1 == d2
    other = simulate(tmp_path / "r3", n_patients=2, seed=8, slices=2, preset=preset, workers=1, progress=False)
    assert digest(other.dicom_root) != d0


def test_bad_preset_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scanners:\n  - manufacturer: GE\n    model: X\n")
    with pytest.raises(SchemaMismatchError, match="bad.yaml: field 'scanners.0.field_strength': Field required"):
        load_preset(bad)
    with pytest.raises(SchemaMismatchError, match="no such YAML"):
        load_preset(tmp_path / "nope.yaml")
    bad.write_text(TINY.replace("'48 X 40'", "'48 by 40'"))
    with pytest.raises(SchemaMismatchError, match="FREQ X PHASE"):
        load_preset(bad)
    # every problem names the file, the entry and the field, in one line
    for text, fragment in (("manufacturer: GE", "manufacturer: TOSHIBA"), ("model:", "modell:")):
        bad.write_text(TINY.replace(text, fragment, 1))
        with pytest.raises(SchemaMismatchError) as err:
            load_preset(bad)
        assert "bad.yaml: field 'scanners.0." in str(err.value) and "\n" not in str(err.value)


def test_features_sheet_has_the_stage_with_dbcs_codes(dbc_sim):
    """Staging T / N / M (DBC's integer codes) agree with the manifest and with each lesion's size
    and invasion by AJCC rules."""
    from mridomain.sim.breast.phantom import t_stage_from
    with open(dbc_sim.features_csv, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, data = rows[1], rows[3:]
    col = {n: i for i, n in enumerate(header)}
    pre = dbc_sim.manifest[dbc_sim.manifest["phase"] == 0].set_index("patient_id")
    for r in data:
        m = pre.loc[r[0]]
        t = int(r[col["Staging(Tumor Size)# [T]"]])
        assert t == m["t_stage"]
        assert int(r[col["Staging(Nodes)#(Nx replaced by -1)[N]"]]) == m["n_stage"]
        assert int(r[col["Staging(Metastasis)#(Mx -replaced by -1)[M]"]]) == m["m_stage"]
        assert int(r[col["Pec/Chest Involvement"]]) == (m["tumor_invasion"] == "chest wall")
        if m["tumor_present"]:
            assert t == t_stage_from(m["tumor_diameter_mm"], m["tumor_invasion"])
        else:
            assert t == 0
