"""Table 3 / Table 4 machinery: the one-sided t-test's direction, BraTS regions and scores, nested-CV
subject separation, labels CSV matching, and a tiny BraTS-layout folder end to end."""
import numpy as np
import pandas as pd
import pytest

from mridomain.errors import InvalidArgumentError, SchemaMismatchError
from mridomain.synth.downstream import match_labels, nested_cv_splits, read_labels, variant_channels
from mridomain.synth.subsets import (brats_regions, compare_with_reference, one_sided_paired_test,
                                     parse_combinations, score_volume)

SEQS = ("t1", "t1ce", "t2", "flair")


# -- the one-sided paired t-test ------------------------------------------------------------------------
def _reference(n=12):
    return np.linspace(0.70, 0.90, n)


def test_clearly_worse_dsc_gives_a_small_one_sided_p():
    ref = _reference()
    worse = ref - 0.2 + np.tile([0.01, -0.01], 6)
    p, n = one_sided_paired_test(worse, ref, higher_is_better=True)
    assert n == 12 and p < 1e-6


def test_better_dsc_is_not_significant():
    ref = _reference()
    better = ref + 0.05 + np.tile([0.01, -0.01], 6)
    p, _ = one_sided_paired_test(better, ref, higher_is_better=True)
    assert p > 0.99


def test_distance_direction_is_reversed():
    ref = _reference() * 3
    larger = ref + 2.0 + np.tile([0.1, -0.1], 6)    # a larger ASSD is worse
    assert one_sided_paired_test(larger, ref, higher_is_better=False)[0] < 1e-6
    assert one_sided_paired_test(larger, ref, higher_is_better=True)[0] > 0.99


def test_nan_pairs_are_left_out_and_identical_values_give_one():
    ref = _reference()
    cand = ref.copy()
    assert one_sided_paired_test(cand, ref, True) == (1.0, 12)
    cand[:3] = np.nan
    assert one_sided_paired_test(cand, ref, True) == (1.0, 9)
    assert np.isnan(one_sided_paired_test([np.nan, 1.0], [0.5, 0.5], True)[0])


def test_table_marks_the_worse_combination_only():
    ref = _reference()
    rows = []
    for combo, shift in (("t1+t2+t1ce+flair", 0.0), ("t1+t2", -0.2), ("t1ce+flair", 0.02)):
        for k, v in enumerate(ref):
            for region in ("et", "tc", "wt"):
                wiggle = 0.01 * (-1) ** k if shift else 0.0   # paired differences that vary
                rows.append({"combination": combo, "subject": f"s{k}", "region": region, "dsc": v + shift + wiggle,
                             "hd95": 5 - 10 * (shift + wiggle), "assd": 2 - 5 * (shift + wiggle)})
    table = compare_with_reference(pd.DataFrame(rows), "t1+t2+t1ce+flair").set_index("combination")
    for metric in ("dsc", "hd95", "assd"):
        for region in ("et", "tc", "wt"):
            assert table.loc["t1+t2", f"{metric}_{region}_mark"] == "*"
            assert table.loc["t1ce+flair", f"{metric}_{region}_mark"] == ""
            assert table.loc["t1+t2+t1ce+flair", f"{metric}_{region}_mark"] == ""


def test_parse_combinations_puts_the_complete_set_last():
    assert parse_combinations(["flair+t1ce", "t1"]) == [("t1ce", "flair"), ("t1",), SEQS]
    assert len(parse_combinations(None)) == 4 + 6 + 1
    assert parse_combinations(["paper"])[-1] == SEQS and len(parse_combinations(["paper"])) == 5
    with pytest.raises(InvalidArgumentError, match="dwi"):
        parse_combinations(["t1+dwi"])


# -- regions and scores ----------------------------------------------------------------------------------
def _lesion(shape=(12, 16, 16)):
    seg = np.zeros(shape, np.uint8)
    seg[3:9, 3:13, 3:13] = 2
    seg[4:8, 5:11, 5:11] = 4
    seg[5:7, 7:9, 7:9] = 1
    return seg


def test_brats_regions_follow_the_definitions():
    seg = _lesion()
    et, tc, wt = brats_regions(seg)
    assert (wt == (seg > 0)).all()
    assert (tc == np.isin(seg, (1, 4))).all()
    assert (et == (seg == 4)).all()


