"""Answers users can trust: temperature scaling, calibration error, the in-domain model and its
threshold, joint (hierarchical) decoding, and predict's out-of-domain verdicts and abstention."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mridomain.iap.calibration import expected_calibration_error, fit_temperature, reliability_table, softmax_t
from mridomain.iap.decoding import joint_decode, training_combinations
from mridomain.iap.domain import DomainModel, quantile_upper_bound
from mridomain.iap.labels import IGNORE_INDEX
from mridomain.iap.predictor import UNKNOWN, PredictorOutput


def test_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    n, c = 4000, 4
    true_logits = rng.normal(0, 1.5, (n, c))
    p = softmax_t(true_logits)
    targets = np.array([rng.choice(c, p=row) for row in p])
    # the network's logits are the true ones times 3: over-confident by T = 3
    temp = fit_temperature(3.0 * true_logits, targets)
    assert temp == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(softmax_t(3.0 * true_logits), targets)
    after = expected_calibration_error(softmax_t(3.0 * true_logits, temp), targets)
    assert after < before / 2
    # unlabelled rows are left out; nothing labelled -> T = 1
    assert fit_temperature(true_logits[:5], np.full(5, IGNORE_INDEX)) == 1.0


def test_ece_by_hand():
    # two rows at confidence 0.9 (one right, one wrong), one at 0.6 (right): bins differ
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    targets = np.array([0, 1, 1])
    # bin of 0.9: |0.5 - 0.9| = 0.4 over 2 rows; bin of 0.6: |1 - 0.6| = 0.4 over 1 row -> 0.4
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4)
    table = reliability_table(probs, targets)
    assert table["count"].sum() == 3 and set(table.loc[table["count"] > 0, "accuracy"]) == {0.5, 1.0}


def test_quantile_bound_by_hand():
    scores = np.arange(1, 1001, dtype=float)        # 1..1000
    # k = smallest with P(Bin(1000, 0.99) <= k - 1) >= 0.95; by the normal approximation
    # 990 + 1.645 * sqrt(9.9) ~ 995.2, so k is 996 or 997: the bound sits just above the 0.99 quantile
    thr, widened = quantile_upper_bound(scores, 0.99)
    assert not widened and 995 <= thr <= 998
    # 50 scores cannot bound the 99th percentile: max + (max - median) / 2
    small = np.arange(1, 51, dtype=float)
    thr, widened = quantile_upper_bound(small, 0.99)
    assert widened and thr == pytest.approx(50 + 0.5 * (50 - 25.5))


def test_domain_model_separates_far_features_and_flags_header_values(tmp_path):
    rng = np.random.default_rng(1)
    ref, cal = rng.normal(0, 1, (400, 6)), rng.normal(0, 1, (320, 6))
    dm = DomainModel.fit(ref, cal, n_calibration_patients=100, quantile=0.99, ranges={"tr": (3.0, 6.0)},
                         vocabularies={"manufacturer": ["GE", "SIEMENS"]})
    assert not dm.small
    inside = dm.score(rng.normal(0, 1, (500, 6))) <= dm.threshold
    far = dm.score(rng.normal(6, 1, (50, 6))) <= dm.threshold
    assert inside.mean() > 0.95 and far.mean() == 0
    flags = dm.header_outside({"manufacturer": "TOSHIBA", "tr": 4000.0})
    assert flags == ["manufacturer=TOSHIBA not in the training vocabulary",
                     "tr=4000 outside the training range 3-6"]
    assert dm.header_outside({"manufacturer": "GE", "tr": 5.9}) == []
    dm.save(tmp_path)
    back = DomainModel.load(tmp_path)
    np.testing.assert_allclose(back.score(ref[:5]), dm.score(ref[:5]), rtol=1e-5)
    assert back.threshold == dm.threshold and "95% confidence" in back.note
    small = DomainModel.fit(ref, cal[:40], n_calibration_patients=10)
    assert small.small and "small calibration set" in small.note


def _output(probs: dict[str, np.ndarray], classes: dict[str, list[str]], score=None, thr=None) -> PredictorOutput:
    n = len(next(iter(probs.values())))
    return PredictorOutput(probabilities=probs, logits={k: np.log(v) for k, v in probs.items()},
                           continuous={"tr": np.full(n, 5.0)}, features=np.zeros((n, 1)), classes=classes,
                           units={"tr": "ms"}, domain_score=score, domain_threshold=thr)


def test_joint_decoding_picks_the_most_probable_seen_combination():
    classes = {"manufacturer": ["GE", "SIEMENS", "other"], "scanner_model": ["Signa", "TrioTim", "other"]}
    # per head: GE (0.6) and TrioTim (0.55): a combination no scanner has
    probs = {"manufacturer": np.array([[0.6, 0.35, 0.05]]), "scanner_model": np.array([[0.4, 0.55, 0.05]])}
    combos = training_combinations(pd.DataFrame({"manufacturer": ["GE", "SIEMENS", "GE"],
                                                 "scanner_model": ["Signa", "TrioTim", "Signa"]}),
                                   ["manufacturer", "scanner_model"])
    assert len(combos) == 2 and combos["count"].tolist() == [2, 1]
    joint = joint_decode(_output(probs, classes), combos)
    # log(0.6 * 0.4) = -1.43 > log(0.35 * 0.55) = -1.65: GE Signa
    assert joint.loc[0, "joint_manufacturer"] == "GE" and joint.loc[0, "joint_scanner_model"] == "Signa"
    assert joint.loc[0, "joint_log_prob"] == pytest.approx(math.log(0.6 * 0.4))
    assert not joint.loc[0, "joint_agrees"]


def test_table_reports_other_and_abstains_out_of_domain():
    classes = {"manufacturer": ["GE", "SIEMENS", "other"]}
    probs = {"manufacturer": np.array([[0.7, 0.1, 0.2], [0.2, 0.7, 0.1]])}
    out = _output(probs, classes, score=np.array([1.0, 9.0]), thr=2.0)
    t = out.table(1)
    # the "other" class has no training examples, so its probability says nothing: no column
    assert not any(c.endswith("_p_other") for c in t.columns)
    assert t["in_domain"].tolist() == [True, False]
    a = out.table(1, abstain=True)
    assert a["manufacturer"].tolist() == ["GE", UNKNOWN] and np.isnan(a.loc[1, "tr_ms"])
    series = out.mean().table(1)
    assert series.loc[0, "domain_score"] == 5.0 and not series.loc[0, "in_domain"]


def _header_model(**rule) -> DomainModel:
    from mridomain.iap.domain import DomainRule

    rng = np.random.default_rng(2)
    dm = DomainModel.fit(rng.normal(0, 1, (200, 4)), rng.normal(0, 1, (100, 4)), n_calibration_patients=40,
                         ranges={"tr": (4.0, 6.0), "te": (1.5, 2.5)},
                         vocabularies={"manufacturer": ["GE", "SIEMENS"], "flip_angle": ["10", "12"],
                                       "acquisition_matrix": ["256X256"], "scan_options": ["FS"]})
    dm.rule = DomainRule(**rule)
    return dm


def test_header_evidence_decides_with_the_image_evidence():
    dm = _header_model()
    inside, far = np.zeros(4), np.full(4, 50.0)
    prisma = {"manufacturer": "SIEMENS", "tr": 4150.0, "te": 85.0, "flip_angle": "90"}
    own = {"manufacturer": "GE", "tr": 5.9, "te": 2.0, "flip_angle": "10.1", "acquisition_matrix": "256X256"}
    # rows: own header + image in / alien header + image in / alien header + image out / no header + image out
    v = dm.judge(np.array([0.0, 0.0, 50.0, 50.0]), [own, prisma, prisma, {}])
    assert v["in_domain"].tolist() == [True, False, False, False]
    assert v["domain_reason"].tolist() == ["", "header", "image+header", "image"]
    assert "tr=4150 outside the training range 4-6" in v.loc[1, "header_unseen"]
    assert "te=85" in v.loc[1, "header_unseen"] and "flip_angle=90 not in" in v.loc[1, "header_unseen"]
    # 10.1 is within 2 % of 10: a flip angle the training set had; a header of only unchecked IAPs is in
    assert v.loc[0, "header_unseen"] == "" and dm.judge(inside[:1], [{"scan_options": "ZZ"}])["in_domain"].all()
    # without headers the image evidence decides alone
    assert dm.judge(far[:2], [{}, None])["domain_reason"].tolist() == ["image", "image"]
    assert dm.judge(inside[:2], [{}, None])["in_domain"].all()


def test_header_rule_is_configurable():
    prisma = {"manufacturer": "SIEMENS", "tr": 4150.0}
    warn = _header_model(header_miss="warn").judge(np.zeros(1), [prisma])
    assert warn["in_domain"].all() and warn.loc[0, "domain_reason"] == "header (warn)"
    assert "tr=4150" in warn.loc[0, "header_unseen"]
    # only the IAPs the rule names count
    only_vendor = _header_model(header_iaps=("manufacturer",)).judge(np.zeros(1), [prisma])
    assert only_vendor["in_domain"].all() and only_vendor.loc[0, "header_unseen"] == ""
    toshiba = _header_model(header_iaps=("manufacturer",)).judge(np.zeros(1), [{"manufacturer": "TOSHIBA"}])
    assert toshiba.loc[0, "domain_reason"] == "header"
    # an image out of domain stays out whatever the header says, under either rule
    assert not _header_model(header_miss="warn").judge(np.full(1, 50.0), [prisma])["in_domain"].any()


def test_the_rule_travels_with_the_run_and_abstention_uses_the_whole_verdict(tmp_path):
    from mridomain.iap.domain import reason_counts

    dm = _header_model(header_miss="warn", header_iaps=("manufacturer", "tr"))
    dm.save(tmp_path)
    back = DomainModel.load(tmp_path)
    assert back.rule == dm.rule
    v = dm.judge(np.array([0.0, 0.0, 50.0]), [{"manufacturer": "GE"}, {"manufacturer": "X"}, {}])
    assert reason_counts(v) == {"in": 1, "header (warn)": 1, "image": 1}
    classes = {"manufacturer": ["GE", "SIEMENS", "other"]}
    probs = {"manufacturer": np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])}
    # the image evidence calls both in; the header calls the second out: abstention follows the verdict
    t = _output(probs, classes, score=np.array([1.0, 1.0]), thr=2.0).table(
        1, abstain=True, in_domain=np.array([True, False]))
    assert t["manufacturer"].tolist() == ["GE", UNKNOWN] and t["in_domain"].tolist() == [True, False]


def test_a_temperature_that_raises_calibration_error_is_not_used():
    from mridomain.iap.calibration import choose_temperature

    rng = np.random.default_rng(3)
    n, c = 3000, 4
    true_logits = rng.normal(0, 1.5, (n, c))
    targets = np.array([rng.choice(c, p=row) for row in softmax_t(true_logits)])
    over = choose_temperature(3.0 * true_logits, targets)       # over-confident: scaling helps
    assert not over["kept_raw"] and over["temperature"] == pytest.approx(3.0, rel=0.1)
    assert over["ece_after"] < over["ece_before"]
    # 200 right answers at 99.3 % and two wrong ones at ~100 %: the two wrong rows dominate the
    # NLL, whose optimum (T ~ 1.8) softens the 200 right answers to ~94 %: ECE 0.3 % -> ~5 %
    logits = np.array([[5.0, 0.0]] * 200 + [[30.0, 0.0]] * 2)
    raw = choose_temperature(logits, np.array([0] * 200 + [1] * 2))
    assert raw["fitted_temperature"] > 1.5 and raw["ece_fitted"] > 10 * raw["ece_before"]
    assert raw["kept_raw"] and raw["temperature"] == 1.0 and raw["ece_after"] == raw["ece_before"]


def _blocks_data(rng, n, shift=0.0):
    """Features of two blocks (30 + 3 columns) and one head's logits; ``shift`` moves a row away."""
    feats = rng.normal(0, 1, (n, 33)) + shift
    logits = {"m": rng.normal(0, 1, (n, 3)) + np.array([3.0, 0, 0]) * (1 - min(abs(shift), 1))}
    return feats, logits


