"""Slice cache: layout, row <-> image correspondence, normalization, antialiasing, splits, labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mridomain.data import (
    SliceCache,
    build_index,
    normalize_intensity,
    prepare_cache,
    resize,
    sample_slice_indices,
    split_patients,
)
from mridomain.data.splits import split_counts
from mridomain.errors import InvalidArgumentError
from dicom_factory import GE_HEADERS, write_mr_dicom

N_PATIENTS, N_SLICES, SIZE = 5, 12, 32


def _pattern(p: int, s: int) -> np.ndarray:
    """Left half = a code unique to (patient, slice), right half = 1000 (the image maximum).

    After max255 normalization the left half reads code / 1000, so every cached image tells
    which file it came from.
    """
    img = np.full((SIZE, SIZE), 1000.0)
    img[:, : SIZE // 2] = 100 * (p + 1) + s
    return img


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    for p in range(N_PATIENTS):
        pid = f"Breast_MRI_{p + 1:03d}"
        for s in range(N_SLICES):
            write_mr_dicom(root / pid / f"{s:02d}.dcm", _pattern(p, s), patient_id=pid,
                           study_uid=f"1.2.3.{p}", series_uid=f"1.2.3.{p}.1", instance=s + 1,
                           position=1.5 * s, headers=GE_HEADERS)
    return build_index(root, out=root / "index.parquet", workers=1, progress=False)


def _code_of(img: np.ndarray) -> float:
    # Centre of the left half: far enough from the edge that resizing does not blend the halves.
    h = img.shape[0]
    return float(img[h // 2, h // 8: h // 4].astype(np.float32).mean())


def test_layout_and_row_image_correspondence(index, tmp_path):
    out = tmp_path / "cache"
    cache = prepare_cache(index.archive / "index.parquet", out, slices_per_series=4,
                          size=16, seed=3, workers=1, progress=False)
    assert (out / "images.npy").exists() and (out / "slices.parquet").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["version"] == 1 and meta["size"] == [16, 16] and meta["seed"] == 3
    assert meta["normalization"] == {"method": "max255"}
    assert meta["fractions"] == [0.7, 0.15, 0.15]
    assert [i["name"] for i in meta["iaps"]][:2] == ["manufacturer", "scanner_model"]
    assert cache.images.shape == (N_PATIENTS * 4, 16, 16) and cache.images.dtype == np.float16
    assert len(cache) == N_PATIENTS * 4 == len(cache.table)
    assert list(cache.table["slice_id"]) == list(range(len(cache)))
    for col in ("patient_id", "study_uid", "series_uid", "file", "slice_index", "n_slices_in_series",
                "split", "tumor", "manufacturer", "tr"):
        assert col in cache.table.columns
    for i, row in cache.table.iterrows():
        p = int(row["patient_id"][-3:]) - 1
        s = int(row["slice_index"])
        assert Path(row["file"]).name == f"{s:02d}.dcm"  # position order == written order
        assert _code_of(cache.images[i]) == pytest.approx((100 * (p + 1) + s) / 1000, abs=2e-3)
        assert float(cache.images[i, 8, 12]) == pytest.approx(1.0, abs=1e-3)
    assert set(cache.table["manufacturer"]) == {"GE"}
    assert cache.table["n_slices_in_series"].eq(N_SLICES).all()
    assert not cache.images.flags.writeable


def test_sampling_deterministic_and_all(index, tmp_path):
    a = prepare_cache(index.table, tmp_path / "a", slices_per_series=4, size=8, seed=1, workers=1,
                      progress=False)
    b = prepare_cache(index.table, tmp_path / "b", slices_per_series=4, size=8, seed=1, workers=2,
                      progress=False)
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    for _, g in a.table.groupby("series_uid"):
        assert g["slice_index"].is_unique and g["slice_index"].between(0, N_SLICES - 1).all()
    full = prepare_cache(index.table, tmp_path / "c", slices_per_series=None, size=8, workers=1,
                         progress=False)
    assert len(full) == N_PATIENTS * N_SLICES


def test_patient_split_in_cache(index, tmp_path):
    cache = prepare_cache(index.table, tmp_path / "c", slices_per_series=2, size=8, seed=0,
                          fractions=(0.6, 0.2, 0.2), workers=1, progress=False)
    per_patient = cache.table.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    idx = np.concatenate([cache.split(s) for s in ("train", "val", "test")])
    assert sorted(idx.tolist()) == list(range(len(cache)))
    assert cache.table.groupby("split")["patient_id"].nunique().to_dict() == {"train": 3, "val": 1, "test": 1}
    assert "train" in cache.summary() and "manufacturer" in cache.summary()
    with pytest.raises(InvalidArgumentError):
        cache.split("holdout")


def test_unreadable_slice_skipped_and_reported(index, tmp_path):
    table = index.table.copy()
    victim = Path(table.at[0, "files"][5])
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(victim.read_bytes()[:400])  # header survives, pixels do not
    files = list(table.at[0, "files"])
    files[5] = str(broken)
    table.at[0, "files"] = files
    cache = prepare_cache(table, tmp_path / "c", slices_per_series=None, size=8, workers=1,
                          progress=False)
    assert len(cache) == N_PATIENTS * N_SLICES - 1
    assert cache.images.shape[0] == len(cache.table)
    assert list(cache.skipped["path"]) == [str(broken)]
    assert str(broken) not in set(cache.table["file"])


def test_tumor_labels_from_annotation_box(index, tmp_path):
    boxes = tmp_path / "Annotation_Boxes.csv"
    pd.DataFrame({"Patient ID": ["Breast_MRI_002"], "Start Row": [3], "End Row": [9],
                  "Start Column": [2], "End Column": [7], "Start Slice": [3], "End Slice": [4]}
                 ).to_csv(boxes, index=False)
    cache = prepare_cache(index.table, tmp_path / "c", slices_per_series=None, size=8, workers=1,
                          progress=False, annotations=boxes)
    t = cache.table
    p2 = t[t["patient_id"] == "Breast_MRI_002"].set_index("slice_index")["tumor"]
    # DBC slices are 1-based: slice_index 2, 3 are slices 3, 4 (inside); slice 9 = index 8 is the
    # first at >= 5 slices past the box end (4 + 5); slices 1..2 lie within 5 of the start.
    expected = {0: np.nan, 1: np.nan, 2: 1.0, 3: 1.0, 4: np.nan, 5: np.nan, 6: np.nan, 7: np.nan,
                8: 0.0, 9: 0.0, 10: 0.0, 11: 0.0}
    for k, v in expected.items():
        assert (np.isnan(p2[k]) and np.isnan(v)) or p2[k] == v, (k, p2[k], v)
    assert t[t["patient_id"] != "Breast_MRI_002"]["tumor"].isna().all()


def test_reopen_from_disk(index, tmp_path):
    prepare_cache(index.table, tmp_path / "c", slices_per_series=2, size=8, workers=1, progress=False)
    again = SliceCache(tmp_path / "c")
    assert len(again) == N_PATIENTS * 2 and again.iaps[0]["name"] == "manufacturer"


# ---- pure functions ---------------------------------------------------------------------------


def test_normalize_max255_by_hand():
    img = np.array([[0.0, 1.0], [2.0, 4.0]])
    np.testing.assert_allclose(normalize_intensity(img, "max255"), [[0, 0.25], [0.5, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(normalize_intensity(np.zeros((2, 2)), "max255"), np.zeros((2, 2)))
    assert normalize_intensity(img, "max255").dtype == np.float32


def test_normalize_percentile_by_hand():
    img = np.arange(100.0).reshape(10, 10)
    # Linear-interpolated percentiles of 0..99: p1 = 0.01 * 99 = 0.99, p99.5 = 0.995 * 99 = 98.505.
    lo, hi = 0.99, 98.505
    out = normalize_intensity(img, "percentile")
    assert out[0, 0] == 0.0 and out[9, 9] == 1.0  # clipped
    assert out[5, 0] == pytest.approx((50 - lo) / (hi - lo), rel=1e-6)
    # the dict stored in meta.json works too
    out2 = normalize_intensity(img, {"method": "percentile", "low": 1.0, "high": 99.5})
    np.testing.assert_array_equal(out, out2)


def test_normalize_zscore_by_hand():
    img = np.array([[1.0, 2.0], [3.0, 4.0]])
    sd = np.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 4)  # population std = sqrt(1.25)
    np.testing.assert_allclose(normalize_intensity(img, "zscore"),
                               [[-1.5 / sd, -0.5 / sd], [0.5 / sd, 1.5 / sd]], rtol=1e-6)
    with pytest.raises(InvalidArgumentError):
        normalize_intensity(img, "minmax")


def test_resize_antialiases_checkerboard():
    board = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)  # 0/1 at Nyquist
    small = resize(board, 224)
    assert small.shape == (224, 224) and small.dtype == np.float32
    # A low-pass filter must remove the Nyquist pattern: flat 0.5 grey, no moire.
    assert abs(float(small.mean()) - 0.5) < 0.01
    assert float(small.std()) < 0.03
    # Point sampling (an aliasing resizer) keeps strong 0/1 contrast on the same pattern.
    from PIL import Image

    nearest = np.asarray(Image.fromarray(board, mode="F").resize((224, 224), Image.Resampling.NEAREST))
    assert float(nearest.std()) > 0.3


def test_resize_keeps_smooth_content():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    out = resize(ramp, 32)
    assert out[:, 0].mean() < 0.05 and out[:, -1].mean() > 0.95
    assert np.all(np.diff(out[16]) > 0)


# ---- sampling and splits ----------------------------------------------------------------------


def test_sample_slice_indices():
    a = sample_slice_indices(100, 10, seed=7, key="1.2.3")
    assert len(set(a.tolist())) == 10 and list(a) == sorted(a) and a.min() >= 0 and a.max() < 100
    np.testing.assert_array_equal(a, sample_slice_indices(100, 10, seed=7, key="1.2.3"))
    assert not np.array_equal(a, sample_slice_indices(100, 10, seed=8, key="1.2.3"))
    np.testing.assert_array_equal(sample_slice_indices(5, 16, seed=0), np.arange(5))
    np.testing.assert_array_equal(sample_slice_indices(10, 2, seed=0, sampling="even"), [2, 7])


def test_split_patients_properties():
    ids = [f"P{i:03d}" for i in range(40)]
    a = split_patients(ids, (0.7, 0.15, 0.15), seed=0)
    assert set(a) == set(ids) and set(a.values()) == {"train", "val", "test"}
    # order and repetition of the input do not matter
    assert split_patients(list(reversed(ids)) + ids[:5], (0.7, 0.15, 0.15), seed=0) == a
    assert split_patients(ids, (0.7, 0.15, 0.15), seed=1) != a
    for n in range(1, 30):
        for fr in ((0.7, 0.15, 0.15), (0.5, 0.25, 0.25), (1 / 3, 1 / 3, 1 / 3), (0.8, 0.2, 0.0)):
            counts = split_counts(n, fr)
            assert sum(counts) == n
            assert all(abs(c - f * n) < 1 for c, f in zip(counts, fr)), (n, fr, counts)
            got = split_patients([f"x{i}" for i in range(n)], fr, seed=n)
            assert [list(got.values()).count(s) for s in ("train", "val", "test")] == list(counts)
    with pytest.raises(InvalidArgumentError):
        split_patients(ids, (0.5, 0.5, 0.5))


def test_invalid_argument_error_is_one_class_in_two_homes():
    from mridomain import data
    from mridomain.data import splits
    from mridomain.errors import MridomainError

    assert data.InvalidArgumentError is splits.InvalidArgumentError is InvalidArgumentError
    assert issubclass(InvalidArgumentError, MridomainError) and issubclass(InvalidArgumentError, ValueError)


def test_preprocess_slices_repeats_what_prepare_cache_stored(index, tmp_path):
    """Prediction's preprocessing of a raw file == the cached image (up to float16 rounding)."""
    from mridomain.data import preprocess_slices
    from mridomain.io import read_image

    cache = prepare_cache(index.table, tmp_path / "c", slices_per_series=2, size=12,
                          normalization="percentile", workers=1, progress=False)
    for i in (0, len(cache) - 1):
        raw = read_image(cache.table["file"].iloc[i]).pixels
        again = preprocess_slices(raw, cache.meta["size"], cache.normalization)
        assert again.shape == (1, 12, 12) and again.dtype == np.float32
        np.testing.assert_allclose(again[0], cache.images[i].astype(np.float32), atol=1e-3)
    with pytest.raises(InvalidArgumentError):
        preprocess_slices(np.zeros((2, 2, 2, 2)), 4)