def test_perfect_and_missed_predictions():
    seg = _lesion()
    perfect = score_volume(seg, seg, (1.0, 1.0, 1.0))
    for region in ("et", "tc", "wt"):
        assert perfect[region]["dsc"] == pytest.approx(1.0)
        assert perfect[region]["hd95"] == pytest.approx(0.0) and perfect[region]["assd"] == pytest.approx(0.0)
    no_et = seg.copy()
    no_et[no_et == 4] = 2                     # enhancing predicted as edema
    s = score_volume(no_et, seg)
    assert s["et"]["dsc"] == 0.0 and np.isnan(s["et"]["assd"])
    assert s["wt"]["dsc"] == pytest.approx(1.0)
    empty = np.zeros_like(seg)
    assert score_volume(empty, empty)["et"] == {"dsc": 1.0, "hd95": 0.0, "assd": 0.0}


def test_shifted_prediction_distance_is_in_mm():
    seg = _lesion()
    shifted = np.roll(seg, 1, axis=2)
    one = score_volume(shifted, seg, (1.0, 1.0, 1.0))["wt"]["hd95"]
    three = score_volume(shifted, seg, (1.0, 1.0, 3.0))["wt"]["hd95"]
    assert one == pytest.approx(1.0) and three == pytest.approx(3.0)


# -- nested cross-validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_nested_cv_separates_subjects(seed):
    labels = np.r_[np.zeros(23, int), np.ones(17, int)]
    splits = nested_cv_splits(labels, 5, 4, seed)
    assert len(splits) == 20
    tested = []
    for outer in range(5):
        inner = [s for s in splits if s["outer"] == outer]
        assert len(inner) == 4
        test = set(inner[0]["test"].tolist())
        tested += sorted(test)
        vals = []
        for s in inner:
            train, val = set(s["train"].tolist()), set(s["val"].tolist())
            assert set(s["test"].tolist()) == test
            assert not train & test and not val & test and not train & val
            assert train | val | test == set(range(len(labels)))
            assert {0, 1} <= set(labels[list(val)].tolist())
            vals += sorted(val)
        assert sorted(vals) == sorted(set(range(len(labels))) - test)   # inner folds partition the rest
    assert sorted(tested) == list(range(len(labels)))                   # every subject tested once


def test_nested_cv_refuses_too_few_subjects():
    with pytest.raises(InvalidArgumentError, match="too few"):
        nested_cv_splits([0, 1, 0, 1, 0, 1], 5, 4)


# -- labels --------------------------------------------------------------------------------------------------
def test_brats_mgmt_csv_matches_folders(tmp_path):
    csv = tmp_path / "train_labels.csv"
    csv.write_text("BraTS21_ID,MGMT_value\n00000,1\n2,0\n00005,x\n00009,1\n")
    labels, skipped = read_labels(csv)
    assert len(labels) == 3 and len(skipped) == 1 and ":4" in skipped[0][0]
    folders = [tmp_path / "BraTS2021_00000", tmp_path / "BraTS2021_00002", tmp_path / "BraTS2021_00003"]
    matched, missing = match_labels(labels, folders)
    assert {f.name: v for f, v in matched.items()} == {"BraTS2021_00000": 1, "BraTS2021_00002": 0}
    assert missing == ["00009"]


def test_labels_csv_errors_are_one_line(tmp_path):
    bad = tmp_path / "l.csv"
    bad.write_text("only\n1\n")
    with pytest.raises(SchemaMismatchError, match="l.csv"):
        read_labels(bad)
    dup = tmp_path / "d.csv"
    dup.write_text("subject_id,y\na,1\na,0\n")
    with pytest.raises(SchemaMismatchError, match="more than once"):
        read_labels(dup)


def test_variant_channels():
    assert variant_channels(SEQS, ("t1ce", "flair"), False) == [1, 3]
    assert variant_channels(SEQS, ("t1ce", "flair"), True) == [1, 3, 5, 7]