def test_outlier_exposed_score_is_cross_fitted_and_its_threshold_keeps_its_promise(tmp_path):
    from mridomain.iap.domain import fit_exposed

    rng = np.random.default_rng(4)
    blocks = [("a", 0, 30), ("b", 30, 33)]
    n_in, patients = 1200, 300
    in_f, in_l = _blocks_data(rng, n_in)
    groups = np.repeat(np.arange(patients), n_in // patients)
    # outliers seen in training: far in block "a" only
    out_f, out_l = _blocks_data(rng, 400)
    out_f[:, :30] += 1.5
    fit = fit_exposed(in_f, in_l, groups, out_f, out_l, np.repeat(np.arange(100), 4), blocks)
    # cross-fitted: every in-domain row was scored by block models that never saw its patient; the
    # same rows scored by the deployed models, fitted on them, look closer to the domain (30
    # dimensions from 1200 rows: in-sample Mahalanobis distances are optimistic)
    from mridomain.iap.domain import combine, combiner_inputs

    in_sample = combine(combiner_inputs(in_f, in_l, blocks, fit.block_means, fit.block_precisions), fit.combiner)
    assert np.median(fit.in_scores) > np.median(in_sample)
    assert fit.out_scores.min() > np.quantile(fit.in_scores, 0.99)
    threshold, widened = quantile_upper_bound(fit.in_scores, 0.99)
    assert not widened
    dm = DomainModel(fit.block_means[0], fit.block_precisions[0], threshold, 0.99, n_in, n_in, patients,
                     "cross-fitted train + val", widened, blocks=blocks, block_means=fit.block_means,
                     block_precisions=fit.block_precisions, combiner=fit.combiner,
                     expected_false_out=float(np.mean(fit.in_scores > threshold)))
    # fresh in-domain rows: the false-out rate is about the promised 1 % (at most a few %)
    fresh_f, fresh_l = _blocks_data(np.random.default_rng(5), 3000)
    false_out = np.mean(dm.score(fresh_f, fresh_l) > dm.threshold)
    assert dm.expected_false_out <= 0.011 and false_out <= 0.03
    # an outlier of a kind never shown (far in block "b") is out too: the blocks generalize
    other_f, other_l = _blocks_data(np.random.default_rng(6), 200)
    other_f[:, 30:] += 6.0
    assert np.mean(dm.score(other_f, other_l) > dm.threshold) >= 0.95
    dm.save(tmp_path)
    back = DomainModel.load(tmp_path)
    np.testing.assert_allclose(back.score(fresh_f[:20], {k: v[:20] for k, v in fresh_l.items()}),
                               dm.score(fresh_f[:20], {k: v[:20] for k, v in fresh_l.items()}), rtol=1e-4, atol=1e-4)
    assert "expected false-out rate" in back.note and "outlier-exposed" in back.note
