"""The median normalization: a lesion no longer sets the scale of a whole volume; levels fitted on the
training subjects, recorded in the run and reused by every reader of the run."""
import numpy as np
import pytest

from mridomain.errors import EmptyInputError, ImageReadError, InvalidArgumentError, SchemaMismatchError
from mridomain.sim.brain import write_nifti
from mridomain.synth.data import (NORMALIZATION, check_normalization, load_dataset, load_subject,
                                  median_levels, median_normalize, normalize_volume)


def _brain(lesion_value: float) -> np.ndarray:
    """40 % grey matter at 70, 57 % white matter at 100, 3 % lesion, in a zero background."""
    head = np.concatenate([np.full(400, 70.0), np.full(570, 100.0), np.full(30, lesion_value)])
    vol = np.zeros((1, 50, 50), np.float32)
    vol[0, 5:45, 5:30] = head.reshape(40, 25)
    return vol


def test_a_lesion_sets_the_percentile_scale_but_not_the_median_one():
    weak, strong = _brain(150.0), _brain(180.0)
    white = (slice(None), slice(5, 45), slice(5, 30))
    wm = _brain(150.0)[white] == 100.0
    # the paper's percentiles: the 99.5th lies in the lesion, so the white matter moves with it
    pw, ps = normalize_volume(weak)[0][white][wm], normalize_volume(strong)[0][white][wm]
    assert abs(float(pw.mean()) - 100 / 150) < 1e-3 and abs(float(ps.mean()) - 100 / 180) < 1e-3
    # the median (white matter here, 57 % of the head above the 40 % grey) maps to the level in both
    for vol, lesion in ((weak, 150.0), (strong, 180.0)):
        out, (lo, hi) = median_normalize(vol, 0.5)
        assert (lo, hi) == (0.0, 200.0)
        assert np.all(out[white][wm] == 0.5) and out[out > 0].min() == np.float32(70 / 200)
        assert np.isclose(out.max(), lesion / 200) and out[0, 0, 0] == 0.0
    # above the level's range: clipped to 1
    assert median_normalize(strong, 0.9)[0].max() == 1.0


def test_median_normalize_refuses_a_level_outside_the_unit_range():
    with pytest.raises(InvalidArgumentError, match="level"):
        median_normalize(_brain(150.0), 1.5)
    assert not median_normalize(np.zeros((2, 3, 3), np.float32), 0.5)[0].any()


def _ramp_subject(root, sid, n, seqs=("t1", "t2")):
    """Every sequence holds 1..n once (hand-computable median and 99.5th percentile) in a zero frame."""
    for s in seqs:
        vol = np.zeros((n + 2, 3, 3), np.float32)
        vol[1:-1, 1, 1] = np.arange(1, n + 1)
        write_nifti(root / sid / f"{sid}_{s}.nii.gz", vol, np.eye(4))
    return root / sid


def test_median_levels_are_the_median_over_subjects_of_median_over_top(tmp_path):
    # numpy's linear percentile of 1..n: median (n + 1) / 2, 99.5th 1 + 0.995 (n - 1)
    ratio = {n: ((n + 1) / 2) / (1 + 0.995 * (n - 1)) for n in (100, 200, 400)}
    files = [{s: tmp_path / f"s{n}" / f"s{n}_{s}.nii.gz" for s in ("t1", "t2")} for n in (100, 200, 400)]
    for n in (100, 200):
        _ramp_subject(tmp_path, f"s{n}", n)
    _ramp_subject(tmp_path, "s400", 400, seqs=("t1",))
    files[2].pop("t2")
    levels = median_levels(files, ("t1", "t2"))
    assert levels["t1"] == pytest.approx(ratio[200], abs=1e-6)
    assert levels["t2"] == pytest.approx(np.median([ratio[100], ratio[200]]), abs=1e-6)
    with pytest.raises(EmptyInputError, match="flair"):
        median_levels(files, ("t1", "flair"))
    # centred intensities have no scale to divide by: the file is named
    vol = np.zeros((5, 3, 3), np.float32)
    vol[1:4, 1, 1] = [-2.0, -1.0, 3.0]
    write_nifti(tmp_path / "z" / "z_t1.nii.gz", vol, np.eye(4))
    with pytest.raises(ImageReadError, match="z_t1.nii.gz.*median intensity is -1"):
        median_levels([{"t1": tmp_path / "z" / "z_t1.nii.gz"}], ("t1",))


def test_a_run_normalization_is_checked_and_reaches_every_loader(tmp_path):
    folder = _ramp_subject(tmp_path / "data", "a", 200)
    with pytest.raises(InvalidArgumentError, match="zscore"):
        check_normalization({"kind": "zscore"})
    assert check_normalization(None) == NORMALIZATION
    norm = {"kind": "median", "high": 99.5, "levels": {"t1": 0.25, "t2": 0.5}}
    sub = load_subject(folder, ("t1", "t2"), normalization=norm)
    # the median 100.5 maps to each sequence's level
    for seq, level in norm["levels"].items():
        assert sub.scale[seq] == (0.0, pytest.approx(100.5 / level))
        assert np.isclose(np.median(sub.volumes[seq][sub.volumes[seq] > 0]), level, atol=1e-6)
    with pytest.raises(SchemaMismatchError, match="no level for 't2'"):
        load_subject(folder, ("t1", "t2"), normalization={"kind": "median", "levels": {"t1": 0.25}})


def test_the_cache_keeps_one_normalization_apart_from_another(tmp_path, monkeypatch):
    _ramp_subject(tmp_path / "data", "a", 200)
    norm = {"kind": "median", "high": 99.5, "levels": {"t1": 0.25, "t2": 0.5}}
    paper = load_dataset(tmp_path / "data", ("t1", "t2"), progress=False, cache=tmp_path / "cache")
    median = load_dataset(tmp_path / "data", ("t1", "t2"), progress=False, cache=tmp_path / "cache",
                          normalization=norm)
    fresh = load_dataset(tmp_path / "data", ("t1", "t2"), progress=False, normalization=norm)
    assert paper.normalization == NORMALIZATION and median.normalization == norm
    a, b, c = (d.subjects[0].volumes["t1"] for d in (paper, median, fresh))
    assert not np.allclose(a, b) and np.allclose(b, c, atol=1e-3)      # float16 in the cache
    # both stay cached side by side: loading either again reads no NIfTI
    import mridomain.synth.data as data

    monkeypatch.setattr(data, "load_subject", lambda *a, **k: pytest.fail("read the NIfTI again"))
    again = load_dataset(tmp_path / "data", ("t1", "t2"), progress=False, cache=tmp_path / "cache")
    assert np.array_equal(np.asarray(again.subjects[0].volumes["t1"]), np.asarray(a))
    again = load_dataset(tmp_path / "data", ("t1", "t2"), progress=False, cache=tmp_path / "cache",
                         normalization=norm)
    assert np.array_equal(np.asarray(again.subjects[0].volumes["t1"]), np.asarray(b))