# -- end to end on a tiny BraTS-layout folder ------------------------------------------------------------------
def _brats_folder(root, n=12):
    """BraTS 2021 naming (BraTS2021_000NN/BraTS2021_000NN_{t1,t1ce,t2,flair,seg}.nii.gz), a lesion per
    subject whose enhancing part is brighter on t1ce in label-1 subjects."""
    from mridomain.sim.brain import write_nifti

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        sid = f"BraTS2021_{i:05d}"
        label = i % 2
        seg = np.zeros((16, 16, 8), np.uint8)
        cx, cy = rng.integers(5, 11, 2)
        seg[cx - 3:cx + 3, cy - 3:cy + 3, 2:6] = 2
        seg[cx - 2:cx + 2, cy - 2:cy + 2, 3:5] = 4
        seg[cx - 1:cx + 1, cy - 1:cy + 1, 3:5] = 1
        for s in SEQS:
            img = rng.uniform(40, 60, seg.shape).astype(np.float32)
            img[seg == 2] += 20 if s in ("t2", "flair") else 0
            img[seg == 4] += (60 if label else 25) if s == "t1ce" else 0
            write_nifti(root / sid / f"{sid}_{s}.nii.gz", img, np.eye(4))
        write_nifti(root / sid / f"{sid}_seg.nii.gz", seg, np.eye(4), dtype=np.uint8)
        rows.append({"BraTS21_ID": f"{i:05d}", "MGMT_value": label})
    pd.DataFrame(rows).to_csv(root / "train_labels.csv", index=False)
    return root


@pytest.mark.slow
def test_brats_layout_runs_end_to_end(tmp_path):
    from mridomain.synth import train
    from mridomain.synth.downstream import run_downstream
    from mridomain.synth.subsets import run_subsets

    data = _brats_folder(tmp_path / "brats")
    tiny = {"network": {"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                        "lstm_layers": 1, "disc_channels": 4, "disc_layers": 1},
            "steps_per_epoch": 2, "batch_size": 2, "val_subjects": 1, "val_slices": 2}
    train(data, tmp_path / "run", preset="cpu", epochs=1, progress=False, **tiny)
    res = run_downstream(data, data / "train_labels.csv", tmp_path / "run", tmp_path / "t4", outer_folds=2,
                         inner_folds=2, epochs=1, crop=(16, 16), pixel_mm=None, widen_factor=0.125, progress=False)
    assert len(res.table) == 6 and res.info["subjects"] == 12
    assert set(res.predictions.groupby("variant")["subject"].nunique()) == {12}
    for name in ("table4.csv", "md_difference.csv", "fig7_roc.png", "report.html", "predictions.csv"):
        assert (tmp_path / "t4" / name).exists()
    sub = run_subsets(data, tmp_path / "t3", combinations=["t1ce+flair"], epochs=1, steps_per_epoch=2,
                      channels=(4, 8), progress=False)
    assert list(sub.table["combination"]) == ["t1ce+flair", "t1+t1ce+t2+flair"]
    assert sub.info["test_subjects"] >= 2
    for name in ("table3.csv", "table3.png", "report.html", "scores.csv"):
        assert (tmp_path / "t3" / name).exists()


def test_fast_auc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    from mridomain.synth.downstream import _auc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    p = np.round(rng.random(50), 1)            # ties included
    assert _auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert np.isnan(_auc(np.ones(5), p[:5]))


def test_threshold_metrics():
    from mridomain.synth.downstream import _threshold_metrics

    m = _threshold_metrics(np.array([1, 1, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.2, 0.7]))
    assert m == pytest.approx({"sensitivity": 2 / 3, "specificity": 1 / 2, "ppv": 2 / 3, "npv": 1 / 2})


def test_nnunet_rule_for_the_brats_patch():
    from mridomain.synth.subsets import nnunet_kernels_strides

    kernels, strides = nnunet_kernels_strides((128, 128, 128), (1.0, 1.0, 1.0))
    assert strides[0] == [1, 1, 1] and strides[1:] == [[2, 2, 2]] * 5    # 128 -> 4, as nnU-Net on BraTS
    assert kernels == [[3, 3, 3]] * 6
    _, aniso = nnunet_kernels_strides((32, 128, 128), (3.0, 1.0, 1.0))
    assert aniso[1] == [1, 2, 2]                                            # the coarse axis waits
