"""Manifests: validation with one-line errors, the three builders, crops and sample reading."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mridomain.data import build_index
from dicom_factory import GE_HEADERS, write_mr_dicom
from mridomain.shift.data import crop_volume, load_samples, read_sample
from mridomain.shift.manifest import (STAGE_COLUMN, ManifestError, choose_domains, manifest_from_dbc,
                                      manifest_from_index, read_manifest, validate_manifest)
from mridomain.shift.protocol import check_splits
from shift_fixtures import write_crops

RESOURCE = Path(__file__).resolve().parents[1] / "src/mridomain/data/resources/dbc_clinical_feature_categories.csv"


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_read_manifest_resolves_relative_paths(tmp_path):
    path = write_crops(tmp_path / "d", n_patients=4)
    m = read_manifest(path)
    assert len(m) == 8 and set(m["domain"]) == {"A", "B"}
    assert all(Path(p).is_absolute() and Path(p).exists() for p in m["image"])
    assert m["label"].dtype == np.int64 and set(m["dataset"]) == {"dataset"}


def test_missing_file_is_a_one_line_error(tmp_path):
    path = write_crops(tmp_path / "d", n_patients=4)
    (tmp_path / "d" / "B_002.npy").unlink()
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    text = _one_line(err)
    assert text.startswith(str(path)) and "row 7" in text and "B_002.npy does not exist" in text


def test_bad_rows_are_one_line_errors(tmp_path):
    base = pd.DataFrame({"image": ["a.npy", "b.npy"], "label": [0, 1], "domain": ["A", "B"], "patient_id": ["1", "2"]})
    cases = [(base.assign(label=[0, 3]), "row 2: label 3 is not 0 or 1"),
             (base.assign(domain=["A", ""]), "row 2: empty domain"),
             (base.drop(columns="patient_id"), "missing column(s) patient_id"),
             (base.assign(split=["train", "later"]), "row 2: split 'later'"),
             (base.assign(crop_z=[1, 2]), "crop centre needs all of")]
    for table, message in cases:
        with pytest.raises(ManifestError) as err:
            validate_manifest(table, where="m.csv", check_files=False)
        assert message in _one_line(err)


def test_unknown_domain_is_a_one_line_error(tmp_path):
    m = read_manifest(write_crops(tmp_path / "d", n_patients=4))
    with pytest.raises(ManifestError) as err:
        choose_domains(m, ("A", "C"), where="m.csv")
    assert "has no domain 'C'" in _one_line(err) and "its domains: A, B" in str(err.value)
    three = pd.concat([m, m.assign(domain="C", patient_id=m["patient_id"] + "c")], ignore_index=True)
    with pytest.raises(ManifestError, match="has 3 domain"):
        choose_domains(three, None)
    kept, chosen, dropped = choose_domains(three, ("B", "A"))
    assert chosen == {"dataset": ("B", "A")} and set(kept["domain"]) == {"A", "B"}
    assert dropped["n"].tolist() == [8] and "'C'" in dropped["reason"][0]


def test_single_class_split_is_a_one_line_error(tmp_path):
    m = read_manifest(write_crops(tmp_path / "d", n_patients=6))   # labels 0,1,0,1,0,1 per domain
    m["split"] = ["train", "train", "val", "val", "test", "test"] * 2
    check_splits(m, "dataset", seeds=[0])
    m.loc[5, "label"] = 0                                          # domain A's test split: two negatives
    with pytest.raises(ManifestError) as err:
        check_splits(m, "dataset", seeds=[0], where="m.csv")
    assert _one_line(err).startswith("m.csv: dataset 'dataset', domain 'A', split test (the manifest's split "
                                     "column): only label 0")
    # seeded splits (stratified: domain A passes): one positive patient cannot be in train, val and test at once
    few = read_manifest(write_crops(tmp_path / "e", n_patients=12)).drop(columns=[])
    few.loc[(few["domain"] == "B") & (few["label"] == 1), "label"] = 0
    few.loc[few.index[-1], "label"] = 1
    with pytest.raises(ManifestError) as err:
        check_splits(few, "dataset", seeds=[3], stratify=True, where="m.csv")
    assert "domain 'B'" in _one_line(err) and "(seed 3)" in str(err.value)


def test_crop_volume_centres_and_pads():
    vol = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6) + 10
    c = crop_volume(vol, (1, 2, 3), (3, 3, 3))
    assert np.array_equal(c, vol[0:3, 1:4, 2:5])
    edge = crop_volume(vol, (0, 0, 0), (3, 3, 3))          # two thirds outside: padded with the minimum
    assert edge[1, 1, 1] == vol[0, 0, 0] and edge[0, 0, 0] == vol.min()
    assert crop_volume(vol, (1.5, 2.5, 2.5), (2, 2, 2)).shape == (2, 2, 2)
    assert np.array_equal(crop_volume(vol, (1.4, 2.4, 2.6), (1, 1, 1)), vol[1:2, 2:3, 3:4])  # rounded centre
    with pytest.raises(Exception, match="outside"):
        crop_volume(vol, (40, 2, 2), (3, 3, 3))


def test_read_sample_slice_resize_and_load_samples_skips_bad(tmp_path):
    vol = np.random.default_rng(0).normal(size=(3, 20, 30)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    assert read_sample({"image": str(tmp_path / "v.npy"), "slice": 1}, image_size=16).shape == (16, 16)
    assert read_sample({"image": str(tmp_path / "v.npy")}).shape == (3, 20, 30)
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    table = pd.DataFrame({"image": [str(tmp_path / "v.npy"), str(tmp_path / "bad.npy")], "label": [0, 1],
                          "domain": ["A", "A"], "patient_id": ["1", "2"]})
    datas, skipped = load_samples(validate_manifest(table), workers=1, progress=False)
    assert len(datas[0].table) == 1 and skipped["image"].tolist() == [str(tmp_path / "bad.npy")]
    assert "not a readable .npy" in skipped["reason"][0]


def test_manifest_from_index_with_domain_rule(tmp_path):
    rng = np.random.default_rng(1)
    for i, maker in enumerate(["GE MEDICAL SYSTEMS", "SIEMENS", "GE MEDICAL SYSTEMS", "SIEMENS", "TOSHIBA"]):
        for k in range(2):
            write_mr_dicom(tmp_path / "arc" / f"p{i}" / f"{k}.dcm", rng.integers(0, 500, (8, 8)), patient_id=f"p{i}",
                           study_uid=f"1.2.{i}", series_uid=f"1.2.{i}.1", instance=k + 1, position=float(k),
                           headers={**GE_HEADERS, "Manufacturer": maker})
    index = build_index(tmp_path / "arc", workers=1, progress=False).table
    labels = pd.DataFrame({"patient_id": ["p0", "p1", "p2", "p3", "p4"], "label": [0, 1, 1, 0, 1], "slice": 1})
    build = manifest_from_index(index, labels, domain_column="manufacturer", domains=("GE", "SIEMENS"))
    t = build.table
    assert sorted(t["domain"]) == ["GE", "GE", "SIEMENS", "SIEMENS"] and set(t["slice"]) == {1}
    assert "TOSHIBA" in build.dropped["reason"].iloc[0] and build.dropped["n"].iloc[0] == 1
    assert read_sample(t.iloc[0].to_dict()).shape == (8, 8)


def _write_dbc(root: Path, stages: dict[str, tuple[int, str]]) -> None:
    """A DBC-like layout: features sheet (real header rows + stage and manufacturer), boxes, series."""
    res = pd.read_csv(RESOURCE, header=None, dtype=object, keep_default_na=False, encoding="utf-8-sig")
    names = ["Patient ID"] + list(res.iloc[0])
    rows = [["Patient Information"] + [""] * (len(names) - 1), names, [""] + list(res.iloc[1])]
    boxes = []
    for i, (pid, (stage, maker)) in enumerate(stages.items()):
        row = [pid] + [""] * (len(names) - 1)
        row[names.index("Manufacturer")] = {"GE": 0, "SIEMENS": 2}[maker]
        row[names.index(STAGE_COLUMN)] = stage
        rows.append(row)
        for name in ("3.000000-ax dyn pre-1", "4.000000-ax dyn 1st pass-2"):
            for k in range(6):
                write_mr_dicom(root / pid / "01-01-2000-NA-MRI-1" / name / f"1-{k + 1:02d}.dcm",
                               np.full((12, 12), 10 * k + i), patient_id=pid, study_uid=f"1.{i}",
                               series_uid=f"1.{i}.{name[0]}", instance=k + 1, position=float(k))
        boxes.append({"Patient ID": pid, "Start Row": 3, "End Row": 6, "Start Column": 5, "End Column": 8,
                      "Start Slice": 2, "End Slice": 4})
    pd.DataFrame(rows).to_csv(root / "Clinical_and_Other_Features.csv", header=False, index=False)
    pd.DataFrame(boxes[:-1]).to_csv(root / "Annotation_Boxes.csv", index=False)   # the last patient has no box


def test_manifest_from_dbc_stage_task(tmp_path):
    stages = {"Breast_MRI_001": (1, "GE"), "Breast_MRI_002": (3, "SIEMENS"), "Breast_MRI_003": (-1, "GE"),
              "Breast_MRI_004": (4, "GE"), "Breast_MRI_005": (2, "SIEMENS")}
    _write_dbc(tmp_path, stages)
    build = manifest_from_dbc(tmp_path, crop=(3, 4, 4))
    t = build.table.set_index("patient_id")
    assert list(t.index) == ["Breast_MRI_001", "Breast_MRI_002", "Breast_MRI_004"]
    assert t["label"].tolist() == [0, 1, 1] and t["t_stage"].tolist() == [1, 3, 4]
    assert t["domain"].tolist() == ["GE", "SIEMENS", "GE"]
    assert all("1st pass" in p for p in t["image"])                 # the first post-contrast series
    # box slices 2..4 (1-based) -> centre z = 2 (0-based); rows 3..6 -> y = 3.5; columns 5..8 -> x = 5.5
    assert (t["crop_z"].iloc[0], t["crop_y"].iloc[0], t["crop_x"].iloc[0]) == (2.0, 3.5, 5.5)
    reasons = dict(zip(build.dropped["reason"], build.dropped["n"]))
    assert reasons[f"no {STAGE_COLUMN} stage"] == 1 and reasons["no annotation box"] == 1
    crop = read_sample(build.table.iloc[0].to_dict())
    assert crop.shape == (3, 4, 4) and np.allclose(crop[:, 0, 0], [10, 20, 30])   # slices 1..3 of patient 0


def test_manifest_from_index_leaves_out_header_dumps_and_later_volumes():
    index = pd.DataFrame({"series_uid": ["s1", "s1", "s2", "s3"], "patient_id": ["p1", "p1", "p2", "p3"],
                          "manufacturer": ["GE", "GE", "SIEMENS", "SIEMENS"], "has_pixels": [True, True, True, False],
                          "volume": [0, 1, 0, 0], "files": [["/a/s1/1.dcm"], ["/a/s1/2.dcm"], ["/a/s2/1.dcm"],
                                                            ["/a/s3/1.dcm"]]})
    labels = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "label": [0, 1, 1]})
    build = manifest_from_index(index, labels, domains=("GE", "SIEMENS"))
    assert build.table["series_uid"].tolist() == ["s1", "s2"]
    reasons = " ".join(build.dropped["reason"])
    assert "header only" in reasons and "later volume" in reasons