def test_write_slice_cache_round_trip(tmp_path):
    from mridomain.data import write_slice_cache

    imgs = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5) / 64  # exact in float16
    table = pd.DataFrame({"split": ["train", "val", "test"], "manufacturer": ["GE", None, "SIEMENS"],
                          "tr": [5.0, np.nan, 4.5]})
    iaps = [{"name": "manufacturer"}, {"name": "tr", "kind": "continuous", "unit": "ms"}]
    folder = write_slice_cache(tmp_path / "c", imgs, table, iaps, normalization="zscore", seed=4)
    cache = SliceCache(folder)
    np.testing.assert_array_equal(np.asarray(cache.images, dtype=np.float32), imgs)
    assert cache.iaps == [{"name": "manufacturer", "kind": "categorical", "unit": None},
                          {"name": "tr", "kind": "continuous", "unit": "ms"}]
    assert cache.normalization == {"method": "zscore", "eps": 1e-6} and cache.meta["seed"] == 4
    assert cache.meta["size"] == [4, 5]
    assert list(cache.table["slice_id"]) == [0, 1, 2] and cache.table["tumor"].isna().all()
    assert cache.split("val").tolist() == [1]
    assert pd.isna(cache.table["manufacturer"].iloc[1])
    with pytest.raises(InvalidArgumentError, match="split"):
        write_slice_cache(tmp_path / "d", imgs, table.drop(columns="split"), iaps)
    with pytest.raises(InvalidArgumentError, match="2 table rows for 3 images"):
        write_slice_cache(tmp_path / "d", imgs, table.iloc[:2], iaps)
    with pytest.raises(InvalidArgumentError, match="holdout"):
        write_slice_cache(tmp_path / "d", imgs, table.assign(split=["train", "holdout", "test"]), iaps)


def test_corrupt_cache_files_give_one_line_errors(tmp_path):
    from mridomain.data import SliceCache
    from mridomain.errors import SchemaMismatchError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(SchemaMismatchError) as err:
        SliceCache(bad)
    assert "meta.json" in str(err.value) and "\n" not in str(err.value)

    (bad / "meta.json").write_text('{"version": 1}')
    (bad / "images.npy").write_bytes(b"garbage")
    with pytest.raises(SchemaMismatchError) as err:
        SliceCache(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
